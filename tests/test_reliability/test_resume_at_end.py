# Copyright (c) mmcoop contributors. All rights reserved.
"""``--resume`` of a checkpoint at the end of the schedule says that the run
is complete and changes nothing; one past the end is an error naming the
checkpoint, ``train_cfg.max_epochs`` / ``max_iters`` and the fix. Before,
both trained nothing and exited 0 without a word."""
import os.path as osp
import shutil
import uuid

import pytest
from _common import load_tool
from _helpers import base_cfg, tree_fingerprint, write_config
from mmengine.config import Config

from mmcoop.engine.runner import ResumePastScheduleError  # noqa: E402

END = 'the end of the schedule'


def _train(cfg, work, *extra):
    return load_tool('tools/train.py').main([
        cfg, '--work-dir',
        str(work), *extra, '--cfg-options',
        f'experiment_name=run-{uuid.uuid4().hex[:8]}'
    ])


def _log(runner):
    with open(osp.join(runner.log_dir, f'{runner.timestamp}.log')) as f:
        return f.read()


def _changes(before, after):
    """Paths of ``before`` changed or gone in ``after``, and the top
    folders of the paths ``after`` adds."""
    old = {entry[0]: entry for entry in before}
    new = {entry[0]: entry for entry in after}
    changed = sorted(p for p in old if new.get(p) != old[p])
    added = {p.split('/')[0] for p in set(new) - set(old)}
    return changed, added


@pytest.fixture(scope='module')
def finished(tiny_assets, tmp_path_factory):
    """A 2-epoch run of tools/train.py, finished: (config, work dir)."""
    tmp = tmp_path_factory.mktemp('finished')
    s = base_cfg(tiny_assets['data_root'], tiny_assets['clip'],
                 tiny_assets['classes'], max_epochs=2, size=32)
    s['randomness'] = dict(seed=0)
    cfg = write_config(tmp / 'c.py', s)
    _train(cfg, tmp / 'work')
    return cfg, tmp / 'work'


def test_resume_of_a_finished_run_says_so_and_changes_nothing(finished):
    cfg, work = finished
    before = tree_fingerprint(str(work))
    runner = _train(cfg, work, '--resume')  # returns: exit status 0
    assert runner.train_loop.epoch == 2
    log = _log(runner)
    ckpt = osp.join(str(work), 'epoch_2.pth')
    assert (f'Resuming {ckpt}: the checkpoint is at epoch 2, {END} '
            f'(train_cfg.max_epochs = 2 of {cfg}): the run is complete and '
            'nothing is trained. To train longer, raise '
            'train_cfg.max_epochs above 2 (e.g. `--cfg-options '
            'train_cfg.max_epochs=3`') in log
    assert 'use another --work-dir' in log
    assert 'Epoch(train)' not in log and 'Epoch(val)' not in log
    # every file (checkpoints, pointer, config dump, logs) as it was; the
    # one addition is this run's log folder
    changed, added = _changes(before, tree_fingerprint(str(work)))
    assert changed == []
    assert added == {runner.timestamp}


def test_resume_past_the_end_is_an_error(finished):
    cfg, work = finished
    before = tree_fingerprint(str(work))
    ckpt = osp.join(str(work), 'epoch_2.pth')
    with pytest.raises(ResumePastScheduleError) as err:
        _train(cfg, work, '--resume', ckpt, '--cfg-options',
               'train_cfg.max_epochs=1')
    message = str(err.value)
    assert (f'Resuming {ckpt}: the checkpoint is at epoch 2, past {END} '
            f'(train_cfg.max_epochs = 1 of {cfg})') in message
    assert '`--cfg-options train_cfg.max_epochs=2`' in message
    assert 'another --work-dir' in message
    # the checkpoints and the config dump of the run are kept
    changed, _ = _changes(before, tree_fingerprint(str(work)))
    assert changed == []
    assert Config.fromfile(str(work / 'c.py')).train_cfg.max_epochs == 2


def test_resume_with_a_longer_schedule_trains_on(finished, tmp_path):
    cfg, work = finished
    work = shutil.copytree(work, tmp_path / 'work')
    runner = _train(cfg, work, '--resume', '--cfg-options',
                    'train_cfg.max_epochs=3')
    assert runner.train_loop.epoch == 3
    assert osp.isfile(osp.join(work, 'epoch_3.pth'))
    assert END not in _log(runner)
    assert Config.fromfile(osp.join(work, 'c.py')).train_cfg.max_epochs == 3


def test_iteration_based_loop(tmp_path, toy_runner):
    work = tmp_path / 'iters'
    toy_runner(work, 2, by_epoch=False).train()
    runner = toy_runner(work, 2, by_epoch=False, resume=True)
    runner.train()
    assert (f'Resuming {work / "iter_2.pth"}: the checkpoint is at iteration '
            f'2, {END} (train_cfg.max_iters = 2): the run is complete'
            ) in _log(runner)
    with pytest.raises(
            ResumePastScheduleError,
            match=r'iteration 2, past the end of the schedule '
            r'\(train_cfg.max_iters = 1\).*train_cfg.max_iters=2'):
        toy_runner(work, 1, by_epoch=False, resume=True).train()

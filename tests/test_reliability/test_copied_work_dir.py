# Copyright (c) mmcoop contributors. All rights reserved.
"""A copy of a kept work dir resumed with ``--resume`` reads and changes
only the copy: auto-resume takes the copy's own checkpoints (MMEngine's
``last_checkpoint`` holds the original's absolute path), and a new best
checkpoint removes the copy's previous best, never the original's (the
resumed message hub holds the original's absolute ``best_ckpt``). An
explicit ``--resume`` of another work dir's file changes nothing there
either."""
import itertools
import os
import shutil

import _common
import pytest
from _helpers import tree_fingerprint
from mmengine.evaluator import BaseMetric

from mmcoop.engine.runner import ResumeOutsideWorkDirError
from mmcoop.registry import METRICS

_SCORES = itertools.count(1)


@METRICS.register_module(force=True)
class RisingToyMetric(BaseMetric):
    """A score that rises at every evaluation: every epoch saves a new best
    checkpoint."""

    def process(self, data_batch, data_samples):
        self.results.append(0)

    def compute_metrics(self, results):
        return dict(score=float(next(_SCORES)))


def toy_runner(work_dir, max_epochs, **kwargs):
    """The toy run of ``_common.toy_runner`` validated every epoch, with
    ``save_best``."""
    return _common.toy_runner(
        work_dir,
        max_epochs,
        val_dataloader=dict(
            dataset=_common.ToyDataset(),
            sampler=dict(type='DefaultSampler', shuffle=False),
            batch_size=4,
            num_workers=0,
            collate_fn=dict(type='default_collate')),
        val_cfg=dict(),
        val_evaluator=dict(type='RisingToyMetric'),
        default_hooks=dict(
            checkpoint=dict(
                type='CheckpointHook',
                interval=1,
                save_best='score',
                rule='greater'),
            logger=dict(type='LoggerHook', interval=1)),
        **kwargs)


@pytest.fixture
def finished(tmp_path):
    """A finished 2-epoch run with a best checkpoint, kept."""
    work = tmp_path / 'orig'
    toy_runner(work, 2).train()
    assert (work / 'best_score_epoch_2.pth').is_file()
    return work


def _files(work):
    return [e for e in tree_fingerprint(work) if e[0].endswith('.pth')
            or e[0] == 'last_checkpoint']


def test_resuming_a_copy_leaves_the_original_untouched(finished, tmp_path):
    """Before: the copy resumed the original's epoch_2.pth and, saving its
    new best, deleted the original's best_score_epoch_2.pth."""
    before = _files(finished)
    copy = tmp_path / 'copy'
    shutil.copytree(finished, copy)
    os.remove(copy / 'epoch_1.pth')  # the copy's own files are told apart
    runner = toy_runner(copy, 3, resume=True)
    runner.train()
    assert runner.train_loop.epoch == 3
    assert _files(finished) == before
    assert (copy / 'best_score_epoch_3.pth').is_file()
    assert not (copy / 'best_score_epoch_2.pth').exists()  # the copy's
    assert (copy / 'last_checkpoint').read_text() == str(
        copy / 'epoch_3.pth')
    log = _common_log(runner)
    assert f'resuming the file of that name in the work dir, ' \
        f'{copy}/epoch_2.pth' in log
    assert f'{finished}/best_score_epoch_2.pth, outside this run' in log


def test_a_copy_without_the_named_file_is_refused(finished, tmp_path):
    before = _files(finished)
    copy = tmp_path / 'copy'
    shutil.copytree(finished, copy)
    os.remove(copy / 'epoch_2.pth')
    runner = toy_runner(copy, 3, resume=True)
    with pytest.raises(ResumeOutsideWorkDirError) as err:
        runner.train()
    msg = str(err.value)
    assert str(finished / 'epoch_2.pth') in msg and str(copy) in msg
    assert f'--resume {finished}/epoch_2.pth' in msg
    assert _files(finished) == before


def test_explicit_resume_from_another_work_dir_changes_nothing_there(
        finished, tmp_path):
    before = _files(finished)
    work = tmp_path / 'new'
    runner = toy_runner(
        work, 3, resume=True, load_from=str(finished / 'epoch_2.pth'))
    runner.train()
    assert runner.train_loop.epoch == 3
    assert _files(finished) == before
    assert (work / 'best_score_epoch_3.pth').is_file()
    assert 'has no copy there: it is no longer tracked' in _common_log(
        runner)


def _common_log(runner):
    path = os.path.join(runner.log_dir, f'{runner.timestamp}.log')
    with open(path) as f:
        return f.read()


def test_best_checkpoints_of_several_metrics_outside_are_all_dropped(
        tmp_path):
    """``save_best`` with two metrics records ``best_ckpt_<metric>`` keys
    between other keys: dropping one while iterating the message hub's
    live dict stopped the resume (``OrderedDict mutated during
    iteration``)."""
    from types import SimpleNamespace

    from mmengine.logging import MessageHub, MMLogger

    from mmcoop.engine.runner import MMCoopRunner
    hub = MessageHub.get_instance('copied_work_dir_two_metrics')
    elsewhere = str(tmp_path / 'elsewhere')
    records = [('best_score_mAP', 1.), ('best_ckpt_mAP', f'{elsewhere}/a'),
               ('best_score_CF1', 2.), ('best_ckpt_CF1', f'{elsewhere}/b')]
    for key, value in records:
        hub.update_info(key, value)
    stub = SimpleNamespace(
        message_hub=hub,
        logger=MMLogger.get_current_instance(),
        _checkpoint_dirs=lambda: [str(tmp_path / 'work')])
    MMCoopRunner._keep_best_checkpoints_own(stub, 'x.pth')
    assert 'best_ckpt_mAP' not in hub.runtime_info
    assert 'best_ckpt_CF1' not in hub.runtime_info
    assert hub.get_info('best_score_CF1') == 2.

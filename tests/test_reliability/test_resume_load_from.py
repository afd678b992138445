# Copyright (c) mmcoop contributors. All rights reserved.
"""``tools/train.py --resume`` (``resume='auto'``) with a ``load_from``:
the work dir's latest checkpoint is resumed when there is one (``load_from``
unused, said at INFO), else ``load_from`` gives the initial weights, as
without ``--resume``. Before: ``tools/train.py`` dropped ``load_from`` and
the run trained from scratch. ``resume=True`` keeps MMEngine's meaning
(``load_from`` is the checkpoint to resume: ``--resume PATH``)."""
import os.path as osp

import pytest
import torch
from _common import load_tool, toy_runner, toy_runtime_cfg

from mmcoop.engine.runner import MMCoopRunner


def _log(runner):
    with open(osp.join(runner.log_dir, f'{runner.timestamp}.log')) as f:
        return f.read()


@pytest.fixture
def init(tmp_path):
    """Initial weights unlike the toy model's: 7s."""
    runner = toy_runner(tmp_path / 'src', 1)
    state = {
        k: torch.full_like(v, 7.)
        for k, v in runner.model.state_dict().items()
    }
    path = tmp_path / 'init.pth'
    torch.save(dict(state_dict=state, meta=dict()), path)
    return str(path)


def _weight(runner):
    return runner.model.linear.weight.detach().clone()


def test_auto_resume_without_a_checkpoint_starts_from_load_from(
        tmp_path, init):
    runner = toy_runner(tmp_path / 'w', 1, resume='auto', load_from=init)
    runner.train()
    assert f'training starts from load_from={init}' in _log(runner)
    # the run without --resume from the same weights; not from scratch
    reference = toy_runner(tmp_path / 'ref', 1, load_from=init)
    reference.train()
    scratch = toy_runner(tmp_path / 'scratch', 1)
    scratch.train()
    assert torch.equal(_weight(runner), _weight(reference))
    assert not torch.equal(_weight(runner), _weight(scratch))


def test_auto_resume_with_a_checkpoint_resumes_it(tmp_path, init):
    work = tmp_path / 'w'
    first = toy_runner(work, 1)
    first.train()
    # at the end of the schedule: the resumed weights, nothing trained
    runner = toy_runner(work, 1, resume='auto', load_from=init)
    runner.train()
    assert torch.equal(_weight(runner), _weight(first))
    log = _log(runner)
    assert 'resumed epoch: 1,' in log
    assert f'load_from={init} (the initial weights of a new run) is not ' \
        'used' in log


def test_from_cfg_resume_auto_and_true(tmp_path, init):
    """The same rule through ``Runner.from_cfg`` (``mim train``, scripts);
    ``resume=True`` with ``load_from`` resumes ``load_from`` (MMEngine)."""
    cfg = toy_runtime_cfg(tmp_path / 'a', resume='auto', load_from=init)
    runner = MMCoopRunner.from_cfg(cfg)
    runner.train()  # one epoch from the 7s
    assert 'training starts from load_from=' in _log(runner)
    cfg = toy_runtime_cfg(tmp_path / 'b', max_epochs=2, resume=True,
                          load_from=osp.join(tmp_path, 'a', 'epoch_1.pth'))
    runner = MMCoopRunner.from_cfg(cfg)
    runner.train()
    assert 'resumed epoch: 1,' in _log(runner)


@pytest.mark.parametrize('value', ['yes', 1, 'True'])
def test_a_resume_of_another_kind_is_refused(tmp_path, value):
    cfg = toy_runtime_cfg(tmp_path / 'w', resume=value)
    with pytest.raises(ValueError, match="resume must be False, True or "
                       "'auto'"):
        MMCoopRunner.from_cfg(cfg)
    assert not (tmp_path / 'w').exists()


def test_load_from_of_an_auto_resume_is_no_resume_for_the_hooks(
        tmp_path, init):
    """Without a checkpoint to resume, ``load_from`` gives initial weights:
    hooks that read ``runner._resume`` after loading (MMEngine's EMAHook
    swaps in the EMA weights of a resume) see a new run, as without
    ``--resume``."""
    from mmengine.hooks import Hook

    seen = []

    class Record(Hook):

        def after_load_checkpoint(self, runner, checkpoint):
            seen.append(runner._resume)

    runner = toy_runner(tmp_path / 'w', 1, resume='auto', load_from=init,
                        custom_hooks=[Record()])
    runner.train()
    assert seen == [False]
    assert runner._resume == 'auto'


def test_auto_resume_with_checkpoints_in_the_hooks_out_dir(tmp_path):
    """``default_hooks.checkpoint.out_dir``: MMEngine saves the checkpoints
    in ``out_dir/<work dir name>`` and ``last_checkpoint`` in the work dir
    names them there; they are the run's own and are resumed."""
    work, out = tmp_path / 'w', tmp_path / 'out'
    hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1,
                                 out_dir=str(out)))
    toy_runner(work, 1, default_hooks=hooks).train()
    assert osp.isfile(out / 'w' / 'epoch_1.pth')
    runner = toy_runner(work, 2, resume='auto', default_hooks=hooks)
    runner.train()
    assert osp.isfile(out / 'w' / 'epoch_2.pth')
    assert 'Resuming' in _log(runner) or 'resumed' in _log(runner).lower()


@pytest.mark.parametrize('launcher', ['from_cfg', 'tools/train.py'])
def test_auto_resume_of_a_checkpoint_needs_no_load_from_file(
        tmp_path, launcher):
    """``resume='auto'`` with a checkpoint in the work dir resumes it:
    a ``load_from`` that no longer exists (the pretrained file of a
    crashed run, moved since) is not used, said in one warning. Before,
    ``check_load_from`` refused it and the run could not be resumed."""
    work = tmp_path / 'w'
    MMCoopRunner.from_cfg(toy_runtime_cfg(work, 1)).train()
    gone = str(tmp_path / 'moved_away.pth')
    cfg = toy_runtime_cfg(work, 2, resume='auto', load_from=gone)
    if launcher == 'from_cfg':
        runner = MMCoopRunner.from_cfg(cfg)
        runner.train()
    else:
        path = str(tmp_path / 'c.py')
        cfg.dump(path)
        runner = load_tool('tools/train.py').main(
            [path, '--work-dir', str(work), '--resume'])
    assert runner.train_loop.epoch == 2
    log = _log(runner)
    assert 'resumed epoch: 1,' in log
    # log records (not the config the log prints) naming load_from
    lines = [
        line for line in log.splitlines()
        if gone in line and ' - mmengine - ' in line
    ]
    assert len(lines) == 1 and 'WARNING' in lines[0], lines
    assert 'is not used (it does not exist)' in lines[0]


@pytest.mark.parametrize('launcher', ['from_cfg', 'tools/train.py'])
def test_auto_resume_without_a_checkpoint_refuses_a_missing_load_from(
        tmp_path, launcher):
    """Nothing to resume: ``load_from`` gives the initial weights, and a
    missing one is refused before the work dir is made, as before."""
    work = tmp_path / 'w'
    gone = str(tmp_path / 'moved_away.pth')
    cfg = toy_runtime_cfg(work, 1, resume='auto', load_from=gone)
    with pytest.raises(FileNotFoundError,
                       match=r"Checkpoint `load_from` '.*moved_away\.pth' "
                       'does not exist'):
        if launcher == 'from_cfg':
            MMCoopRunner.from_cfg(cfg)
        else:
            path = str(tmp_path / 'c.py')
            cfg.dump(path)
            load_tool('tools/train.py').main(
                [path, '--work-dir', str(work), '--resume'])
    assert not work.exists()


@pytest.mark.parametrize('value', ['', '  ', 5, True])
def test_an_empty_or_non_path_load_from_is_refused_before_the_work_dir(
        tmp_path, value):
    """``load_from=''`` (an unset shell variable) or a number is refused
    naming the fix before the work dir is made. Before: it passed the
    check, and the load stopped the run once the model and the data were
    built (``'' does not exist``); an empty one with a checkpoint to
    resume is not used, as a missing file."""
    work = tmp_path / 'w'
    cfg = toy_runtime_cfg(work, 1, load_from=value)
    match = (r"^load_from '\s*' is empty\. Fix: give a checkpoint file, or "
             r'load_from=None' if isinstance(value, str) else
             r'^load_from must be the path of a checkpoint file or None, '
             rf'got {value!r} \({type(value).__name__}\)')
    with pytest.raises(ValueError, match=match):
        MMCoopRunner.from_cfg(cfg)
    assert not work.exists()
    if value == '':
        MMCoopRunner.from_cfg(toy_runtime_cfg(work, 1)).train()
        runner = MMCoopRunner.from_cfg(
            toy_runtime_cfg(work, 2, resume='auto', load_from=value))
        runner.train()
        assert runner.train_loop.epoch == 2


@pytest.mark.parametrize('kind', ['url', 'folder', 'blank'])
def test_auto_resume_of_a_checkpoint_ignores_any_load_from(tmp_path, kind):
    """A ``load_from`` that auto-resume does not use (the work dir holds a
    checkpoint) is not checked, whatever it is: a URL or a folder was
    refused (only a missing file was let through), so the run could not be
    resumed."""
    work = tmp_path / 'w'
    MMCoopRunner.from_cfg(toy_runtime_cfg(work, 1)).train()
    value = dict(url='https://example.com/init.pth', folder=str(tmp_path),
                 blank='')[kind]
    runner = MMCoopRunner.from_cfg(
        toy_runtime_cfg(work, 2, resume='auto', load_from=value))
    runner.train()
    assert runner.train_loop.epoch == 2
    assert 'resumed epoch: 1,' in _log(runner)

# Copyright (c) mmcoop contributors. All rights reserved.
"""Issue #6.2 / #6.3: auto-resume survives a missing or corrupt
``last_checkpoint`` target; checkpoints that do not fit the config fail with
an error naming both sides instead of a silent partial load."""
import functools
import os
import os.path as osp
import shutil
import time

import _common
import pytest
import torch
from _helpers import load_ckpt, model_cfg, save_tiny_clip

from mmcoop.engine.runner import MMCoopRunner
from mmcoop.utils.checkpoint import (CheckpointMismatchError,
                                     CheckpointReadError)

# --------------------------------------------------------------- toy runs
toy_runner = functools.partial(_common.toy_runner, shuffle=True, momentum=0.9)


@pytest.fixture(scope='module')
def three_epochs(tmp_path_factory):
    """A finished 3-epoch toy run; its final weights are the reference."""
    work = tmp_path_factory.mktemp('toy') / 'ref'
    runner = toy_runner(work, 3)
    runner.train()
    return work, runner.model.linear.weight.detach().clone()


def _resume(work, expected, from_epoch):
    """Resume ``work`` to epoch 3: it must start from ``from_epoch`` (a run
    from scratch would end with the same weights) and end at ``expected``."""
    runner = toy_runner(work, 3, resume=True)
    runner.train()
    assert f'resumed epoch: {from_epoch},' in log_text(runner)
    assert runner.train_loop.epoch == 3
    torch.testing.assert_close(runner.model.linear.weight, expected)
    return runner


def _copy(src, dst):
    shutil.copytree(src, dst)
    # the pointer holds an absolute path into the reference run
    with open(osp.join(dst, 'last_checkpoint'), 'w') as f:
        f.write(osp.join(str(dst), 'epoch_3.pth'))
    return dst


def log_text(runner):
    """The text log of ``runner`` (MMLogger instances do not propagate)."""
    path = osp.join(runner.log_dir, f'{runner.timestamp}.log')
    with open(path) as f:
        return f.read()


def _continue_from(work, epoch, tmp_path, name):
    """A work dir whose newest good checkpoint is ``epoch``."""
    dst = _copy(work, tmp_path / name)
    for e in range(epoch + 1, 4):
        os.remove(dst / f'epoch_{e}.pth')
    return dst


@pytest.mark.parametrize('damage', [
    'missing', 'truncated', 'garbage', 'empty_pointer', 'no_pointer',
    'garbled_pointer'
])
def test_auto_resume_falls_back_to_newest_readable(three_epochs, tmp_path,
                                                   damage):
    ref, _ = three_epochs
    # the run was at epoch 2 of 3 when the last checkpoint got damaged
    work = _continue_from(ref, 3, tmp_path, 'w')
    os.remove(work / 'epoch_3.pth')
    pointer = work / 'last_checkpoint'
    pointer.write_text(str(work / 'epoch_2.pth'))
    good = work / 'epoch_1.pth'
    if damage == 'missing':
        os.remove(work / 'epoch_2.pth')
    elif damage == 'truncated':
        data = (work / 'epoch_2.pth').read_bytes()
        (work / 'epoch_2.pth').write_bytes(data[:len(data) // 2])
    elif damage == 'garbage':
        (work / 'epoch_2.pth').write_bytes(b'\x00' * 100)
    elif damage == 'empty_pointer':
        pointer.write_text('')
        good = work / 'epoch_2.pth'
    elif damage == 'no_pointer':
        os.remove(pointer)
        good = work / 'epoch_2.pth'
    elif damage == 'garbled_pointer':
        pointer.write_text(str(work / 'epoch_2.p'))
        good = work / 'epoch_2.pth'
    # the reference: an uninterrupted 3-epoch run from `good`
    expected_from = toy_runner(
        tmp_path / 'expect', 3, resume=True, load_from=str(good))
    expected_from.train()
    expected = expected_from.model.linear.weight.detach().clone()
    runner = toy_runner(work, 3, resume=True)
    runner.train()
    assert runner.train_loop.epoch == 3
    torch.testing.assert_close(runner.model.linear.weight, expected)
    log = log_text(runner)
    # the weights alone would not tell: a run from scratch ends there too
    assert f'resumed epoch: {good.name[6]},' in log
    if damage in ('truncated', 'garbage'):
        assert 'epoch_2.pth is unreadable' in log
        assert 'Resuming from ' + str(work / 'epoch_1.pth') in log
    elif damage in ('missing', 'garbled_pointer'):
        assert 'which does not exist; falling back' in log
    elif damage == 'empty_pointer':
        assert 'is empty' in log


def test_resume_from_fallback_matches_uninterrupted(three_epochs, tmp_path):
    """Dropping the last checkpoint and its pointer target costs one epoch
    of recomputation, not correctness."""
    ref, expected = three_epochs
    work = _continue_from(ref, 3, tmp_path, 'w')
    for e in (2, 3):
        os.remove(work / f'epoch_{e}.pth')
    (work / 'last_checkpoint').write_text(str(work / 'epoch_3.pth'))
    _resume(work, expected, from_epoch=1)


def test_newer_complete_checkpoint_beats_stale_pointer(three_epochs, tmp_path):
    """A crash between the (atomic) save of epoch_3 and the update of
    last_checkpoint: epoch_3.pth is complete and is used."""
    ref, expected = three_epochs
    work = _copy(ref, tmp_path / 'w')
    (work / 'last_checkpoint').write_text(str(work / 'epoch_2.pth'))
    runner = toy_runner(work, 3, resume=True)
    runner.train()  # nothing left to train
    assert 'resumed epoch: 3,' in log_text(runner)
    assert runner.iter == 6
    torch.testing.assert_close(runner.model.linear.weight, expected)


def test_an_earlier_runs_later_checkpoints_are_not_resumed(
        three_epochs, tmp_path):
    """A new run in a work dir of a finished 3-epoch run wrote epoch_1 and
    was killed: its --resume must continue from its own epoch_1, not from
    the earlier run's epoch_3 (numbered after it, written before it).
    Before: the earlier run's model was reported as the new run's."""
    ref, expected = three_epochs
    work = _copy(ref, tmp_path / 'w')
    later = time.time() + 5
    os.utime(work / 'epoch_1.pth', (later, later))
    (work / 'last_checkpoint').write_text(str(work / 'epoch_1.pth'))
    runner = _resume(work, expected, from_epoch=1)
    log = log_text(runner)
    assert "['epoch_3.pth', 'epoch_2.pth']" in log or \
        "['epoch_2.pth', 'epoch_3.pth']" in log
    assert 'were written before it: an earlier run' in log


def test_a_new_run_over_an_earlier_one_says_so(three_epochs, tmp_path):
    ref, _ = three_epochs
    work = _copy(ref, tmp_path / 'w')
    runner = toy_runner(work, 1)
    runner.train()
    assert (f'{work} holds the checkpoints of an earlier run (epoch_1.pth, '
            'epoch_2.pth, epoch_3.pth); this new run (no --resume) replaces '
            'those of the same names') in log_text(runner)
    fresh = toy_runner(tmp_path / 'new', 1)
    fresh.train()
    assert 'holds the checkpoints of an earlier run' not in log_text(fresh)


def test_moved_work_dir(three_epochs, tmp_path):
    ref, expected = three_epochs
    work = tmp_path / 'moved'
    shutil.copytree(ref, work)  # last_checkpoint still names `ref`
    os.remove(work / 'epoch_3.pth')
    (work / 'last_checkpoint').write_text('/nonexistent/old/epoch_2.pth')
    _resume(work, expected, from_epoch=2)


def test_nothing_readable_is_a_clear_error(three_epochs, tmp_path):
    ref, _ = three_epochs
    work = _copy(ref, tmp_path / 'w')
    for e in (1, 2, 3):
        (work / f'epoch_{e}.pth').write_bytes(b'PK\x03\x04 broken')
    runner = toy_runner(work, 3, resume=True)
    with pytest.raises(CheckpointReadError) as err:
        runner.train()
    msg = str(err.value)
    assert 'none of the checkpoints' in msg and 'epoch_3.pth' in msg
    assert 'epoch_1.pth' in msg and 'Fix' in msg


def test_explicit_resume_path_does_not_fall_back(three_epochs, tmp_path):
    ref, _ = three_epochs
    work = _copy(ref, tmp_path / 'w')
    bad = work / 'epoch_3.pth'
    bad.write_bytes(bad.read_bytes()[:300])
    runner = toy_runner(tmp_path / 'other', 4, resume=True, load_from=str(bad))
    with pytest.raises(CheckpointReadError, match='epoch_3.pth'):
        runner.train()
    runner = toy_runner(
        tmp_path / 'other2',
        4,
        resume=True,
        load_from=str(work / 'missing.pth'))
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        runner.train()


def test_own_checkpoints_hold_rng_state_and_load_weights_only(three_epochs):
    ref, expected = three_epochs
    ckpt = load_ckpt(ref / 'epoch_3.pth')  # restricted unpickler
    assert set(ckpt['rng_state']) >= {'python', 'numpy', 'torch'}
    # the weights are the run's final ones
    assert torch.equal(ckpt['state_dict']['linear.weight'], expected)
    assert ckpt['meta']['epoch'] == 3


def test_remote_checkpoints_are_refused(tmp_path):
    runner = toy_runner(tmp_path / 'w', 1)
    with pytest.raises(ValueError, match='local files only'):
        runner.load_checkpoint('https://example.com/x.pth')


# ------------------------------------------------------------ fit checks
CLASSES = [
    'red circle', 'green square', 'blue triangle', 'yellow star',
    'purple diamond', 'orange cross'
]


@pytest.fixture(scope='module')
def clip(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp('clip') / 'tiny.pt')


def _model_runner(tmp_path, clip, classes, **cfg):
    return MMCoopRunner(
        model=model_cfg(clip, classes),
        work_dir=str(tmp_path / 'work'),
        default_scope='mmcoop',
        cfg=dict(cfg),
        experiment_name=f'fit_{len(os.listdir(tmp_path))}_{id(cfg)}')


def _save(runner, path, classes):
    torch.save(
        dict(
            state_dict=runner.model.state_dict(),
            meta=dict(dataset_meta=dict(classes=list(classes)))), path)
    return str(path)


def test_head_shape_mismatch_names_keys_and_shapes(tmp_path, clip):
    src = _model_runner(tmp_path, clip, CLASSES)
    ckpt = _save(src, tmp_path / 'six.pth', CLASSES)
    dst = _model_runner(tmp_path, clip, CLASSES[:4])
    before = {k: v.clone() for k, v in dst.model.state_dict().items()}
    with pytest.raises(CheckpointMismatchError) as err:
        dst.load_checkpoint(ckpt)
    msg = str(err.value)
    assert 'six.pth' in msg
    assert 'head.neg_embedding: checkpoint [6, 64] vs model [4, 64]' in msg
    assert '6 classes, the model head has 4' in msg
    assert "only in the checkpoint: ['purple diamond', 'orange cross']" in msg
    assert 'checkpoint_check' in msg
    # nothing was loaded
    for k, v in dst.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    # opting out falls back to MMEngine's behaviour: the tensors that do
    # not fit are skipped with a warning (here all are class-specific)
    relaxed = _model_runner(
        tmp_path,
        clip,
        CLASSES[:4],
        checkpoint_check=dict(shapes=False, classes=False))
    kept = relaxed.model.head.neg_embedding.detach().clone()
    relaxed.load_checkpoint(ckpt)
    assert torch.equal(relaxed.model.head.neg_embedding, kept)


def test_shape_mismatch_with_the_same_classes_says_nothing_of_classes(
        tmp_path, clip):
    """The class sentence is only for class lists that differ (it read
    '6 vs 6 classes; same names in another order ()')."""
    src = _model_runner(tmp_path, clip, CLASSES)
    path = tmp_path / 'wide.pth'
    state = dict(src.model.state_dict())
    state['head.neg_embedding'] = torch.zeros(len(CLASSES), 65)
    torch.save(dict(state_dict=state, meta=dict(dataset_meta=dict(
        classes=list(CLASSES)))), path)
    dst = _model_runner(tmp_path, clip, CLASSES)
    with pytest.raises(CheckpointMismatchError) as err:
        dst.load_checkpoint(str(path))
    msg = str(err.value)
    assert 'head.neg_embedding: checkpoint [6, 65] vs model [6, 64]' in msg
    assert 'classes, the model head has' not in msg
    assert 'another order' not in msg


def test_class_list_mismatch_names_both_lists(tmp_path, clip):
    src = _model_runner(tmp_path, clip, CLASSES)
    ckpt = _save(src, tmp_path / 'a.pth', CLASSES)
    renamed = CLASSES[:5] + ['brown trapezoid']
    dst = _model_runner(tmp_path, clip, renamed)
    with pytest.raises(CheckpointMismatchError) as err:
        dst.load_checkpoint(ckpt)
    msg = str(err.value)
    assert "only in the checkpoint: ['orange cross']" in msg
    assert "only in the config: ['brown trapezoid']" in msg
    assert 'model.head.classnames' in msg and 'a.pth' in msg
    # same names, other order: the prompts would be swapped
    swapped = [CLASSES[1], CLASSES[0]] + CLASSES[2:]
    dst = _model_runner(tmp_path, clip, swapped)
    with pytest.raises(
            CheckpointMismatchError,
            match="another order.*#0: 'red circle' vs "
            "'green square'"):
        dst.load_checkpoint(ckpt)
    # spelling variants of the same names are fine
    dst = _model_runner(tmp_path, clip, [c.upper() for c in CLASSES])
    dst.load_checkpoint(ckpt)
    # and the check can be turned off on purpose
    dst = _model_runner(
        tmp_path, clip, swapped, checkpoint_check=dict(classes=False))
    dst.load_checkpoint(ckpt)


def test_checkpoint_of_another_model_is_refused(tmp_path, clip):
    dst = _model_runner(tmp_path, clip, CLASSES)
    other = tmp_path / 'other.pth'
    torch.save({'state_dict': {'fc.weight': torch.zeros(2, 2)}}, other)
    with pytest.raises(CheckpointMismatchError, match='shares no parameter'):
        dst.load_checkpoint(str(other))


def test_checkpoint_without_class_meta_loads(tmp_path, clip):
    src = _model_runner(tmp_path, clip, CLASSES)
    path = tmp_path / 'plain.pth'
    torch.save({'state_dict': src.model.state_dict()}, path)
    dst = _model_runner(tmp_path, clip, CLASSES)
    dst.load_checkpoint(str(path))
    assert torch.equal(dst.model.head.neg_embedding,
                       src.model.head.neg_embedding)


def test_resume_removes_the_partial_file_of_a_killed_save(
        three_epochs, tmp_path):
    """A save killed mid-write leaves its temporary file (never renamed to
    the checkpoint), which can be as large as a checkpoint. The next run in
    the work dir (which holds the lock, so no other run writes there)
    removes it, says so, and keeps every other file."""
    import subprocess
    import sys
    ref, expected = three_epochs
    work = _continue_from(ref, 2, tmp_path, 'killed')
    # a real kill: the process dies inside atomic_open, after writing
    kill = ('import os, sys; from mmcoop.utils.checkpoint import atomic_open\n'
            'with atomic_open(sys.argv[1]) as f:\n'
            '    f.write(b"half a checkpoint"); f.flush(); os._exit(9)\n')
    proc = subprocess.run(
        [sys.executable, '-c', kill, str(work / 'epoch_3.pth')])
    assert proc.returncode == 9
    partial = [n for n in os.listdir(work) if '.tmp-' in n]
    assert len(partial) == 1 and partial[0].startswith('.epoch_3.pth.tmp-')
    mine = ['.notes.tmp-12', 'epoch_9.pth.tmp-1', '.x.json.tmp-5']
    for name in mine:
        (work / name).write_text('mine')
    runner = _resume(work, expected, from_epoch=2)
    left = sorted(n for n in os.listdir(work) if 'tmp' in n)
    assert left == sorted(mine)
    assert (f"Removed 1 partial checkpoint file(s) that a killed save left "
            f"in {work}: {partial}") in log_text(runner)

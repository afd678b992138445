# Copyright (c) mmcoop contributors. All rights reserved.
import errno
import os
import os.path as osp
import pickle

import pytest
import torch
from _common import WritesFile
from mmengine.logging import HistoryBuffer

from mmcoop.utils import (CheckpointReadError, UnsafeCheckpointError,
                          atomic_torch_save, safe_torch_load)


def test_safe_load_refuses_malicious_pickle(tmp_path):
    marker = tmp_path / 'pwned.txt'
    ckpt = tmp_path / 'evil.pth'
    with open(ckpt, 'wb') as f:
        pickle.dump({'state_dict': {}, 'x': WritesFile(str(marker))}, f)
    with pytest.raises(UnsafeCheckpointError) as err:
        safe_torch_load(str(ckpt))
    assert not marker.exists()
    msg = str(err.value)
    assert 'evil.pth' in msg and 'weights_only=True' in msg
    assert 'publish_model.py' in msg


def test_refusal_names_the_pickled_objects(tmp_path):
    marker = tmp_path / 'pwned.txt'
    zipped = tmp_path / 'zipped.pth'
    torch.save({'state_dict': {}, 'x': WritesFile(str(marker))}, zipped)
    legacy = tmp_path / 'legacy.pth'
    torch.save({'x': WritesFile(str(marker))},
               legacy,
               _use_new_zipfile_serialization=False)
    for path in (zipped, legacy):
        with pytest.raises(UnsafeCheckpointError, match=r'\(io\.open\)'):
            safe_torch_load(str(path), runtime_state=True)
    assert not marker.exists()


def test_safe_load_tensors_and_plain_meta(tmp_path):
    ckpt = tmp_path / 'ok.pth'
    torch.save({'state_dict': {'w': torch.ones(2)}, 'meta': {'epoch': 3}},
               ckpt)
    out = safe_torch_load(str(ckpt))
    assert out['meta']['epoch'] == 3
    assert torch.equal(out['state_dict']['w'], torch.ones(2))


def test_safe_load_refuses_mmengine_runtime_state(tmp_path):
    # What mmengine 0.10.x resume checkpoints contain: refused as plain
    # weights, read through the stand-ins with runtime_state=True.
    ckpt = tmp_path / 'resume.pth'
    torch.save({'message_hub': {
        'log': HistoryBuffer([1.0, 2.0], [1, 1])
    }}, ckpt)
    with pytest.raises(UnsafeCheckpointError,
                       match='mmengine.logging.history_buffer.HistoryBuffer'):
        safe_torch_load(str(ckpt))
    before = set(torch.serialization.get_safe_globals())
    out = safe_torch_load(str(ckpt), runtime_state=True)
    assert type(out['message_hub']['log']) is HistoryBuffer
    assert out['message_hub']['log'].mean() == pytest.approx(1.5)
    # the stand-ins were allow-listed for that call only
    assert set(torch.serialization.get_safe_globals()) == before
    with pytest.raises(pickle.UnpicklingError):
        torch.load(ckpt, weights_only=True)


def test_empty_and_truncated_files(tmp_path):
    empty = tmp_path / 'empty.pth'
    empty.write_bytes(b'')
    with pytest.raises(RuntimeError, match='empty'):
        safe_torch_load(str(empty))
    good = tmp_path / 'good.pth'
    torch.save({'w': torch.randn(1000)}, good)
    cut = tmp_path / 'cut.pth'
    cut.write_bytes(good.read_bytes()[:500])
    with pytest.raises(RuntimeError, match='truncated'):
        safe_torch_load(str(cut))
    with pytest.raises(CheckpointReadError, match='previous checkpoint'):
        safe_torch_load(str(cut), runtime_state=True)
    with pytest.raises(CheckpointReadError, match='not a PyTorch'):
        safe_torch_load(str(_write(tmp_path / 'zeros.pth', b'\0' * 100)))
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        safe_torch_load(str(tmp_path / 'missing.pth'))
    with pytest.raises(IsADirectoryError, match='is a folder'):
        safe_torch_load(str(tmp_path))


def _write(path, data):
    path.write_bytes(data)
    return path


def test_atomic_save_never_leaves_partial_file(tmp_path, monkeypatch):
    path = tmp_path / 'ckpt.pth'
    atomic_torch_save({'v': torch.zeros(1)}, str(path))
    assert torch.load(path, weights_only=True)['v'].item() == 0

    def boom(obj, f, *args, **kwargs):
        f.write(b'partial')
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, 'save', boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({'v': torch.ones(1)}, str(path))
    monkeypatch.undo()
    # the old file is intact and no temporary file is left behind
    assert torch.load(path, weights_only=True)['v'].item() == 0
    assert sorted(os.listdir(tmp_path)) == ['ckpt.pth']
    assert not osp.exists(str(path) + '.tmp')


class _DiskFull:
    """A file whose writes fail with ``errno`` once ``room`` bytes are
    written (what a full disk does)."""

    def __new__(cls, path, mode='r', *args, **kwargs):
        if 'w' not in mode:  # reading is unaffected
            return open(path, mode)
        return super().__new__(cls)

    def __init__(self, path, mode='r', room=64, code=errno.ENOSPC):
        self.f = open(path, mode)
        self.room, self.code = room, code

    def write(self, data):
        if self.room < len(data):
            raise OSError(self.code, os.strerror(self.code))
        self.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_disk_full_while_saving_names_the_disk_and_the_last_good(
        tmp_path, monkeypatch):
    from mmcoop.utils import checkpoint as ckpt_module
    work = tmp_path / 'work'
    work.mkdir()
    atomic_torch_save({'v': torch.zeros(1)}, str(work / 'epoch_1.pth'))
    atomic_torch_save({'v': torch.ones(1)}, str(work / 'epoch_2.pth'))
    (work / 'last_checkpoint').write_text(str(work / 'epoch_2.pth'))
    monkeypatch.setattr(ckpt_module, 'open', _DiskFull, raising=False)
    for name in ('epoch_3.pth', 'epoch_2.pth'):  # new file / overwrite
        with pytest.raises(OSError) as err:
            atomic_torch_save({'v': torch.randn(10000)}, str(work / name))
        assert err.value.errno == errno.ENOSPC
        msg = str(err.value)
        assert 'No space left on ' in msg and f'(folder {work})' in msg
        assert 'Nothing was lost' in msg
        assert f'the last good checkpoint is {work / "epoch_2.pth"}' in msg
    assert 'the previous epoch_2.pth is intact' in msg
    monkeypatch.undo()
    # the previous files are intact and no partial file is left behind
    assert torch.load(work / 'epoch_2.pth', weights_only=True)['v'] == 1
    assert sorted(os.listdir(work)) == [
        'epoch_1.pth', 'epoch_2.pth', 'last_checkpoint'
    ]
    # without a pointer: the newest checkpoint of the folder; or as given
    os.remove(work / 'last_checkpoint')
    monkeypatch.setattr(ckpt_module, 'open', _DiskFull, raising=False)
    with pytest.raises(OSError, match='last good checkpoint is .*epoch_2'):
        atomic_torch_save({'v': torch.randn(10000)}, str(work / 'x.pth'))
    with pytest.raises(OSError, match='last good checkpoint is elsewhere'):
        atomic_torch_save({'v': torch.randn(10000)},
                          str(work / 'x.pth'),
                          last_good='elsewhere')


def test_other_write_errors_keep_their_errno(tmp_path, monkeypatch):
    from mmcoop.utils import checkpoint as ckpt_module
    monkeypatch.setattr(ckpt_module, 'open',
                        lambda p, m: _DiskFull(p, m, code=errno.EIO),
                        raising=False)
    with pytest.raises(OSError) as err:
        atomic_torch_save({'v': torch.randn(10000)}, str(tmp_path / 'a.pth'))
    assert err.value.errno == errno.EIO
    assert os.listdir(tmp_path) == []


def test_disk_full_during_a_training_save(tmp_path, monkeypatch, toy_runner):
    """MMEngine's saving (AtomicLocalBackend) reports a full disk the same
    way; the run's previous checkpoint and pointer stay as they were."""
    from mmcoop.utils import checkpoint as ckpt_module
    work = tmp_path / 'work'
    runner = toy_runner(work, 1)
    runner.train()
    before = {p: (work / p).read_bytes() for p in os.listdir(work)
              if p.endswith('.pth') or p == 'last_checkpoint'}
    assert set(before) == {'epoch_1.pth', 'last_checkpoint'}
    monkeypatch.setattr(ckpt_module, 'open', _DiskFull, raising=False)
    with pytest.raises(OSError) as err:
        runner.save_checkpoint(str(work), 'epoch_2.pth')
    monkeypatch.undo()
    assert err.value.errno == errno.ENOSPC
    assert 'Nothing was lost' in str(err.value)
    assert f'last good checkpoint is {work / "epoch_1.pth"}' in str(
        err.value)
    after = {p: (work / p).read_bytes() for p in os.listdir(work)
             if p.endswith('.pth') or p == 'last_checkpoint'}
    assert after == before
    assert not [p for p in os.listdir(work) if '.tmp-' in p]


def test_a_write_removes_the_temps_dead_writers_left(tmp_path):
    """A writer killed mid-write (SIGKILL, or SIGTERM without a handler)
    cannot remove its temp file, as large as the output: the next complete
    write of that file does, keeping a running writer's and other files'."""
    import subprocess
    import sys

    from mmcoop.utils.checkpoint import atomic_open
    dead = subprocess.run(
        [sys.executable, '-c', 'import os; print(os.getpid())'],
        capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f'.m.onnx.tmp-{dead}'
    stale.write_bytes(b'x' * 1000)
    running = tmp_path / f'.m.onnx.tmp-{os.getppid()}'
    running.write_bytes(b'y')
    other = tmp_path / f'.n.onnx.tmp-{dead}'
    other.write_bytes(b'z')
    with atomic_open(str(tmp_path / 'm.onnx')) as f:
        f.write(b'model')
    assert (tmp_path / 'm.onnx').read_bytes() == b'model'
    assert not stale.exists()
    assert running.exists() and other.exists()

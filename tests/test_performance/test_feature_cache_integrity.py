# Copyright (c) mmcoop contributors. All rights reserved.
"""A feature cache is reused only while it still describes the data:
edited images, altered shards and concurrent builders (issue #12, class 1).
"""
import os
import os.path as osp
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from _perf_helpers import NUM_IMAGES, build_backbone, make_dataset
from PIL import Image

from mmcoop.datasets.feature_cache import (MANIFEST, CachedFeatureDataset,
                                           FeatureCacheError,
                                           FeatureCacheMismatchError)
from mmcoop.datasets.feature_cache.lock import BuildLock


def _cache(root, cache_dir, **kwargs):
    kwargs.setdefault('batch_size', 3)
    kwargs.setdefault('progress', False)
    kwargs.setdefault('dtype', 'float32')
    return CachedFeatureDataset(
        make_dataset(root), build_backbone(), str(cache_dir), **kwargs)


@pytest.fixture
def images(image_root, tmp_path):
    """A private copy of the images (the tests edit them)."""
    root = tmp_path / 'images'
    shutil.copytree(image_root, root)
    return str(root)


def _flip_byte_keep_time(path):
    """Change one byte of the JPEG data, keeping size and mtime."""
    st = os.stat(path)
    with open(path, 'r+b') as f:
        f.seek(st.st_size // 2)
        b = f.read(1)
        f.seek(st.st_size // 2)
        f.write(bytes([b[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_edited_or_replaced_images_are_detected(images, tmp_path):
    cache_dir = tmp_path / 'c'
    before = _cache(images, cache_dir).read(2)
    # replaced in place (another picture, another size)
    arr = (np.random.default_rng(9).random((30, 30, 3)) * 255).astype('uint8')
    Image.fromarray(arr).save(osp.join(images, 'img2.jpg'))
    with pytest.raises(FeatureCacheMismatchError) as e:
        _cache(images, cache_dir, on_mismatch='error')
    msg = str(e.value)
    assert 'no longer describes the images' in msg
    assert 'img2.jpg (size' in msg and 'img1.jpg' not in msg
    rebuilt = _cache(images, cache_dir)  # default: rebuilt
    assert not torch.equal(rebuilt.read(2), before)
    # same size, same time, other bytes: only verify='full' sees it
    _flip_byte_keep_time(osp.join(images, 'img4.jpg'))
    _cache(images, cache_dir, on_mismatch='error')  # 'fast': reused
    with pytest.raises(
            FeatureCacheMismatchError, match=r"img4.jpg \(content changed\)"):
        _cache(images, cache_dir, on_mismatch='error', verify='full')
    # a new time with the same content (a copy, `touch`) is not a change
    _cache(images, cache_dir, verify='full')
    os.utime(osp.join(images, 'img0.jpg'))
    _cache(images, cache_dir, on_mismatch='error')


def test_missing_image_is_named_with_the_fix(images, tmp_path):
    """An image of the annotations that is missing (or a folder) when the
    cache is built is named with the fix, as the loaders name it (before:
    a bare FileNotFoundError / IsADirectoryError of os.stat / open), and
    no partial cache is left."""
    os.remove(osp.join(images, 'img3.jpg'))
    with pytest.raises(OSError, match=(
            r"Cannot read image file '.*img3\.jpg' \(FileNotFoundError: .*"
            r'Fix: check data_root / data_prefix')):
        _cache(images, tmp_path / 'c')
    os.mkdir(osp.join(images, 'img3.jpg'))
    with pytest.raises(OSError, match=(
            r"Cannot read image file '.*img3\.jpg' \(IsADirectoryError")):
        _cache(images, tmp_path / 'c')
    assert os.listdir(tmp_path) == ['images']


def _shard(cache_dir):
    return osp.join(cache_dir, 'v0_s00000.npy')


def test_altered_shards_are_detected(image_root, tmp_path):
    cache_dir = tmp_path / 'c'
    good = _cache(image_root, cache_dir).read(1)
    # NaN written into a shard, its time restored: the fast check passes,
    # but the values are never served; verify='full' refuses the cache
    st = os.stat(_shard(cache_dir))
    arr = np.load(_shard(cache_dir), mmap_mode='r+')
    arr[1, 0, 0] = np.nan
    arr.flush()
    del arr
    os.utime(_shard(cache_dir), ns=(st.st_atime_ns, st.st_mtime_ns))
    cache = _cache(image_root, cache_dir, on_mismatch='error')
    cache.read(0)
    with pytest.raises(FeatureCacheError, match=r'sample 1 of view 0 .*NaN'):
        cache[1]
    with pytest.raises(
            FeatureCacheMismatchError,
            match=r'is damaged: shard v0_s00000.npy is not what '
            'was written'):
        _cache(image_root, cache_dir, on_mismatch='error', verify='full')
    # finite but different values (the time changes): the checksum differs
    arr = np.load(_shard(cache_dir), mmap_mode='r+')
    arr[1, 0, 0] = 7.0
    arr.flush()
    del arr
    with pytest.raises(FeatureCacheMismatchError, match='SHA-256 differs'):
        _cache(image_root, cache_dir, on_mismatch='error')
    rebuilt = _cache(image_root, cache_dir)
    assert torch.equal(rebuilt.read(1), good)
    # a shard that was only touched (same bytes) is accepted
    os.utime(_shard(cache_dir))
    _cache(image_root, cache_dir, on_mismatch='error')


@pytest.mark.parametrize('edit, why', [
    # the image check compares the recorded images one by one: an empty
    # list checked none, and the old features were served for a new image
    (dict(images=[]), r"field 'images' records 0 images for its"),
    (dict(num_views=0), r'num_views=0 must each be at least 1'),
])
def test_a_hand_edited_manifest_is_damage(image_root, tmp_path, edit, why):
    import json

    from mmcoop.datasets.feature_cache import MANIFEST
    cache_dir = tmp_path / 'c'
    good = _cache(image_root, cache_dir).read(1)
    path = cache_dir / MANIFEST
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps(dict(manifest, **edit)))
    with pytest.raises(FeatureCacheMismatchError, match=why):
        _cache(image_root, cache_dir, on_mismatch='error')
    assert torch.equal(_cache(image_root, cache_dir).read(1), good)


BUILD_SCRIPT = textwrap.dedent('''
    import sys, time
    sys.path.insert(0, {helpers!r})
    import torch
    torch.backends.mkldnn.enabled = False
    from _perf_helpers import make_dataset, build_backbone
    from mmcoop.datasets.feature_cache import CachedFeatureDataset
    backbone = build_backbone()
    forward = backbone.forward
    def slow_forward(x):  # a build long enough for the other to wait
        time.sleep(0.7)
        return forward(x)
    backbone.forward = slow_forward
    cache = CachedFeatureDataset(make_dataset({root!r}), backbone, {cache!r},
                                 batch_size=2, dtype='float32',
                                 progress=False)
    torch.save(torch.stack([cache.read(i) for i in range(len(cache))]),
               sys.argv[1])
''')


def test_two_processes_build_one_cache(image_root, tmp_path):
    """Two processes need the same cache at once: one builds, the other
    waits for the lock and reuses the finished cache."""
    cache_dir = tmp_path / 'root' / 'c'
    script = BUILD_SCRIPT.format(
        helpers=osp.dirname(__file__), root=image_root, cache=str(cache_dir))
    procs = [
        subprocess.Popen(
            [sys.executable, '-c', script,
             str(tmp_path / f'feats{k}.pt')],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True) for k in range(2)
    ]
    logs = [p.communicate(timeout=240)[0] for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    builders = [log for log in logs if 'extracting' in log]
    waiters = [log for log in logs if 'is building it; waiting' in log]
    assert len(builders) == 1 and len(waiters) == 1, logs
    assert 'reusing' in waiters[0] and 'extracting' not in waiters[0]
    assert f'pid {procs[logs.index(builders[0])].pid} on host' in waiters[0]
    # one complete cache, no lock or partial directory left
    assert os.listdir(tmp_path / 'root') == ['c']
    assert osp.exists(cache_dir / MANIFEST)
    feats = [torch.load(tmp_path / f'feats{k}.pt') for k in range(2)]
    assert feats[0].shape[0] == NUM_IMAGES and torch.equal(*feats)


def test_waiting_for_a_builder_times_out_with_a_message(image_root, tmp_path):
    cache_dir = tmp_path / 'c'
    with BuildLock(str(cache_dir)):
        with pytest.raises(FeatureCacheError) as e:
            _cache(image_root, cache_dir, lock_timeout=0.5)
    msg = str(e.value)
    assert f'pid {os.getpid()} on host' in msg and 'lock_timeout' in msg
    assert not cache_dir.exists()
    _cache(image_root, cache_dir)  # the lock was released


def test_other_ranks_wait_for_rank0_outside_a_collective(
        image_root, tmp_path, monkeypatch):
    """With N processes, ranks > 0 wait for rank 0's ready marker (up to
    ``lock_timeout``, polling) and enter the barrier only then: inside a
    barrier the wait would end at the process group's timeout (NCCL: 10
    min), shorter than an extraction of COCO with several views. They
    used to stop waiting as soon as their own 'fast' check passed, while
    rank 0, with verify='full', was still hashing or rebuilding the cache
    (a damaged shard of unchanged size and time): they entered the
    barrier, which timed out."""
    import threading

    import mmcoop.datasets.feature_cache.dataset as module
    from mmcoop.datasets.feature_cache.store import ready_marker
    cache_dir = tmp_path / 'c'
    _cache(image_root, cache_dir)  # a cache the 'fast' check accepts
    marker = ready_marker(str(cache_dir), 'host-1-2')
    calls = []
    monkeypatch.setattr(module, 'get_dist_info', lambda: (1, 2))
    monkeypatch.setattr(module, 'barrier',
                        lambda: calls.append(osp.isfile(marker)))

    def broadcast(objects):  # rank 0's token
        objects[0] = 'host-1-2'

    monkeypatch.setattr(module, 'broadcast_object_list', broadcast)

    def never(*args, **kwargs):
        raise AssertionError('a rank > 0 built the cache')

    monkeypatch.setattr(CachedFeatureDataset, '_ensure', never)
    with pytest.raises(FeatureCacheError,
                       match=r'Timed out after 0\.3 s waiting for rank 0 '
                       r'.*feature_cache\.lock_timeout'):
        _cache(image_root, cache_dir, lock_timeout=0.3)
    assert calls == []  # it never waited in the collective
    timer = threading.Timer(0.5, module._write_marker, (marker, ''))
    timer.start()
    try:
        ds = _cache(image_root, cache_dir, lock_timeout=60)
    finally:
        timer.join()
    assert calls == [True]  # the barrier came after rank 0's marker
    assert len(ds) == NUM_IMAGES and ds.manifest is not None
    # rank 0 failed: the others stop with its reason, not at a timeout
    module._write_marker(marker, 'FeatureCacheError: disk full')
    with pytest.raises(FeatureCacheError, match='Rank 0 could not check or '
                       'build the feature cache .*: FeatureCacheError: '
                       'disk full'):
        _cache(image_root, cache_dir, lock_timeout=60)


def test_leftovers_of_dead_processes_only_of_this_host(
        tmp_path, monkeypatch):
    """Partial builds and ready markers of this host's dead processes are
    removed; a host whose name extends this one's ('gpu-7' beside 'gpu',
    on a shared cache_root) keeps its build, even where its pid is not
    alive here."""
    import mmcoop.datasets.feature_cache.store as store
    monkeypatch.setattr(store.socket, 'gethostname', lambda: 'gpu')
    monkeypatch.setattr(store, 'pid_alive', lambda pid: False)
    for name in ('c.partial-gpu-7-4242', 'c.partial-gpu-17',
                 'd.partial-gpu-18'):
        (tmp_path / name).mkdir()
    for name in ('c.ready-gpu-19-123', 'c.ready-gpu-7-4242-5', 'c.lock'):
        (tmp_path / name).write_text('')
    store.remove_leftovers(str(tmp_path / 'c'))
    assert sorted(os.listdir(tmp_path)) == [
        'c.lock', 'c.partial-gpu-7-4242', 'c.ready-gpu-7-4242-5']


def test_rank0_marks_the_cache_ready_and_removes_the_mark(
        image_root, tmp_path, monkeypatch):
    import mmcoop.datasets.feature_cache.dataset as module
    from mmcoop.datasets.feature_cache.store import ready_marker
    cache_dir = tmp_path / 'c'
    marker = ready_marker(str(cache_dir), 'host-1-2')
    seen = []
    monkeypatch.setattr(module, 'get_dist_info', lambda: (0, 2))
    monkeypatch.setattr(
        module, 'barrier',
        lambda: seen.append(open(marker).read() if osp.isfile(marker)
                            else None))
    monkeypatch.setattr(module, 'broadcast_object_list',
                        lambda objects: objects.__setitem__(0, 'host-1-2'))
    _cache(image_root, cache_dir)
    assert seen == ['']  # ready before the barrier, removed after it
    assert not osp.exists(marker)
    assert os.listdir(tmp_path) == ['c']


def test_a_cache_replaced_while_read_is_named(images, tmp_path):
    """Another run sharing the cache folder rebuilt it for another tower
    while this one trained: its loader workers, reopening the shards each
    epoch, silently read the other tower's features (its validation mAP
    followed the other run). The build each dataset checked is now
    compared when the shards are reopened."""
    cache_dir = tmp_path / 'c'
    reader = _cache(images, cache_dir)
    first = reader.read(1)
    # another run rebuilds the folder (here: a new manifest in its place)
    manifest = cache_dir / MANIFEST
    text = manifest.read_text()
    manifest.unlink()
    manifest.write_text(text + ' ')
    reader._arrays = None  # as a new loader worker has it
    with pytest.raises(FeatureCacheError, match='was replaced while this run '
                       'read it.*their own feature_cache.cache_root'):
        reader.read(1)
    again = _cache(images, cache_dir)  # a new run checks the new build
    torch.testing.assert_close(again.read(1), first)


def test_a_cached_runs_image_tower_is_recorded_and_compared(images,
                                                            tmp_path):
    """A cached run's model has no image tower: its checkpoints recorded
    none, so testing or resuming them with another CLIP was accepted (an
    uncached run's was refused). The runner's towers now include the one
    its feature cache holds, from the module or from its config."""
    from types import SimpleNamespace

    import torch.nn as nn

    from mmcoop.engine.checkpoint_fit import check_checkpoint_fits
    from mmcoop.engine.runner import MMCoopRunner
    from mmcoop.utils import CheckpointMismatchError
    built = _cache(images, tmp_path / 'c')
    assert built.clip_identity == build_backbone().clip_identity
    from_cfg = CachedFeatureDataset(
        make_dataset(images), dict(type='mmcoop.FrozenCLIP',
                                   model_name='mmcoop-tiny-RN', init_seed=3),
        str(tmp_path / 'd'), lazy_init=True)
    assert from_cfg.clip_identity['init_seed'] == 3
    model = nn.Linear(2, 2)  # a head-only model (no tower of its own)
    runner = SimpleNamespace(model=model, bare_model=model,
                             _loaded_datasets=lambda: [('test', built)])
    towers = MMCoopRunner.clip_towers(runner)
    assert towers == {'backbone': built.clip_identity}
    other = dict(towers['backbone'], init_seed=7)
    checkpoint = dict(state_dict=model.state_dict(),
                      meta=dict(clip_towers={'backbone': other}))
    with pytest.raises(CheckpointMismatchError,
                       match='trained with another CLIP as `backbone`'):
        check_checkpoint_fits(model, checkpoint, 'epoch_2.pth',
                              checks=dict(classes=False), towers=towers)
    checkpoint['meta']['clip_towers'] = towers
    check_checkpoint_fits(model, checkpoint, 'epoch_2.pth',
                          checks=dict(classes=False), towers=towers)


def test_a_full_disk_is_named_and_leftovers_of_other_builds_removed(
        images, tmp_path, monkeypatch):
    """A full disk while writing the memory-mapped shards killed the run
    with a bus error (no Python message), and the dead build's folder of
    another cache name (another dtype, the documented retry) was never
    removed, so the retry ran out of disk too. The shards' space is now
    reserved when they are created (an OSError naming folder and sizes),
    and dead builds of any cache name in the folder are removed."""
    import errno
    import socket
    import subprocess
    import sys
    cache_root = tmp_path / 'caches'
    cache_root.mkdir()
    dead = subprocess.run([sys.executable, '-c', 'import os; print('
                           'os.getpid())'], capture_output=True,
                          text=True).stdout.strip()
    leftover = cache_root / f'other_float16.partial-{socket.gethostname()}' \
        f'-{dead}'
    leftover.mkdir()
    (leftover / 'v0_s00000.npy').write_bytes(b'x' * 100)

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(os, 'posix_fallocate', full, raising=False)
    with pytest.raises(OSError) as err:
        _cache(images, cache_root / 'c')
    assert err.value.errno == errno.ENOSPC
    msg = str(err.value)
    assert f'no space left on the disk of {cache_root}' in msg
    assert 'MiB free' in msg and "dtype='int8'" in msg
    assert sorted(os.listdir(cache_root)) == [
        n for n in os.listdir(cache_root) if n.endswith('.lock')]
    monkeypatch.undo()
    _cache(images, cache_root / 'c')  # space again: built


def test_a_read_only_cache_root_is_named_where_a_build_is_needed(
        images, tmp_path, monkeypatch):
    """A cache root on read-only storage (or without permission), where
    the cache must be built, is named with the option and the fix, for
    the root or a folder above it that is still to be made; a valid cache
    there is read. Before: a bare ``OSError: [Errno 30] Read-only file
    system: '<root>/<name>.lock'`` from the build lock."""
    import errno
    cache_root = tmp_path / 'ro'
    cache_root.mkdir()
    _cache(images, cache_root / 'built')

    def refusing(fn):
        def call(path, *args, **kwargs):
            if str(path).startswith(str(cache_root)):
                raise OSError(errno.EROFS, 'Read-only file system', path)
            return fn(path, *args, **kwargs)
        return call

    monkeypatch.setattr(os, 'open', refusing(os.open))
    monkeypatch.setattr(os, 'mkdir', refusing(os.mkdir))
    for cache_dir, folder in ((cache_root / 'c', cache_root),
                              (cache_root / 'a' / 'b' / 'c',
                               cache_root / 'a' / 'b')):
        with pytest.raises(FeatureCacheError, match=(
                rf"^Feature cache {cache_dir} has to be built \(missing: .*"
                rf"\), but feature_cache\.cache_root '{folder}' is on "
                r'read-only storage \(Read-only file system: .*\)\. Nothing '
                r'was written there\. Fix: point feature_cache\.cache_root '
                r'to a writable folder')):
            _cache(images, cache_dir)
    assert len(_cache(images, cache_root / 'built')) == NUM_IMAGES


def test_a_disk_full_at_the_manifest_is_named_and_cleaned(
        images, tmp_path, monkeypatch):
    """Room for the shards (reserved) but not for the manifest: the error
    names the manifest and the fix, and the partial build is removed.
    Before: a bare ``OSError: [Errno 28] No space left on device``."""
    import errno

    from mmcoop.datasets.feature_cache import store
    real = os.fsync

    def full(fd):
        if 'manifest.json.tmp' in os.readlink(f'/proc/self/fd/{fd}'):
            raise OSError(errno.ENOSPC, 'No space left on device')
        return real(fd)

    cache_root = tmp_path / 'caches'
    cache_root.mkdir()
    monkeypatch.setattr(store.os, 'fsync', full)
    with pytest.raises(OSError) as err:
        _cache(images, cache_root / 'c')
    msg = str(err.value)
    assert err.value.errno == errno.ENOSPC
    assert 'manifest.json' in msg and 'No space left on' in msg
    assert 'Fix: free space' in msg
    assert [n for n in os.listdir(cache_root)
            if not n.endswith('.lock')] == []
    monkeypatch.undo()
    _cache(images, cache_root / 'c')  # space again: built

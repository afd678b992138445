# Copyright (c) mmcoop contributors. All rights reserved.
"""The on-disk cache: layout, atomic commit and validation.

Layout of a cache directory::

    <cache_dir>/
        manifest.json           written last; the cache is complete iff it
                                exists (the directory is renamed into place)
        v0_s00000.npy ...       view 0, shards of ``shard_size`` samples,
                                (n, D, N) float16/float32/int8
                                (np.lib.format)
        v0_s00000.scale.npy ... int8 only: the (n, N) float32 per-token
                                scales of that shard (:mod:`.quantize`)

The manifest holds the key (:mod:`.key`), the fingerprints of the images
(:mod:`.images`) and, per shard (and per scale file), its size,
modification time and SHA-256.
"""
import contextlib
import json
import os
import os.path as osp
import re
import shutil
import socket
import time
from typing import List, Optional, Tuple

import numpy as np
from mmengine.logging import MMLogger

from mmcoop.utils.processes import pid_alive
from .errors import FeatureCacheError
from .images import changed_images, file_sha256
from .key import diff_keys

__all__ = [
    'CACHE_FORMAT', 'CACHE_VERSION', 'MANIFEST', 'DTYPES', 'QUANTISED',
    'scale_file', 'shard_record', 'write_manifest', 'check_cache', 'commit',
    'partial_dir', 'remove_leftovers'
]

CACHE_FORMAT = 'mmcoop-feature-cache'
CACHE_VERSION = 2
MANIFEST = 'manifest.json'
#: storage dtype name -> numpy dtype of the shard files
DTYPES = {'float16': np.float16, 'float32': np.float32, 'int8': np.int8}
#: dtypes stored as codes + per-token float32 scales (:mod:`.quantize`)
QUANTISED = ('int8', )
_MAX_SHOWN = 5


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def scale_file(fname: str) -> str:
    """The scale file of the quantised shard ``fname``."""
    return fname[:-len('.npy')] + '.scale.npy'


def _file_record(folder: str, fname: str) -> dict:
    path = osp.join(folder, fname)
    st = os.stat(path)
    return dict(
        file=fname,
        bytes=st.st_size,
        mtime_ns=st.st_mtime_ns,
        sha256=file_sha256(path))


def shard_record(folder: str,
                 view: int,
                 fname: str,
                 start: int,
                 count: int,
                 quantised: bool = False) -> dict:
    """The manifest entry of a written shard (with its checksum, and the
    record of its scale file when ``quantised``)."""
    rec = dict(view=view, start=start, count=count)
    rec.update(_file_record(folder, fname))
    if quantised:
        rec['scales'] = _file_record(folder, scale_file(fname))
    return rec


def write_manifest(folder: str, manifest: dict) -> None:
    """Write ``manifest.json`` durably (:func:`~mmcoop.utils.checkpoint.
    atomic_open`: temporary file, fsync, rename; a full disk named with
    the fix), then fsync the folder."""
    from mmcoop.utils.checkpoint import atomic_open
    with atomic_open(osp.join(folder, MANIFEST), 'w') as f:
        json.dump(manifest, f, indent=1)
    _fsync_dir(folder)


def partial_dir(cache_dir: str) -> str:
    """Where this process builds ``cache_dir`` before renaming it."""
    return f'{cache_dir}.partial-{socket.gethostname()}-{os.getpid()}'


def ready_marker(cache_dir: str, token: str) -> str:
    """The file by which rank 0 of a distributed run tells the other ranks
    that it has checked (or built) ``cache_dir``; ``token`` names the run
    (:func:`run_token`)."""
    return f'{cache_dir}.ready-{token}'


def run_token() -> str:
    """A name of this process for :func:`ready_marker` (host, pid, time),
    which rank 0 broadcasts."""
    return f'{socket.gethostname()}-{os.getpid()}-{time.time_ns()}'


def commit(tmp: str, cache_dir: str) -> None:
    """Rename the finished build ``tmp`` into place (``cache_dir`` must be
    absent or an empty directory)."""
    if osp.isdir(cache_dir):
        os.rmdir(cache_dir)
    os.rename(tmp, cache_dir)
    _fsync_dir(osp.dirname(cache_dir))


def remove_leftovers(cache_dir: str) -> None:
    """Remove the partial builds (and ready markers) left in
    ``cache_dir``'s folder by dead processes of this host: of this cache,
    and of any other (a build of another dtype or view count that ran out
    of disk would keep the space its retry needs)."""
    parent = osp.dirname(cache_dir)
    host = re.escape(socket.gethostname())
    # exact names (partial_dir, ready_marker of run_token): a host name
    # with '-' must not read as this host's with another pid
    partial = re.compile(rf'^.+\.partial-{host}-(\d+)$|'
                         rf'^.+\.ready-{host}-(\d+)-\d+$')
    if not osp.isdir(parent):
        return
    for name in os.listdir(parent):
        match = partial.match(name)
        if not match:
            continue
        pid = int(match.group(1) or match.group(2))
        if pid != os.getpid() and not pid_alive(pid):
            path = osp.join(parent, name)
            MMLogger.get_current_instance().info(
                f'Removing the leftover of an interrupted feature '
                f'extraction: {path}')
            if osp.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.remove(path)


#: the files a cache writes besides the manifest (extract.py's names)
_SHARD_NAME = re.compile(r'^v\d+_s\d+(\.scale)?\.npy$')


def remove_cache(cache_dir: str) -> None:
    """Delete the cache at ``cache_dir`` (outdated or damaged) and only it:
    its manifest and shard files, the manifest last
    (:func:`mmcoop.utils.paths.remove_own_tree`), so a run killed midway
    leaves a damaged cache that the next run removes, never shards without
    a manifest that it would have to refuse as foreign. A folder holding
    anything else (a user's file) is refused with a
    :class:`FeatureCacheError` naming it, and nothing is deleted."""
    from mmcoop.utils.paths import remove_own_tree
    names = sorted(os.listdir(cache_dir))
    other = [
        n for n in names
        if n not in (MANIFEST, MANIFEST + '.tmp') and not (
            n.startswith(f'.{MANIFEST}.tmp-')) and not (
            _SHARD_NAME.match(n) and osp.isfile(osp.join(cache_dir, n)))
    ]
    if other:
        raise FeatureCacheError(
            f'Feature cache {cache_dir} must be rebuilt, but the folder '
            f'also holds files the cache did not write: {other[:8]}; '
            'nothing was deleted. Fix: move those files out of the folder '
            '(or delete the folder yourself), then run again.')
    if MANIFEST not in names:  # nothing vouches for the files: keep them
        raise FeatureCacheError(
            f'Feature cache {cache_dir} has no {MANIFEST}; nothing was '
            'deleted. Fix: delete the folder yourself, then run again.')
    remove_own_tree(cache_dir, [n for n in names if n != MANIFEST],
                    MANIFEST)


def _layout_error(manifest: dict) -> str:
    """Why a manifest that parses does not describe a whole cache (a
    required field missing or of another type, or shards that do not tile
    every view's samples), or ``''``."""
    for field, kind in (('num_samples', int), ('num_views', int),
                        ('shard_size', int), ('feature_shape', list),
                        ('dtype', str), ('shards', list), ('images', list)):
        if not isinstance(manifest.get(field), kind):
            return (f'field {field!r} is missing or not a '
                    f'{kind.__name__}')
    n, size = manifest['num_samples'], manifest['shard_size']
    views = manifest['num_views']
    if n < 1 or size < 1 or views < 1:
        return (f'num_samples={n}, shard_size={size} and num_views={views} '
                'must each be at least 1')
    if len(manifest['images']) != n:
        # the image check compares the recorded images one by one
        return (f"field 'images' records {len(manifest['images'])} images "
                f'for its {n} samples')
    beyond = sorted({rec.get('view') for rec in manifest['shards']
                     if isinstance(rec, dict)} - set(range(views)))
    if beyond:
        return (f'shards of view(s) {beyond} lie beyond its num_views='
                f'{views}')
    for view in range(views):
        starts = sorted((rec.get('start'), rec.get('count'))
                        for rec in manifest['shards']
                        if isinstance(rec, dict) and rec.get('view') == view)
        expected = [(start, min(size, n - start))
                    for start in range(0, n, size)]
        if starts != expected:
            return (f'the shards of view {view} do not cover its {n} '
                    f'samples in shards of {size}')
    return ''


def _listing(items: List[str], what: str) -> str:
    shown = '; '.join(items[:_MAX_SHOWN])
    more = (f' (+{len(items) - _MAX_SHOWN} more)'
            if len(items) > _MAX_SHOWN else '')
    return f'{len(items)} {what}: {shown}{more}'


def _check_file(cache_dir: str, rec: dict, expected: tuple, dtype,
                verify: str) -> Optional[str]:
    """Why the file of ``rec`` (a shard or scale file) cannot be used, or
    None."""
    fname = rec['file']
    path = osp.join(cache_dir, fname)
    try:
        st = os.stat(path)
        arr = np.load(path, mmap_mode='r')
    except (OSError, ValueError, EOFError) as e:  # EOFError: an empty file
        return f'shard {fname}: {type(e).__name__}: {e}'
    if arr.shape != expected or arr.dtype != dtype:
        return (f'shard {fname} has shape {arr.shape} {arr.dtype}, expected '
                f'{expected} {np.dtype(dtype)}')
    unchanged = (st.st_size, st.st_mtime_ns) == (rec['bytes'], rec['mtime_ns'])
    if verify == 'full' or not unchanged:
        if st.st_size != rec['bytes'] or file_sha256(path) != rec['sha256']:
            return (f'shard {fname} is not what was written (its SHA-256 '
                    'differs from the manifest)')
    if verify == 'full' and np.issubdtype(arr.dtype, np.floating):
        rows = max(1, (1 << 26) // max(1, arr[0].nbytes if len(arr) else 1))
        for start in range(0, len(arr), rows):
            if not np.isfinite(arr[start:start + rows]).all():
                return f'shard {fname} holds NaN or Inf values'
    return None


def _check_shard(cache_dir: str, rec: dict, shape: tuple, dtype: str,
                 verify: str) -> Optional[str]:
    """Why the shard of ``rec`` (and its scales) cannot be used, or None."""
    why = _check_file(cache_dir, rec, (rec['count'], ) + shape,
                      np.dtype(DTYPES[dtype]), verify)
    if why or dtype not in QUANTISED:
        return why
    if 'scales' not in rec:
        return f'shard {rec["file"]} has no scale file in the manifest'
    return _check_file(cache_dir, rec['scales'], (rec['count'], shape[-1]),
                       np.dtype(np.float32), verify)


def check_cache(cache_dir: str, key: dict, paths: List[str],
                verify: str) -> Tuple[str, str, Optional[dict]]:
    """Check the cache at ``cache_dir`` against ``key`` and the images
    ``paths``.

    Returns ``(status, why, manifest)`` with ``status`` one of ``'ok'``,
    ``'missing'``, ``'mismatch'`` (another key), ``'stale'`` (images changed
    since the build), ``'damaged'`` (a shard is missing, truncated, altered
    or not finite) or ``'foreign'`` (not an mmcoop cache: never deleted).
    """
    path = osp.join(cache_dir, MANIFEST)
    if not osp.exists(cache_dir):
        return 'missing', 'no cache directory', None
    if not osp.isdir(cache_dir):
        return 'foreign', (f'cache_dir {cache_dir!r} exists and is not a '
                           'directory. Fix: choose another path.'), None
    if not osp.exists(path):
        if not os.listdir(cache_dir):
            return 'missing', 'empty directory', None
        return 'foreign', (
            f'cache_dir {cache_dir!r} exists, is not empty and has no '
            f'{MANIFEST}: it is not an mmcoop feature cache (or one whose '
            'manifest was removed), and it is never deleted automatically. '
            'Fix: choose another cache_dir or delete the directory '
            'yourself.'), None
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        return 'foreign', (
            f'{path} is unreadable ({type(e).__name__}: {e}). Fix: delete '
            'the directory (it is rebuilt) or choose another cache_dir.'), None
    if not isinstance(manifest,
                      dict) or manifest.get('format') != CACHE_FORMAT:
        return 'foreign', (f'{path} is not an mmcoop feature-cache manifest. '
                           'Fix: choose another cache_dir.'), None
    if manifest.get('version') != CACHE_VERSION:
        return 'mismatch', (f'format version {manifest.get("version")} != '
                            f'{CACHE_VERSION}'), None
    diffs = diff_keys(manifest.get('key'), key)
    if diffs:
        return 'mismatch', _listing(diffs, 'differing key fields'), None
    layout = _layout_error(manifest)
    if layout:
        return 'damaged', f'{MANIFEST}: {layout}', None
    changed = changed_images(paths, manifest['images'], verify)
    if changed:
        return 'stale', _listing(
            changed,
            f'images changed since the build (verify={verify!r})'), None
    shape = tuple(manifest['feature_shape'])
    for rec in manifest['shards']:
        why = _check_shard(cache_dir, rec, shape, manifest['dtype'], verify)
        if why:
            return 'damaged', why, None
    return 'ok', '', manifest

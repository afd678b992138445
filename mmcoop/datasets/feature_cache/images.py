# Copyright (c) mmcoop contributors. All rights reserved.
"""Are the image files still the ones the cache encoded?

The cache key names the images by path; an image edited or replaced in
place keeps its path. So at build time the manifest records, per image,
its size, modification time and SHA-256, and at reuse the files are
compared with the record:

* ``verify='fast'`` (default): size and modification time of every image
  (one ``stat`` each). An image whose size or time differs is then hashed:
  a new time with the same content (a copy, ``touch``) is accepted, other
  content is a change.
* ``verify='full'``: the SHA-256 of every image's content (reads the whole
  dataset; catches an in-place edit that restored the old time).

Images on remote storage (``s3://...``) are not checked.
"""
import hashlib
import os
from typing import List, Optional

from ..transforms.loading import unreadable_image

__all__ = [
    'VERIFY_MODES', 'file_sha256', 'fingerprint_images', 'changed_images'
]

VERIFY_MODES = ('fast', 'full')


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            h.update(block)
    return h.hexdigest()


def _is_local(path: str) -> bool:
    return '://' not in path


def fingerprint_images(paths: List[str]) -> List[Optional[list]]:
    """``[size, mtime_ns, sha256]`` of every image (None if remote). An
    image that cannot be read (missing, a folder, no permission) is an
    ``OSError`` naming the file and the fix, as the loaders name it."""
    out = []
    for path in paths:
        if not _is_local(path):
            out.append(None)
            continue
        try:
            st = os.stat(path)
            out.append([st.st_size, st.st_mtime_ns, file_sha256(path)])
        except OSError as e:
            raise unreadable_image(path, e, 'to build the feature cache') \
                from e
    return out


def changed_images(paths: List[str], recorded: list, verify: str) -> List[str]:
    """The images that differ from ``recorded`` (from
    :func:`fingerprint_images`), each with the reason."""
    if verify not in VERIFY_MODES:
        raise ValueError(f'verify must be one of {VERIFY_MODES}, got '
                         f'{verify!r}.')
    changed = []
    for path, rec in zip(paths, recorded):
        if rec is None or not _is_local(path):
            continue
        size, mtime_ns, digest = rec
        try:
            st = os.stat(path)
        except OSError as e:
            changed.append(f'{path} ({type(e).__name__}: {e.strerror})')
            continue
        if verify == 'fast' and (st.st_size, st.st_mtime_ns) == (size,
                                                                 mtime_ns):
            continue
        if st.st_size != size:
            changed.append(f'{path} (size {size} -> {st.st_size} bytes)')
        elif file_sha256(path) != digest:
            changed.append(f'{path} (content changed)')
    return changed

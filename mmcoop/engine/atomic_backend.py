# Copyright (c) mmcoop contributors. All rights reserved.
"""A local MMEngine file backend whose writes are atomic.

Checkpoints reach the disk through MMEngine's file backends
(``mmengine.runner.save_checkpoint`` serialises to bytes and calls
``backend.put``). :class:`AtomicLocalBackend` is registered as
``'atomic_local'`` and selected in ``configs/_base_/default_runtime.py``
with ``default_hooks.checkpoint.backend_args = dict(backend='atomic_local')``
(``MMCoopRunner.save_checkpoint`` uses it too when called without
``backend_args``): each file is written to a temporary file in the same
folder, flushed to disk and renamed over the final name, so a crash or a
full disk mid-write leaves the previous file (or none), never a truncated
checkpoint under the final name; a full disk is reported with the last
good checkpoint (:func:`mmcoop.utils.checkpoint.atomic_write`).
"""
import os.path as osp
from pathlib import Path
from typing import Union

import mmengine
from mmengine.fileio import LocalBackend, register_backend

from mmcoop.utils.checkpoint import atomic_write

__all__ = ['AtomicLocalBackend', 'ATOMIC_BACKEND_ARGS']

#: ``backend_args`` that select :class:`AtomicLocalBackend`.
ATOMIC_BACKEND_ARGS = dict(backend='atomic_local')


@register_backend('atomic_local')
class AtomicLocalBackend(LocalBackend):
    """``LocalBackend`` whose ``put`` / ``put_text`` write atomically."""

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        filepath = str(filepath)
        mmengine.mkdir_or_exist(osp.dirname(osp.abspath(filepath)))
        atomic_write(filepath, lambda f: f.write(obj))

    def put_text(self,
                 obj: str,
                 filepath: Union[str, Path],
                 encoding: str = 'utf-8') -> None:
        self.put(obj.encode(encoding), filepath)

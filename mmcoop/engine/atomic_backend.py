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

``mmengine.dump(obj, path, backend_args=ATOMIC_BACKEND_ARGS)`` writes any
result file the same way; :class:`AtomicDumpResults` is MMEngine's
``DumpResults`` (the predictions of ``tools/test.py --out x.pkl``) writing
through it, so a killed test never leaves a truncated dump under the final
name.
"""
import os.path as osp
from pathlib import Path
from typing import Union

import mmengine
from mmengine.evaluator import DumpResults
from mmengine.fileio import LocalBackend, register_backend
from mmengine.logging import print_log

from mmcoop.utils.checkpoint import atomic_write

__all__ = ['AtomicLocalBackend', 'ATOMIC_BACKEND_ARGS', 'AtomicDumpResults']

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


class AtomicDumpResults(DumpResults):
    """``DumpResults`` whose pickle is written atomically (temporary file +
    rename, :class:`AtomicLocalBackend`)."""

    def compute_metrics(self, results: list) -> dict:
        mmengine.dump(
            results, self.out_file_path, backend_args=ATOMIC_BACKEND_ARGS)
        print_log(
            f'Results has been saved to {self.out_file_path}.',
            logger='current')
        return {}

# Copyright (c) mmcoop contributors. All rights reserved.
"""Checkpoint loading with torch's ``weights_only`` protection.

Anything that comes from elsewhere (``load_from``, ``tools/test.py``,
inference, converters, CLIP weights) is read with ``weights_only=True``: a
file that would need arbitrary code to unpickle is refused with an error that
says why and what to do. Only a run's *own* resume checkpoints (files inside
its work dir, written by mmengine with runtime state such as
``HistoryBuffer``) are read with the trusted loader.
"""
import os
import os.path as osp
import pickle
from typing import Any, Optional

import torch


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint needs arbitrary code to load and was refused."""


def safe_torch_load(path: str,
                    map_location: Any = 'cpu',
                    what: str = 'checkpoint') -> Any:
    """``torch.load(path, weights_only=True)`` with actionable errors.

    Args:
        path (str): local file.
        map_location: as :func:`torch.load`.
        what (str): what the file is, for messages (e.g. 'CLIP weights').
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'{what} file {path!r} does not exist.')
    if osp.getsize(path) == 0:
        raise RuntimeError(f'{what} file {path!r} is empty (0 bytes): the '
                           'download or the save was interrupted. Replace it.')
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f'Refusing to load {what} {path!r}: it contains Python objects '
            'that need arbitrary code to unpickle, and mmcoop loads files from '
            f'elsewhere with weights_only=True. ({str(e).splitlines()[0]}) '
            'If it is a checkpoint you made yourself, strip it to tensors and '
            'plain metadata with `python tools/model_converters/'
            'publish_model.py IN OUT` in a trusted environment, or resume it '
            'from inside its own work dir.') from e
    except (RuntimeError, EOFError, OSError) as e:
        raise RuntimeError(
            f'Could not read {what} {path!r}: {type(e).__name__}: {e}. The '
            'file is probably truncated or not a PyTorch checkpoint.') from e


def trusted_torch_load(path: str, map_location: Any = 'cpu') -> Any:
    """Load one of the run's *own* checkpoints, runtime state included.

    mmengine 0.10.x resume checkpoints pickle ``HistoryBuffer`` (whose state
    needs ``getattr``), which ``weights_only=True`` rejects on torch >= 2.6.
    Call this only for files written by this run (see
    :func:`is_own_checkpoint`); never for downloads.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint {path!r} does not exist.')
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as e:
        raise RuntimeError(
            f'Resume checkpoint {path!r} is unreadable ({type(e).__name__}: '
            f'{e}); it was probably cut off by a crash. Delete it and resume '
            'from the previous checkpoint in the same work dir.') from e


def is_own_checkpoint(path: str, work_dir: Optional[str]) -> bool:
    """Whether ``path`` lies inside ``work_dir`` (a run's own output)."""
    if not work_dir or not osp.isfile(path):
        return False
    path = osp.realpath(path)
    work_dir = osp.realpath(work_dir)
    return osp.commonpath([path, work_dir]) == work_dir


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save`` to a temporary file, then rename over ``path``.

    A crash mid-write leaves the previous file (or nothing), never a
    truncated checkpoint under the final name.
    """
    tmp = f'{path}.tmp-{os.getpid()}'
    try:
        with open(tmp, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)

# Copyright (c) mmcoop contributors. All rights reserved.
"""Checkpoint loading with torch's ``weights_only`` protection.

Every file mmcoop reads -- ``load_from``, ``--resume``, ``tools/test.py``,
inference, converters, CLIP weights -- is unpickled by torch's restricted
``weights_only=True`` unpickler, so no code named by the file ever runs. A
file that needs more is refused with an error that names the offending
pickled objects and says what to do.

MMEngine 0.10.x training checkpoints pickle a little runtime state beside
the tensors: ``HistoryBuffer`` objects of the message hub (numpy arrays, and
``getattr(HistoryBuffer, 'mean')``-style references to their statistics
methods). :func:`safe_torch_load` with ``runtime_state=True`` (what
:class:`mmcoop.engine.MMCoopRunner` uses) reads exactly that state through
the same restricted unpickler, with inert stand-ins allow-listed for the
duration of the call only: numpy array/dtype/scalar reconstruction, a
``HistoryBuffer`` that accepts nothing but numeric arrays and a length, and
a ``getattr`` that returns only ``HistoryBuffer``'s four statistics methods.
``weights_only`` is never turned off, process-wide or otherwise.
"""
import os
import os.path as osp
import pickle
import pickletools
import re
import zipfile
from typing import Any, List, Optional

import torch

__all__ = [
    'UnsafeCheckpointError', 'CheckpointReadError', 'CheckpointMismatchError',
    'safe_torch_load', 'trusted_torch_load', 'is_own_checkpoint',
    'atomic_torch_save', 'runtime_state_globals', 'pickled_globals',
    'HAS_SCOPED_SAFE_GLOBALS'
]

#: torch can allow-list globals for one ``torch.load`` call (torch >= 2.5).
HAS_SCOPED_SAFE_GLOBALS = hasattr(torch.serialization, 'safe_globals')


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint needs arbitrary code to load and was refused."""


class CheckpointReadError(RuntimeError):
    """A checkpoint file is empty, truncated, corrupt or not a checkpoint."""


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model or the classes of the config."""


# --------------------------------------------------------------------------
# MMEngine runtime state, read without running code from the file
# --------------------------------------------------------------------------
_HB_NAME = 'mmengine.logging.history_buffer.HistoryBuffer'
_HB_STATISTICS = ('min', 'max', 'current', 'mean')


def _history_buffer_stand_in():
    from mmengine.logging import HistoryBuffer

    class _HistoryBufferState(HistoryBuffer):
        """Unpickling stand-in: accepts only numeric histories."""

        def __setstate__(self, state):
            import numpy as np
            if not isinstance(state, dict):
                raise pickle.UnpicklingError(
                    f'HistoryBuffer state must be a dict, got '
                    f'{type(state).__name__}.')
            log = state.get('_log_history', np.array([]))
            count = state.get('_count_history', np.array([]))
            max_length = state.get('max_length', 1000000)
            for name, arr in (('_log_history', log), ('_count_history',
                                                      count)):
                if not isinstance(arr, np.ndarray) or arr.dtype.kind not in \
                        'biuf':
                    raise pickle.UnpicklingError(
                        f'HistoryBuffer.{name} must be a numeric array.')
            if not isinstance(max_length, int) or isinstance(max_length, bool):
                raise pickle.UnpicklingError(
                    'HistoryBuffer.max_length must be an int.')
            # become a plain HistoryBuffer (its statistics methods are the
            # class defaults; the pickled references are ignored)
            self.__class__ = HistoryBuffer
            HistoryBuffer.__init__(self, log, count, max_length)

    def history_buffer_attr(obj, name):
        if obj in (HistoryBuffer, _HistoryBufferState) \
                and name in _HB_STATISTICS:
            return getattr(HistoryBuffer, name)
        raise pickle.UnpicklingError(
            f'refused getattr({getattr(obj, "__name__", type(obj).__name__)}'
            f', {name!r}) (only HistoryBuffer statistics are allowed).')

    return _HistoryBufferState, history_buffer_attr


def runtime_state_globals() -> list:
    """The globals allow-listed by ``safe_torch_load(runtime_state=True)``.

    ``(stand_in, 'pickled.name')`` pairs and classes, as accepted by
    ``torch.serialization.safe_globals``.
    """
    import numpy as np
    try:  # numpy >= 2
        from numpy._core import multiarray
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    stand_in, attr = _history_buffer_stand_in()
    allowed = [(stand_in, _HB_NAME), (attr, 'builtins.getattr'), np.ndarray,
               np.dtype]
    for module in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        allowed.append((multiarray._reconstruct, f'{module}._reconstruct'))
        allowed.append((multiarray.scalar, f'{module}.scalar'))
    dtypes = getattr(np, 'dtypes', None)  # numpy >= 1.25
    if dtypes is not None:
        allowed.extend(
            getattr(dtypes, n) for n in dir(dtypes) if n.endswith('DType'))
    return allowed


def _allowed_names(allowed) -> set:
    names = set()
    for item in allowed:
        if isinstance(item, tuple):
            names.add(item[1])
        else:
            names.add(f'{item.__module__}.{item.__qualname__}')
    return names


# --------------------------------------------------------------------------
# what a refused file contains (read with pickletools: nothing is executed)
# --------------------------------------------------------------------------
_STRING_OPS = {
    'SHORT_BINUNICODE', 'BINUNICODE', 'BINUNICODE8', 'UNICODE', 'STRING',
    'BINSTRING', 'SHORT_BINSTRING'
}


def _scan_pickle_globals(stream) -> List[str]:
    """Globals named by one pickle of ``stream`` (raises if unparseable)."""
    found, strings, memo = [], [], {}
    last = None
    for op, arg, _ in pickletools.genops(stream):
        name = op.name
        if name in _STRING_OPS:
            last = arg if isinstance(arg, str) else None
            strings.append(last)
        elif name in ('PUT', 'BINPUT', 'LONG_BINPUT'):
            memo[arg] = last
        elif name == 'MEMOIZE':
            memo[len(memo)] = last
        elif name in ('GET', 'BINGET', 'LONG_BINGET'):
            last = memo.get(arg)
            strings.append(last)
        elif name == 'GLOBAL':
            found.append(str(arg).replace(' ', '.'))
        elif name == 'STACK_GLOBAL':
            module, attr = (strings[-2:] + [None, None])[:2] \
                if len(strings) >= 2 else (None, None)
            found.append(f'{module}.{attr}')
        if name not in _STRING_OPS and name not in ('GET', 'BINGET',
                                                    'LONG_BINGET', 'PUT',
                                                    'BINPUT', 'LONG_BINPUT',
                                                    'MEMOIZE'):
            last = None
    return found


def _torch_allowed_globals() -> set:
    try:
        from torch._weights_only_unpickler import _get_allowed_globals
        return set(_get_allowed_globals())
    except Exception:  # noqa: BLE001 - private API moved
        return set()


_TORCH_REBUILD = re.compile(r'^torch\.(_utils\._rebuild_\w+|\w*Storage|Size|'
                            r'device|dtype|float\w*|int\w*|uint\w*|bool|'
                            r'bfloat16|half|double|long|short|'
                            r'complex\w*)$|^collections\.OrderedDict$')


def pickled_globals(path: str) -> Optional[List[str]]:
    """The Python globals a checkpoint file would import, or None if the
    file cannot be parsed as a pickle / torch zip archive. Nothing from the
    file is executed (``pickletools`` only decodes opcodes)."""
    try:
        if zipfile.is_zipfile(path):
            getter = getattr(torch.serialization,
                             'get_unsafe_globals_in_checkpoint', None)
            if getter is not None:
                return sorted(set(getter(path)))
            with zipfile.ZipFile(path) as zf:
                name = next(n for n in zf.namelist() if n.endswith('data.pkl'))
                import io
                found = _scan_pickle_globals(io.BytesIO(zf.read(name)))
        else:
            found = []
            with open(path, 'rb') as f:
                found.extend(_scan_pickle_globals(f))
                for _ in range(4):  # torch's legacy format: more pickles
                    try:
                        found.extend(_scan_pickle_globals(f))
                    except Exception:  # noqa: BLE001 - raw tensor bytes
                        break
    except Exception:  # noqa: BLE001 - not a pickle at all
        return None
    safe = _torch_allowed_globals()
    return sorted(
        {g
         for g in found if g not in safe and not _TORCH_REBUILD.match(g)})


# --------------------------------------------------------------------------
# loaders
# --------------------------------------------------------------------------
def safe_torch_load(path: str,
                    map_location: Any = 'cpu',
                    what: str = 'checkpoint',
                    runtime_state: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` with actionable errors.

    Args:
        path (str): local file.
        map_location: as :func:`torch.load`.
        what (str): what the file is, for messages (e.g. 'CLIP weights').
        runtime_state (bool): also read MMEngine's training runtime state
            (``HistoryBuffer`` and numpy arrays of the message hub), through
            the restricted unpickler with inert stand-ins (see the module
            docstring). Defaults to False (tensors and plain containers
            only).

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the file pickles objects that would need
            code to load (they are named in the message).
        CheckpointReadError: the file is empty, truncated or not a
            checkpoint.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'{what} file {path!r} does not exist.')
    if osp.getsize(path) == 0:
        raise CheckpointReadError(
            f'{what} file {path!r} is empty (0 bytes): the download or the '
            'save was interrupted. Replace it.')
    allowed = runtime_state_globals() if runtime_state else []
    try:
        if allowed and HAS_SCOPED_SAFE_GLOBALS:
            with torch.serialization.safe_globals(allowed):
                return torch.load(
                    path, map_location=map_location, weights_only=True)
        return torch.load(path, map_location=map_location, weights_only=True)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as e:  # noqa: BLE001 - classified below
        error = e
    names = pickled_globals(path)
    refused = [n for n in names or [] if n not in _allowed_names(allowed)]
    # the restricted unpickler stopped at an object of a parseable pickle
    refused_object = isinstance(
        error, pickle.UnpicklingError) and (names is not None
                                            or 'GLOBAL' in str(error))
    if refused or refused_object:
        shown = ', '.join(refused[:8]) + (', ...' if len(refused) > 8 else '')
        raise UnsafeCheckpointError(
            f'Refusing to load {what} {path!r}: it pickles Python objects '
            f'({shown or "see below"}) that would need arbitrary code to '
            'load, and mmcoop reads every file with torch.load(weights_only='
            'True). No code from the file was run. If you made the file '
            'yourself and trust it, strip it to tensors and plain metadata '
            'with `python tools/model_converters/publish_model.py IN OUT` in '
            'a trusted environment and use the stripped file.' +
            ('' if refused else f' (torch: {_torch_detail(error)})')) from None
    raise CheckpointReadError(
        f'Could not read {what} {path!r}: {type(error).__name__}: '
        f'{str(error).splitlines()[0] if str(error) else ""}. The file is '
        'probably truncated or not a PyTorch checkpoint. Replace it (or, for '
        'a resume checkpoint, delete it: --resume then falls back to the '
        'previous checkpoint of the work dir).') from error


def _torch_detail(error: Exception) -> str:
    """The informative line of a ``weights_only`` error message."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        if 'WeightsUnpickler error' in line:
            rest = line.split('WeightsUnpickler error:', 1)[-1].strip()
            return rest or (lines[i + 1] if i + 1 < len(lines) else line)
    return lines[0] if lines else repr(error)


def trusted_torch_load(path: str, map_location: Any = 'cpu') -> Any:
    """``torch.load(weights_only=False)``: for files you wrote yourself.

    :class:`mmcoop.engine.MMCoopRunner` does not use it on torch >= 2.5 (it
    reads MMEngine runtime state with :func:`safe_torch_load`
    ``(runtime_state=True)``); it remains the fallback for resuming the
    run's *own* checkpoints (see :func:`is_own_checkpoint`) on older torch,
    which cannot allow-list globals for a single call. Never for downloads.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint {path!r} does not exist.')
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as e:
        raise CheckpointReadError(
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

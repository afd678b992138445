# Copyright (c) mmcoop contributors. All rights reserved.
"""Checkpoint loading with torch's ``weights_only`` protection.

Every file mmcoop reads -- ``load_from``, ``--resume``, ``tools/test.py``,
inference, converters, CLIP weights -- is unpickled by torch's restricted
``weights_only=True`` unpickler, so no code named by the file ever runs. A
file that needs more is refused with an error that names the offending
pickled objects (:func:`torch.serialization.get_unsafe_globals_in_checkpoint`)
and says what to do.

MMEngine 0.10.x training checkpoints pickle a little runtime state beside
the tensors: ``HistoryBuffer`` objects of the message hub (numpy arrays, and
``getattr(HistoryBuffer, 'mean')``-style references to their statistics
methods). :func:`safe_torch_load` with ``runtime_state=True`` (what
:class:`mmcoop.engine.MMCoopRunner` uses) reads exactly that state through
the same restricted unpickler, with inert stand-ins allow-listed by
:class:`torch.serialization.safe_globals` for the duration of the call only:
numpy array/dtype/scalar reconstruction, a ``HistoryBuffer`` that accepts
nothing but numeric arrays and a length, and a ``getattr`` that returns only
``HistoryBuffer``'s four statistics methods. ``weights_only`` is never
turned off, process-wide or otherwise.

Only public torch APIs are used; they set the torch floor (``setup.cfg``):
``torch.serialization.safe_globals`` (torch 2.5), and both the
``(stand_in, 'pickled.name')`` allow-list entries and
``get_unsafe_globals_in_checkpoint`` (torch 2.6).
"""
import contextlib
import errno
import hashlib
import os
import os.path as osp
import pickle
import re
import zipfile
from typing import IO, Any, Callable, Iterator, List, Optional

import torch

from mmcoop.utils.processes import pid_alive

__all__ = [
    'UnsafeCheckpointError', 'CheckpointReadError', 'CheckpointMismatchError',
    'safe_torch_load', 'atomic_write', 'atomic_open', 'atomic_torch_save',
    'last_good_checkpoint', 'runtime_state_globals',
    'remove_partial_checkpoints'
]

if not hasattr(torch.serialization, 'get_unsafe_globals_in_checkpoint'):
    raise ImportError(
        f'torch {torch.__version__} is installed; mmcoop needs torch >= 2.6 '
        '(torch.serialization.safe_globals with named entries and '
        'get_unsafe_globals_in_checkpoint, for safe checkpoint loading). '
        "Upgrade with `pip install 'torch>=2.6' torchvision`.")


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


# --------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------
def _unsafe_globals(path: str) -> Optional[List[str]]:
    """The pickled globals of ``path`` that ``weights_only`` would refuse
    under the current allow-list, or None when ``path`` is not a
    ``torch.save`` zip archive (the only format torch inspects statically).
    Nothing from the file is executed."""
    try:
        return sorted(
            set(torch.serialization.get_unsafe_globals_in_checkpoint(path)))
    except Exception:  # noqa: BLE001 - legacy / raw pickle / TorchScript
        return None


def _is_pickle(path: str) -> bool:
    """Whether ``path`` starts like a pickle stream of protocol >= 2 (what
    torch's legacy format and ``pickle.dump`` write)."""
    with open(path, 'rb') as f:
        head = f.read(2)
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _torch_detail(error: Exception) -> str:
    """The informative line of a ``weights_only`` error message."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        if 'WeightsUnpickler error' in line:
            rest = line.split('WeightsUnpickler error:', 1)[-1].strip()
            return rest or (lines[i + 1] if i + 1 < len(lines) else line)
    return lines[0] if lines else repr(error)


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
        IsADirectoryError: ``path`` is a folder.
        UnsafeCheckpointError: the file pickles objects that would need
            code to load (they are named in the message).
        CheckpointReadError: the file is empty, truncated or not a
            checkpoint.
    """
    if osp.isdir(path):
        raise IsADirectoryError(
            f'{what} {path!r} is a folder; pass the checkpoint file (.pth) '
            'itself.')
    if not osp.isfile(path):
        raise FileNotFoundError(f'{what} file {path!r} does not exist.')
    if osp.getsize(path) == 0:
        raise CheckpointReadError(
            f'{what} file {path!r} is empty (0 bytes): the download or the '
            'save was interrupted. Replace it.')
    allowed = runtime_state_globals() if runtime_state else []
    with torch.serialization.safe_globals(allowed):
        try:
            return torch.load(
                path, map_location=map_location, weights_only=True)
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            raise
        except Exception as e:  # noqa: BLE001 - classified below
            error = e
        # named under the same allow-list as the load
        refused = _unsafe_globals(path)
    detail = _torch_detail(error)
    if refused is None:  # not a zip archive: what torch's unpickler named
        refused = re.findall(r'GLOBAL ([\w.]+) was not an allowed', detail)
    # torch's restricted unpickler stopped at a pickled object (a zip
    # archive, or a stream that is a pickle) rather than at broken bytes
    refused_object = isinstance(error, pickle.UnpicklingError) and (
        'WeightsUnpickler' in str(error)) and (zipfile.is_zipfile(path)
                                               or _is_pickle(path))
    if refused or refused_object:
        shown = ', '.join(refused[:8]) + (', ...' if len(refused) > 8 else '')
        if not shown:
            shown = ('not listed: not a torch.save zip archive'
                     if not zipfile.is_zipfile(path) else 'see below')
        raise UnsafeCheckpointError(
            f'Refusing to load {what} {path!r}: it pickles Python objects '
            f'({shown}) that would need arbitrary code to load, and mmcoop '
            'reads every file with torch.load(weights_only=True). No code '
            'from the file was run. If you made the file yourself and trust '
            'it, strip it to tensors and plain metadata with `python '
            'tools/model_converters/publish_model.py IN OUT` in a trusted '
            'environment and use the stripped file. (torch: '
            f'{detail})') from None
    raise CheckpointReadError(
        f'Could not read {what} {path!r}: {type(error).__name__}: '
        f'{str(error).splitlines()[0] if str(error) else ""}. The file is '
        'probably truncated or not a PyTorch checkpoint. Replace it (or, for '
        'a resume checkpoint, delete it: --resume then falls back to the '
        'previous checkpoint of the work dir).') from error


# --------------------------------------------------------------------------
# saving
# --------------------------------------------------------------------------
def _mount_point(folder: str) -> str:
    path = osp.realpath(folder)
    while not osp.ismount(path):
        parent = osp.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def last_good_checkpoint(path: str) -> Optional[str]:
    """The checkpoint a run could resume from if saving ``path`` failed:
    the file named in ``last_checkpoint`` next to ``path`` (MMEngine's
    pointer), else ``path`` itself when it exists (the atomic save keeps
    its previous version), else the newest ``*.pth`` of that folder."""
    folder = osp.dirname(osp.abspath(path))
    pointer = osp.join(folder, 'last_checkpoint')
    try:
        with open(pointer) as f:
            named = f.read().strip()
        if named and osp.isfile(named):
            return named
    except OSError:
        pass
    if osp.isfile(path):
        return path
    try:
        names = [n for n in os.listdir(folder) if n.endswith('.pth')]
    except OSError:
        return None
    names.sort(key=lambda n: osp.getmtime(osp.join(folder, n)))
    return osp.join(folder, names[-1]) if names else None


def atomic_write(path: str,
                 write: Callable[[Any], None],
                 last_good: Optional[str] = None) -> None:
    """Write ``path`` atomically: ``write(f)`` fills a temporary file in the
    same folder, which is flushed to disk and renamed over ``path``
    (:func:`atomic_open` with a callback).

    A crash mid-write leaves the previous file (or nothing), never a
    truncated file under the final name. Used by :func:`atomic_torch_save`
    and by MMEngine's checkpoint saving through
    :class:`mmcoop.engine.atomic_backend.AtomicLocalBackend`.

    Args:
        path (str): the final file.
        write (callable): ``write(f)`` writes the content to the binary file
            object ``f``.
        last_good (str, optional): the checkpoint to name as the last good
            one if the disk is full. Defaults to
            :func:`last_good_checkpoint` of ``path``.

    Raises:
        OSError: ``errno.ENOSPC`` / ``EDQUOT`` with a message naming the
            disk, saying that nothing was lost and which checkpoint is the
            last good one (other write errors propagate unchanged).
    """
    with atomic_open(path, 'wb', last_good=last_good) as f:
        write(f)


@contextlib.contextmanager
def atomic_open(path: str,
                mode: str = 'wb',
                last_good: Optional[str] = None,
                **open_kwargs) -> Iterator[IO]:
    """``open(path, mode)`` for writing a whole file, atomically: the body
    of the ``with`` fills a temporary file in the same folder (``.<name>.
    tmp-<pid>``), which is flushed to disk and renamed over ``path`` only
    when the body ends without an error.

    A crash, a kill or an exception mid-write leaves the previous file (or
    nothing) under ``path``, never a truncated file that a later run (or
    reader) would take as complete; the temporary file is removed on an
    error. Every file mmcoop and its tools write whole (checkpoints, split
    and result files, tables, figures, converted annotations) goes through
    this function.

    Args:
        path (str): the final file (its folder must exist).
        mode (str): ``'w'`` (text) or ``'wb'`` (binary). Defaults to
            ``'wb'``.
        last_good (str, optional): for checkpoints, the one to name as the
            last good one if the disk is full (see :func:`atomic_write`).
        **open_kwargs: passed to :func:`open` (``newline``, ``encoding``).

    Yields:
        the file object to write to.

    Raises:
        OSError: a full disk (``ENOSPC`` / ``EDQUOT``), with a message
            naming the disk and the file and saying that nothing was lost
            (other errors propagate unchanged).
    """
    if mode not in ('w', 'wb'):
        raise ValueError(f'atomic_open: mode {mode!r} is not \'w\' or '
                         "'wb' (a whole file is written).")
    folder = osp.dirname(osp.abspath(path))
    tmp = osp.join(folder, _temp_name(osp.basename(path), os.getpid()))
    error = None
    try:
        try:
            opened = open(tmp, mode, **open_kwargs)
        except OSError as e:
            if not is_not_writable(e):
                raise
            # the final path and the folder, not the temporary name
            raise OSError(e.errno, not_writable_message(path, e)) from e
        with opened as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        error = e
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
    if error is not None:
        raise OSError(error.errno, full_disk_message(
            path, error.errno, last_good)) from error
    _remove_dead_temps(folder, osp.basename(path))


def _remove_dead_temps(folder: str, name: str) -> None:
    """Remove the temporary files of ``name`` that writers killed before
    they could clean up (``SIGKILL``, or ``SIGTERM`` in a process without a
    handler) left in ``folder``: the file is now written whole, and a temp
    of a writer that no longer runs on this host (:func:`pid_alive`) never
    becomes anything but can be as large as the file."""
    prefix = _temp_name(name, '')
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for other in names:
        pid = other[len(prefix):]
        if other.startswith(prefix) and pid.isdigit() and \
                int(pid) != os.getpid() and not pid_alive(int(pid)):
            try:
                os.remove(osp.join(folder, other))
            except OSError:
                pass


def _temp_name(name: str, pid: int) -> str:
    """The temporary file :func:`atomic_open` fills for ``name``. A name
    near the file system's limit of 255 bytes is shortened (its first 150
    bytes, a hash of the whole and its extension, so that a checkpoint's
    is still seen as one: :func:`remove_partial_checkpoints`), so that the
    temporary name fits wherever the final one does."""
    raw = name.encode('utf-8', 'surrogateescape')
    if len(raw) > 200:
        digest = hashlib.sha1(raw).hexdigest()[:12]
        ext = osp.splitext(name)[1][:16]
        name = raw[:150].decode('utf-8', 'ignore') + f'~{digest}{ext}'
    return f'.{name}.tmp-{pid}'


#: what :func:`_temp_name` gives for a checkpoint (``*.pth``)
_CHECKPOINT_TEMP = re.compile(r'^\.(?P<name>.+\.pth)\.tmp-(?P<pid>\d+)$')


def remove_partial_checkpoints(work_dir: str) -> List[str]:
    """Delete the temporary checkpoint files (``.epoch_3.pth.tmp-<pid>``)
    that saves killed mid-write left in ``work_dir``, and return their
    names.

    Call it only while holding the work dir's lock
    (:class:`mmcoop.engine.work_dir_lock.WorkDirLock`): no other run then
    writes there. A file whose writer still runs on this host
    (:func:`pid_alive`) is kept: a process without the lock may be writing
    a ``.pth`` there (``publish_model.py`` or a converter with its output
    in the work dir), and removing its file would fail its rename. A dead
    writer's file never became a checkpoint (:func:`atomic_open` renames
    only a complete file) but can be as large as one. Nothing else is
    touched.
    """
    try:
        names = sorted(os.listdir(work_dir))
    except OSError:
        return []
    removed = []
    for name in names:
        match = _CHECKPOINT_TEMP.match(name)
        path = osp.join(work_dir, name)
        if not match or not osp.isfile(path):
            continue
        pid = int(match['pid'])
        if pid == os.getpid() or pid_alive(pid):
            continue  # this process's save, or a writer that still runs
        os.remove(path)
        removed.append(name)
    return removed


#: the errors of a folder mmcoop may not write in
_NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def is_not_writable(error: OSError) -> bool:
    """Whether ``error`` says a folder cannot be written (read-only
    storage, no permission)."""
    return error.errno in _NOT_WRITABLE


def with_fix(error: OSError, fix: str) -> OSError:
    """``error`` (errno kept) with ``fix`` added to its message: what a
    writer that knows its option says of a folder it cannot write."""
    return OSError(error.errno, f'{error.strerror} {fix}')


def make_parent(path: str) -> None:
    """Create the folder of ``path`` (and its parents); one that cannot
    be created is named with :func:`not_writable_message`."""
    try:
        os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    except OSError as e:
        if not is_not_writable(e):
            raise
        raise OSError(e.errno, not_writable_message(path, e)) from e


def not_writable_message(path: str, error: OSError) -> str:
    """What :func:`atomic_open` says when the folder of ``path`` cannot
    be written (read-only storage, no permission): the file, the folder,
    the reason and the fix."""
    folder = osp.dirname(osp.abspath(path))
    why = 'is on read-only storage' if error.errno == errno.EROFS else \
        'is not writable by this user'
    return (f'Cannot write {path}: its folder {folder} {why} '
            f'({error.strerror}). Nothing was written. Fix: give the option '
            'that names this file (or its folder) a writable location, or '
            'make the folder writable.')


def full_disk_message(path: str,
                      code: int,
                      last_good: Optional[str] = None) -> str:
    """What :func:`atomic_open` says when the disk filled up while writing
    ``path``: the disk, that nothing was lost, and the fix (for a
    checkpoint, ``*.pth``, also the last good checkpoint and
    ``--resume``)."""
    folder = osp.dirname(osp.abspath(path))
    reason = 'No space left' if code == errno.ENOSPC else \
        'Disk quota exceeded'
    kept = (f'the previous {osp.basename(path)} is intact, '
            if osp.isfile(path) else '')
    head = (f'{reason} on {_mount_point(folder)} (folder {folder}) while '
            f'saving {path}. Nothing was lost: {kept}the partial file was '
            'removed')
    if last_good is None and not path.endswith('.pth'):
        return (f'{head}. Fix: free space on that disk (or write to '
                'another folder), then run again.')
    good = last_good or last_good_checkpoint(path)
    return (f'{head}, and the last good checkpoint is '
            f'{good or "(none yet)"}. Fix: free space on that disk (or '
            'train with another --work-dir), then continue with --resume.')


def atomic_torch_save(obj: Any,
                      path: str,
                      last_good: Optional[str] = None) -> None:
    """``torch.save(obj)`` to ``path`` through :func:`atomic_write` (same
    arguments and errors)."""

    def write(f):
        writer = _WriteErrorRecorder(f)
        try:
            torch.save(obj, writer)
        except RuntimeError:  # torch wraps the OSError of a write
            if writer.error is None:
                raise
            raise writer.error

    atomic_write(path, write, last_good)


class _WriteErrorRecorder:
    """A file wrapper that remembers the ``OSError`` of a failed write
    (``torch.save`` reports it as a RuntimeError without the errno)."""

    def __init__(self, f):
        self.f = f
        self.error = None

    def write(self, data):
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self):
        return self.f.flush()

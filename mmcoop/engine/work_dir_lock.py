# Copyright (c) mmcoop contributors. All rights reserved.
"""One run per work dir at a time.

:class:`~mmcoop.engine.MMCoopRunner` takes ``<work_dir>/mmcoop.lock``
before MMEngine writes anything there (log folder, config dump) and keeps
it while the run lives. The file holds the owner's pid, host and start
time (JSON). A second run with the same work dir stops with
:class:`WorkDirLockedError` naming that run. A lock left by a run that died
without cleaning up (``SIGKILL``, power loss) is *stale* when its host is
this machine and its pid no longer runs (or runs another program, told by
the process start time); it is taken over with a warning, so ``--resume``
after a crash just works. In a distributed run only the process of global
rank 0 takes the lock. Locks of other hosts are never taken over (a shared
file system): the message says which file to delete if that run is gone.
"""
import atexit
import errno
import json
import os
import os.path as osp
import socket
import time
from typing import Optional

from mmcoop.utils.checkpoint import full_disk_message
from mmcoop.utils.processes import pid_alive, process_start_time

__all__ = ['WorkDirLock', 'WorkDirLockedError', 'LOCK_NAME']

LOCK_NAME = 'mmcoop.lock'


class WorkDirLockedError(RuntimeError):
    """Another live run uses the work dir."""


class WorkDirLock:
    """The lock file of a work dir (see the module docstring).

    Args:
        work_dir (str): the run's work dir (created if missing).
    """

    def __init__(self, work_dir: str):
        self.work_dir = work_dir
        self.path = osp.join(work_dir, LOCK_NAME)
        self.held = False
        self.took_over = None  # the stale owner's record, if any

    def _record(self) -> dict:
        return dict(
            pid=os.getpid(),
            host=socket.gethostname(),
            start=process_start_time(os.getpid()),
            since=time.strftime('%Y-%m-%d %H:%M:%S'))

    def _read(self) -> Optional[dict]:
        try:
            with open(self.path) as f:
                owner = json.load(f)
            return owner if isinstance(owner, dict) else {}
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # half-written or garbled: its writer is judged below

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY,
                         0o644)
        except FileExistsError:
            return False
        try:
            with os.fdopen(fd, 'w') as f:
                json.dump(self._record(), f)
        except OSError as e:  # a full disk: no empty lock left behind
            os.remove(self.path)
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise OSError(e.errno, full_disk_message(self.path,
                                                     e.errno)) from e
        return True

    def _is_stale(self, owner: dict) -> bool:
        if not owner:  # unreadable: stale if older than a few seconds
            try:
                return time.time() - os.path.getmtime(self.path) > 5
            except OSError:
                return True
        if owner.get('host') != socket.gethostname():
            return False
        try:
            pid = int(owner.get('pid'))
        except (TypeError, ValueError):
            return True
        return not pid_alive(pid, owner.get('start'))

    def acquire(self) -> None:
        """Take the lock or raise :class:`WorkDirLockedError`."""
        if self.held:
            return
        os.makedirs(self.work_dir, exist_ok=True)
        for _ in range(3):
            if self._create():
                self.held = True
                atexit.register(self.release)
                return
            owner = self._read()
            if owner is None:
                continue  # released meanwhile: try again
            mine = (owner.get('pid') == os.getpid()
                    and owner.get('host') == socket.gethostname())
            if mine:  # another runner of this process (train, then test)
                self.held = True
                return
            if not self._is_stale(owner):
                raise WorkDirLockedError(self._message(owner))
            # stale: move it aside atomically so that only one taker wins
            aside = f'{self.path}.stale-{os.getpid()}'
            try:
                os.replace(self.path, aside)
            except FileNotFoundError:
                continue
            os.remove(aside)
            self.took_over = owner
        raise WorkDirLockedError(self._message(self._read() or {}))

    def _message(self, owner: dict) -> str:
        who = (f"pid {owner.get('pid')} on host {owner.get('host')!r}, "
               f"since {owner.get('since')}") if owner else 'another run'
        return (f'The work dir {self.work_dir!r} is in use by another run '
                f'({who}; lock file {self.path!r}). Two runs in one work dir '
                'would overwrite each other\'s checkpoints and logs. Fix: '
                'wait until it ends, or pass another --work-dir. If that run '
                'is gone (e.g. it ran on another host that shares this '
                'folder), delete the lock file.')

    def release(self) -> None:
        """Remove the lock file if this process holds it."""
        if not self.held:
            return
        self.held = False
        owner = self._read()
        if owner and owner.get('pid') == os.getpid() and owner.get(
                'host') == socket.gethostname():
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass

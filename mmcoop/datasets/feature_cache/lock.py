# Copyright (c) mmcoop contributors. All rights reserved.
"""One builder per cache directory, across processes and hosts.

Two runs that share a ``cache_root`` may need the same cache at the same
time. The one that gets ``<cache_dir>.lock`` (an exclusive ``flock``)
builds; the others wait, then find the finished cache and reuse it. The
operating system releases the lock when its holder dies (even on
``SIGKILL``), so a crashed builder never blocks the next one. The lock file
holds the holder's host, pid and start time (for the messages) and is
removed on release. ``flock`` works across hosts on local disks and on NFS
with lock support; where the file system has none, builds are not
serialised.
"""
import errno
import os
import socket
import time
from typing import Callable, Optional

from .errors import FeatureCacheError

__all__ = ['BuildLock']


class BuildLock:
    """Context manager: hold the exclusive build lock of ``cache_dir``.

    Args:
        cache_dir (str): the cache directory (the lock is its sibling
            ``<cache_dir>.lock``).
        timeout (float, optional): seconds to wait for another builder;
            None waits for ever.
        on_wait (callable, optional): called once with the holder's
            description when the lock is taken by someone else.
        poll (float): seconds between attempts.
    """

    def __init__(self,
                 cache_dir: str,
                 timeout: Optional[float] = 3600.0,
                 on_wait: Optional[Callable[[str], None]] = None,
                 poll: float = 0.2):
        self.path = f'{cache_dir}.lock'
        self.timeout = timeout
        self.on_wait = on_wait
        self.poll = poll
        self._fd = None

    def holder(self) -> str:
        """Who holds the lock, as written in the lock file."""
        try:
            with open(self.path) as f:
                return f.read().strip() or 'another process'
        except OSError:
            return 'another process'

    def __enter__(self) -> 'BuildLock':
        try:
            import fcntl
        except ImportError:  # no flock on this platform: no serialisation
            return self
        start, attempts, announced = time.monotonic(), 0, False
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EAGAIN, errno.EACCES,
                                   errno.EWOULDBLOCK):
                    raise
                # announce the holder once it has written its name
                attempts += 1
                holder = self.holder()
                if not announced and self.on_wait is not None and (
                        holder != 'another process' or attempts > 10):
                    self.on_wait(holder)
                    announced = True
                if self.timeout is not None and \
                        time.monotonic() - start > self.timeout:
                    raise FeatureCacheError(
                        f'Timed out after {self.timeout:g} s waiting for '
                        f'{self.holder()} to finish building the feature '
                        f'cache {self.path[:-5]} (lock file {self.path}). '
                        'The lock is released as soon as that process ends, '
                        'even if it crashes, so the process is still alive. '
                        'Fix: wait for it (raise feature_cache.lock_timeout, '
                        'in seconds, or set it to None), or stop it.'
                    ) from None
                time.sleep(self.poll)
                continue
            # The previous holder may have removed the file between our open
            # and our flock: then we hold a lock nobody else sees; retry.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            self._fd = fd
            os.ftruncate(fd, 0)
            os.write(
                fd, f'pid {os.getpid()} on host {socket.gethostname()} '
                f'(since {time.strftime("%Y-%m-%d %H:%M:%S")})\n'.encode())
            return self

    def __exit__(self, *exc) -> bool:
        if self._fd is not None:
            import fcntl
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        return False

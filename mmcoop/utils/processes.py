# Copyright (c) mmcoop contributors. All rights reserved.
"""Whether a process of this host still runs: the one test behind every
stale lock and temporary file mmcoop takes over or removes."""
import os
from typing import List, Optional

__all__ = ['pid_alive', 'process_start_time']


def _proc_stat(pid: int) -> Optional[List[str]]:
    """The fields of Linux ``/proc/<pid>/stat`` after the command name
    (which may hold spaces): ``[state, ppid, ...]``; None without it."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()
    except (OSError, IndexError):
        return None


def process_start_time(pid: int) -> Optional[str]:
    """The start time of process ``pid`` (Linux ``/proc``, clock ticks
    since boot), or None: with the pid it tells a process from a later one
    that reuses its pid."""
    return _start_of(_proc_stat(pid))


def _start_of(fields: Optional[List[str]]) -> Optional[str]:
    """The start time among :func:`_proc_stat`'s fields, or None."""
    return fields[19] if fields is not None and len(fields) > 19 else None


def pid_alive(pid: int, start: Optional[str] = None) -> bool:
    """Whether process ``pid`` runs on this host (another user's
    included), and, given its :func:`process_start_time` ``start``, is
    still that process. A zombie (ended, not yet reaped by its parent: a
    killed run whose launcher was killed too, in a container whose first
    process reaps nothing) has ended. On Windows, where ``os.kill`` would
    signal (or end) the process, every pid counts as running."""
    if os.name == 'nt':
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # none such (or no pid)
        return False
    except PermissionError:  # another user's process
        return True
    fields = _proc_stat(pid)
    if fields is None:  # no /proc (macOS): os.kill is all there is
        return True
    if fields[0] in ('Z', 'X'):  # zombie, dead
        return False
    # the same read: a pid reused since has another start time
    return start is None or _start_of(fields) in (None, start)

# Copyright (c) mmcoop contributors. All rights reserved.
"""Peak memory of one call, with public APIs only.

- CUDA: ``torch.cuda.max_memory_allocated()`` after
  ``reset_peak_memory_stats()``, minus what was allocated before the call:
  the peak of the tensors the call creates (weights and inputs excluded).
- CPU (Linux): the growth of the process's peak resident set size during
  the call: the kernel's high-water mark ``VmHWM`` is reset by writing
  ``5`` to ``/proc/self/clear_refs`` and read from ``/proc/self/status``
  afterwards; the resident size before the call (``VmRSS``) is subtracted.
  Before the call the C allocator's free memory is returned to the system
  (glibc ``malloc_trim``): otherwise a call could reuse pages that earlier
  work left resident, and its allocations would not show as growth (seen
  in full test runs). ``VmRSS`` is also sampled by a thread every 0.5 ms
  during the call, and the larger of the two peaks counts.
  This is all memory the process touched (tensors, allocator caches,
  library workspaces), so it is an upper bound of the tensor peak; memory
  the allocator keeps from earlier calls and reuses is not counted again.
  Elsewhere (no ``/proc``) the CPU peak is reported as NaN.
"""
import ctypes
import gc
import threading
from typing import Callable, Optional

import torch

__all__ = ['PeakMemory']

_STATUS = '/proc/self/status'
_CLEAR_REFS = '/proc/self/clear_refs'


def _status_kib(field: str) -> Optional[int]:
    try:
        with open(_STATUS) as f:
            for line in f:
                if line.startswith(field + ':'):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _release_free_heap() -> None:
    """Return the C allocator's free memory to the system (glibc
    ``malloc_trim(0)``; nothing where the C library has no such call)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


def _sampled_peak_kib(fn: Callable[[], object],
                      interval: float = 5e-4) -> int:
    """Run ``fn`` while a thread samples ``VmRSS``; the largest sample."""
    peak = [0]
    stop = threading.Event()

    def sample():
        while True:
            peak[0] = max(peak[0], _status_kib('VmRSS') or 0)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        fn()
    finally:
        stop.set()
        thread.join()
    return peak[0]


def _reset_peak_rss() -> bool:
    try:
        with open(_CLEAR_REFS, 'w') as f:
            f.write('5')  # reset VmHWM to the current VmRSS
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak memory (MiB) of what one call adds; see the module docstring.

    Args:
        device (torch.device): where the measured call runs.
    """

    def __init__(self, device: torch.device):
        self.cuda = torch.device(device).type == 'cuda'

    @property
    def what(self) -> str:
        """What :meth:`measure` reports, in words (for reports)."""
        if self.cuda:
            return ('CUDA max_memory_allocated during the call minus the '
                    'memory allocated before it')
        return ('growth of the process peak resident set size (Linux '
                'VmHWM) during the call')

    def measure(self, fn: Callable[[], object]) -> float:
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            fn()
            torch.cuda.synchronize()
            return (torch.cuda.max_memory_allocated() - base) / 2**20
        _release_free_heap()
        base = _status_kib('VmRSS')
        if base is None or not _reset_peak_rss():
            fn()
            return float('nan')
        sampled = _sampled_peak_kib(fn)
        peak = max(_status_kib('VmHWM') or 0, sampled)
        return max(0, peak - base) / 1024

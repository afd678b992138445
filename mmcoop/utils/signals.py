# Copyright (c) mmcoop contributors. All rights reserved.
"""``SIGTERM`` as an exit that runs the clean-up code."""
import signal
import threading
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Within the block, ``SIGTERM`` (``kill``, ``timeout``, a scheduler's
    stop) raises ``SystemExit(143)`` in the main thread instead of ending
    the process at once, so ``finally`` blocks and ``except
    BaseException`` handlers run: a sweep stops its train / test processes
    (they would otherwise go on, holding the GPU and their work dirs'
    locks), a run releases its work-dir lock and removes its partial files.

    Only where ``SIGTERM`` has Python's default disposition and in the main
    thread (where signal handlers can be set); the previous handler is
    restored after the block."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def _exit(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

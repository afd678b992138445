# Copyright (c) mmcoop contributors. All rights reserved.
"""Interleaved timing of several configurations of one model."""
import statistics
import time
from typing import Callable, Dict, Tuple

import torch

from .flops import count_flops
from .memory import PeakMemory

__all__ = ['run_configs', 'sync']


def sync(device: torch.device) -> None:
    """Wait for the device (CUDA) so that a timer sees finished work."""
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize()


def run_configs(configs: Dict[str, Tuple[Callable, Callable]], device,
                warmup: int, iters: int,
                memory: PeakMemory) -> Dict[str, dict]:
    """Time several configurations round-robin.

    ``configs`` maps a name to ``(setup, fn)``: ``setup()`` puts the model
    in that configuration (flags, train/eval mode, caches) and is not
    timed; ``fn()`` is the timed call. Interleaving the configurations
    makes their ratios robust to slow drifts of machine load.

    Returns:
        dict: per name ``time_s`` (best of ``iters``: the least disturbed
        run), ``median_s``, ``times``, and from one more, untimed call
        ``peak_mib`` (:class:`PeakMemory`) and ``flops``
        (:func:`count_flops`).
    """

    def call(setup, fn):
        setup()
        fn()

    for setup, fn in configs.values():
        for _ in range(warmup):
            call(setup, fn)
    sync(device)
    times = {name: [] for name in configs}
    for _ in range(iters):
        for name, (setup, fn) in configs.items():
            setup()
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    out = {}
    for name, (setup, fn) in configs.items():
        flops = {}

        def counted(setup=setup, fn=fn):
            flops['n'] = count_flops(lambda: call(setup, fn))

        peak = memory.measure(counted)
        t = times[name]
        out[name] = dict(
            time_s=min(t) if t else float('nan'),
            median_s=statistics.median(t) if t else float('nan'),
            times=[round(x, 4) for x in t],
            peak_mib=round(peak, 1),
            flops=flops['n'])
    return out

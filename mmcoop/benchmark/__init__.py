# Copyright (c) mmcoop contributors. All rights reserved.
"""What ``tools/analysis/benchmark.py`` measures, as a library.

- :mod:`.flops`: FLOP counting (``torch.utils.flop_counter`` plus the CPU
  flash-attention kernels it does not know);
- :mod:`.memory`: peak memory of one call, with public APIs only;
- :mod:`.timing`: interleaved timing of several configurations;
- :mod:`.projection`: the schedules, the paper's GPU-hours and the one
  projection of a full schedule from per-step seconds or FLOPs;
- :mod:`.steps`, :mod:`.epoch`: the measurements behind docs/benchmarks.md.
"""
from .flops import count_flops
from .memory import PeakMemory
from .projection import (PAPER_HOURS, SCHEDULES, gpu_hours, project,
                         project_totals)
from .timing import run_configs

__all__ = [
    'count_flops', 'PeakMemory', 'run_configs', 'SCHEDULES', 'PAPER_HOURS',
    'project', 'project_totals', 'gpu_hours'
]

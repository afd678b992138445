# Copyright (c) mmcoop contributors. All rights reserved.
"""Totals of a full training schedule from the cost of one step.

One arithmetic for every unit: :func:`project` takes a per-step quantity
(measured seconds ``time_s`` or counted ``flops``) and returns the total of
the schedule in that unit; :func:`gpu_hours` turns PFLOP into hours at a
given throughput. The projections are compute only: data loading and
per-step latency are not in them.
"""
import math
from typing import Dict

__all__ = [
    'SCHEDULES', 'PAPER_HOURS', 'PATHS', 'project', 'project_totals',
    'gpu_hours'
]

#: Images per split and epochs of the paper's schedules.
SCHEDULES = dict(
    COCO=dict(train=82081, val=40137, epochs=50, classes=80),
    VOC=dict(train=5011, val=4952, epochs=50, classes=20))
#: GPU-hours the paper reports for these schedules.
PAPER_HOURS = dict(
    COCO=dict(positivecoop=16, negativecoop=16, dualcoop=16, baseline=7.97),
    VOC=dict(positivecoop=3, negativecoop=3, dualcoop=3.55, baseline=1.5))
#: The projected paths: (train step, eval step, + one-off extraction).
PATHS = dict(
    straightforward=('T0', 'E0', False),
    truncation=('T1', 'E1', False),
    truncation_evalcache=('T1', 'E2', False),
    feature_cache=('T2', 'E3', True))


def project(step: Dict[str, dict],
            schedule: dict,
            quantity: str,
            batch_size: int,
            eval_batch_size: int,
            num_views: int = 1) -> Dict[str, float]:
    """Totals of a schedule for every path of :data:`PATHS`.

    ``epochs x (train steps x train step + val batches x eval step)``, and
    for the feature cache ``+ extraction``: the image tower once per train
    image and view and once per val image (``step['extract']`` is one eval
    batch through the tower).

    Args:
        step (dict): per step code (``T0`` ... ``E4``, ``extract``) a dict
            holding ``quantity``.
        schedule (dict): ``train``, ``val`` (images) and ``epochs``.
        quantity (str): ``'time_s'`` or ``'flops'``; the totals are in the
            same unit.
        batch_size (int): train batch size of the measured steps.
        eval_batch_size (int): eval batch size of the measured steps.
        num_views (int): cached views per train image. Defaults to 1.

    Returns:
        dict: the total per path, and ``extraction`` on its own.
    """
    steps = math.ceil(schedule['train'] / batch_size)
    val_batches = math.ceil(schedule['val'] / eval_batch_size)
    extraction = step['extract'][quantity] / eval_batch_size * (
        schedule['train'] * num_views + schedule['val'])
    out = {}
    for path, (train, evaluate, extract) in PATHS.items():
        out[path] = schedule['epochs'] * (
            steps * step[train][quantity] +
            val_batches * step[evaluate][quantity]) + (
                extraction if extract else 0.)
    out['extraction'] = extraction
    return out


def project_totals(res: dict, schedule: dict, batch_size: int,
                   eval_batch_size: int) -> Dict[str, Dict[str, float]]:
    """:func:`project` of a ``measure_steps`` result in report units:
    ``hours`` (from seconds) and ``pflop`` (from FLOPs)."""
    r = res['results']
    seconds = project(r, schedule, 'time_s', batch_size, eval_batch_size)
    flops = project(r, schedule, 'flops', batch_size, eval_batch_size)
    return dict(
        hours={k: v / 3600 for k, v in seconds.items()},
        pflop={k: v / 1e15 for k, v in flops.items()})


def gpu_hours(pflop: float, tflops: float, utilization: float = 1.0) -> float:
    """Hours to execute ``pflop`` PFLOP at ``utilization`` x ``tflops``."""
    return pflop * 1e3 / (tflops * utilization) / 3600

# Copyright (c) mmcoop contributors. All rights reserved.
"""Cached training runs sharing one device: the measurement of
``benchmark.py --mode shared``.

A cached training step (T2 of :mod:`.steps`) is bound by its latency
(kernel launches, the host's Python), not by the device's arithmetic, so
a sweep can run several cached runs on one GPU at once (``tools/sweep.py
--jobs``). This measures what that gains: for each process count K of
``opts.shared_procs``, K processes, each with its own copy of the model
(a head on random cached features, as a run of its own would have), train
at the same time, and their steps per second together are compared with
one process alone.

``max(K)`` worker processes are spawned once per method and class count
(``spawn``: CUDA cannot be forked); each builds its model on the device,
trains ``opts.warmup`` steps, then waits. In each of ``opts.shared_rounds``
rounds every K runs in turn (the order reversed every other round, so a
drift of the machine's load reaches every K alike): the first K workers
start together (a barrier) and train ``opts.iters`` steps each. Per
round and K: the span from the first start to the last end, the steps of
all K per second (``K x iters / span``) and each process's seconds per
step. Each process has ``opts.threads`` CPU threads (default 1), so that
on the CPU K processes use K threads.
"""
import queue
import statistics
import time
import traceback
from typing import Dict, List

import torch

from .steps import (_feature_batch, _image_batch, backbone_cfg, cached_model,
                    device_of, head_cfg)
from .timing import sync

__all__ = ['measure_shared', 'report_shared']

#: seconds a worker may take for one command (building, or one round)
_TIMEOUT_S = 900


def _worker(index: int, opts, method: str, num_classes: int, shape,
            barriers: dict, commands, results) -> None:
    """One process: a cached-step model, then rounds on command (``K``:
    wait for the K workers of the round, train ``opts.iters`` steps;
    None: exit)."""
    try:
        torch.set_num_threads(opts.threads or 1)
        from mmengine.logging import MMLogger
        from mmengine.optim import OptimWrapper

        import mmcoop.models  # noqa: F401
        from mmcoop.registry import MODELS
        MMLogger.get_instance('mmengine', log_level='ERROR')
        device = device_of(opts)
        embed_dim, positions = shape
        torch.manual_seed(0)
        head = MODELS.build(head_cfg(method, num_classes, opts, embed_dim))
        model = cached_model(head, device)
        model.train()
        params = [p for p in head.parameters() if p.requires_grad]
        optim = OptimWrapper(torch.optim.SGD(params, lr=1e-3, momentum=0.9))
        g = torch.Generator().manual_seed(index)
        batch = _feature_batch(
            _image_batch(opts.batch_size, 1, num_classes),
            torch.randn(opts.batch_size, embed_dim, positions, generator=g))
        for _ in range(opts.warmup):
            model.train_step(batch, optim)
        sync(device)
        results.put(('ready', index))
        while True:
            k = commands.get()
            if k is None:
                return
            barriers[k].wait()
            start = time.time()
            for _ in range(opts.iters):
                log_vars = model.train_step(batch, optim)
            sync(device)
            results.put(('done', index, k, start, time.time(),
                         float(log_vars['loss'])))
    except BaseException:  # noqa: B036 - reported to the parent
        results.put(('error', index, traceback.format_exc()))
        for barrier in barriers.values():
            barrier.abort()


def _collect(results, workers, count: int, what: str) -> List[tuple]:
    """``count`` messages from the workers; a worker's error, or one that
    died without a word (e.g. killed for memory), is raised."""
    got, deadline = [], time.time() + _TIMEOUT_S
    while len(got) < count:
        try:
            msg = results.get(timeout=5)
        except queue.Empty:
            dead = [i for i, p in enumerate(workers) if not p.is_alive()]
            if dead:
                raise RuntimeError(
                    f'shared mode: worker {dead[0]} died while {what} '
                    f'(exit code {workers[dead[0]].exitcode}).')
            if time.time() > deadline:
                raise RuntimeError(
                    f'shared mode: no answer within {_TIMEOUT_S} s while '
                    f'{what}.')
            continue
        if msg[0] == 'error':
            raise RuntimeError(
                f'shared mode: worker {msg[1]} failed while {what}:\n'
                f'{msg[2]}')
        got.append(msg)
    return got


def _measure(opts, method: str, num_classes: int, shape) -> dict:
    import multiprocessing
    ctx = multiprocessing.get_context('spawn')
    procs = sorted(set(opts.shared_procs))
    barriers = {k: ctx.Barrier(k) for k in procs}
    results = ctx.Queue()
    commands = [ctx.Queue() for _ in range(max(procs))]
    workers = [
        ctx.Process(
            target=_worker,
            args=(i, opts, method, num_classes, shape, barriers, commands[i],
                  results),
            daemon=True) for i in range(max(procs))
    ]
    rounds: List[Dict[str, dict]] = []
    try:
        for p in workers:
            p.start()
        _collect(results, workers, len(workers), 'building the models')
        for r in range(opts.shared_rounds):
            this = {}
            for k in (procs if r % 2 == 0 else procs[::-1]):
                for i in range(k):
                    commands[i].put(k)
                # (_, worker, k, start, end, loss), in worker order
                done = sorted(_collect(results, workers, k,
                                       f'running {k} at once'),
                              key=lambda m: m[1])
                starts = [m[3] for m in done]
                span = max(m[4] for m in done) - min(starts)
                this[str(k)] = dict(
                    span_s=span,
                    steps_per_s=k * opts.iters / span,
                    step_s=[(m[4] - m[3]) / opts.iters for m in done],
                    start_spread_s=max(starts) - min(starts),
                    loss=[m[5] for m in done])
            rounds.append(this)
    finally:
        for q in commands:
            q.put(None)
        for p in workers:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
    base = str(procs[0])
    per_k = {}
    for k in procs:
        ratios = [rd[str(k)]['steps_per_s'] / rd[base]['steps_per_s']
                  for rd in rounds]
        rates = [rd[str(k)]['steps_per_s'] for rd in rounds]
        best = max(rounds, key=lambda rd: rd[str(k)]['steps_per_s'])[str(k)]
        per_k[str(k)] = dict(
            steps_per_s=max(rates),
            median_steps_per_s=statistics.median(rates),
            step_s=statistics.mean(best['step_s']),
            vs_base=statistics.median(ratios))
    return dict(method=method, num_classes=num_classes, procs=procs,
                base=procs[0], results=per_k, rounds=rounds)


def measure_shared(opts) -> List[dict]:
    """:func:`_measure` of every method and class count of ``opts``."""
    import mmcoop.models  # noqa: F401
    from mmcoop.registry import MODELS

    # the cached features' shape: the image tower's (D, 1 + HW)
    backbone = MODELS.build(backbone_cfg(opts))
    shape = (backbone.embed_dim, backbone.num_positions)
    del backbone
    return [
        _measure(opts, method, c, shape) for method in opts.methods
        for c in opts.num_classes
    ]


def report_shared(results: List[dict], opts) -> str:
    base = results[0]['base'] if results else 1
    lines = [
        f'### Cached training runs sharing one device: {opts.device_desc}',
        '',
        f'Each process trains its own model from cached features (the T2 '
        f'step: batch {opts.batch_size}, {opts.model_name} features at '
        f'{opts.resolution} px, autocast={opts.autocast}, '
        f'compile={getattr(opts, "compile", None)}), {opts.iters} steps a '
        f'round, {opts.shared_rounds} round(s), the process counts '
        f'alternating; {opts.threads or 1} CPU thread(s) per process. '
        f'Steps/s: all processes together (best round, median); the ratio '
        f'is the median over rounds of the same round\'s ratio.', '',
        '| method | C | processes | steps/s, all processes | median | '
        f'seconds per step, each process | throughput vs {base} process'
        f'{"" if base == 1 else "es"} |', '|---|---|---|---|---|---|---|'
    ]
    for res in results:
        for k in res['procs']:
            r = res['results'][str(k)]
            lines.append(
                f'| {res["method"]} | {res["num_classes"]} | {k} | '
                f'{r["steps_per_s"]:.1f} | {r["median_steps_per_s"]:.1f} | '
                f'{r["step_s"]:.4f} | {r["vs_base"]:.2f}x |')
    return '\n'.join(lines)

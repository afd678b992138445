# Copyright (c) mmcoop contributors. All rights reserved.
"""Large vocabularies: the measurement of ``benchmark.py --mode vocab``.

One prompt head on cached dense features (no image encoder: the part that
grows with the number of classes C), in three variants, each measured in
its own process (``benchmark.py`` isolates every job) so that each has its
own peak memory:

=========  ============================================================
full       every class through the text encoder in one batch
chunked    ``text_encoder.text_chunk_size = opts.text_chunk_size``
subset     ``class_subset=dict(num_classes=opts.subset_classes)`` (and
           the same chunk size)
=========  ============================================================

Timed calls: ``train`` (one training step: loss, backward, SGD update) and
``eval_text`` (all C class features without gradient, what an evaluation
computes once). Peak memory: of the first call of each in the job's fresh
process (:class:`~mmcoop.benchmark.memory.PeakMemory`; on CPU the growth of
the peak resident size, freed heap memory returned to the system between
the two). Targets are Open Images-like: each image has
``opts.known_per_image`` known labels (half 1, half 0) at random classes,
every other target -1.
"""
from typing import List

import torch

from .memory import PeakMemory
from .steps import device_of, head_cfg
from .timing import run_configs

__all__ = ['VOCAB_VARIANTS', 'measure_vocab', 'report_vocab']

VOCAB_VARIANTS = ('full', 'chunked', 'subset')


def _release_freed_memory() -> None:
    """Return freed heap memory to the system (glibc ``malloc_trim``; a
    no-op elsewhere), so that the next CPU peak counts it again."""
    import gc
    gc.collect()
    try:
        import ctypes
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _sparse_targets(batch: int, num_classes: int, known: int,
                    g: torch.Generator) -> torch.Tensor:
    target = torch.full((batch, num_classes), -1.)
    for row in target:
        idx = torch.randperm(num_classes, generator=g)[:known]
        row[idx] = (torch.arange(len(idx)) % 2 == 0).float()
    return target


def measure_vocab(method: str, num_classes: int, variant: str,
                  opts) -> dict:
    """``train`` and ``eval_text`` of one head variant (module
    docstring)."""
    from mmengine.optim import OptimWrapper
    from mmpretrain.structures import DataSample

    import mmcoop.models  # noqa: F401
    from mmcoop.registry import MODELS
    device = device_of(opts)
    torch.manual_seed(0)
    cfg = head_cfg(method, num_classes, opts, None)
    if variant != 'full':
        cfg['text_encoder']['text_chunk_size'] = opts.text_chunk_size
    if variant == 'subset':
        cfg['class_subset'] = dict(num_classes=opts.subset_classes)
    head = MODELS.build(cfg).to(device)
    g = torch.Generator().manual_seed(0)
    positions = (opts.resolution // 32)**2
    dense = torch.randn(
        opts.batch_size, head.embed_dim, positions, generator=g).to(device)
    target = _sparse_targets(opts.batch_size, num_classes,
                             opts.known_per_image, g)
    samples = [DataSample().set_gt_score(t) for t in target]
    params = [p for p in head.parameters() if p.requires_grad]
    optim = OptimWrapper(torch.optim.SGD(params, lr=1e-3, momentum=0.9))

    def train():
        head.train()
        optim.update_params(head.loss((dense, ), samples)['loss'])

    def eval_text():
        head.eval()
        with torch.no_grad():
            head.class_features()

    # Peak memory first, in this fresh process: on CPU a later call reuses
    # memory the allocator kept and would not count it (see PeakMemory);
    # freed heap memory is handed back to the system between the two.
    memory = PeakMemory(device)
    peaks = dict(train=memory.measure(train))
    _release_freed_memory()
    peaks['eval_text'] = memory.measure(eval_text)
    results = run_configs(
        dict(train=(lambda: None, train), eval_text=(lambda: None,
                                                     eval_text)), device,
        opts.warmup, opts.iters, memory)
    for name, peak in peaks.items():
        results[name]['peak_mib'] = round(peak, 1)
    return dict(
        method=method,
        num_classes=num_classes,
        variant=variant,
        known_classes=int((target != -1).any(0).sum()),
        results=results)


def report_vocab(results: List[dict], opts) -> str:
    lines = [
        f'### Large vocabularies: head on cached features, time (s, best '
        f'of {opts.iters}) and peak memory (MiB) on {opts.device_desc}', '',
        f'batch {opts.batch_size}, {opts.model_name}, '
        f'{(opts.resolution // 32)**2} positions, '
        f'{opts.known_per_image} known labels per image; chunked: '
        f'text_chunk_size={opts.text_chunk_size}; subset: '
        f'class_subset.num_classes={opts.subset_classes} (+ chunks).', '',
        '| method | C | known classes in batch | variant | train step '
        '(peak MiB) | eval class features (peak MiB) |',
        '|---|---|---|---|---|---|'
    ]
    for r in results:
        t, e = r['results']['train'], r['results']['eval_text']
        lines.append(
            f'| {r["method"]} | {r["num_classes"]} | {r["known_classes"]} '
            f'| {r["variant"]} | {t["time_s"]:.3f} ({t["peak_mib"]:.0f}) '
            f'| {e["time_s"]:.3f} ({e["peak_mib"]:.0f}) |')
    return '\n'.join(lines)

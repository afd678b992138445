# Copyright (c) mmcoop contributors. All rights reserved.
"""What CPU bf16 autocast of the frozen towers does to a model's outputs
and step time: the measurement of ``tools/analysis/cpu_bf16.py``.

One model is built twice with the same seed, the second with
``autocast_dtype='bf16', autocast_cpu=True`` on its image tower and (prompt
heads) its text tower;
both score the config's val images (uncached) and time a forward+backward
of the loss on one training-size batch, the two sides alternating
(:func:`~mmcoop.benchmark.timing.run_configs`).
"""
import copy
from typing import Optional

import torch

from .cache_storage import _outputs
from .memory import PeakMemory
from .timing import run_configs

__all__ = ['cpu_bf16_error']

BF16 = dict(autocast_dtype='bf16', autocast_cpu=True)


def _build(cfg, seed, bf16):
    """The config's model; with ``bf16`` its towers autocast (the image
    tower, and the text tower of a prompt head: the Baseline has none)."""
    from mmcoop.models.backbones import FrozenCLIP
    from mmcoop.registry import MODELS
    c = copy.deepcopy(cfg.model)
    if bf16:
        c.backbone.update(BF16)
        if 'text_encoder' in c.head:
            c.head.text_encoder.update(BF16)
    torch.manual_seed(seed)
    model = MODELS.build(c)
    if not isinstance(model.backbone, FrozenCLIP):
        raise ValueError(
            f'model.backbone is {type(model.backbone).__name__}: the bf16 '
            'comparison autocasts a FrozenCLIP image tower. Fix: give a '
            "config with model.backbone=dict(type='FrozenCLIP', ...).")
    return model


def cpu_bf16_error(cfg,
                   num_images: Optional[int] = None,
                   batch_size: int = 16,
                   seed: int = 0,
                   warmup: int = 1,
                   iters: int = 5) -> dict:
    """Logit/score differences and step times, bf16 towers vs fp32 (CPU).

    Returns:
        dict: ``images``, ``max_logit`` (fp32), ``max_abs_logit_diff``,
        ``max_rel_logit_diff`` (to ``max_logit``), ``max_abs_score_diff``,
        and per side (``fp32``, ``bf16``) the best and median
        forward+backward seconds of one ``batch_size`` batch.
    """
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import DefaultScope

    from mmcoop.registry import DATASETS
    with DefaultScope.overwrite_default_scope('mmcoop'):
        dataset = DATASETS.build(cfg.val_dataloader.dataset)
        models = dict(fp32=_build(cfg, seed, False),
                      bf16=_build(cfg, seed, True))
        n = len(dataset) if num_images is None else min(
            num_images, len(dataset))
        (_, lg32, sc32), (_, lg, sc) = (
            _outputs(models[k], dataset, list(range(n)), batch_size)
            for k in ('fp32', 'bf16'))
        top = float(lg32.abs().max())
        diff = float((lg - lg32).abs().max())
        res = dict(
            images=n,
            max_logit=top,
            max_abs_logit_diff=diff,
            max_rel_logit_diff=diff / top if top else 0.0,
            max_abs_score_diff=float((sc - sc32).abs().max()))
        batch = pseudo_collate(
            [dataset[i % len(dataset)] for i in range(batch_size)])

        def step(model):
            data = model.data_preprocessor(batch, True)
            loss = sum(v for k, v in model(**data, mode='loss').items()
                       if 'loss' in k)
            loss.backward()

        for model in models.values():
            model.train()
        times = run_configs(
            {k: (lambda: None, lambda m=m: step(m))
             for k, m in models.items()}, torch.device('cpu'), warmup, iters,
            PeakMemory(torch.device('cpu')))
        for k, r in times.items():
            res[f'{k}_step_s'] = r['time_s']
            res[f'{k}_step_median_s'] = r['median_s']
        res['fp32_over_bf16'] = res['fp32_step_s'] / res['bf16_step_s']
    return res

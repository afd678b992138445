# Copyright (c) mmcoop contributors. All rights reserved.
"""What the storage dtype of the feature cache does to a model's outputs:
the measurement of ``tools/analysis/cache_storage_error.py``.

The val dataset of a config is cached once per dtype (through the config
switch, :func:`~mmcoop.datasets.feature_cache.apply_feature_cache`, as a
run would) and one model, built once, scores every cache; logits and
scores are compared with the float32 cache (the exact features).
"""
import copy
from typing import Dict, Optional, Sequence

import torch

__all__ = ['storage_error']


def _outputs(model, dataset, indices, batch_size):
    from mmengine.dataset import pseudo_collate
    feats, logits, scores = [], [], []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(indices), batch_size):
            batch = pseudo_collate(
                [dataset[i] for i in indices[start:start + batch_size]])
            data = model.data_preprocessor(batch, False)
            feats.append(data['inputs'].float())
            logits.append(model(data['inputs'], mode='tensor').float())
            scores.append(
                torch.stack([s.pred_score for s in model.val_step(batch)]))
    return torch.cat(feats), torch.cat(logits), torch.cat(scores)


def storage_error(cfg,
                  cache_root: str,
                  dtypes: Sequence[str] = ('float16', 'int8'),
                  num_images: Optional[int] = None,
                  batch_size: int = 16,
                  seed: int = 0) -> Dict[str, dict]:
    """Logit and score differences of each storage dtype vs float32.

    Args:
        cfg (mmengine.Config): a config with an image tower (not modified).
        cache_root (str): where the caches of the val dataset are built.
        dtypes (Sequence[str]): storage dtypes to compare with float32.
        num_images (int, optional): score the first ``num_images`` only.
        batch_size (int): scoring batch size.
        seed (int): seed of the model's random initialisation (one model
            scores every cache).

    Returns:
        dict: per dtype, ``feature_rel_err`` (norm-wise), the largest
        absolute and relative (to the largest float32 logit) logit
        differences, ``max_abs_score_diff`` and ``max_logit`` (float32).
    """
    from mmengine.registry import DefaultScope

    from mmcoop.datasets.feature_cache import apply_feature_cache
    from mmcoop.registry import DATASETS, MODELS
    model, results, ref = None, {}, None
    with DefaultScope.overwrite_default_scope('mmcoop'):
        for dtype in ('float32', *dtypes):
            c = copy.deepcopy(cfg)
            c.feature_cache = dict(
                cache_root=cache_root, dtype=dtype, progress=False)
            c = apply_feature_cache(c)
            dataset = DATASETS.build(c.val_dataloader.dataset)
            if model is None:
                torch.manual_seed(seed)
                model = MODELS.build(c.model)
            n = len(dataset) if num_images is None else min(
                num_images, len(dataset))
            out = _outputs(model, dataset, list(range(n)), batch_size)
            if ref is None:
                ref = out
                continue
            (f, lg, sc), (f32, lg32, sc32) = out, ref
            top = float(lg32.abs().max())
            diff = float((lg - lg32).abs().max())
            results[dtype] = dict(
                images=n,
                feature_rel_err=float((f - f32).norm() / f32.norm()),
                max_abs_logit_diff=diff,
                max_rel_logit_diff=diff / top if top else 0.0,
                max_abs_score_diff=float((sc - sc32).abs().max()),
                max_logit=top)
    return results

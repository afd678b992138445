# Copyright (c) mmcoop contributors. All rights reserved.
"""One training epoch with the data path, uncached vs the feature cache:
the measurement of ``benchmark.py --mode epoch``.

The train images go through the augmenting train pipeline of
``opts.epoch_pipeline`` (:func:`~mmcoop.benchmark.data.pipeline_cfg`:
``'tensor'`` the configs' uint8 tensor path, ``'mmcv'`` the NumPy-array
one, ``'device'`` the device path of ``data_path='device'``:
``LoadImageBytes`` decodes and resizes in the loader workers, then
``DeviceAugmentPreprocessor`` augments the batch on the model's device;
``'device-decode'`` that of ``data_path='device-decode'``, where the
device also decodes and resizes), the validation images through its test
pipeline;
the cache is built from one view of the same pipeline."""
import os
import os.path as osp
import shutil
import tempfile
import time

import torch

from .data import make_images, pipeline_cfg
from .steps import (backbone_cfg, clip_preprocessor, device_of, head_cfg,
                    model_pair)
from .timing import sync

__all__ = ['EPOCH_PIPELINES', 'measure_epoch']

#: ``--epoch-pipeline`` -> (the data path of ``pipeline_cfg``, the image
#: data preprocessor)
EPOCH_PIPELINES = {
    'tensor': ('tensor', clip_preprocessor()),
    'tensor-draft': ('tensor-draft', clip_preprocessor()),
    'mmcv': ('mmcv', clip_preprocessor()),
    'device': ('device', dict(type='mmcoop.DeviceAugmentPreprocessor')),
    'device-decode': ('bytes',
                      dict(type='mmcoop.DeviceAugmentPreprocessor')),
}


def measure_epoch(opts) -> dict:
    """A real epoch (decode + encoder + head) vs. the same from the cache."""
    from mmengine.dataset import DefaultSampler, pseudo_collate
    from mmengine.optim import OptimWrapper
    from mmpretrain.datasets import MultiLabelDataset
    from torch.utils.data import DataLoader

    import mmcoop.models  # noqa: F401
    from mmcoop.datasets.feature_cache import CachedFeatureDataset
    from mmcoop.registry import MODELS
    device = device_of(opts)
    res_px = opts.epoch_resolution
    num_classes = opts.epoch_classes
    tmp = tempfile.mkdtemp(prefix='mmcoop-bench-')
    # validation every epoch, as the official recipe; COCO's val/train ratio
    num_val = opts.epoch_val_images if opts.epoch_val_images is not None \
        else max(1, round(opts.epoch_images * 40137 / 82081))
    out = dict(
        images=opts.epoch_images,
        val_images=num_val,
        resolution=res_px,
        workers=opts.workers,
        batch_size=opts.batch_size,
        num_classes=num_classes,
        pipeline=opts.epoch_pipeline)
    path, preprocessor = EPOCH_PIPELINES[opts.epoch_pipeline]
    try:
        root = osp.join(tmp, 'images')
        os.makedirs(root)
        make_images(root, opts.epoch_images, num_classes)
        val_root = osp.join(tmp, 'val_images')
        os.makedirs(val_root)
        make_images(val_root, num_val, num_classes, seed=1)
        dataset = MultiLabelDataset(
            ann_file='ann.json',
            data_root=root,
            data_prefix='',
            pipeline=pipeline_cfg(path, res_px))
        val_dataset = MultiLabelDataset(
            ann_file='ann.json',
            data_root=val_root,
            data_prefix='',
            pipeline=pipeline_cfg(path, res_px, False),
            test_mode=True)
        torch.manual_seed(0)
        backbone = MODELS.build(backbone_cfg(opts, res_px))

        def build_cache(ds, name, dtype, batch_size):
            t0 = time.perf_counter()
            cache = CachedFeatureDataset(
                ds,
                backbone,
                osp.join(tmp, name),
                data_preprocessor=preprocessor,
                batch_size=batch_size,
                num_workers=opts.workers,
                dtype=dtype,
                device=str(device),
                progress=False)
            return cache, time.perf_counter() - t0

        caches = {}
        for dtype in ('float16', 'float32'):
            caches[dtype], out[f'extract_{dtype}_s'] = build_cache(
                dataset, f'cache_{dtype}', dtype, opts.batch_size)
        val_cache, out['extract_val_float16_s'] = build_cache(
            val_dataset, 'cache_val', 'float16', opts.eval_batch_size)
        # fp16 storage error
        f16 = torch.stack(
            [caches['float16'].read(i) for i in range(len(dataset))]).float()
        f32 = torch.stack(
            [caches['float32'].read(i) for i in range(len(dataset))])
        out['fp16_rel_err_features'] = float((f16 - f32).norm() / f32.norm())
        out['fp16_max_rel_err_elem'] = float(
            ((f16 - f32).abs() / f32.abs().clamp(min=1e-3)).max())

        def loader(ds, train=True):
            return DataLoader(
                ds,
                batch_size=opts.batch_size if train else opts.eval_batch_size,
                sampler=DefaultSampler(ds, shuffle=train, seed=0),
                num_workers=opts.workers,
                collate_fn=pseudo_collate,
                persistent_workers=False)

        for method in opts.epoch_methods:
            torch.manual_seed(1)
            head = MODELS.build(
                head_cfg(method, num_classes, opts, backbone.embed_dim))
            img_model, cache_model = model_pair(
                backbone, head, device, preprocessor)
            params = [p for p in head.parameters() if p.requires_grad]
            optim = OptimWrapper(torch.optim.SGD(params, lr=1e-3))

            def epoch(model, ds):
                model.train()
                t0 = time.perf_counter()
                for batch in loader(ds):
                    model.train_step(batch, optim)
                sync(device)
                return time.perf_counter() - t0

            def validate(model, ds):
                """A validation pass (text features once per evaluation)."""
                model.eval()
                t0 = time.perf_counter()
                with torch.no_grad():
                    for batch in loader(ds, train=False):
                        model.val_step(batch)
                sync(device)
                return time.perf_counter() - t0

            def supply(model, ds):
                """Loader + image features only (what the cache replaces)."""
                t0 = time.perf_counter()
                with torch.no_grad():
                    for batch in loader(ds):
                        data = model.data_preprocessor(batch, False)
                        model.extract_feat(data['inputs'])
                sync(device)
                return time.perf_counter() - t0

            # warm-up (kernel selection, page cache)
            epoch(img_model, dataset)
            epoch(cache_model, caches['float16'])
            r = dict(
                uncached_epoch_s=epoch(img_model, dataset),
                uncached_val_s=validate(img_model, val_dataset),
                cached_epoch_s=epoch(cache_model, caches['float16']),
                cached_val_s=validate(cache_model, val_cache),
                uncached_supply_s=supply(img_model, dataset),
                cached_supply_s=supply(cache_model, caches['float16']))
            r['epoch_speedup'] = r['uncached_epoch_s'] / r['cached_epoch_s']
            for kind in ('uncached', 'cached'):
                r[f'{kind}_images_per_s'] = (
                    opts.epoch_images / r[f'{kind}_epoch_s'])
            r['train_val_speedup'] = (
                (r['uncached_epoch_s'] + r['uncached_val_s']) /
                (r['cached_epoch_s'] + r['cached_val_s']))
            r['supply_speedup'] = r['uncached_supply_s'] / r['cached_supply_s']
            # fp16 vs fp32 cache: logits of the same head
            cache_model.eval()
            with torch.no_grad():
                idx = list(range(min(len(dataset), opts.batch_size)))
                logits = {}
                for dtype, ds in caches.items():
                    batch = pseudo_collate([ds[i] for i in idx])
                    data = cache_model.data_preprocessor(batch, False)
                    logits[dtype] = cache_model(data['inputs'], mode='tensor')
                diff = (logits['float16'] - logits['float32']).abs()
                r['fp16_max_abs_logit_diff'] = float(diff.max())
                p16 = logits['float16'].softmax(1)[:, 1]
                p32 = logits['float32'].softmax(1)[:, 1]
                r['fp16_max_abs_score_diff'] = float((p16 - p32).abs().max())
            out[method] = r
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out

# Copyright (c) mmcoop contributors. All rights reserved.
"""Speed and memory of PositiveCoOp / NegativeCoOp / DualCoOp / Baseline,
with and without mmcoop's exact optimisations, and projected schedule hours.

Modes (``--mode``, default ``all``):

* ``steps``: for each method and class count (C=80 ~ COCO, C=20 ~ VOC) the
  train-step and eval-step time and peak memory of

  ======  ===========================================================
  T0      image encoder + text transformer over all 77 tokens
          ("straightforward", the official recipe minus its waste)
  T1      image encoder + exact text truncation (``truncate=True``)
  T2      feature cache (no image encoder) + truncation
  E0      eval: image encoder, 77-token text re-encoded every batch
  E1      eval: image encoder, truncated text re-encoded every batch
  E2      eval: image encoder, text features computed once (eval cache)
  E3      eval: feature cache + eval text cache
  E4      eval: feature cache, truncated text re-encoded every batch
  ======  ===========================================================

  and the projected hours of the full 50-epoch COCO (82,081 train / 40,137
  val) and VOC (5,011 / 4,952) schedules on the measuring device, next to
  the paper's GPU hours. Projections are ``epochs x (train steps x train
  step time + val batches x eval step time)`` (+ the one-off extraction for
  the cache), compute only: data loading is excluded (see ``epoch``).
* ``text``: text-encoder forward+backward for the C prompts, 77 tokens vs
  exact truncation, with the output / input-gradient equality check.
* ``epoch``: one training epoch over generated JPEGs (decode + resize +
  image encoder + head, ``--workers`` loader processes) against the same
  epoch read from a feature cache; the one-off extraction time; the fp16
  cache error against an fp32 cache.
* ``amp``: image-encoder forward with the ``autocast_dtype`` and
  ``channels_last`` options (the autocast options only act on CUDA).

Random weights unless ``--pretrained`` is given (times do not depend on the
weight values). Each method is measured in a fresh subprocess
(``--no-isolate`` to stay in one process). Peak memory is that of the
tensors created during one step (weights and inputs excluded): CUDA
``max_memory_allocated``, or on CPU PyTorch's profiler memory timeline, in
an extra, untimed step.

Examples::

    # the figures of docs/benchmarks.md (this CPU, paper settings)
    python tools/analysis/benchmark.py --mode steps --iters 1 --warmup 1
    # a quick CPU run
    python tools/analysis/benchmark.py --resolution 224 --batch-size 8 \\
        --methods positivecoop baseline --num-classes 20
    # on a GPU
    python tools/analysis/benchmark.py --device cuda --autocast fp16 \\
        --channels-last --iters 20 --warmup 5
"""
import argparse
import gc
import json
import math
import os
import os.path as osp
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

METHODS = ('positivecoop', 'negativecoop', 'dualcoop', 'baseline')
HEADS = dict(
    positivecoop='PositiveCoOpHead',
    negativecoop='NegativeCoOpHead',
    dualcoop='DualCoOpHead',
    baseline='BaselineHead')
SCHEDULES = dict(
    COCO=dict(train=82081, val=40137, epochs=50, classes=80),
    VOC=dict(train=5011, val=4952, epochs=50, classes=20))
PAPER_HOURS = dict(
    COCO=dict(positivecoop=16, negativecoop=16, dualcoop=16, baseline=7.97),
    VOC=dict(positivecoop=3, negativecoop=3, dualcoop=3.55, baseline=1.5))


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
class PeakMemory:
    """Peak memory of new tensors during one call (MiB).

    CUDA: ``max_memory_allocated`` minus the memory allocated before the
    call. CPU: PyTorch's profiler memory timeline (tensors created minus
    tensors destroyed, at their peak); tensors that exist before the call
    (weights, inputs) are not counted, as on CUDA. The profiled call is an
    extra one, not part of the timing.
    """

    def __init__(self, device):
        import torch
        self.torch = torch
        self.cuda = device.type == 'cuda'

    def measure(self, fn) -> float:
        torch = self.torch
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            fn()
            torch.cuda.synchronize()
            return (torch.cuda.max_memory_allocated() - base) / 2**20
        try:
            from torch.profiler import ProfilerActivity, profile
            from torch.profiler._memory_profiler import Action
            with profile(
                    activities=[ProfilerActivity.CPU],
                    profile_memory=True,
                    record_shapes=True,
                    with_stack=True) as prof:
                fn()
            cur = peak = 0
            for _, action, (key, _), size in prof._memory_profile().timeline:
                if key.device.type != 'cpu':
                    continue
                if action == Action.CREATE:
                    cur += size
                elif action == Action.DESTROY:
                    cur -= size
                peak = max(peak, cur)
            return peak / 2**20
        except Exception:  # noqa: BLE001 - private API; report unknown
            return float('nan')


def _cpu_sdpa_flop_mapping() -> dict:
    """FLOP formulas for the CPU flash-attention kernels.

    ``torch.utils.flop_counter`` knows the CUDA attention kernels but not
    ``_scaled_dot_product_flash_attention_for_cpu`` (and its backward),
    which the text transformer uses on CPU; without these formulas the
    attention matmuls (~2.5 % of the 77-token text FLOPs) would be missed.
    """
    import torch
    from torch.utils import flop_counter as fc
    aten = torch.ops.aten
    mapping = {}
    fwd = getattr(aten, '_scaled_dot_product_flash_attention_for_cpu', None)
    bwd = getattr(aten,
                  '_scaled_dot_product_flash_attention_for_cpu_backward',
                  None)
    if fwd is not None and hasattr(fc, 'sdpa_flop_count'):

        def fwd_flop(query, key, value, *args, out_shape=None, **kwargs):
            # FlopCounterMode passes shapes in place of tensors
            return fc.sdpa_flop_count(query, key, value)

        mapping[fwd] = fwd_flop
    if bwd is not None and hasattr(fc, 'sdpa_backward_flop_count'):

        def bwd_flop(grad_out, query, key, value, *args, out_shape=None,
                     **kwargs):
            return fc.sdpa_backward_flop_count(grad_out, query, key, value)

        mapping[bwd] = bwd_flop
    return mapping


def count_flops(fn) -> int:
    """FLOPs of one call (2 per multiply-add; matmuls, convolutions and
    attention, as ``torch.utils.flop_counter.FlopCounterMode`` counts)."""
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(
        display=False, custom_mapping=_cpu_sdpa_flop_mapping())
    with counter:
        fn()
    return int(counter.get_total_flops())


def _sync(device):
    import torch
    if device.type == 'cuda':
        torch.cuda.synchronize()


def _run_configs(configs: Dict[str, tuple], device, warmup: int, iters: int,
                 memory: PeakMemory) -> Dict[str, dict]:
    """Time several configurations round-robin.

    ``configs`` maps a name to ``(setup, fn)``: ``setup()`` puts the model
    in that configuration (flags, train/eval mode, caches) and is not
    timed; ``fn()`` is the timed call. Interleaving the configurations
    makes their ratios robust to slow drifts of machine load; ``time_s`` is
    the best of ``iters`` (the least disturbed run), ``median_s`` the
    median. The peak memory and the FLOPs (``flops``, see
    :func:`count_flops`) come from one more, untimed call.
    """

    def call(setup, fn):
        setup()
        fn()

    for setup, fn in configs.values():
        for _ in range(warmup):
            call(setup, fn)
    _sync(device)
    times = {name: [] for name in configs}
    for _ in range(iters):
        for name, (setup, fn) in configs.items():
            setup()
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    out = {}
    for name, (setup, fn) in configs.items():
        flops = {}

        def counted(setup=setup, fn=fn):
            flops['n'] = count_flops(lambda: call(setup, fn))

        peak = memory.measure(counted)
        out[name] = dict(
            time_s=min(times[name]) if times[name] else float('nan'),
            median_s=statistics.median(times[name])
            if times[name] else float('nan'),
            times=[round(t, 4) for t in times[name]],
            peak_mib=round(peak, 1),
            flops=flops['n'])
    return out


def _classnames(num_classes: int) -> List[str]:
    try:
        from mmcoop.datasets.categories import (COCO2014_CATEGORIES,
                                                VOC2007_CATEGORIES)
        if num_classes == 80:
            return list(COCO2014_CATEGORIES)
        if num_classes == 20:
            return list(VOC2007_CATEGORIES)
    except ImportError:
        pass
    return [f'class {i}' for i in range(num_classes)]


def _device(args):
    import torch
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda: no CUDA device is available.')
    return torch.device(args.device)


def _head_cfg(method, num_classes, args, embed_dim):
    if method == 'baseline':
        return dict(
            type='BaselineHead',
            classnames=_classnames(num_classes),
            in_channels=embed_dim)
    return dict(
        type=HEADS[method],
        classnames=_classnames(num_classes),
        text_encoder=dict(
            type='FrozenCLIPTextEncoder',
            model_name=args.model_name,
            pretrained=args.pretrained,
            truncate=True,
            autocast_dtype=args.autocast))


def _backbone_cfg(args, resolution=None):
    return dict(
        type='FrozenCLIP',
        model_name=args.model_name,
        pretrained=args.pretrained,
        input_resolution=resolution or args.resolution,
        autocast_dtype=args.autocast,
        channels_last=args.channels_last)


def _image_batch(batch_size, resolution, num_classes, seed=0):
    import torch
    from mmpretrain.structures import DataSample
    g = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for _ in range(batch_size):
        inputs.append(
            torch.randint(
                0,
                256, (3, resolution, resolution),
                generator=g,
                dtype=torch.uint8))
        score = torch.randint(-1, 2, (num_classes, ), generator=g).float()
        samples.append(DataSample().set_gt_score(score))
    return dict(inputs=inputs, data_samples=samples)


def _clip_preprocessor() -> dict:
    """The image data preprocessor of CLIP (mean/std on 0-255, BGR->RGB)."""
    return dict(type='mmcoop.CLIPDataPreprocessor')


def _model_pair(backbone, head, device):
    """``ImageClassifier``s sharing ``head``: one on images (``backbone``),
    one on cached features (``PrecomputedFeatures``)."""
    from mmpretrain.models import ImageClassifier

    from mmcoop.registry import MODELS
    img_model = ImageClassifier(
        backbone=backbone, head=head,
        data_preprocessor=_clip_preprocessor()).to(device)
    cache_model = ImageClassifier(
        backbone=MODELS.build(dict(type='PrecomputedFeatures')),
        head=head,
        data_preprocessor=MODELS.build(
            dict(type='FeatureDataPreprocessor'))).to(device)
    return img_model, cache_model


def _feature_batch(batch, feats):
    """The batch as a feature-cache loader gives it: fp16 (D, N) on CPU."""
    import torch
    return dict(
        inputs=list(feats.to('cpu', torch.float16).unbind(0)),
        data_samples=batch['data_samples'])


# --------------------------------------------------------------------------
# steps
# --------------------------------------------------------------------------
def measure_steps(method: str, num_classes: int, args) -> dict:
    """T0-T2 and E0-E3 of one method (see the module docstring)."""
    import torch
    from mmengine.optim import OptimWrapper

    import mmcoop.models  # noqa: F401
    from mmcoop.registry import MODELS
    device = _device(args)
    torch.manual_seed(0)
    backbone = MODELS.build(_backbone_cfg(args))
    head = MODELS.build(
        _head_cfg(method, num_classes, args, backbone.embed_dim))
    img_model, cache_model = _model_pair(backbone, head, device)
    params = [p for p in head.parameters() if p.requires_grad]
    optim = OptimWrapper(torch.optim.SGD(params, lr=1e-3, momentum=0.9))
    memory = PeakMemory(device)
    train_batch = _image_batch(args.batch_size, args.resolution, num_classes)
    eval_batch = _image_batch(
        args.eval_batch_size, args.resolution, num_classes, seed=1)
    with torch.no_grad():
        feats = [
            img_model.extract_feat(
                img_model.data_preprocessor(b, False)['inputs'])[0]
            for b in (train_batch, eval_batch)
        ]
    train_cached = _feature_batch(train_batch, feats[0])
    eval_cached = _feature_batch(eval_batch, feats[1])
    del feats
    prompt = method != 'baseline'
    text = head.text_encoder if prompt else None
    with torch.no_grad():
        extract_inputs = img_model.data_preprocessor(eval_batch,
                                                     False)['inputs']

    def setup(train_mode, truncate=True, text_cache=True):

        def run():
            img_model.train(train_mode)
            cache_model.train(train_mode)
            if text is not None:
                text.truncate = truncate
            if prompt and not text_cache:
                head._cache = head._cache_key = None
            elif prompt and not train_mode:
                # an eval after training steps: the first batch computes
                # the text features once per evaluation; later batches
                # (the timed one) reuse them
                with torch.no_grad():
                    head.cached_class_features()

        return run

    def train(model, batch):
        return lambda: model.train_step(batch, optim)

    def evaluate(model, batch):

        def run():
            with torch.no_grad():  # as mmengine's ValLoop
                return model.val_step(batch)

        return run

    def extract():
        with torch.no_grad():
            img_model.extract_feat(extract_inputs)

    configs = dict(
        T0=(setup(True, truncate=False), train(img_model, train_batch)),
        T1=(setup(True), train(img_model, train_batch)),
        T2=(setup(True), train(cache_model, train_cached)),
        E0=(setup(False, truncate=False,
                  text_cache=False), evaluate(img_model, eval_batch)),
        E1=(setup(False, text_cache=False), evaluate(img_model, eval_batch)),
        E2=(setup(False), evaluate(img_model, eval_batch)),
        E3=(setup(False), evaluate(cache_model, eval_cached)),
        E4=(setup(False, text_cache=False), evaluate(cache_model,
                                                     eval_cached)),
        extract=(setup(False), extract))
    if not prompt:  # no text encoder: T0 = T1, E0 = E1 = E2, E4 = E3
        for name in ('T0', 'E0', 'E1', 'E4'):
            del configs[name]
    results = _run_configs(configs, device, args.warmup, args.iters, memory)
    if not prompt:
        results['T0'] = results['T1']
        results['E0'] = results['E1'] = results['E2']
        results['E4'] = results['E3']
    return dict(
        method=method,
        num_classes=num_classes,
        embed_dim=backbone.embed_dim,
        positions=backbone.num_positions,
        results=results)


def project(res: dict, schedule: dict, args, num_views: int = 1) -> dict:
    """Projected hours of a full schedule from measured step times."""
    bs, ebs = args.batch_size, args.eval_batch_size
    steps = math.ceil(schedule['train'] / bs)
    val_batches = math.ceil(schedule['val'] / ebs)
    ep = schedule['epochs']
    r = res['results']

    def hours(train_key, eval_key, extract=False):
        total = ep * (
            steps * r[train_key]['time_s'] +
            val_batches * r[eval_key]['time_s'])
        if extract:
            per_image = r['extract']['time_s'] / ebs
            total += per_image * (
                schedule['train'] * num_views + schedule['val'])
        return total / 3600

    return dict(
        straightforward=hours('T0', 'E0'),
        truncation=hours('T1', 'E1'),
        truncation_evalcache=hours('T1', 'E2'),
        feature_cache=hours('T2', 'E3', extract=True),
        extraction=r['extract']['time_s'] / ebs *
        (schedule['train'] * num_views + schedule['val']) / 3600)


def project_flops(res: dict, schedule: dict, args,
                  num_views: int = 1) -> dict:
    """FLOPs (PFLOP) of a full schedule from the counted step FLOPs.

    Same arithmetic as :func:`project` with FLOPs in place of seconds; it
    does not depend on the measuring device, so a CPU run projects GPU
    hours as ``PFLOP / throughput`` (a compute lower bound at the peak;
    see ``--gpu-tflops`` and ``--gpu-utilization``).
    """
    bs, ebs = args.batch_size, args.eval_batch_size
    steps = math.ceil(schedule['train'] / bs)
    val_batches = math.ceil(schedule['val'] / ebs)
    ep = schedule['epochs']
    r = res['results']
    extraction = r['extract']['flops'] / ebs * (
        schedule['train'] * num_views + schedule['val'])

    def total(train_key, eval_key, extract=False):
        flops = ep * (
            steps * r[train_key]['flops'] +
            val_batches * r[eval_key]['flops'])
        return (flops + (extraction if extract else 0)) / 1e15

    return dict(
        straightforward=total('T0', 'E0'),
        truncation=total('T1', 'E1'),
        truncation_evalcache=total('T1', 'E2'),
        feature_cache=total('T2', 'E3', extract=True),
        extraction=extraction / 1e15)


def gpu_hours(pflop: float, tflops: float, utilization: float = 1.0) -> float:
    """Hours to execute ``pflop`` PFLOP at ``utilization`` x ``tflops``."""
    return pflop * 1e3 / (tflops * utilization) / 3600


# --------------------------------------------------------------------------
# text
# --------------------------------------------------------------------------
def measure_text(method: str, num_classes: int, args) -> dict:
    """Text fwd+bwd over the method's prompts: 77 tokens vs truncation."""
    import torch

    import mmcoop.models  # noqa: F401
    from mmcoop.registry import MODELS
    device = _device(args)
    torch.manual_seed(0)
    head = MODELS.build(_head_cfg(method, num_classes, args, 512)).to(device)
    text = head.text_encoder
    memory = PeakMemory(device)
    prompts = [
        m for m in (getattr(head, 'neg_prompt', None),
                    getattr(head, 'pos_prompt', None)) if m is not None
    ]

    def step():
        feats = head.encode_prompts(*prompts)
        feats.square().sum().backward()

    def setup(flag):

        def run():
            text.truncate = flag

        return run

    out = _run_configs(
        dict(full=(setup(False), step), truncated=(setup(True), step)), device,
        args.warmup, args.iters, memory)
    # exactness: the same weights and prompts, both ways
    grads, feats = {}, {}
    for name, flag in (('full', False), ('truncated', True)):
        text.truncate = flag
        for p in prompts:
            p.ctx.grad = None
        f = head.encode_prompts(*prompts)
        f.square().sum().backward()
        feats[name] = f.detach().double()
        grads[name] = torch.cat([p.ctx.grad.flatten()
                                 for p in prompts]).double()

    def rel(a, b):
        return float((a - b).norm() / b.norm())

    tokens = torch.cat([p.tokens for p in prompts])
    return dict(
        method=method,
        num_classes=num_classes,
        prompts=int(tokens.shape[0]),
        length_full=int(tokens.shape[1]),
        length_truncated=int(text.end_positions(tokens).max()) + 1,
        results=out,
        speedup=out['full']['time_s'] / out['truncated']['time_s'],
        rel_diff_output=rel(feats['truncated'], feats['full']),
        rel_diff_input_grad=rel(grads['truncated'], grads['full']))


# --------------------------------------------------------------------------
# epoch
# --------------------------------------------------------------------------
def _make_images(root: str, num: int, num_classes: int, seed: int = 0) -> None:
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(seed)
    data_list = []
    for i in range(num):
        # smooth random content (JPEG size ~ natural photos), 640x480
        small = (rng.random((15, 20, 3)) * 255).astype(np.uint8)
        img = Image.fromarray(small).resize((640, 480), Image.BICUBIC)
        noise = rng.normal(0, 12, (480, 640, 3))
        arr = np.clip(np.asarray(img, dtype=np.float64) + noise, 0, 255)
        Image.fromarray(arr.astype(np.uint8)).save(
            osp.join(root, f'{i:06d}.jpg'), quality=90)
        labels = sorted(set(rng.integers(0, num_classes, 3).tolist()))
        data_list.append(dict(img_path=f'{i:06d}.jpg', gt_label=labels))
    with open(osp.join(root, 'ann.json'), 'w') as f:
        json.dump(
            dict(
                metainfo=dict(classes=_classnames(num_classes)),
                data_list=data_list), f)


def measure_epoch(args) -> dict:
    """A real epoch (decode + encoder + head) vs. the same from the cache."""
    import torch
    from mmengine.dataset import DefaultSampler, pseudo_collate
    from mmengine.optim import OptimWrapper
    from mmpretrain.datasets import MultiLabelDataset
    from torch.utils.data import DataLoader

    import mmcoop.models  # noqa: F401
    from mmcoop.datasets.feature_cache import CachedFeatureDataset
    from mmcoop.registry import MODELS
    device = _device(args)
    res_px = args.epoch_resolution
    num_classes = args.epoch_classes
    tmp = tempfile.mkdtemp(prefix='mmcoop-bench-')
    # validation every epoch, as the official recipe; COCO's val/train ratio
    num_val = args.epoch_val_images if args.epoch_val_images is not None \
        else max(1, round(args.epoch_images * 40137 / 82081))
    out = dict(
        images=args.epoch_images,
        val_images=num_val,
        resolution=res_px,
        workers=args.workers,
        batch_size=args.batch_size,
        num_classes=num_classes)
    try:
        root = osp.join(tmp, 'images')
        os.makedirs(root)
        _make_images(root, args.epoch_images, num_classes)
        val_root = osp.join(tmp, 'val_images')
        os.makedirs(val_root)
        _make_images(val_root, num_val, num_classes, seed=1)
        pipeline = [
            dict(type='LoadImageFromFile'),
            dict(type='Resize', scale=(res_px, res_px)),
            dict(type='PackInputs')
        ]
        dataset = MultiLabelDataset(
            ann_file='ann.json',
            data_root=root,
            data_prefix='',
            pipeline=pipeline)
        val_dataset = MultiLabelDataset(
            ann_file='ann.json',
            data_root=val_root,
            data_prefix='',
            pipeline=pipeline,
            test_mode=True)
        torch.manual_seed(0)
        backbone = MODELS.build(_backbone_cfg(args, res_px))

        def build_cache(ds, name, dtype, batch_size):
            t0 = time.perf_counter()
            cache = CachedFeatureDataset(
                ds,
                backbone,
                osp.join(tmp, name),
                data_preprocessor=_clip_preprocessor(),
                batch_size=batch_size,
                num_workers=args.workers,
                dtype=dtype,
                device=str(device),
                progress=False)
            return cache, time.perf_counter() - t0

        caches = {}
        for dtype in ('float16', 'float32'):
            caches[dtype], out[f'extract_{dtype}_s'] = build_cache(
                dataset, f'cache_{dtype}', dtype, args.batch_size)
        val_cache, out['extract_val_float16_s'] = build_cache(
            val_dataset, 'cache_val', 'float16', args.eval_batch_size)
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
                batch_size=args.batch_size if train else args.eval_batch_size,
                sampler=DefaultSampler(ds, shuffle=train, seed=0),
                num_workers=args.workers,
                collate_fn=pseudo_collate,
                persistent_workers=False)

        for method in args.epoch_methods:
            torch.manual_seed(1)
            head = MODELS.build(
                _head_cfg(method, num_classes, args, backbone.embed_dim))
            img_model, cache_model = _model_pair(backbone, head, device)
            params = [p for p in head.parameters() if p.requires_grad]
            optim = OptimWrapper(torch.optim.SGD(params, lr=1e-3))

            def epoch(model, ds):
                model.train()
                t0 = time.perf_counter()
                for batch in loader(ds):
                    model.train_step(batch, optim)
                _sync(device)
                return time.perf_counter() - t0

            def validate(model, ds):
                """A validation pass (text features once per evaluation)."""
                model.eval()
                t0 = time.perf_counter()
                with torch.no_grad():
                    for batch in loader(ds, train=False):
                        model.val_step(batch)
                _sync(device)
                return time.perf_counter() - t0

            def supply(model, ds):
                """Loader + image features only (what the cache replaces)."""
                t0 = time.perf_counter()
                with torch.no_grad():
                    for batch in loader(ds):
                        data = model.data_preprocessor(batch, False)
                        model.extract_feat(data['inputs'])
                _sync(device)
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
            r['train_val_speedup'] = (
                (r['uncached_epoch_s'] + r['uncached_val_s']) /
                (r['cached_epoch_s'] + r['cached_val_s']))
            r['supply_speedup'] = r['uncached_supply_s'] / r['cached_supply_s']
            # fp16 vs fp32 cache: logits of the same head
            cache_model.eval()
            with torch.no_grad():
                idx = list(range(min(len(dataset), args.batch_size)))
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


# --------------------------------------------------------------------------
# amp
# --------------------------------------------------------------------------
def measure_amp(args) -> dict:
    """Image-encoder forward with the mixed-precision / memory options."""
    import torch

    import mmcoop.models  # noqa: F401
    from mmcoop.registry import MODELS
    device = _device(args)
    memory = PeakMemory(device)
    x = torch.randn(
        args.amp_batch_size,
        3,
        args.resolution,
        args.resolution,
        device=device)
    out = {}
    for autocast in (None, 'fp16', 'bf16'):
        for cl in (False, True):
            torch.manual_seed(0)
            cfg = dict(
                _backbone_cfg(args), autocast_dtype=autocast, channels_last=cl)
            model = MODELS.build(cfg).to(device)
            with torch.no_grad():
                r = _run_configs(
                    dict(fwd=(lambda: None, lambda: model(x))), device,
                    args.warmup, args.iters, memory)['fwd']
                y = model(x)[0]
                if autocast is None and not cl:
                    ref = y
                r['max_rel_diff_vs_fp32'] = float(
                    (y - ref).abs().max() / ref.abs().max())
            out[f'autocast={autocast},channels_last={cl}'] = r
            del model
    if device.type == 'cpu':
        # Not used by mmcoop (its autocast option is CUDA-only): what CPU
        # bf16 autocast would give on this CPU, for information.
        torch.manual_seed(0)
        model = MODELS.build(_backbone_cfg(args)).to(device)
        with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
            r = _run_configs(
                dict(fwd=(lambda: None, lambda: model(x))), device,
                args.warmup, args.iters, memory)['fwd']
            r['max_rel_diff_vs_fp32'] = float(
                (model(x)[0].float() - ref).abs().max() / ref.abs().max())
        out['cpu_bf16_autocast_(info_only)'] = r
    return out


# --------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------
def _fmt_t(r):
    return f'{r["time_s"]:.3f}'


def _projection_table(title, results, args, project_fn, fmt) -> List[str]:
    """Rows of projected 50-epoch totals per schedule and method."""
    lines = [
        '', title, '',
        '| schedule | method | straightforward (T0/E0) | + truncation '
        '(T1/E1) | + eval text cache (T1/E2) | + feature cache (T2/E3 '
        '+ extraction) | of which extraction | paper (GPU h) |',
        '|---|---|---|---|---|---|---|---|'
    ]
    for name, sched in SCHEDULES.items():
        for res in results:
            if res['num_classes'] != sched['classes']:
                continue
            p = project_fn(res, sched, args)
            lines.append(f'| {name} | {res["method"]} | ' + ' | '.join(
                fmt(p[k]) for k in ('straightforward', 'truncation',
                                    'truncation_evalcache', 'feature_cache',
                                    'extraction')) +
                         f' | {PAPER_HOURS[name][res["method"]]} |')
    return lines


def report_steps(results: List[dict], args) -> str:
    dev = args.device_desc
    lines = [
        f'### Step times (s, best of {args.iters}, interleaved) and peak '
        'memory (MiB) '
        f'on {dev}', '',
        f'batch {args.batch_size} (eval {args.eval_batch_size}), '
        f'{args.model_name} @ {args.resolution} px, '
        f'autocast={args.autocast}, channels_last={args.channels_last}. '
        'Peak memory: tensors created during the step (weights and inputs '
        'excluded).', '',
        '| method | C | T0 train full | T1 train trunc | T2 train cache '
        '| E0 eval full | E1 eval trunc | E2 eval text-cache '
        '| E3 eval feat+text cache | E4 eval feat, text per batch '
        '| extract/img |', '|---|---|---|---|---|---|---|---|---|---|---|'
    ]
    for res in results:
        r = res['results']

        def cell(k):
            return f'{r[k]["time_s"]:.3f} ({r[k]["peak_mib"]:.0f})'

        lines.append(
            f'| {res["method"]} | {res["num_classes"]} | ' + ' | '.join(
                cell(k)
                for k in ('T0', 'T1', 'T2', 'E0', 'E1', 'E2', 'E3', 'E4')) +
            f' | {r["extract"]["time_s"] / args.eval_batch_size:.4f} |')
    unit = 'GPU-hours' if args.device == 'cuda' else \
        'hours on this CPU (not GPU-hours)'
    lines += _projection_table(
        f'### Projected {unit} for 50 epochs (PROJECTIONS from the step '
        'times above; compute only, no data loading)', results, args,
        project, lambda v: f'{v:.3f}')
    lines += [
        '', '### Counted FLOPs per step (GFLOP; matmuls, convolutions and '
        'attention, 2 per multiply-add; independent of the device)', '',
        '| method | C | T0 | T1 | T2 | E0 | E1 | E2 | E3 | E4 | extract/img |',
        '|---|---|---|---|---|---|---|---|---|---|---|'
    ]
    for res in results:
        r = res['results']
        lines.append(
            f'| {res["method"]} | {res["num_classes"]} | ' + ' | '.join(
                f'{r[k]["flops"] / 1e9:.1f}'
                for k in ('T0', 'T1', 'T2', 'E0', 'E1', 'E2', 'E3', 'E4')) +
            f' | {r["extract"]["flops"] / args.eval_batch_size / 1e9:.2f} |')
    peak, util = args.gpu_tflops, args.gpu_utilization
    lines += _projection_table(
        '### Projected GPU-hours for 50 epochs from the counted FLOPs '
        f'(PROJECTIONS, not measured: PFLOP / {peak:g} TFLOP/s '
        'x utilization; compute only, no data loading, no per-step '
        'latency). Each cell: PFLOP / hours at 100 % / hours at '
        f'{util:.0%} of {peak:g} TFLOP/s', results, args, project_flops,
        lambda v: f'{v:.1f} / {gpu_hours(v, peak):.3f} / '
        f'{gpu_hours(v, peak, util):.3f}')
    return '\n'.join(lines)


def report_text(results: List[dict], args) -> str:
    lines = [
        f'### Text encoder forward+backward (s, best of {args.iters}, '
        f'interleaved) on '
        f'{args.device_desc}', '',
        '| method | C | prompts | tokens full -> truncated | full (peak MiB)'
        ' | truncated (peak MiB) | speed-up | rel. diff output | '
        'rel. diff input grad |', '|---|---|---|---|---|---|---|---|---|'
    ]
    for r in results:
        f, t = r['results']['full'], r['results']['truncated']
        lines.append(
            f'| {r["method"]} | {r["num_classes"]} | {r["prompts"]} | '
            f'{r["length_full"]} -> {r["length_truncated"]} | '
            f'{f["time_s"]:.3f} ({f["peak_mib"]:.0f}) | {t["time_s"]:.3f} '
            f'({t["peak_mib"]:.0f}) | {r["speedup"]:.2f}x | '
            f'{r["rel_diff_output"]:.1e} | {r["rel_diff_input_grad"]:.1e} |')
    return '\n'.join(lines)


def report_epoch(r: dict, args) -> str:
    lines = [
        f'### One epoch: {r["images"]} generated 640x480 JPEGs at '
        f'{r["resolution"]} px, batch {r["batch_size"]}, {r["workers"]} '
        f'loader workers, C={r["num_classes"]}, on {args.device_desc}', '',
        f'One-off extraction: train {r["extract_float16_s"]:.2f} s (fp16), '
        f'{r["extract_float32_s"]:.2f} s (fp32)' +
        (f'; val {r["extract_val_float16_s"]:.2f} s (fp16)'
         if 'extract_val_float16_s' in r else '') + '. fp16 storage error: '
        f'{r["fp16_rel_err_features"]:.1e} relative (norm) on the features.',
        '', '| method | train epoch uncached (s) | cached (s) | speed-up | '
        f'+ validation on {r.get("val_images", "n/a")} images: uncached (s) '
        '| cached (s) | train+val speed-up | '
        'feature supply uncached (s) | cached (s) | speed-up | '
        'fp16 vs fp32 cache: max abs logit diff | max abs score diff |',
        '|---|---|---|---|---|---|---|---|---|---|---|---|'
    ]

    def opt(e, key, fmt):
        return format(e[key], fmt) if key in e else 'n/a'

    for m in args.epoch_methods:
        e = r[m]
        lines.append(
            f'| {m} | {e["uncached_epoch_s"]:.2f} | {e["cached_epoch_s"]:.3f}'
            f' | {e["epoch_speedup"]:.1f}x | {opt(e, "uncached_val_s", ".2f")}'
            f' | {opt(e, "cached_val_s", ".3f")} | '
            f'{opt(e, "train_val_speedup", ".1f")}x | '
            f'{e["uncached_supply_s"]:.2f} | '
            f'{e["cached_supply_s"]:.3f} | {e["supply_speedup"]:.0f}x | '
            f'{e["fp16_max_abs_logit_diff"]:.1e} | '
            f'{e["fp16_max_abs_score_diff"]:.1e} |')
    return '\n'.join(lines)


def report_amp(r: dict, args) -> str:
    lines = [
        f'### Image encoder forward, batch {args.amp_batch_size} @ '
        f'{args.resolution} px, on {args.device_desc}', '',
        '| option | time (s) | peak MiB | max rel. diff vs fp32 |',
        '|---|---|---|---|'
    ]
    for k, v in r.items():
        lines.append(f'| {k} | {v["time_s"]:.3f} | {v["peak_mib"]:.0f} | '
                     f'{v["max_rel_diff_vs_fp32"]:.1e} |')
    return '\n'.join(lines)


# --------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------
def report_saved(path: str, args) -> str:
    """The tables of a saved ``--json`` run, rendered again."""
    with open(path) as f:
        saved = json.load(f)
    run = parse_args(shlex.split(saved['command'])[2:])
    run.device_desc = saved['device']
    run.gpu_tflops, run.gpu_utilization = args.gpu_tflops, args.gpu_utilization
    parts = [f'# mmcoop benchmark on {saved["device"]} (saved run)',
             f'# {saved["command"]}', '']
    for key, fn in (('text', report_text), ('steps', report_steps),
                    ('epoch', report_epoch), ('amp', report_amp)):
        if key in saved:
            parts += [fn(saved[key], run), '']
    return '\n'.join(parts)


def _device_desc(args) -> str:
    import torch
    if args.device == 'cuda':
        return torch.cuda.get_device_name()
    model = platform.processor() or 'CPU'
    try:
        with open('/proc/cpuinfo') as f:
            m = re.search(r'model name\s*:\s*(.+)', f.read())
            model = m.group(1).strip() if m else model
    except OSError:
        pass
    return (f'{model}, {os.cpu_count()} logical CPUs, '
            f'{torch.get_num_threads()} torch threads')


def _loadavg() -> str:
    try:
        return ' '.join(f'{v:.2f}' for v in os.getloadavg())
    except OSError:
        return 'n/a'


JOBS = dict(steps=measure_steps, text=measure_text)


def _run_job(kind: str, args, *job_args):
    """Run a measurement in a fresh subprocess (own peak memory)."""
    if not args.isolate:
        return JOBS[kind](*job_args, args)
    cmd = [
        sys.executable,
        osp.abspath(__file__), '--_job',
        json.dumps([kind, list(job_args)])
    ] + args._argv
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.stderr.write(proc.stderr[-5000:])
        raise SystemExit(f'benchmark job {kind} {job_args} failed')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        '--mode',
        nargs='+',
        default=['all'],
        choices=['all', 'steps', 'text', 'epoch', 'amp'])
    parser.add_argument(
        '--methods', nargs='+', default=list(METHODS), choices=METHODS)
    parser.add_argument(
        '--num-classes',
        nargs='+',
        type=int,
        default=[80, 20],
        help='80 = COCO names, 20 = VOC names, other = synthetic')
    parser.add_argument('--resolution', type=int, default=448)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument(
        '--eval-batch-size',
        type=int,
        default=None,
        help='defaults to --batch-size (the official val batch is 100)')
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--iters', type=int, default=3)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--model-name', default='RN101-quickgelu')
    parser.add_argument(
        '--pretrained',
        default=None,
        help='CLIP weights (tag or file); random weights if omitted')
    parser.add_argument(
        '--autocast', default=None, choices=[None, 'fp16', 'bf16'])
    parser.add_argument('--channels-last', action='store_true')
    parser.add_argument(
        '--amp-batch-size',
        type=int,
        default=8,
        help='amp mode: batch of the image-encoder forward')
    parser.add_argument(
        '--gpu-tflops',
        type=float,
        default=989.0,
        help='GPU throughput for the FLOP-based projection (default: H100 '
        'SXM dense fp16/bf16 peak, 989 TFLOP/s)')
    parser.add_argument(
        '--gpu-utilization',
        type=float,
        default=0.3,
        help='assumed fraction of --gpu-tflops reached (the "est." figure '
        'of the FLOP-based projection); "peak" assumes 1.0')
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument(
        '--epoch-images', type=int, default=64, help='epoch mode: images')
    parser.add_argument(
        '--epoch-val-images',
        type=int,
        default=None,
        help='epoch mode: validation images (default: --epoch-images x '
        'COCO val/train = 0.49)')
    parser.add_argument('--epoch-resolution', type=int, default=224)
    parser.add_argument('--epoch-classes', type=int, default=20)
    parser.add_argument(
        '--epoch-methods',
        nargs='+',
        default=['baseline', 'positivecoop'],
        choices=METHODS)
    parser.add_argument(
        '--workers', type=int, default=2, help='epoch mode: loader workers')
    parser.add_argument(
        '--no-isolate',
        dest='isolate',
        action='store_false',
        help='measure every method in this process')
    parser.add_argument('--json', default=None, help='write all results')
    parser.add_argument(
        '--report',
        default=None,
        metavar='JSON',
        help='print the tables of a saved --json run (with this run\'s '
        '--gpu-tflops / --gpu-utilization) instead of measuring')
    parser.add_argument('--_job', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args._argv = list(argv if argv is not None else sys.argv[1:])
    args.eval_batch_size = args.eval_batch_size or args.batch_size
    if str(args.pretrained).lower() == 'none':
        args.pretrained = None
    if 'all' in args.mode:
        args.mode = ['steps', 'text', 'epoch', 'amp']
    return args


def main(argv=None):
    args = parse_args(argv)
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    from mmengine.logging import MMLogger
    MMLogger.get_instance('mmengine', log_level='ERROR')
    if args._job is not None:
        kind, job_args = json.loads(args._job)
        print(json.dumps(JOBS[kind](*job_args, args)))
        return
    if args.report:
        print(report_saved(args.report, args))
        return
    args.device_desc = _device_desc(args)
    out: Dict[str, object] = dict(
        device=args.device_desc,
        command=' '.join(['python', 'tools/analysis/benchmark.py'] +
                         args._argv),
        torch=torch.__version__)
    print(f'# mmcoop benchmark on {args.device_desc}')
    print(f'# {out["command"]}')
    print(f'# load average at start: {_loadavg()}\n', flush=True)
    if 'text' in args.mode:
        res = []
        for method in args.methods:
            if method == 'baseline':
                continue
            for c in args.num_classes:
                t0 = time.time()
                res.append(_run_job('text', args, method, c))
                print(
                    f'[text] {method} C={c}: {time.time() - t0:.0f} s',
                    file=sys.stderr)
        out['text'] = res
        print(report_text(res, args) + '\n', flush=True)
    if 'steps' in args.mode:
        res = []
        for method in args.methods:
            for c in args.num_classes:
                t0 = time.time()
                res.append(_run_job('steps', args, method, c))
                print(
                    f'[steps] {method} C={c}: {time.time() - t0:.0f} s',
                    file=sys.stderr)
        out['steps'] = res
        print(report_steps(res, args) + '\n', flush=True)
    if 'epoch' in args.mode:
        out['epoch'] = measure_epoch(args)
        print(report_epoch(out['epoch'], args) + '\n', flush=True)
    if 'amp' in args.mode:
        out['amp'] = measure_amp(args)
        print(report_amp(out['amp'], args) + '\n', flush=True)
    out['loadavg_end'] = _loadavg()
    print(f'# load average at end: {out["loadavg_end"]}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(out, f, indent=1)


if __name__ == '__main__':
    main()

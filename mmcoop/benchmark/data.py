# Copyright (c) mmcoop contributors. All rights reserved.
"""Images/s per core of the training data paths: the measurement of
``benchmark.py --mode data``.

On generated COCO-like JPEGs (640x480, smooth content plus noise, quality
90: :func:`make_images`), each path turns a file
into a training input, in ``P`` worker processes of one thread each
(``P`` = 1, 2, ... cores):

- ``official``: the official transform re-derived with PIL
  (:class:`~mmcoop.benchmark.official.OfficialTrainTransform`): decode,
  resize, CutoutPIL, RandAugment, ToTensor + Normalize (its workers
  normalise; mmcoop normalises the batch in the data preprocessor);
- ``mmcv``: mmcoop's NumPy-array train pipeline
  (``LoadImageFromFileChecked``, pillow ``Resize``, ``RandomCutout``,
  ``DualCoOpRandAugment``, ``PackInputs``);
- ``tensor``: the configs' train pipeline, ``LoadImageTensor`` +
  ``TensorCutout`` + ``TensorRandAugment`` + ``PackInputs`` (uint8
  tensors, the official policy; mmcoop.datasets.transforms.tensor_augment);
- ``tensor-pillow``: the same with PIL's own resize
  (``resize_backend='pillow'``: the official transform pixel for pixel);
- ``tensor-pil-decode``: the configs' pipeline with PIL's decoder
  (``decode_backend='pillow'``), i.e. without TorchCodec (the same
  pixels);
- ``tensor-draft``: the same with JPEG DCT scaling (only measured when the
  resolution is at most half the image);
- ``device``: the CPU side of ``data_path='device'``, what its loader
  workers do: ``LoadImageBytes(decode='cpu')`` (file read, decode and
  resize as ``LoadImageTensor``, the Cutout + RandAugment draw) +
  ``PackInputs``; the augmentation then runs on the GPU
  (``DeviceAugmentPreprocessor``);
- ``bytes``: the CPU side of ``data_path='device-decode'``:
  ``LoadImageBytes(decode='device')`` (file read, JPEG check, the draw) +
  ``PackInputs``. The decode, resize and augmentation then run on the GPU,
  so its images/s is the rate at which one CPU core can feed that path,
  not comparable with the paths above (no ratio to ``official`` is
  reported).

With ``--device cuda`` also ``gpu``: the files are read (and the draws
made) on the CPU by ``LoadImageBytes(decode='device')``, and
``DeviceAugmentPreprocessor`` decodes the batch on the GPU (TorchCodec's or
torchvision's ``decode_jpeg(device=...)``), resizes, augments it as
batched tensor ops and normalises it; reported as images/s of the whole
path in one process (CPU read + GPU work), and stage by stage.
"""
import json
import math
import multiprocessing as mp
import os
import os.path as osp
import shutil
import statistics
import tempfile
import time
from typing import List

import numpy as np
import torch

from .steps import classnames
from .timing import sync

__all__ = [
    'PIPELINES', 'CPU_SIDE_ONLY', 'make_images', 'pipeline_cfg',
    'build_path', 'stage_times', 'op_times', 'measure_data', 'report_data'
]

PIPELINES = ('official', 'mmcv', 'tensor', 'tensor-pil-decode',
             'tensor-pillow', 'tensor-draft', 'device', 'bytes')
_TENSOR_LOADERS = {  # LoadImageTensor arguments of the tensor paths
    'tensor': {},
    'tensor-pil-decode': dict(decode_backend='pillow'),
    'tensor-pillow': dict(resize_backend='pillow'),
    'tensor-draft': dict(draft=True),
}
#: paths that do not decode on the CPU (no ratio to the official one)
CPU_SIDE_ONLY = ('bytes',)


def pipeline_cfg(name: str, resolution: int, augment: bool = True) -> list:
    """The transform configs of mmcoop's data path ``name`` (``'mmcv'``:
    NumPy arrays; ``'tensor'`` (the configs' train pipeline),
    ``'tensor-pil-decode'``, ``'tensor-pillow'``, ``'tensor-draft'``: the
    uint8 tensor path;
    ``'device'``: the CPU side of ``data_path='device'`` (decode, resize
    and draw in the workers), ``'bytes'``: that of
    ``data_path='device-decode'`` (read and draw), both for
    ``DeviceAugmentPreprocessor``); ``augment=False`` gives the test
    pipeline."""
    scale = (resolution, resolution)
    if name in ('device', 'bytes'):  # what data_path makes of the configs'
        from mmcoop.datasets.data_path import device_pipeline
        return device_pipeline(pipeline_cfg('tensor', resolution, augment),
                               f'the {name} path',
                               'cpu' if name == 'device' else 'device')
    if name == 'mmcv':
        cfg = [
            dict(type='mmcoop.LoadImageFromFileChecked'),
            dict(type='Resize', scale=scale, keep_ratio=False,
                 backend='pillow', interpolation='bilinear'),
        ]
        aug = [dict(type='mmcoop.RandomCutout', cutout_factor=0.5),
               dict(type='mmcoop.DualCoOpRandAugment')]
    elif name in _TENSOR_LOADERS:
        cfg = [dict(type='mmcoop.LoadImageTensor', scale=scale,
                    **_TENSOR_LOADERS[name])]
        aug = [dict(type='mmcoop.TensorCutout', cutout_factor=0.5),
               dict(type='mmcoop.TensorRandAugment')]
    else:
        raise ValueError(f'unknown data path {name!r}')
    return cfg + (aug if augment else []) + [dict(type='PackInputs')]


def build_path(name: str, resolution: int):
    """``path -> training input`` of one CPU data path."""
    if name == 'official':
        from .official import OfficialTrainTransform
        return OfficialTrainTransform(resolution)
    from mmcv.transforms import Compose
    from mmpretrain.registry import TRANSFORMS

    import mmcoop.datasets  # noqa: F401
    pipeline = Compose(
        [TRANSFORMS.build(c) for c in pipeline_cfg(name, resolution)])
    return lambda path: pipeline(dict(img_path=path))


def make_images(root: str, num: int, num_classes: int, seed: int = 0) -> None:
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
                metainfo=dict(classes=classnames(num_classes)),
                data_list=data_list), f)


_WORKER = {}


def _work(task):
    """Worker: run one path over its share of the files; returns the
    number of images."""
    name, resolution, paths, seed = task
    torch.set_num_threads(1)
    try:
        import cv2
        cv2.setNumThreads(1)
    except ImportError:
        pass
    key = (name, resolution)
    if key not in _WORKER:
        _WORKER[key] = build_path(name, resolution)
    fn = _WORKER[key]
    np.random.seed(seed)
    import random
    random.seed(seed)
    for p in paths:
        fn(p)
    return len(paths)


def device_path(paths: List[str], resolution: int, batch_size: int,
                device: torch.device) -> int:
    """The GPU data path: ``LoadImageBytes`` in the caller's process (file
    read + draw), then :class:`~mmcoop.models.DeviceAugmentPreprocessor` on
    ``device`` (decode, resize, augment, normalise), batch by batch."""
    from mmengine.dataset import pseudo_collate
    from mmpretrain.registry import TRANSFORMS

    import mmcoop.models  # noqa: F401
    from mmcoop.registry import MODELS
    load, pack = [
        TRANSFORMS.build(c) for c in pipeline_cfg('bytes', resolution)
    ]
    pre = MODELS.build(dict(type='DeviceAugmentPreprocessor')).to(device)
    np.random.seed(0)
    done = 0
    for start in range(0, len(paths), batch_size):
        batch = pseudo_collate([
            pack(load(dict(img_path=p)))
            for p in paths[start:start + batch_size]
        ])
        done += pre(batch, training=True)['inputs'].shape[0]
    sync(device)
    return done


def device_stage_times(paths: List[str], resolution: int, batch_size: int,
                       device: torch.device) -> dict:
    """Milliseconds per image of each stage of :func:`device_path`, the
    device synchronised after each (so a little slower than the path
    itself, whose stages overlap): the CPU side (``LoadImageBytes``: read
    + draw), then on ``device`` the decode, the resize, Cutout +
    RandAugment and the normalisation, as
    :class:`~mmcoop.models.DeviceAugmentPreprocessor` runs them."""
    from mmpretrain.registry import TRANSFORMS

    import mmcoop.models  # noqa: F401
    from mmcoop.datasets.transforms.jpeg import decode_jpegs
    from mmcoop.datasets.transforms.tensor_augment import (
        augment_batch, resize_augment_batch)
    from mmcoop.registry import MODELS
    load, pack = [
        TRANSFORMS.build(c) for c in pipeline_cfg('bytes', resolution)
    ]
    pre = MODELS.build(dict(type='DeviceAugmentPreprocessor')).to(device)
    totals = dict.fromkeys(
        ('read + draw (CPU)', 'decode', 'resize', 'augment', 'normalise'),
        0.)
    np.random.seed(0)
    for start in range(0, len(paths), batch_size):
        marks = [time.perf_counter()]

        def mark():
            sync(device)
            marks.append(time.perf_counter())

        samples = [pack(load(dict(img_path=p)))
                   for p in paths[start:start + batch_size]]
        draws = [s['data_samples'].device_aug for s in samples]
        mark()
        imgs = decode_jpegs([s['inputs'] for s in samples], device)
        mark()
        batch = resize_augment_batch(imgs, draws, augment=False)
        mark()
        batch = augment_batch(batch, draws)
        mark()
        (batch.float() - pre.mean) / pre.std
        mark()
        for name, t0, t1 in zip(totals, marks, marks[1:]):
            totals[name] += t1 - t0
    return {name: 1e3 * t / len(paths) for name, t in totals.items()}


def stage_times(name: str, resolution: int, paths: List[str],
                rounds: int = 3) -> dict:
    """Milliseconds per image of each transform of mmcoop's data path
    ``name`` (its mean over the images, in the least disturbed of
    ``rounds`` rounds), in this process with one torch thread (restored
    afterwards): where the time goes."""
    from mmpretrain.registry import TRANSFORMS

    import mmcoop.datasets  # noqa: F401
    transforms = [TRANSFORMS.build(c) for c in pipeline_cfg(name, resolution)]
    best = [math.inf] * len(transforms)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for r in range(rounds):
            np.random.seed(r)
            total = [0.0] * len(transforms)
            for p in paths:
                res = dict(img_path=p)
                for i, t in enumerate(transforms):
                    t0 = time.perf_counter()
                    res = t(res)
                    total[i] += time.perf_counter() - t0
            best = [min(b, s) for b, s in zip(best, total)]
    finally:
        torch.set_num_threads(threads)
    return {
        type(t).__name__: 1e3 * s / len(paths)
        for t, s in zip(transforms, best)
    }


def op_times(path: str, resolution: int, repeats: int = 5) -> dict:
    """Milliseconds per call of each official RandAugment op (index 5) on
    ``path`` resized to ``resolution``, best of ``repeats``, in this process
    with one torch thread: PIL's op on the PIL image (the official
    pipeline's cost of a drawn op) and mmcoop's on the BGR tensor
    (``_CPU_TENSOR_OPS``, what ``TensorRandAugment`` runs on the CPU; the
    same pixels), alternated. Each op is drawn with probability 1/15 per
    slot, two slots, applied with p = 0.5: the mean over the ops is the
    expected cost per image. Returns ``{'pil': {op: ms}, 'tensor': {op:
    ms}}``."""
    from PIL import Image

    from mmcoop.datasets.transforms.tensor_augment import (_CPU_TENSOR_OPS,
                                                           RANDAUG_OPS,
                                                           official_op)
    img = Image.open(path).convert('RGB').resize((resolution, resolution),
                                                 Image.BILINEAR)
    bgr = torch.from_numpy(np.asarray(img)).permute(2, 0, 1).flip(0)
    bgr = bgr.contiguous()
    calls = dict(
        pil=lambda op: official_op(img, op, 5),
        tensor=lambda op: _CPU_TENSOR_OPS[op](bgr, 5, 1, (0.5, 0.5)))
    out = {kind: {} for kind in calls}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for op in RANDAUG_OPS:
            for call in calls.values():  # first calls: caches, imports
                call(op)
            best = dict.fromkeys(calls, math.inf)
            for _ in range(repeats):
                for kind, call in calls.items():
                    t0 = time.perf_counter()
                    call(op)
                    best[kind] = min(best[kind], time.perf_counter() - t0)
            for kind in calls:
                out[kind][op] = 1e3 * best[kind]
    finally:
        torch.set_num_threads(threads)
    return out


def jpeg_decoder() -> str:
    """Which decoder ``LoadImageTensor(decode_backend='auto')`` uses for
    JPEGs here."""
    from mmcoop.datasets.transforms.jpeg import torchcodec_decode_jpeg
    if torchcodec_decode_jpeg() is None:
        return 'PIL (TorchCodec not installed)'
    import torchcodec
    return f'TorchCodec {torchcodec.__version__}'


def measure_data(opts) -> dict:
    """Images/s of every data path on ``opts.data_cores`` core counts.

    Options used: ``data_images``, ``data_resolution``, ``data_cores``,
    ``data_rounds``, ``data_pipelines``, ``device``, ``batch_size``.
    Each round measures every (path, cores) once, interleaved; the figures
    are the best round (the least disturbed) and the median.
    """
    res_px = opts.data_resolution
    names = [n for n in opts.data_pipelines
             if n != 'tensor-draft' or 2 * res_px <= 480]
    tmp = tempfile.mkdtemp(prefix='mmcoop-data-bench-')
    out = dict(images=opts.data_images, resolution=res_px,
               image_size='640x480', jpeg_quality=90,
               cores=list(opts.data_cores), rounds=opts.data_rounds,
               jpeg_decoder=jpeg_decoder(), results={})
    try:
        make_images(tmp, opts.data_images, 20)
        paths = sorted(
            osp.join(tmp, f) for f in os.listdir(tmp) if f.endswith('.jpg'))
        out['mean_jpeg_kib'] = round(
            statistics.mean(os.path.getsize(p) for p in paths) / 1024, 1)
        # fresh processes: a forked child inherits the caller's thread
        # pools (torch's, OpenCV's) mid-state and can hang in its first op
        # (seen after a test had decoded images in the caller); the start
        # is outside the timing (warm-up below)
        ctx = mp.get_context('spawn')
        times = {(n, c): [] for n in names for c in opts.data_cores}
        pools = {c: ctx.Pool(c) for c in opts.data_cores}
        try:
            for c, pool in pools.items():  # warm-up: imports, first calls
                pool.map(_work, [(n, res_px, paths[:2], 0) for n in names
                                 for _ in range(c)])
            for r in range(opts.data_rounds):
                for n in names:
                    for c, pool in pools.items():
                        shares = [paths[i::c] for i in range(c)]
                        t0 = time.perf_counter()
                        count = sum(
                            pool.map(_work, [(n, res_px, s, r * 100 + i)
                                             for i, s in enumerate(shares)]))
                        times[(n, c)].append(
                            (time.perf_counter() - t0, count))
        finally:
            for pool in pools.values():
                pool.close()
                pool.join()
        out['stages_ms'] = {
            n: stage_times(n, res_px, paths)
            for n in names if n != 'official'
        }
        ops = op_times(paths[0], res_px)
        out['pil_op_ms'], out['tensor_op_ms'] = ops['pil'], ops['tensor']
        for (n, c), runs in times.items():
            rates = [count / t for t, count in runs]
            out['results'][f'{n}@{c}'] = dict(
                path=n, cores=c, images_per_s=max(rates),
                median_images_per_s=statistics.median(rates),
                per_core=max(rates) / c)
        if opts.device == 'cuda':
            device = torch.device('cuda')
            device_path(paths[:opts.batch_size], res_px, opts.batch_size,
                        device)  # warm-up
            rates = []
            for _ in range(opts.data_rounds):
                t0 = time.perf_counter()
                count = device_path(paths, res_px, opts.batch_size, device)
                rates.append(count / (time.perf_counter() - t0))
            out['results']['gpu'] = dict(
                path='gpu', cores=1, images_per_s=max(rates),
                median_images_per_s=statistics.median(rates),
                per_core=max(rates))
            out['device_stages_ms'] = device_stage_times(
                paths, res_px, opts.batch_size, device)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def report_data(r: dict, opts) -> str:
    """Markdown table of :func:`measure_data`."""
    base = {c: r['results'].get(f'official@{c}', {}).get('images_per_s')
            for c in r['cores']}
    lines = [
        f'### Data path: {r["images"]} generated {r["image_size"]} JPEGs '
        f'(quality {r["jpeg_quality"]}, mean {r["mean_jpeg_kib"]} KiB) -> '
        f'{r["resolution"]} px training inputs, best of {r["rounds"]} '
        f'interleaved rounds, on {opts.device_desc}; JPEG decoder of the '
        f'tensor paths: {r.get("jpeg_decoder", "PIL")}', '',
        '| path | cores | images/s | per core | median images/s | '
        'vs official |', '|---|---|---|---|---|---|'
    ]
    for key, v in r['results'].items():
        ref = base.get(v['cores'])
        ratio = f'{v["images_per_s"] / ref:.2f}x' if ref and v[
            'path'] not in ('gpu', *CPU_SIDE_ONLY) else 'n/a'
        lines.append(
            f'| {v["path"]} | {v["cores"] if v["path"] != "gpu" else "GPU"}'
            f' | {v["images_per_s"]:.1f} | {v["per_core"]:.1f} | '
            f'{v["median_images_per_s"]:.1f} | {ratio} |')
    if any(v['path'] in CPU_SIDE_ONLY for v in r['results'].values()):
        lines += [
            '', "`bytes` is `data_path='device-decode'`'s CPU side only "
            '(file read, JPEG check and the augmentation draw, in the '
            'loader workers): the rate at which CPU cores can feed '
            '`DeviceAugmentPreprocessor`, whose decode, resize and '
            'augmentation run on the GPU (the `gpu` row, with '
            '`--device cuda`).'
        ]
    if any(v['path'] == 'device' for v in r['results'].values()):
        lines += [
            '', "`device` is `data_path='device'`'s CPU side (read, decode, "
            'resize and the augmentation draw, in the loader workers); '
            'its augmentation runs on the GPU, bit for bit the CPU\'s.'
        ]
    stages = r.get('stages_ms', {})
    if stages:
        lines += [
            '', 'Where the time goes (ms per image, one process, one '
            'thread; mean over the images, best of 3 rounds):', '',
            '| path | transform | ms per image |', '|---|---|---|'
        ]
        for path, times in stages.items():
            for name, ms in times.items():
                lines.append(f'| {path} | {name} | {ms:.2f} |')
            lines.append(f'| {path} | **total** | '
                         f'{sum(times.values()):.2f} |')
    device_stages = r.get('device_stages_ms', {})
    if device_stages:
        lines += [
            '', 'Where the time goes on the device path (`gpu` row; ms per '
            'image, batches of the same size, the device synchronised after '
            'each stage):', '', '| stage | ms per image |', '|---|---|'
        ] + [f'| {name} | {ms:.3f} |' for name, ms in device_stages.items()
             ] + [f'| **total** | {sum(device_stages.values()):.3f} |']
    rows = [(name, r.get(key, {})) for name, key in (
        ('PIL (official)', 'pil_op_ms'),
        ('mmcoop (`TensorRandAugment` on the CPU)', 'tensor_op_ms'))]
    rows = [(name, ops) for name, ops in rows if ops]
    if rows:
        # the mean over the ops = ms per image: 2 slots x p = 0.5
        expected = '; '.join(f'{name}: {sum(ops.values()) / len(ops):.2f}'
                             for name, ops in rows)
        ops = rows[0][1]
        lines += [
            '', 'The official RandAugment ops, ms per call (index 5, one '
            f'thread, best of 5, alternated; expected per image: '
            f'{expected}):', '', '| | ' + ' | '.join(ops) + ' |',
            '|---|' + '---|' * len(ops)
        ] + [
            f'| {name} | ' + ' | '.join(f'{v:.2f}' for v in ops.values()) +
            ' |' for name, ops in rows
        ]
    return '\n'.join(lines)

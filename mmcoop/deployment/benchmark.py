# Copyright (c) mmcoop contributors. All rights reserved.
"""CPU speed of one model through four paths, in one run, alternating:

* ``pytorch``: :class:`mmcoop.apis.MultiLabelInferencer` (what
  :func:`mmcoop.apis.inference_model` runs, built once) on RGB arrays: test
  pipeline, data preprocessor, ``test_step`` with the class features from
  the eval cache;
* ``folded``: :class:`~mmcoop.deployment.folded.FoldedTagger` in PyTorch;
* ``onnxruntime``: the exported ONNX file on onnxruntime's CPU provider;
* ``torchscript``: the exported TorchScript file.

Every path gets the same ``uint8`` RGB images, already at the model's
resolution (decoding and resizing are left out: they are the same for all).
Each round times every path once per batch size, in turn, so that a
machine's load drifts over all of them alike; the median over rounds is
reported. (:func:`mmcoop.benchmark.run_configs` is not used: it makes one
more FLOP- and memory-counting call per configuration, a full extra pass of
a batch of 32 for each path and batch size.) The cost of the folded head
against the image tower is measured as time and as FLOPs
(:func:`mmcoop.benchmark.count_flops`: convolutions, matmuls, attention).
"""
import os.path as osp
import statistics
import time
from typing import Callable, Dict, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from mmcoop.benchmark.flops import count_flops
from .export import describe_preprocessing, export_model
from .folded import FoldedTagger, fold_model

PATHS = ('pytorch', 'folded', 'onnxruntime', 'torchscript')


def _seconds(fn: Callable) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def benchmark_files(work_dir: str) -> Tuple[str, str]:
    """The ONNX and TorchScript files :func:`compare_speed` writes into
    ``work_dir`` (replacing files of these names)."""
    return (osp.join(work_dir, 'benchmark.onnx'),
            osp.join(work_dir, 'benchmark.pt'))


def _runners(model: nn.Module, folded: FoldedTagger, work_dir: str,
             threads: int) -> Dict[str, Callable]:
    """path -> ``run(images)`` with ``images`` a ``(B, H, W, 3)`` uint8
    array; every run returns ``(B, C)`` scores."""
    import onnxruntime as ort

    from mmcoop.apis import MultiLabelInferencer
    onnx_path, ts_path = benchmark_files(work_dir)
    export_model(model, onnx_path, format='onnx', force=True)
    export_model(model, ts_path, format='torchscript', force=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(
        onnx_path, options, providers=['CPUExecutionProvider'])
    scripted = torch.jit.load(ts_path)
    inferencer = MultiLabelInferencer(model)

    def pytorch(images):
        results = inferencer(list(images), batch_size=len(images))
        return np.stack([r['scores'] for r in results])

    def run_folded(images):
        with torch.no_grad():
            return folded(torch.from_numpy(images)).numpy()

    def onnxruntime(images):
        return session.run(None, {'image': images})[0]

    def torchscript(images):
        with torch.no_grad():
            return scripted(torch.from_numpy(images)).numpy()

    return dict(
        pytorch=pytorch,
        folded=run_folded,
        onnxruntime=onnxruntime,
        torchscript=torchscript)


def compare_speed(model: nn.Module,
                  work_dir: str,
                  batch_sizes: Sequence[int] = (1, 32),
                  rounds: int = 3,
                  single_images: int = 4,
                  threads: int = 2,
                  seed: int = 0) -> dict:
    """Images/s of the four :data:`PATHS` and the head's share of the cost.

    Args:
        model (nn.Module): from :func:`mmcoop.apis.init_model`, on CPU.
        work_dir (str): where the ONNX / TorchScript files are written.
        batch_sizes (Sequence[int]): batch sizes to time.
        rounds (int): timed rounds (after one warm-up round).
        single_images (int): images timed one by one per round for batch
            size 1 (larger batches time one batch per round).
        threads (int): intra-op threads for torch and onnxruntime.
        seed (int): seed of the random images.

    Returns:
        dict: ``speed[path][batch_size]`` images/s (median over rounds),
        ``max_abs_diff[path]`` against the ``pytorch`` path, ``head`` (time
        and FLOPs of the folded head and of the image tower at the largest
        batch size) and the settings.
    """
    torch.set_num_threads(threads)
    folded = fold_model(model)
    size = describe_preprocessing(model, folded)['resize']
    height, width = size['height'], size['width']
    runners = _runners(model, folded, work_dir, threads)
    rng = np.random.default_rng(seed)
    num_images = max(max(batch_sizes), single_images)
    images = rng.integers(
        0, 256, (num_images, height, width, 3), dtype=np.uint8)

    def batches(size):
        if size == 1:
            return [images[i:i + 1] for i in range(single_images)]
        return [images[:size]]

    times = {p: {b: [] for b in batch_sizes} for p in PATHS}
    for round_ in range(rounds + 1):  # round 0 warms up
        for size in batch_sizes:
            for path in PATHS:
                run = runners[path]
                elapsed = sum(
                    _seconds(lambda b=b: run(b)) for b in batches(size))
                if round_:
                    num = sum(len(b) for b in batches(size))
                    times[path][size].append(num / elapsed)
    speed = {
        p: {
            b: statistics.median(v)
            for b, v in sizes.items()
        }
        for p, sizes in times.items()
    }

    check = images[:min(len(images), 8)]
    expected = runners['pytorch'](check)
    diffs = {
        p: float(np.abs(runners[p](check) - expected).max())
        for p in PATHS
    }

    largest = images[:max(batch_sizes)]
    x = torch.from_numpy(largest)
    with torch.no_grad():
        dense = folded.dense_features(x)
    feats = (dense, )
    tower_t = statistics.median(
        _seconds(lambda: folded.dense_features(x)) for _ in range(rounds))
    head_t = statistics.median(
        _seconds(lambda: folded.head(feats)) for _ in range(max(rounds, 10)))
    head = dict(
        batch_size=len(largest),
        tower_seconds=tower_t,
        head_seconds=head_t,
        tower_flops=count_flops(lambda: folded.dense_features(x)),
        head_flops=count_flops(lambda: folded.head(feats)),
        dense_shape=list(dense.shape))
    return dict(
        speed=speed,
        max_abs_diff=diffs,
        head=head,
        batch_sizes=list(batch_sizes),
        rounds=rounds,
        threads=threads,
        resolution=[height, width],
        num_classes=len(folded.classnames),
        method=type(model.head).__name__,
        backbone=getattr(model.backbone, 'model_name', None))


def format_report(result: dict) -> str:
    """Markdown tables of :func:`compare_speed`'s result."""
    sizes = result['batch_sizes']
    lines = [
        f"{result['method']} on {result['backbone']} at "
        f"{result['resolution'][0]} px, {result['num_classes']} classes; "
        f"{result['threads']} threads, median of {result['rounds']} rounds",
        '',
        '| path | ' + ' | '.join(f'batch {b} (img/s)' for b in sizes) +
        ' | max abs diff vs pytorch |',
        '|---|' + '---:|' * (len(sizes) + 1),
    ]
    for path in PATHS:
        cells = [f"{result['speed'][path][b]:.2f}" for b in sizes]
        lines.append(f'| {path} | ' + ' | '.join(cells) +
                     f" | {result['max_abs_diff'][path]:.1e} |")
    h = result['head']
    lines += [
        '',
        f"Folded head vs image tower (batch {h['batch_size']}, dense "
        f"features {tuple(h['dense_shape'])}): time "
        f"{1e3 * h['head_seconds']:.2f} ms vs "
        f"{1e3 * h['tower_seconds']:.1f} ms "
        f"({100 * h['head_seconds'] / h['tower_seconds']:.2f} %); FLOPs "
        f"{h['head_flops'] / 1e6:.1f} M vs {h['tower_flops'] / 1e9:.2f} G "
        f"({100 * h['head_flops'] / h['tower_flops']:.3f} %)",
    ]
    return '\n'.join(lines)

# Copyright (c) mmcoop contributors. All rights reserved.
"""Run the frozen image tower over the views of a dataset, into shards."""
import errno
import os
import os.path as osp
import shutil
from typing import List, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from ..samplers import RNGGuard, sample_seed, seed_global_rngs
from .errors import FeatureCacheError
from .quantize import quantize
from .store import DTYPES, QUANTISED, scale_file, shard_record

__all__ = ['SeededView', 'extract_views']


class SeededView(TorchDataset):
    """View ``k`` of a dataset's image pipeline: sample ``i`` is produced
    with the global RNGs seeded from ``(seed, k, i)``, so the view is the
    same for any batch size, worker count or order. Item ``i`` is
    ``(i, inputs, data_samples)``: the data preprocessor may need the
    samples (the device path's draws, ``DeviceAugmentPreprocessor``)."""

    def __init__(self, dataset, view: int, seed: int):
        self.dataset = dataset
        self.view = view
        self.seed = seed

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i: int):
        seed_global_rngs(sample_seed(self.seed, self.view, i))
        info = self.dataset.get_data_info(i)
        path = info.get('img_path', f'sample {i}')
        data = self.dataset.pipeline(info)
        if data is None:
            # BaseDataset would silently substitute another image here.
            raise FeatureCacheError(
                f'The image pipeline returned None for {path!r} (index '
                f'{i}); a feature cache needs every image. Fix or remove '
                'the file, or set ignore_empty=False in the loader.')
        inputs = data['inputs']
        if not isinstance(inputs, torch.Tensor):
            raise FeatureCacheError(
                f'The image pipeline of {path!r} gave inputs of type '
                f'{type(inputs).__name__}; it must end with PackInputs '
                'producing an image tensor.')
        return i, inputs, data.get('data_samples')


def _collate(batch):
    return tuple(list(column) for column in zip(*batch))


@torch.no_grad()
def views_differ(dataset, preprocessor, device: torch.device, seed: int,
                 num_views: int = 2, count: int = 16) -> bool:
    """Whether views 1 .. ``num_views`` - 1 (at most 3 of them) give other
    tower inputs than view 0 for any of the first ``count`` samples (the
    pipeline, then the preprocessor, as :func:`extract_views` runs them).
    False means the pipeline draws no random augmentation (a random one,
    even a flip with p = 0.5, differs somewhere in 16 images x 2 views
    but for a chance of 2^-16): every view would be the same. The global
    RNGs are restored afterwards."""
    indices = range(min(count, len(dataset)))
    with RNGGuard():
        views = []
        for view in range(min(num_views, 4)):
            _, images, samples = _collate(
                [SeededView(dataset, view, seed)[i] for i in indices])
            views.append(preprocessor(
                dict(inputs=images, data_samples=samples), False)['inputs'])
    return any(not torch.equal(views[0], v) for v in views[1:])


@torch.no_grad()
def extract_views(folder: str,
                  dataset,
                  backbone,
                  preprocessor,
                  device: torch.device,
                  num_views: int,
                  seed: int,
                  dtype: str,
                  shard_size: int,
                  batch_size: int,
                  num_workers: int,
                  progress: bool = True) -> Tuple[tuple, List[dict]]:
    """Write ``num_views`` passes of ``dataset`` through ``preprocessor``
    and ``backbone`` into shards under ``folder``.

    Returns the ``(D, N)`` feature shape and the shard records (with their
    checksums) for the manifest. The global RNGs are restored afterwards.
    ``dtype='int8'`` writes codes and per-token scales (:mod:`.quantize`).
    """
    from tqdm import tqdm
    n = len(dataset)
    np_dtype = DTYPES[dtype]
    quantised = dtype in QUANTISED
    # the storage dtype is made on the tower's device: half the copy back
    # for float16, and torch's conversion (NumPy's values: round to
    # nearest even) is also the faster one on the CPU
    cast = torch.float32 if quantised else getattr(torch, dtype)
    expected = getattr(backbone, 'input_resolution', None)
    layout, arrays, scales, shape = [], {}, {}, None
    bar = tqdm(
        total=n * num_views,
        desc='Extracting frozen features',
        unit='img',
        disable=not progress,
        dynamic_ncols=True)

    def store(view: int, indices, host: torch.Tensor, copied) -> None:
        """Write one batch's features (``host``, once ``copied``)."""
        nonlocal shape
        if copied is not None:
            copied.synchronize()
        feats = host.numpy()
        if not np.isfinite(feats).all():
            raise FeatureCacheError(
                'Non-finite features (the tower output overflows '
                f'{dtype} or is NaN). Use dtype=\'float32\' or '
                'check the weights.')
        if quantised:
            feats, feat_scales = quantize(feats)
        if shape is None:
            shape = feats.shape[1:]
            for v in range(num_views):
                for start in range(0, n, shard_size):
                    count = min(shard_size, n - start)
                    fname = f'v{v}_s{start // shard_size:05d}.npy'
                    arrays[v, start] = _allocated_memmap(
                        osp.join(folder, fname), np_dtype, (count, ) + shape)
                    if quantised:
                        scales[v, start] = _allocated_memmap(
                            osp.join(folder, scale_file(fname)), np.float32,
                            (count, shape[-1]))
                    layout.append((v, fname, start, count, quantised))
        elif feats.shape[1:] != shape:
            raise FeatureCacheError(
                f'Feature shape changed from {shape} to '
                f'{feats.shape[1:]} within one extraction.')
        for j, i in enumerate(indices):
            start = i - i % shard_size
            arrays[view, start][i - start] = feats[j]
            if quantised:
                scales[view, start][i - start] = feat_scales[j]
        bar.update(len(indices))

    try:
        with RNGGuard():
            for view in range(num_views):
                loader = DataLoader(
                    SeededView(dataset, view, seed),
                    batch_size=batch_size,
                    shuffle=False,
                    num_workers=num_workers,
                    collate_fn=_collate,
                    pin_memory=device.type == 'cuda')
                pending = None
                for indices, images, samples in loader:
                    x = preprocessor(
                        dict(inputs=images, data_samples=samples),
                        False)['inputs']
                    if expected and tuple(
                            x.shape[-2:]) != (expected, expected):
                        raise FeatureCacheError(
                            f'The image pipeline gives {x.shape[-2]}x'
                            f'{x.shape[-1]} inputs but the image tower '
                            f'expects {expected}x{expected} '
                            '(input_resolution). Fix the Resize of the '
                            'pipeline or the backbone.')
                    batch = (view, indices,
                             *_copy_to_host(backbone(x)[-1].to(cast)))
                    # the previous batch is written while the device
                    # runs this one
                    if pending is not None:
                        store(*pending)
                    pending = batch
                if pending is not None:
                    store(*pending)
                for (v, start), arr in [*arrays.items(), *scales.items()]:
                    if v == view:
                        arr.flush()
    finally:
        bar.close()
    arrays.clear()  # close the memmaps before the files are hashed
    scales.clear()
    return shape, [shard_record(folder, *entry) for entry in layout]


def _copy_to_host(feats: torch.Tensor):
    """Start copying ``feats`` to the host: ``(host tensor, event)``. From
    a CUDA device into pinned memory without waiting (``event`` says when
    the copy is done; the host meanwhile queues the next batch), else
    ``(feats on the CPU, None)``."""
    if feats.device.type != 'cuda':
        return feats.cpu(), None
    host = torch.empty(feats.shape, dtype=feats.dtype, pin_memory=True)
    host.copy_(feats, non_blocking=True)
    copied = torch.cuda.Event()
    copied.record()
    return host, copied


def _allocated_memmap(path: str, dtype, shape: tuple) -> np.memmap:
    """A new ``.npy`` shard, memory-mapped for writing, with its disk space
    reserved now (``posix_fallocate`` where the system has it): a memory
    map of a sparse file that meets a full disk kills the process with a
    bus error, without a Python message; here a full disk is an
    ``OSError`` naming the folder, the space needed and the space free."""
    array = np.lib.format.open_memmap(path, mode='w+', dtype=dtype,
                                      shape=shape)
    if hasattr(os, 'posix_fallocate'):
        size = os.path.getsize(path)
        try:
            with open(path, 'r+b') as f:
                os.posix_fallocate(f.fileno(), 0, size)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            del array
            folder = osp.dirname(path)
            free = shutil.disk_usage(folder).free
            raise OSError(
                e.errno,
                f'Feature cache: no space left on the disk of {folder} for '
                f'the shard {osp.basename(path)} ({size / 2**20:.1f} MiB; '
                f'{free / 2**20:.1f} MiB free). Nothing was kept: the '
                'partial build is removed. Fix: free space, set '
                'feature_cache.cache_root on a larger disk, or '
                "feature_cache.dtype='int8' (4x less than float32, 2x less "
                'than float16).') from None
    return array

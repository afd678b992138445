# Copyright (c) mmcoop contributors. All rights reserved.
"""Samplers whose augmentations are a function of (seed, epoch, index).

MMEngine seeds each dataloader worker once, when the worker starts, and
checkpoints do not hold worker RNG states. Random augmentations therefore
depend on the number of workers, and a resumed run draws other
augmentations than the uninterrupted one (with persistent workers).

:class:`EpochSeededSampler` makes every sample's draws reproducible: it
yields :class:`EpochIndex` values (plain ints that also carry the epoch and
the sampler's seed), and :class:`~mmcoop.datasets.PartialLabelDataset` runs
the pipeline of sample ``i`` in epoch ``e`` with the Python, NumPy and torch
RNGs seeded from ``(seed, e, i)`` (and restored afterwards). The same run
then gives the same batches for any ``num_workers``, with or without
persistent workers, and after a resume.

The epoch an index carries also selects the cached augmentation *view* of a
:class:`~mmcoop.datasets.feature_cache.CachedFeatureDataset` with ``K``
views (view ``epoch % K``). The sampler itself knows nothing about datasets:
each dataset decides what the epoch means for it (a seed for the pipeline's
draws, or a view), so the one sampler serves the image path and the
feature-cache path alike.
"""
import random
from typing import Iterator

import numpy as np
import torch
from mmengine.dataset import DefaultSampler

from mmcoop.registry import DATA_SAMPLERS

__all__ = [
    'EpochIndex', 'EpochSeededSampler', 'sample_seed', 'seed_global_rngs',
    'RNGGuard', 'seeded_sample'
]


def sample_seed(seed: int, stream: int, index: int) -> int:
    """A 32-bit seed for sample ``index`` of stream (epoch, view)."""
    return int(
        np.random.SeedSequence([seed, stream, index]).generate_state(1)[0])


class RNGGuard:
    """Save and restore the global RNG states (python, numpy, torch CPU)."""

    def __enter__(self):
        self.states = (random.getstate(), np.random.get_state(),
                       torch.get_rng_state())
        return self

    def __exit__(self, *exc):
        random.setstate(self.states[0])
        np.random.set_state(self.states[1])
        torch.set_rng_state(self.states[2])
        return False


def seed_global_rngs(value: int) -> None:
    """Seed the Python, NumPy and torch CPU global RNGs with ``value``."""
    random.seed(value)
    np.random.seed(value % (2**32))
    torch.manual_seed(value)


class seeded_sample(RNGGuard):
    """Context: the global RNGs seeded for one sample, restored on exit."""

    def __init__(self, seed: int, stream: int, index: int):
        self.value = sample_seed(seed, stream, index)

    def __enter__(self):
        super().__enter__()
        seed_global_rngs(self.value)
        return self


class EpochIndex(int):
    """A dataset index that carries the epoch and the sampler seed, and
    whether it is ``padding``: a sample the distributed sampler repeats so
    that every process gets as many (the dataset then gives it with every
    label unknown, :func:`~mmcoop.datasets.partial_label.padding_targets`,
    so it adds nothing to the loss)."""

    def __new__(cls, index: int, epoch: int, seed: int,
                padding: bool = False):
        obj = super().__new__(cls, index)
        obj.epoch = int(epoch)
        obj.seed = int(seed)
        obj.padding = bool(padding)
        return obj

    def __reduce__(self):  # survives the trip to dataloader workers
        return EpochIndex, (int(self), self.epoch, self.seed, self.padding)

    def __repr__(self):
        return (f'EpochIndex({int(self)}, epoch={self.epoch}'
                f'{", padding" if self.padding else ""})')


@DATA_SAMPLERS.register_module()
class EpochSeededSampler(DefaultSampler):
    """``DefaultSampler`` (same order) yielding :class:`EpochIndex` values.

    Pair it with :class:`~mmcoop.datasets.PartialLabelDataset`: sample
    ``i`` of epoch ``e`` is then augmented with the RNGs seeded from
    ``(seed, e, i)``. With a multi-view
    :class:`~mmcoop.datasets.feature_cache.CachedFeatureDataset`, epoch
    ``e`` reads the cached view ``e % num_views`` of every sample. A dataset
    that does not know :class:`EpochIndex` sees plain ints
    (``DefaultSampler`` behaviour). ``set_epoch`` is called by
    MMEngine's default ``DistSamplerSeedHook`` before every epoch, also
    after a resume. With N processes, the samples ``DefaultSampler``
    repeats to give every process as many are marked ``padding``
    (every label unknown), so N processes train on each image once per
    epoch, as one process does.

    Args: as :class:`mmengine.dataset.DefaultSampler` (``seed`` defaults to
        the run's ``randomness.seed``, shared by all ranks).
    """

    def __iter__(self) -> Iterator[EpochIndex]:
        epoch, seed, n = self.epoch, self.seed, len(self.dataset)
        # DefaultSampler hands process r the positions r, r + W, ... of the
        # order, which it pads past the dataset's end to a multiple of W
        return (EpochIndex(i, epoch, seed,
                           self.rank + k * self.world_size >= n)
                for k, i in enumerate(super().__iter__()))

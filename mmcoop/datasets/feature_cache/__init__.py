# Copyright (c) mmcoop contributors. All rights reserved.
"""Frozen-feature cache: encode every image once, train the heads from disk.

The image tower of every mmcoop model is frozen, so its dense output is a
fixed function of the (pre-processed) image.
:class:`CachedFeatureDataset` runs the tower once over a dataset, stores
the ``(D, N)`` features as memory-mapped ``.npy`` shards, and then serves
``dict(inputs=<(D, N) features>, data_samples=<DataSample>)``; with the
:class:`~mmcoop.models.PrecomputedFeatures` backbone and the
:class:`~mmcoop.models.FeatureDataPreprocessor` every head trains and
validates without running the image encoder. See ``docs/benchmarks.md``.

One concept per module:

* :mod:`.key`: what determines the features (the cache key);
* :mod:`.images`: whether the image files are still those encoded;
* :mod:`.store`: the on-disk layout, atomic commit and validation;
* :mod:`.lock`: one builder per cache across processes;
* :mod:`.extract`: running the tower over the views;
* :mod:`.dataset`: :class:`CachedFeatureDataset`;
* :mod:`.options`: the options and their checks;
* :mod:`.config`: :func:`apply_feature_cache`, the config switch, and
  :func:`restore_image_model`, its inverse for inference.
"""
from .config import apply_feature_cache, restore_image_model
from .dataset import CachedFeatureDataset
from .errors import FeatureCacheError, FeatureCacheMismatchError
from .extract import SeededView
from .key import hash_module_tensors
from .store import MANIFEST

__all__ = [
    'CachedFeatureDataset', 'FeatureCacheError', 'FeatureCacheMismatchError',
    'apply_feature_cache', 'restore_image_model', 'hash_module_tensors',
    'SeededView', 'MANIFEST'
]

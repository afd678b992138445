# Copyright (c) mmcoop contributors. All rights reserved.
"""Errors of the feature cache."""

__all__ = ['FeatureCacheError', 'FeatureCacheMismatchError']


class FeatureCacheError(RuntimeError):
    """A feature cache cannot be used or built."""


class FeatureCacheMismatchError(FeatureCacheError):
    """An existing cache no longer describes the data (another key, changed
    images or a damaged shard) and was refused (``on_mismatch='error'``)."""

# Copyright (c) mmcoop contributors. All rights reserved.
"""Batch cached features and move them to the device."""
from typing import Optional

import torch
from mmengine.model import BaseDataPreprocessor

from mmcoop.registry import MODELS
from mmcoop.utils.value_checks import check_flag
from .clip_preprocessor import refuse_bad_targets, refuse_empty_batch


@MODELS.register_module()
class FeatureDataPreprocessor(BaseDataPreprocessor):
    """Data preprocessor for cached dense features.

    Stacks the per-sample ``(D, N)`` features served by
    :class:`mmcoop.datasets.CachedFeatureDataset` into ``(B, D, N)`` on the
    CPU, then moves them (and the data samples) to the model's device. No
    normalisation, colour conversion or batch augmentation: the image
    preprocessing already happened when the cache was built (the cache's own
    ``data_preprocessor``). The stored dtype (fp16 or fp32) is kept for the
    transfer (half the bytes for fp16; an int8 cache is served dequantised,
    in fp32);
    :class:`~mmcoop.models.PrecomputedFeatures` casts to fp32.

    Args:
        non_blocking (bool): asynchronous host-to-device copy (use with
            ``pin_memory=True`` in the dataloader). Defaults to True.
        batch_augments (None): accepted for compatibility with
            ``ImageClassifier``, which passes ``train_cfg`` here when it
            has ``augments``. Image batch augmentations (Mixup, CutMix)
            cannot be applied to cached features: a non-empty value
            raises (None or an empty dict: no augments).
    """

    def __init__(self,
                 non_blocking: bool = True,
                 batch_augments: Optional[dict] = None):
        super().__init__(non_blocking=check_flag(
            'FeatureDataPreprocessor', 'non_blocking', non_blocking))
        if batch_augments:
            raise ValueError(
                'FeatureDataPreprocessor: batch augmentations '
                f'({batch_augments}) work on images and cannot be applied '
                'to cached features. Remove `train_cfg.augments` from the '
                'model config or train without the feature cache.')

    def forward(self, data: dict, training: bool = False) -> dict:
        inputs = data['inputs']
        refuse_empty_batch('FeatureDataPreprocessor', inputs)
        refuse_bad_targets('FeatureDataPreprocessor',
                           data.get('data_samples'))
        if isinstance(inputs, (list, tuple)):
            bad = [
                tuple(x.shape) for x in inputs
                if not isinstance(x, torch.Tensor) or x.dim() != 2
            ]
            if bad:
                raise ValueError(
                    'FeatureDataPreprocessor expects per-sample cached '
                    f'features of shape (D, N), got {bad[0]}. Images need '
                    'the ClsDataPreprocessor and an image backbone; this '
                    'preprocessor goes with CachedFeatureDataset.')
            inputs = torch.stack(inputs)
        elif not isinstance(inputs, torch.Tensor) or inputs.dim() != 3:
            raise ValueError(
                'FeatureDataPreprocessor expects a list of (D, N) features '
                'or a (B, D, N) tensor.')
        data = dict(data)
        data['inputs'] = inputs
        data = self.cast_data(data)
        return dict(
            inputs=data['inputs'], data_samples=data.get('data_samples'))

# Copyright (c) mmcoop contributors. All rights reserved.
"""CLIP's image normalisation, defined once."""
from typing import Optional, Sequence

import numpy as np
import torch
from mmpretrain.models.utils.data_preprocessor import ClsDataPreprocessor
from open_clip import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

from mmcoop.registry import MODELS
from mmcoop.utils.tri_state_targets import (TARGET_RULE, invalid_targets,
                                            invalid_values)
from mmcoop.utils.value_checks import (check_channel_stats, check_flag,
                                       check_int, check_number)

__all__ = ['CLIP_MEAN', 'CLIP_STD', 'CLIPDataPreprocessor']

#: CLIP's per-channel mean and std of RGB images on the 0..255 scale
#: (open_clip's ``OPENAI_DATASET_MEAN`` / ``OPENAI_DATASET_STD`` x 255, the
#: statistics of OpenAI's preprocessing, used by every CLIP weight set here).
CLIP_MEAN = tuple(255 * m for m in OPENAI_DATASET_MEAN)
CLIP_STD = tuple(255 * s for s in OPENAI_DATASET_STD)


def channel_stats(values):
    """A 1-D tensor or numpy array of per-channel statistics as a list of
    numbers (so the buffers are float32 as for a list: a float64 array
    would make the normalised batch float64); anything else unchanged."""
    if isinstance(values, (torch.Tensor, np.ndarray)) and values.ndim == 1:
        return values.tolist()
    return values


def refuse_empty_batch(owner: str, inputs) -> None:
    """A clear error for a batch without samples (MMEngine's stacking
    would fail with a bare ``AssertionError``)."""
    empty = (inputs.shape[0] == 0 if isinstance(inputs, torch.Tensor)
             and inputs.dim() > 0 else isinstance(inputs, (list, tuple))
             and not inputs)
    if empty or inputs is None:
        raise ValueError(
            f'{owner}: empty batch (no samples). Fix: check the dataset is '
            'not empty and that the sampler / batch_size give every batch '
            'at least one sample.')


def refuse_bad_targets(owner: str, data_samples) -> None:
    """The ``gt_score`` targets of a batch's data samples are tri-state
    (:mod:`mmcoop.utils.tri_state_targets`), checked here on the host
    before they move to the device: the loss reads device targets back at
    its first call only (a wait for the device at every step otherwise).
    Samples without ``gt_score`` (``gt_label``) or already on a device are
    left to the loss."""
    scores = [
        ds.gt_score for ds in data_samples or ()
        if 'gt_score' in ds and isinstance(ds.gt_score, torch.Tensor)
        and ds.gt_score.device.type == 'cpu'
    ]
    bad = [s for s in scores if bool(invalid_targets(s).any())]
    if bad:
        raise ValueError(
            f'{owner}: targets (the `gt_score` of the data samples) must be '
            f'{TARGET_RULE}; found {invalid_values(bad[0])}. Fix: check '
            'the `gt_score` the dataset produces.')


@MODELS.register_module()
class CLIPDataPreprocessor(ClsDataPreprocessor):
    """``ClsDataPreprocessor`` whose defaults are CLIP's normalisation:
    :data:`CLIP_MEAN`, :data:`CLIP_STD` and BGR -> RGB (images are loaded
    as BGR by ``LoadImageFromFile``).

    Configs write ``data_preprocessor=dict(type='CLIPDataPreprocessor')``
    instead of typing the statistics. The arguments are those of
    :class:`mmpretrain.models.ClsDataPreprocessor`; ``mean`` / ``std`` are 3
    numbers each (a list, tuple, numpy array or 1-D tensor). Every argument
    is checked when the preprocessor is built (``ValueError`` naming the
    field and the value): ``pad_size_divisor`` an int >= 1 (0 divides by
    zero at the first batch), ``pad_value`` a finite number, ``to_rgb`` and
    ``to_onehot`` True or False, ``num_classes`` None or an int >= 1,
    ``batch_augments`` None or a dict.
    """

    def __init__(self,
                 mean: Optional[Sequence[float]] = CLIP_MEAN,
                 std: Optional[Sequence[float]] = CLIP_STD,
                 to_rgb: bool = True,
                 **kwargs):
        owner = type(self).__name__
        mean, std = channel_stats(mean), channel_stats(std)
        check_channel_stats(owner, mean, std, optional=True)
        check_flag(owner, 'to_rgb', to_rgb)
        # the other arguments keep mmpretrain's defaults: checked when given
        if 'pad_size_divisor' in kwargs:
            check_int(owner, 'pad_size_divisor', kwargs['pad_size_divisor'])
        if 'pad_value' in kwargs:
            check_number(owner, 'pad_value', kwargs['pad_value'])
        if 'to_onehot' in kwargs:
            check_flag(owner, 'to_onehot', kwargs['to_onehot'])
        if kwargs.get('num_classes') is not None:
            check_int(owner, 'num_classes', kwargs['num_classes'])
        augments = kwargs.get('batch_augments')
        if augments is not None and not isinstance(augments, dict):
            raise ValueError(
                f'{owner}: batch_augments must be None or a dict such as '
                "dict(augments=[dict(type='Mixup', alpha=0.8)]) (the "
                f'model\'s train_cfg), got {augments!r}.')
        if augments and augments.get('augments'):
            raise ValueError(
                f'{owner}: batch augmentations ({augments["augments"]}, the '
                "model's train_cfg.augments) mix the targets of two images, "
                'but partial-label targets are 1 (present), 0 (absent) or -1 '
                '(unknown): a mixed unknown label means nothing, and the '
                'loss refuses mixed targets. Fix: remove '
                'model.train_cfg.augments (augment the images in the '
                'pipeline instead).')
        super().__init__(mean=mean, std=std, to_rgb=to_rgb, **kwargs)

    def forward(self, data: dict, training: bool = False) -> dict:
        """``ClsDataPreprocessor.forward``, after refusing the samples of
        the device path (``LoadImageBytes``): file bytes, which it would
        otherwise normalise as if they were 1-pixel-high images, and (by
        their ``device_aug`` draws) RGB images decoded in the workers, which
        it would take for BGR, unaugmented."""
        inputs = data.get('inputs')
        refuse_empty_batch(type(self).__name__, inputs)
        samples = data.get('data_samples') or ()
        refuse_bad_targets(type(self).__name__, samples)
        raw = (inputs.dim() == 2 if isinstance(inputs, torch.Tensor) else
               any(getattr(x, 'dim', lambda: 3)() == 1 for x in inputs or ()))
        if raw or (samples and 'device_aug' in samples[0]):
            raise ValueError(
                f'{type(self).__name__} got samples of the device path '
                '(LoadImageBytes: file bytes, or RGB images to augment on '
                'the device). Fix: set '
                'model.data_preprocessor=dict(type='
                "'DeviceAugmentPreprocessor', _delete_=True), or load images "
                'with LoadImageTensor / LoadImageFromFileChecked.')
        return super().forward(data, training)

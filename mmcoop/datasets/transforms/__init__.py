# Copyright (c) mmcoop contributors. All rights reserved.
from .cutout import RandomCutout
from .loading import LoadImageFromFileChecked
from .randaugment import DUALCOOP_RANDAUG_POLICIES, DualCoOpRandAugment

__all__ = [
    'RandomCutout', 'LoadImageFromFileChecked', 'DualCoOpRandAugment',
    'DUALCOOP_RANDAUG_POLICIES'
]
from .tensor_augment import (LoadImageBytes, LoadImageTensor,  # noqa: E402
                             TensorCutout, TensorRandAugment)

__all__ += [
    'LoadImageTensor', 'LoadImageBytes', 'TensorCutout', 'TensorRandAugment'
]

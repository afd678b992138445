# Copyright (c) mmcoop contributors. All rights reserved.
from .cutout import RandomCutout
from .loading import LoadImageFromFileChecked
from .randaugment import DUALCOOP_RANDAUG_POLICIES, DualCoOpRandAugment

__all__ = [
    'RandomCutout', 'LoadImageFromFileChecked', 'DualCoOpRandAugment',
    'DUALCOOP_RANDAUG_POLICIES'
]
from .tensor_augment import (LoadImageTensor, TensorCutout,  # noqa: E402
                             TensorRandAugment)

__all__ += ['LoadImageTensor', 'TensorCutout', 'TensorRandAugment']

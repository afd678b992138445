# Copyright (c) mmcoop contributors. All rights reserved.
from .cutout import RandomCutout
from .loading import LoadImageFromFileChecked
from .randaugment import DUALCOOP_RANDAUG_POLICIES, DualCoOpRandAugment

__all__ = [
    'RandomCutout', 'LoadImageFromFileChecked', 'DualCoOpRandAugment',
    'DUALCOOP_RANDAUG_POLICIES'
]

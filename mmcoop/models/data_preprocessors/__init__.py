# Copyright (c) mmcoop contributors. All rights reserved.
from .clip_preprocessor import CLIP_MEAN, CLIP_STD, CLIPDataPreprocessor
from .device_augment import DeviceAugmentPreprocessor
from .feature_preprocessor import FeatureDataPreprocessor

__all__ = [
    'CLIP_MEAN', 'CLIP_STD', 'CLIPDataPreprocessor', 'FeatureDataPreprocessor',
    'DeviceAugmentPreprocessor'
]

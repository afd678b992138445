# Copyright (c) mmcoop contributors. All rights reserved.
from .device_augment import DeviceAugmentPreprocessor
from .feature_preprocessor import FeatureDataPreprocessor

__all__ = ['FeatureDataPreprocessor', 'DeviceAugmentPreprocessor']

# Copyright (c) mmcoop contributors. All rights reserved.
from .feature_preprocessor import FeatureDataPreprocessor

__all__ = ['FeatureDataPreprocessor']

# Copyright (c) mmcoop contributors. All rights reserved.
from .constructor import TrainableParamsOptimWrapperConstructor
from .scheduler import ConstantAbsoluteLR, ConstantAbsoluteParamScheduler

__all__ = [
    'ConstantAbsoluteParamScheduler', 'ConstantAbsoluteLR',
    'TrainableParamsOptimWrapperConstructor'
]

# Copyright (c) mmcoop contributors. All rights reserved.
from .base_head import PartialLabelHead, resolve_classnames
from .baseline_head import BaselineHead
from .coop_heads import (DualCoOpHead, NegativeCoOpHead, PositiveCoOpHead,
                         PromptEmbeddingHead, PromptRegionHead, ZeroShotHead)
from .region_aggregation import (class_specific_region_aggregation,
                                 spatial_softmax_pool)

__all__ = [
    'PartialLabelHead', 'PromptRegionHead', 'PromptEmbeddingHead',
    'PositiveCoOpHead', 'NegativeCoOpHead', 'DualCoOpHead', 'ZeroShotHead',
    'BaselineHead',
    'resolve_classnames', 'class_specific_region_aggregation',
    'spatial_softmax_pool'
]

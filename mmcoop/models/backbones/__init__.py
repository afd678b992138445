# Copyright (c) mmcoop contributors. All rights reserved.
from .clip_loader import (build_open_clip, load_clip_weights,
                          register_mmcoop_clip_configs)
from .frozen import FrozenMixin
from .frozen_clip import FrozenCLIP, FrozenCLIPTextEncoder
from .precomputed import PrecomputedFeatures

__all__ = [
    'FrozenCLIP', 'FrozenCLIPTextEncoder', 'FrozenMixin', 'build_open_clip',
    'load_clip_weights', 'register_mmcoop_clip_configs',
    'PrecomputedFeatures'
]

# Copyright (c) mmcoop contributors. All rights reserved.
"""A backbone for features that were extracted ahead of time."""
from typing import Optional, Tuple

import torch
from mmengine.model import BaseModule

from mmcoop.registry import MODELS
from mmcoop.utils.value_checks import check_int


@MODELS.register_module()
class PrecomputedFeatures(BaseModule):
    """Pass cached dense features through as the backbone output.

    Used with :class:`mmcoop.datasets.CachedFeatureDataset` (the dataset
    serves the frozen image tower's ``(D, N)`` features) and
    :class:`mmcoop.models.FeatureDataPreprocessor` (stacks them to
    ``(B, D, N)`` on the device): the heads then train and validate without
    running the image encoder. The features may be stored in fp16; they are
    returned in fp32, the dtype :class:`FrozenCLIP` returns.

    It has no parameters, so checkpoints of a cached run hold exactly the
    head's tensors and load into the image-encoder model unchanged.

    Args:
        embed_dim (int, optional): expected ``D`` (512 for RN101), an int
            >= 1; checked against the features when given.
        num_positions (int, optional): expected ``N`` (197 for RN101 at
            448 px), an int >= 1; checked against the features when given.

    Shapes:
        input ``(B, D, N)`` -> ``((B, D, N),)`` in fp32.
    """

    def __init__(self,
                 embed_dim: Optional[int] = None,
                 num_positions: Optional[int] = None,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        for field, value in (('embed_dim', embed_dim),
                             ('num_positions', num_positions)):
            if value is not None:
                check_int(type(self).__name__, field, value)
        self.embed_dim = embed_dim
        self.num_positions = num_positions

    def forward(self, inputs: torch.Tensor) -> Tuple[torch.Tensor]:
        if not isinstance(inputs, torch.Tensor) or inputs.dim() != 3:
            shape = tuple(inputs.shape) if isinstance(
                inputs, torch.Tensor) else type(inputs).__name__
            raise ValueError(
                'PrecomputedFeatures expects cached dense features of shape '
                f'(B, D, N), got {shape}. With this backbone the dataset must '
                'be a CachedFeatureDataset and the data preprocessor a '
                'FeatureDataPreprocessor (images are never encoded here).')
        for name, dim, value in (('embed_dim', 1, self.embed_dim),
                                 ('num_positions', 2, self.num_positions)):
            if value is not None and inputs.shape[dim] != value:
                raise ValueError(
                    f'PrecomputedFeatures: cached features have shape '
                    f'{tuple(inputs.shape[1:])} (D, N) but {name}={value} '
                    'was configured. The cache was built with another image '
                    'tower or input resolution.')
        return (inputs.float(), )

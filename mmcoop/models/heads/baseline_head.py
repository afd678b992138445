# Copyright (c) mmcoop contributors. All rights reserved.
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from mmcoop.registry import MODELS
from mmcoop.utils.value_checks import check_int
from .base_head import PartialLabelHead, check_positive_scale
from .region_aggregation import spatial_softmax_pool


@MODELS.register_module()
class BaselineHead(PartialLabelHead):
    """The vision-only Baseline of PositiveCoOp (no text encoder).

    ``Linear(D, 2C)`` (with bias) on the *un-normalised* dense features gives
    ``(B, 2C, N)`` scores; each of the 2C channels gets its own softmax over
    positions and ``logit = logit_scale * sum(w * score)``. Channels
    ``[0, C)`` are the negatives, ``[C, 2C)`` the positives, as the official
    reshape to ``(B, 2, C)``. Trainable parameters: ``2C*D + 2C`` (82,080 for
    COCO, 20,520 for VOC with D = 512).

    Args:
        classnames (str | Sequence[str] | dict): class names, dataset type
            or dataset dict (see :func:`resolve_classnames`).
        in_channels (int): D, the dense feature width: the backbone's CLIP
            joint embedding width (``FrozenCLIP.embed_dim``; 512 for RN101
            and ViT-B, 640 RN50x4, 768 ViT-L, 1024 ViT-H, 1152 SigLIP
            So400m), an int >= 1. A mismatch is an error at the first
            forward. Defaults to 512.
        logit_scale (float): multiplier, a finite number > 0 (5 in the
            official code).
    """

    def __init__(self,
                 classnames: Union[str, Sequence[str]],
                 in_channels: int = 512,
                 logit_scale: float = 5.,
                 loss: dict = dict(type='PartialAsymmetricLoss'),
                 thr: Optional[float] = None,
                 topk: Optional[int] = None,
                 init_cfg: Optional[dict] = None):
        owner = type(self).__name__
        check_int(owner, 'in_channels', in_channels, 1)
        check_positive_scale(owner, 'logit_scale', logit_scale, 5)
        super().__init__(
            classnames=classnames,
            loss=loss,
            thr=thr,
            topk=topk,
            init_cfg=init_cfg)
        self.in_channels = in_channels
        self.logit_scale = logit_scale
        self.fc = nn.Linear(in_channels, 2 * self.num_classes)

    def forward(self, feats: Tuple[torch.Tensor]) -> torch.Tensor:
        """``((B, D, N),)`` dense features -> ``(B, 2, C)`` logits."""
        dense = self.pre_logits(feats)
        scores = self.fc(dense.transpose(1, 2)).transpose(1, 2)  # (B, 2C, N)
        logits = spatial_softmax_pool(scores, None, self.logit_scale)
        return logits.reshape(logits.size(0), 2, self.num_classes)

# Copyright (c) mmcoop contributors. All rights reserved.
"""Class-specific region aggregation (DualCoOp, Sec. 3.3), shared by every
mmcoop head."""
from typing import Optional

import torch


def l2_normalize(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``x / ||x||`` along ``dim`` (plain division, as the official code)."""
    return x / x.norm(dim=dim, keepdim=True)


def spatial_softmax_pool(scores: torch.Tensor,
                         weight_logits: Optional[torch.Tensor] = None,
                         logit_scale: float = 5.) -> torch.Tensor:
    """Softmax-weighted sum over positions.

    Args:
        scores (Tensor): ``(B, K, N)`` per-position scores.
        weight_logits (Tensor, optional): ``(B, K, N)`` scores whose softmax
            over positions gives the weights; ``scores`` itself if None.
        logit_scale (float): output multiplier (5 in the official code).

    Returns:
        Tensor: ``(B, K)``, ``logit_scale * sum_n softmax(w)_n * scores_n``.
    """
    if weight_logits is None:
        weight_logits = scores
    weights = weight_logits.softmax(dim=-1)
    return logit_scale * (scores * weights).sum(dim=-1)


def class_specific_region_aggregation(dense: torch.Tensor,
                                      neg_feats: torch.Tensor,
                                      pos_feats: torch.Tensor,
                                      feat_scale: float = 20.,
                                      logit_scale: float = 5.
                                      ) -> torch.Tensor:
    """Aggregate dense image features into ``[negative, positive]`` logits.

    ``s = feat_scale * cos(dense feature, class feature)`` at every position;
    the spatial weights are the softmax over positions of the *positive*
    similarities and are used for both sides; ``logit = logit_scale *
    sum(w * s)``. ``p(present) = softmax(logits, dim=1)[:, 1]``.

    Args:
        dense (Tensor): ``(B, D, N)`` dense image features.
        neg_feats (Tensor): ``(C, D)`` class-absence features.
        pos_feats (Tensor): ``(C, D)`` class-presence features.
        feat_scale (float): cosine multiplier. Defaults to 20.
        logit_scale (float): logit multiplier. Defaults to 5.

    Returns:
        Tensor: ``(B, 2, C)`` logits ordered [negative, positive].
    """
    dense = l2_normalize(dense, dim=1)
    neg_sim = feat_scale * torch.einsum('bdn,cd->bcn', dense,
                                        l2_normalize(neg_feats, dim=-1))
    pos_sim = feat_scale * torch.einsum('bdn,cd->bcn', dense,
                                        l2_normalize(pos_feats, dim=-1))
    neg = spatial_softmax_pool(neg_sim, pos_sim, logit_scale)
    pos = spatial_softmax_pool(pos_sim, pos_sim, logit_scale)
    return torch.stack([neg, pos], dim=1)

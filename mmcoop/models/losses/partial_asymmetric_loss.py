# Copyright (c) mmcoop contributors. All rights reserved.
import torch
import torch.nn as nn
from mmengine.dist import get_world_size

from mmcoop.registry import MODELS


def check_partial_targets(logits: torch.Tensor, target: torch.Tensor) -> None:
    """Validate ``(B, 2, C)`` logits against tri-state ``(B, C)`` targets."""
    if logits.dim() != 3 or logits.shape[1] != 2:
        raise ValueError(
            'PartialAsymmetricLoss expects logits of shape (B, 2, C) ordered '
            f'[negative, positive], got {tuple(logits.shape)}.')
    expected = (logits.shape[0], logits.shape[2])
    if tuple(target.shape) != expected:
        raise ValueError(
            f'Targets of shape {tuple(target.shape)} do not match the logits '
            f'(expected {expected}): each sample needs a `gt_score` with one '
            'entry per class.')
    bad = ~((target == 1) | (target == 0) | (target == -1))
    if bool(bad.any()):
        values = torch.unique(target[bad])[:5].tolist()
        raise ValueError(
            f'Targets must be 1 (present), 0 (absent) or -1 (unknown); found '
            f'{values}. Check the `gt_score` the dataset produces.')


@MODELS.register_module()
class PartialAsymmetricLoss(nn.Module):
    """Asymmetric loss on the two-way softmax, ignoring unknown labels.

    As the official DualCoOp / PositiveCoOp ``AsymmetricLoss``: with
    ``p = softmax(logits, dim=1)[:, 1]`` the positive probability and
    ``p_neg = min(1 - p + clip, 1)`` the shifted negative probability,

    .. math::
        L = -\\sum_{y \\neq -1} y (1-p)^{\\gamma_+} \\log p +
            (1-y) (1-p_{neg})^{\\gamma_-} \\log p_{neg}

    where the focusing weights are computed without gradient and the
    log-arguments are clamped at ``eps``. Entries with target ``-1``
    (unknown) contribute nothing.

    Args:
        gamma_neg (float): focusing exponent for negatives. Defaults to 2.
        gamma_pos (float): focusing exponent for positives. Defaults to 1.
        clip (float): probability shift for negatives. Defaults to 0.05.
        eps (float): clamp for the logarithm. Defaults to 1e-6.
        reduction (str): ``'sum'`` (official) or ``'mean'`` (over known
            entries). Defaults to ``'sum'``. The sum is over the *global*
            batch: under data-parallel training (which averages gradients
            over processes) the local sum is multiplied by the world size,
            so N processes x B/N images update the parameters exactly as one
            process with B images.
        loss_weight (float): multiplier (the official ``--loss_w``).
            Defaults to 1.0.
    """

    def __init__(self,
                 gamma_neg: float = 2.,
                 gamma_pos: float = 1.,
                 clip: float = 0.05,
                 eps: float = 1e-6,
                 reduction: str = 'sum',
                 loss_weight: float = 1.0):
        super().__init__()
        if reduction not in ('sum', 'mean'):
            raise ValueError(
                f"reduction must be 'sum' or 'mean', got {reduction!r}")
        self.gamma_neg = gamma_neg
        self.gamma_pos = gamma_pos
        self.clip = clip
        self.eps = eps
        self.reduction = reduction
        self.loss_weight = loss_weight

    def forward(self, logits: torch.Tensor,
                target: torch.Tensor) -> torch.Tensor:
        """``(B, 2, C)`` logits and ``(B, C)`` targets in {1, 0, -1}."""
        check_partial_targets(logits, target)
        prob = logits.float().softmax(dim=1)
        known = target != -1
        y = target[known].to(prob.dtype)
        p_pos = prob[:, 1][known]
        p_neg = prob[:, 0][known]
        if self.clip is not None and self.clip > 0:
            p_neg = (p_neg + self.clip).clamp(max=1)
        loss = y * torch.log(p_pos.clamp(min=self.eps)) + \
            (1 - y) * torch.log(p_neg.clamp(min=self.eps))
        if self.gamma_neg > 0 or self.gamma_pos > 0:
            with torch.no_grad():
                pt = p_pos * y + p_neg * (1 - y)
                gamma = self.gamma_pos * y + self.gamma_neg * (1 - y)
                weight = torch.pow(1 - pt, gamma)
            loss = loss * weight
        loss = -loss.sum()
        if self.reduction == 'mean':
            loss = loss / known.sum().clamp(min=1)
        else:
            loss = loss * get_world_size()
        return self.loss_weight * loss

# Copyright (c) mmcoop contributors. All rights reserved.
import math
import numbers

import torch
import torch.nn as nn
from mmengine.dist import all_reduce, get_world_size

from mmcoop.registry import MODELS
from mmcoop.utils.tri_state_targets import (TARGET_RULE, UNKNOWN,
                                            invalid_targets, invalid_values)
from mmcoop.utils.value_checks import check_number


def check_partial_targets(logits: torch.Tensor,
                          target: torch.Tensor,
                          values: bool = True) -> None:
    """Validate ``(B, 2, C)`` logits against tri-state ``(B, C)`` targets
    (the rule of :mod:`mmcoop.utils.tri_state_targets`): the shapes, and
    with ``values`` the target values (which reads them back to the host:
    a wait for the device when they live there)."""
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
    if values and bool(invalid_targets(target).any()):
        raise ValueError(
            f'PartialAsymmetricLoss: targets (the `gt_score` of the data '
            f'samples) must be {TARGET_RULE}; found '
            f'{invalid_values(target)}. Fix: check the `gt_score` the '
            'dataset produces.')


def _check_below_one(owner: str, field: str, value, open_low: bool,
                     expected: str) -> None:
    """``value``: a finite real (not a bool) in ``[0, 1)``, or ``(0, 1)``
    with ``open_low`` (the helpers' message format)."""
    ok = isinstance(value, numbers.Real) and not isinstance(
        value, bool) and math.isfinite(value) and 0 <= value < 1 and not (
            open_low and value == 0)
    if not ok:
        raise ValueError(
            f'{owner}: {field} must be {expected}, got {value!r}.')


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
        gamma_neg (float): focusing exponent for negatives, a finite number
            >= 0. Defaults to 2.
        gamma_pos (float): focusing exponent for positives, a finite number
            >= 0. Defaults to 1.
        clip (float, optional): probability shift for negatives, a number
            in [0, 1), or None (as 0: no shift). Defaults to 0.05.
        eps (float): clamp for the logarithm, a number in (0, 1).
            Defaults to 1e-6.
        reduction (str): ``'sum'`` (official) or ``'mean'`` (over known
            entries). Defaults to ``'sum'``. Both are over the *global*
            batch: under data-parallel training (which averages gradients
            over processes) the local sum is multiplied by the world size
            (and for ``'mean'`` divided by the known entries of all
            processes), so N processes x B/N images update the parameters
            exactly as one process with B images.
        loss_weight (float): multiplier (the official ``--loss_w``), a
            finite number > 0. Defaults to 1.0.

    Every argument is checked when the loss is built (``ValueError`` naming
    the field, the value and the range). The targets are checked at every
    call on the CPU; on another device (CUDA) at the first call only, as
    reading them back would make the host wait for the device at every
    step: the mmcoop data preprocessors check every batch's targets on
    the host before moving them, and refuse batch augmentations (which
    mix them) when the model is built.
    """

    def __init__(self,
                 gamma_neg: float = 2.,
                 gamma_pos: float = 1.,
                 clip: float = 0.05,
                 eps: float = 1e-6,
                 reduction: str = 'sum',
                 loss_weight: float = 1.0):
        super().__init__()
        owner = type(self).__name__
        if reduction not in ('sum', 'mean'):
            raise ValueError(
                f"{owner}: reduction must be 'sum' or 'mean', got "
                f"{reduction!r}. Fix: 'sum' (official) or 'mean'.")
        for field, value, default in (('gamma_neg', gamma_neg, 2),
                                      ('gamma_pos', gamma_pos, 1)):
            check_number(
                owner,
                field,
                value,
                low=0,
                what=f'a focusing exponent, 0 for none; {default} by '
                'default')
        if clip is not None:
            _check_below_one(
                owner, 'clip', clip, False,
                'None or a number in [0, 1) (the shift of the negative '
                'probability; 0.05 by default, None or 0 for no shift)')
        _check_below_one(
            owner, 'eps', eps, True,
            'a number in (0, 1) (the clamp of the log-arguments; 1e-6 by '
            'default)')
        check_number(
            owner,
            'loss_weight',
            loss_weight,
            low=0,
            above=True,
            what='a multiplier of the loss; 1.0 by default')
        self.gamma_neg = gamma_neg
        self.gamma_pos = gamma_pos
        self.clip = clip
        self.eps = eps
        self.reduction = reduction
        self.loss_weight = loss_weight
        # the target values on a device are checked at the first call only
        self._device_checked = False

    def forward(self, logits: torch.Tensor,
                target: torch.Tensor) -> torch.Tensor:
        """``(B, 2, C)`` logits and ``(B, C)`` targets in {1, 0, -1}."""
        on_host = target.device.type == 'cpu'
        check_partial_targets(
            logits, target, values=on_host or not self._device_checked)
        self._device_checked = self._device_checked or not on_host
        prob = logits.float().softmax(dim=1)
        known = target != UNKNOWN
        # unknown entries are masked, not removed: a boolean index would
        # read the number of known entries back from the device (a wait at
        # every step); each known entry's term and gradient are the same
        y = target.to(prob.dtype).clamp(min=0)
        p_pos = prob[:, 1]
        p_neg = prob[:, 0]
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
        loss = torch.where(known, loss, loss.new_zeros(()))
        world_size = get_world_size()
        loss = -loss.sum() * world_size
        if self.reduction == 'mean':
            # over the known entries of the *global* batch (the count of
            # every process), as the sum is over the global batch
            count = known.sum()
            if world_size > 1:
                all_reduce(count, op='sum')
            loss = loss / count.clamp(min=1)
        return self.loss_weight * loss

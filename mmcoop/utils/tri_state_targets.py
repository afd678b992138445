# Copyright (c) mmcoop contributors. All rights reserved.
"""The tri-state target of partial-label training, defined once.

A target (``gt_score``, one entry per class) is :data:`PRESENT` (1),
:data:`ABSENT` (0) or :data:`UNKNOWN` (-1); nothing else (a soft 0.5, a
2, a -2, NaN or inf) is a target. The loss
(:func:`~mmcoop.models.losses.partial_asymmetric_loss.check_partial_targets`),
the metric (:func:`~mmcoop.evaluation.metrics.multi_label.
check_scores_and_targets`), the partial-label wrapper
(:func:`~mmcoop.datasets.partial_label.complete_targets`) and the mask files
(:mod:`mmcoop.datasets.mask_files`) refuse the same entries through
:func:`invalid_targets`, each with its own message context; the rule's
wording is :data:`TARGET_RULE`.

The values are compared as numbers: bools and integers of any width are
read as their value (``True`` is 1; a ``uint8`` 255 is 255, not a wrapped
-1), and a non-numeric array (strings, objects, complex) holds no target.
"""
from typing import List, Union

import numpy as np
import torch

__all__ = [
    'PRESENT', 'ABSENT', 'UNKNOWN', 'TARGET_VALUES', 'TARGET_RULE',
    'is_numeric', 'invalid_targets', 'invalid_values'
]

#: a class shown in the image (a known positive)
PRESENT = 1
#: a class not in the image (a known negative)
ABSENT = 0
#: a label nobody knows: no loss, ignored by every metric
UNKNOWN = -1
#: every value a target may take
TARGET_VALUES = (PRESENT, ABSENT, UNKNOWN)
#: the rule, as every message words it
TARGET_RULE = (f'{PRESENT} (present), {ABSENT} (absent) or {UNKNOWN} '
               '(unknown)')

Targets = Union[np.ndarray, torch.Tensor]


def is_numeric(targets: Targets) -> bool:
    """Whether ``targets`` (an array or a tensor) holds real numbers or
    bools (not strings, objects or complex numbers)."""
    if isinstance(targets, torch.Tensor):
        return not targets.is_complex()
    return np.asarray(targets).dtype.kind in 'biuf'


def invalid_targets(targets: Targets) -> Targets:
    """Boolean mask of the entries of ``targets`` that are not one of
    :data:`TARGET_VALUES` (NaN and inf included), of the same kind as
    ``targets``: a NumPy array for an array (or a list), a tensor on the
    same device for a tensor. Every entry of a non-numeric ``targets``
    (:func:`is_numeric`) is invalid."""
    if isinstance(targets, torch.Tensor):
        if not is_numeric(targets):
            return torch.ones_like(targets, dtype=torch.bool)
        # as floats: an integer tensor compared with -1 would wrap (a uint8
        # 255 equals -1); every integer other than 1, 0, -1 stays another
        # float
        values = targets if targets.is_floating_point() else targets.float()
    else:
        targets = np.asarray(targets)
        if not is_numeric(targets):
            return np.ones(targets.shape, dtype=bool)
        values = targets if targets.dtype.kind == 'f' else \
            targets.astype(np.float64)
    valid = values == TARGET_VALUES[0]
    for value in TARGET_VALUES[1:]:
        valid = valid | (values == value)
    return ~valid


def invalid_values(targets: Targets, limit: int = 5) -> List:
    """Up to ``limit`` invalid entries of ``targets`` as Python values, for
    a message: distinct and sorted (NaN last) when ``targets`` is numeric,
    the first ones otherwise."""
    if not isinstance(targets, torch.Tensor):
        targets = np.asarray(targets)
    bad = targets[invalid_targets(targets)].reshape(-1)
    if is_numeric(bad):
        bad = torch.unique(bad) if isinstance(bad, torch.Tensor) else \
            np.unique(bad)
    return bad[:limit].tolist()

# Copyright (c) mmcoop contributors. All rights reserved.
"""Per-step class subsets for training with large vocabularies.

The prompt heads run the text encoder over every class at every step. With
a class subset only K classes are encoded and scored per step:

* the batch's *known* classes, those with a target 1 or 0 in at least one
  image of the batch (n of them);
* if n <= K: all of them, plus ``K - n`` classes drawn uniformly without
  replacement from the others (every target -1 in the batch) when ``fill``
  is True, so that every step has the same shape;
* if n > K: K of the known classes drawn uniformly without replacement.

Effect on :class:`~mmcoop.models.losses.PartialAsymmetricLoss` (the logits
of class c depend only on class c's features, and a -1 target contributes
nothing):

* n <= K: the loss and its gradients are exactly those over all C classes
  (only zero terms are dropped); the filled-in classes also contribute
  zero: they only fix the shape.
* n > K: the terms of the ``n - K`` known classes left out are dropped.
  With ``reduction='sum'`` (the default) the subset's loss is multiplied
  by ``n / K``: each known class is kept with probability K / n, so the
  scaled loss and its gradient are unbiased estimates of the full ones
  (with more variance). With ``reduction='mean'`` no factor is applied:
  the mean over the subset's known entries is a ratio estimate of the full
  mean, consistent but not exactly unbiased.

The draw reads nothing back from the device with ``fill`` (every step has
K classes): a uniformly random order of the C classes is drawn on the host
(so a seed gives the same classes on the CPU and on a GPU) and sent to the
device without waiting; there the known classes are ranked above all the
others and the top K of that order are taken (all the known classes and a
uniform draw of the others if n <= K, a uniform K-subset of the known
classes if n > K); the factor ``max(n / K, 1)`` stays a device scalar.
Without ``fill`` the number of classes, min(n, K), depends on the batch,
so it is read back once per step.
"""
from typing import Optional, Tuple

import torch

from mmcoop.utils.value_checks import check_flag, check_int

__all__ = ['check_class_subset', 'sample_class_subset']


def check_class_subset(cfg: Optional[dict],
                       owner: str = 'head') -> Optional[dict]:
    """Validate a head's ``class_subset`` option -> ``dict(num_classes=K,
    fill=bool)`` or None; ``owner`` (the head class) names it in the
    errors."""
    if cfg is None:
        return None
    if not isinstance(cfg, dict) or set(cfg) - {'num_classes', 'fill'} \
            or 'num_classes' not in cfg:
        raise ValueError(
            f'{owner}: class_subset must be None or dict(num_classes=K[, '
            f'fill=True]), got {cfg!r}.')
    k = check_int(owner, 'class_subset.num_classes', cfg['num_classes'], 1)
    fill = check_flag(owner, 'class_subset.fill', cfg.get('fill', True))
    return dict(num_classes=k, fill=fill)


def sample_class_subset(target: torch.Tensor,
                        num_classes: int,
                        fill: bool = True,
                        generator: Optional[torch.Generator] = None
                        ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Draw the classes of one training step (see the module docstring).

    Args:
        target (Tensor): ``(B, C)`` tri-state targets {1, 0, -1}, on any
            device.
        num_classes (int): K, the classes per step.
        fill (bool): complete the known classes with uniformly drawn others
            up to K. Defaults to True.
        generator (torch.Generator, optional): a CPU random source (the
            global CPU one by default): the draw is made on the host, so a
            seed gives the same classes on every device.

    Returns:
        tuple: ``index``, the ``(k,)`` sorted class indices on the device
        of ``target`` (k = K, or min(n, K) without ``fill``: empty when
        the batch has no known label; all C classes if C <= K), and
        ``scale``, a float32 scalar tensor on that device: ``n / K`` if
        known classes were left out, else 1. With ``fill`` nothing is read
        back from the device; without it n is read (once).
    """
    total = target.shape[1]
    device = target.device
    if total <= num_classes:
        return (torch.arange(total, device=device),
                torch.ones((), dtype=torch.float32, device=device))
    known = (target != -1).any(dim=0)
    n = known.sum()
    scale = (n.float() / num_classes).clamp(min=1.)
    k = num_classes if fill else min(int(n), num_classes)  # fill: no read
    # a uniformly random order of the C classes, drawn on the host and
    # sent without waiting; the known classes rank above all the others:
    # the top k are every known class and uniformly drawn others (n <= k)
    # or k of the known classes drawn uniformly (n > k)
    order = torch.randperm(total, generator=generator, device='cpu')
    if device.type == 'cuda':
        order = order.pin_memory()
    order = order.to(device, non_blocking=True)
    keys = known.long() * total + order
    return keys.topk(k, sorted=False).indices.sort().values, scale

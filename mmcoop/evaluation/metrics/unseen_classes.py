# Copyright (c) mmcoop contributors. All rights reserved.
"""Zero-shot (ZSL) and generalised zero-shot (GZSL) multi-label metrics.

The protocol of the unseen-class splits (COCO 48/17, NUS-WIDE 925/81, as
reported by DualCoOp and its successors): a model trained on the seen
classes scores the test images over

* the unseen classes only (ZSL): keys ``unseen/mAP``, ``unseen/F1@3``,
  ``unseen/F1@5``;
* all classes (GZSL): keys ``all/mAP``, ``all/F1@3``, ``all/F1@5``;
  "all" is seen + unseen when ``seen_classes`` is given (COCO 48/17: 65 of
  the 80 classes), else every class of the dataset.

``F1@k`` predicts the top-k classes of each image among the classes
scored and pools the counts over images and classes (precision = hits /
(k x images), recall = hits / positives): the overall F1 of
:func:`~mmcoop.evaluation.metrics.multi_label.topk_metrics`. mAP is
:func:`~mmcoop.evaluation.metrics.multi_label.mean_average_precision` over
the same classes. Targets -1 count nowhere. Each part scores the images
with at least one positive among its classes (``images='with_positive'``,
the image sets of DualCoOp's COCO 48/17 annotation files); an image
without one would add k false positives to F1@k.
"""
import numbers
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np

from mmcoop.datasets.utils import class_columns, read_class_list
from mmcoop.registry import METRICS
from mmcoop.utils.value_checks import check_int
from .multi_label import (PartialMultiLabelMetric, average_precision_per_class,
                          mean_of_ap, topk_metrics, warn_undefined_ap)

__all__ = ['UnseenClassMetric']


def check_ks(owner: str, ks) -> Tuple[int, ...]:
    """The k of ``F1@k``: an int >= 1, or a non-empty sequence of them
    (none would report no F1 at all) -> a tuple."""
    if isinstance(ks, numbers.Integral) and not isinstance(ks, bool):
        ks = (ks, )
    if isinstance(ks, (str, bytes)) or not isinstance(
            ks, (list, tuple)) or not ks:
        raise ValueError(
            f'{owner}: ks must be an int >= 1 or a sequence of them (the k '
            f'of F1@k), got {ks!r}. Fix: e.g. ks=(3, 5).')
    return tuple(check_int(owner, f'ks[{i}]', k, 1) for i, k in enumerate(ks))


@METRICS.register_module()
class UnseenClassMetric(PartialMultiLabelMetric):
    """mAP, F1@3 and F1@5 over the unseen classes and over all classes.

    Args:
        unseen_classes (str | Sequence[str]): the unseen class names (each
            one of the dataset's ``classes``), or a text file with one
            name a line (e.g. ``mmcoop.datasets.unseen_splits``).
        seen_classes (str | Sequence[str], optional): the seen class names
            (or a file); "all" is then seen + unseen. Defaults to None
            (every class of the dataset).
        ks (int | Sequence[int]): the k of ``F1@k``, each an int >= 1 (one
            int: ``(k,)``) and at most the number of unseen classes
            (checked when evaluating: a larger k would be that number
            under another name). Defaults to ``(3, 5)``.
        no_positive (str): see :class:`PartialMultiLabelMetric`.
        images (str): the images each part scores: ``'with_positive'``
            (those with at least one positive among the part's classes:
            the unseen classes for ZSL, seen + unseen for GZSL, as
            DualCoOp's COCO 48/17 files hold only those images) or
            ``'all'`` (every evaluated image). Defaults to
            ``'with_positive'``.
        collect_device, prefix: as MMEngine's ``BaseMetric``.
    """
    default_prefix = 'zsl'
    IMAGES = ('with_positive', 'all')

    def __init__(self,
                 unseen_classes: Union[str, Sequence[str]],
                 seen_classes: Union[str, Sequence[str], None] = None,
                 ks: Sequence[int] = (3, 5),
                 no_positive: str = 'zero',
                 images: str = 'with_positive',
                 collect_device: str = 'cpu',
                 prefix: str = None):
        super().__init__(
            no_positive=no_positive,
            collect_device=collect_device,
            prefix=prefix)
        if images not in self.IMAGES:
            raise ValueError(
                f'UnseenClassMetric: images must be one of {self.IMAGES}, '
                f"got {images!r}. Fix: 'with_positive' (the official "
                "protocol) or 'all'.")
        self.images = images
        self.unseen_classes = read_class_list(
            unseen_classes, 'UnseenClassMetric.unseen_classes')
        if not self.unseen_classes:
            raise ValueError('UnseenClassMetric: `unseen_classes` is empty.')
        self.seen_classes = None if seen_classes is None else \
            read_class_list(seen_classes, 'UnseenClassMetric.seen_classes')
        both = set(self.unseen_classes) & set(self.seen_classes or ())
        if both:
            raise ValueError(
                f'UnseenClassMetric: {sorted(both)[:10]} are in both '
                '`seen_classes` and `unseen_classes`.')
        self.ks = check_ks(type(self).__name__, ks)

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        # ranks only (AP, top-k): by the log-odds where the head gives them
        _, target, pred = self._stack_results(results)
        classes = self._class_names(pred.shape[1])
        owner = type(self).__name__
        unseen = class_columns(classes, self.unseen_classes, owner,
                               'unseen_classes')
        every = np.arange(pred.shape[1]) if self.seen_classes is None else \
            np.sort(np.concatenate([
                class_columns(classes, self.seen_classes, owner,
                              'seen_classes'), unseen
            ]))
        too_large = [k for k in self.ks if k > len(unseen)]
        if too_large:
            raise ValueError(
                f'{owner}: ks {too_large} exceed the {len(unseen)} unseen '
                f'classes: every image would predict all of them, and '
                f'unseen/F1@{too_large[0]} would be F1@{len(unseen)} under '
                f'another name. Fix: ks of at most {len(unseen)}, or more '
                'unseen_classes.')
        metrics = {}
        for name, cols in (('unseen', unseen), ('all', every)):
            p, t = pred[:, cols], target[:, cols]
            if self.images == 'with_positive':
                scored = (t == 1).any(axis=1)
                p, t = p[scored], t[scored]
            ap, num_pos = average_precision_per_class(p, t)
            if name == 'unseen':
                warn_undefined_ap([classes[i] for i in cols], t, num_pos,
                                  self.no_positive, 'unseen ')
            metrics[f'{name}/mAP'] = mean_of_ap(ap, num_pos,
                                                self.no_positive)
            for k in self.ks:
                metrics[f'{name}/F1@{k}'] = topk_metrics(p, t, k)['OF1']
        return metrics

# Copyright (c) mmcoop contributors. All rights reserved.
"""Per-class analysis of multi-label predictions: AP table, precision-recall
curves and the best / worst ranked images of a class.

Inputs are ``(N, C)`` arrays: ``scores`` (p(present)) and tri-state
``targets`` (1 positive, 0 negative, -1 unknown: ignored everywhere, as in
:class:`~mmcoop.evaluation.PartialMultiLabelMetric`, whose AP formula
:func:`~mmcoop.evaluation.metrics.multi_label.average_precision_per_class`
is the one used here).
"""
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .metrics.multi_label import (average_precision_per_class,
                                  check_scores_and_targets)


def per_class_rows(classes: Sequence[str], ap: np.ndarray,
                   num_pos: np.ndarray, targets: np.ndarray) -> List[dict]:
    """``[{'class', 'AP' (%), 'num_pos', 'num_neg', 'num_unknown'}]`` in
    class order, from per-class ``ap`` (in [0, 1]) and ``num_pos``."""
    return [
        dict(
            **{'class': str(name)},
            AP=round(100. * float(a), 4),
            num_pos=int(n),
            num_neg=int((targets[:, c] == 0).sum()),
            num_unknown=int((targets[:, c] < 0).sum()))
        for c, (name, a, n) in enumerate(zip(classes, ap, num_pos))
    ]


def per_class_ap(scores: np.ndarray, targets: np.ndarray,
                 classes: Sequence[str]) -> List[dict]:
    """:func:`per_class_rows` of ``(N, C)`` scores and targets."""
    ap, num_pos = average_precision_per_class(scores, targets)
    return per_class_rows(classes, ap, num_pos, targets)


def format_ap_table(rows: List[dict]) -> str:
    """Plain-text table of :func:`per_class_ap` rows (sorted by AP)."""
    width = max([len('class')] + [len(r['class']) for r in rows])
    lines = [f'{"class":<{width}}  {"AP (%)":>7}  {"#pos":>6}  {"#neg":>6}'
             f'  {"#unknown":>8}']
    for r in sorted(rows, key=lambda r: -r['AP']):
        lines.append(f'{r["class"]:<{width}}  {r["AP"]:7.2f}  '
                     f'{r["num_pos"]:6d}  {r["num_neg"]:6d}  '
                     f'{r["num_unknown"]:8d}')
    return '\n'.join(lines)


def precision_recall(scores: np.ndarray,
                     targets: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Precision and recall of one class at every rank (the ranking of
    :func:`average_precision`; unknown targets dropped). Empty arrays when
    the class has no positive."""
    keep = targets >= 0
    scores, targets = scores[keep], targets[keep]
    order = np.argsort(scores, kind='stable')[::-1]
    hits = (targets[order] == 1).astype(np.float64)
    if hits.sum() == 0:
        return np.zeros(0), np.zeros(0)
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, len(hits) + 1)
    recall = tp / hits.sum()
    return precision, recall


def ranked_examples(scores: np.ndarray,
                    targets: np.ndarray,
                    k: int = 4) -> Dict[str, List[int]]:
    """Sample indices of one class: ``best`` (highest-scored positives),
    ``missed`` (lowest-scored positives) and ``false_alarms``
    (highest-scored negatives). Unknown labels are in none of them."""
    pos = np.flatnonzero(targets == 1)
    neg = np.flatnonzero(targets == 0)
    pos = pos[np.argsort(-scores[pos], kind='stable')]
    neg = neg[np.argsort(-scores[neg], kind='stable')]
    return dict(
        best=pos[:k].tolist(),
        missed=pos[::-1][:k].tolist(),
        false_alarms=neg[:k].tolist())


def load_predictions(
    results: Sequence[dict],
    num_classes: Optional[int] = None
) -> Tuple[np.ndarray, np.ndarray, List[Optional[str]]]:
    """``(scores, targets, img_paths)`` from the samples that
    ``tools/test.py --out FILE.pkl`` dumps (``pred_score``, ``gt_score``,
    ``img_path`` per sample)."""
    if not results:
        raise ValueError('The results file holds no samples.')
    missing = [k for k in ('pred_score', 'gt_score') if k not in results[0]]
    if missing:
        raise KeyError(
            f'The results hold no {missing}: not a `tools/test.py --out '
            'FILE.pkl` prediction dump of an mmcoop model (keys '
            f'{sorted(results[0])}).')
    scores = np.stack([np.asarray(r['pred_score'], np.float64)
                       for r in results])
    targets = np.stack([np.asarray(r['gt_score'], np.float64)
                        for r in results])
    if num_classes is not None and scores.shape[1] != num_classes:
        raise ValueError(f'{scores.shape[1]} scores per sample but '
                         f'{num_classes} class names.')
    # the metric's rule: a NaN score would be ranked first (AP 100)
    check_scores_and_targets('The results file', scores, targets)
    return scores, targets, [r.get('img_path') for r in results]


def evaluator_per_class_ap(evaluator) -> Optional[List[dict]]:
    """The :func:`per_class_ap` rows of the last evaluation of an
    evaluator's :class:`~mmcoop.evaluation.PartialMultiLabelMetric` (None
    if it has none)."""
    for metric in getattr(evaluator, 'metrics', []):
        rows = getattr(metric, 'last_per_class_ap', None)
        if rows is not None:
            return rows
    return None

# Copyright (c) mmcoop contributors. All rights reserved.
"""Multi-label metrics with the official DualCoOp/PositiveCoOp definitions."""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger

from mmcoop.registry import METRICS
from mmcoop.utils.tri_state_targets import TARGET_RULE, invalid_targets
from mmcoop.utils.value_checks import check_flag, check_int, check_number

__all__ = [
    'average_precision', 'average_precision_per_class',
    'mean_average_precision', 'threshold_metrics', 'topk_metrics',
    'calibrate_thresholds', 'off_the_fp32_grid', 'ranking_scores',
    'PartialMultiLabelMetric'
]

NO_POSITIVE_MODES = ('zero', 'ignore')

#: the data-sample field the AP and top-k rank by where every sample has
#: it: the log-odds of presence that mmcoop's heads set
#: (:func:`~mmcoop.models.heads.base_head.presence_log_odds`)
RANK_FIELD = 'pred_log_odds'


def ranking_scores(results: Sequence[dict],
                   scores: np.ndarray) -> np.ndarray:
    """The ``(N, C)`` values the AP and top-k rank the samples by: their
    :data:`RANK_FIELD` where every sample (a dict) has one, else
    ``scores`` (p(present)). The log-odds order the samples as p(present)
    does, but p rounds to exactly 1.0 in fp32 above a log-odds of about
    17: many images of a confident model then tie at 1.0, and an AP of the
    probabilities depends on the order of the test images."""
    if results and all(RANK_FIELD in r for r in results):
        rank = np.stack([
            np.asarray(r[RANK_FIELD], dtype=np.float64).reshape(-1)
            for r in results
        ])
        if rank.shape == np.shape(scores):
            return rank
    return scores


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """AP of one class: mean of precision@rank over the positives.

    Same formula as the official ``utils/helper.py average_precision`` (the
    ASL one): sort by decreasing score, then
    ``AP = sum_{i: y_i = 1} precision@i / num_positives``. No interpolation.

    - Targets < 0 (unknown, or VOC difficult with ``'ignore'``) are removed.
    - Ties: ranked like the official ``scores.argsort()[::-1]`` with a
      *stable* sort, i.e. among equal scores the sample that comes later is
      ranked first. (The official unstable NumPy sort gives that order for
      small arrays; for large arrays it is implementation defined.)
    - No positive: returns 0.0 (the official value: ``0 / (0 + 1e-8)``).

    Returns:
        float: AP in [0, 1].
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    targets = np.asarray(targets).reshape(-1)
    if scores.shape != targets.shape:
        raise ValueError(f'scores {scores.shape} and targets '
                         f'{targets.shape} differ in shape.')
    valid = targets >= 0
    scores, targets = scores[valid], targets[valid]
    pos = targets == 1
    num_pos = int(pos.sum())
    if num_pos == 0:
        return 0.0
    order = np.argsort(scores, kind='stable')[::-1]
    hits = pos[order]
    ranks = np.flatnonzero(hits) + 1  # 1-based ranks of the positives
    precision_at_hits = np.arange(1, num_pos + 1) / ranks
    return float(precision_at_hits.sum() / num_pos)


def average_precision_per_class(pred: np.ndarray,
                                target: np.ndarray) -> np.ndarray:
    """Per-class AP (in [0, 1]) and per-class positive counts.

    Args:
        pred (np.ndarray): (N, C) scores.
        target (np.ndarray): (N, C) targets in {1, 0, -1}.

    Returns:
        tuple(np.ndarray, np.ndarray): AP (C,), number of positives (C,).
    """
    pred = np.asarray(pred)
    target = np.asarray(target)
    if pred.ndim != 2 or pred.shape != target.shape:
        raise ValueError(f'pred {pred.shape} and target {target.shape} must '
                         'both be (N, C).')
    ap = np.array([
        average_precision(pred[:, k], target[:, k])
        for k in range(pred.shape[1])
    ])
    return ap, (target == 1).sum(0)


def mean_average_precision(pred: np.ndarray,
                           target: np.ndarray,
                           no_positive: str = 'zero') -> float:
    """mAP in percent over classes.

    Args:
        pred (np.ndarray): (N, C) scores.
        target (np.ndarray): (N, C) targets in {1, 0, -1} (-1 ignored).
        no_positive (str): Classes without any positive target contribute
            AP 0 to the mean (``'zero'``, official) or are left out of it
            (``'ignore'``). Defaults to ``'zero'``.
    """
    if no_positive not in NO_POSITIVE_MODES:
        raise ValueError(f'no_positive must be one of {NO_POSITIVE_MODES}, '
                         f'got {no_positive!r}.')
    return mean_of_ap(*average_precision_per_class(pred, target),
                      no_positive)


def mean_of_ap(ap: np.ndarray, num_pos: np.ndarray,
               no_positive: str = 'zero') -> float:
    """mAP in percent from per-class AP (in [0, 1]) and positive counts
    (:func:`average_precision_per_class`) under ``no_positive`` (see
    :func:`mean_average_precision`); a mean over no class is nan (undefined,
    not 0)."""
    used = ap if no_positive == 'zero' else ap[num_pos > 0]
    return 100. * float(used.mean()) if used.size else float('nan')


def warn_no_positive(classes: Sequence[str], num_pos: np.ndarray,
                     no_positive: str, where: str = '') -> None:
    """Warn naming the classes without a positive in the evaluated set
    (``where``: which of the metric's class groups), and what their AP
    does to the mAP under ``no_positive``."""
    empty = np.flatnonzero(num_pos == 0)
    if not empty.size:
        return
    if no_positive == 'ignore':
        effect = ('is left out of the mAP' + (
            ', which is undefined (nan): no class has one.'
            if empty.size == len(num_pos) else '.'))
    else:
        effect = ('counts as 0 and lowers the mAP (the official rule). '
                  "Fix: check the split's labels, or set "
                  "no_positive='ignore' in val_evaluator / test_evaluator "
                  'to leave them out of the mAP.')
    MMLogger.get_current_instance().warning(
        f'{empty.size} {where}classes have no positive in the evaluated set '
        f'({", ".join(classes[i] for i in empty[:10])}'
        f'{"..." if empty.size > 10 else ""}); their AP {effect}')


def warn_no_negative(classes: Sequence[str], target: np.ndarray,
                     where: str = '') -> None:
    """Warn naming the classes with positives but no known negative in the
    evaluated ``(N, C)`` ``target`` (``where``: which of the metric's class
    groups): every known label of such a class is a positive, so its AP is
    100 whatever the scores, which raises the mAP (a tri-state file whose
    negatives nobody filled in marks every class an image does not list
    unknown)."""
    target = np.asarray(target)
    full = np.flatnonzero(((target == 0).sum(axis=0) == 0)
                          & ((target == 1).sum(axis=0) > 0))
    if not full.size:
        return
    MMLogger.get_current_instance().warning(
        f'{full.size} {where}classes have no known negative in the '
        f'evaluated set ({", ".join(classes[i] for i in full[:10])}'
        f'{"..." if full.size > 10 else ""}): every known label of them is '
        'a positive, so their AP is 100 whatever the model scores, and the '
        'mAP is higher than the model deserves. Fix: check the split\'s '
        'labels (a negatives column or field that no image fills marks '
        'every class an image does not list as unknown; for a complete '
        'labelling leave it out).')


def warn_undefined_ap(classes: Sequence[str], target: np.ndarray,
                      num_pos: np.ndarray, no_positive: str,
                      where: str = '') -> None:
    """The warnings of the classes whose AP does not measure the model:
    no positive (:func:`warn_no_positive`), no known negative
    (:func:`warn_no_negative`)."""
    warn_no_positive(classes, num_pos, no_positive, where)
    warn_no_negative(classes, target, where)


def threshold_metrics(pred: np.ndarray,
                      target: np.ndarray,
                      thr: Union[float, np.ndarray] = 0.5) -> Dict[str, float]:
    """CP, CR, CF1, OP, OR, OF1 (percent) at a score threshold.

    Official definitions (``utils/validations.py``): predicted positive if
    ``score > thr``; per class ``P_c = TP/(TP+FP)``, ``R_c = TP/(TP+FN)``,
    ``F1_c = 2 P_c R_c / (P_c + R_c)``, all 0 for a class with TP = 0;
    ``CP``, ``CR``, ``CF1`` are their means over classes (note: CF1 is the
    mean of per-class F1, not ``2 CP CR / (CP + CR)``); ``OP``, ``OR`` pool
    the counts over classes and ``OF1 = 2 OP OR / (OP + OR)``. Entries with
    target < 0 count in no cell.

    ``thr`` is one threshold or a ``(C,)`` array of per-class thresholds
    (e.g. from :func:`calibrate_thresholds`).
    """
    pred = np.asarray(pred)
    return _prf_metrics(pred > np.asarray(thr), target)


def topk_metrics(pred: np.ndarray, target: np.ndarray,
                 k: int = 3) -> Dict[str, float]:
    """CP, CR, CF1, OP, OR, OF1 (percent) predicting the top-``k`` classes
    of every image (the ML-GCN / ASL "top-3" convention; ties broken by
    class order). Same formulas as :func:`threshold_metrics`."""
    pred = np.asarray(pred)
    k = min(int(k), pred.shape[1])
    if k < 1:
        raise ValueError(f'top-k needs k >= 1, got {k}.')
    top = np.argsort(-pred, axis=1, kind='stable')[:, :k]
    predicted = np.zeros(pred.shape, dtype=bool)
    np.put_along_axis(predicted, top, True, axis=1)
    return _prf_metrics(predicted, target)


def _prf_metrics(predicted: np.ndarray,
                 target: np.ndarray) -> Dict[str, float]:
    """CP/CR/CF1/OP/OR/OF1 of boolean (N, C) predictions (see
    :func:`threshold_metrics`)."""
    target = np.asarray(target)
    valid = target >= 0
    pp = predicted & valid
    gp = (target == 1) & valid
    tp = (pp & gp).sum(0).astype(np.float64)
    fp = (pp & ~gp).sum(0).astype(np.float64)
    fn = (~pp & gp).sum(0).astype(np.float64)
    has_tp = tp > 0
    p_c = np.where(has_tp, tp / np.maximum(tp + fp, 1), 0.)
    r_c = np.where(has_tp, tp / np.maximum(tp + fn, 1), 0.)
    f_c = np.where(has_tp, 2 * p_c * r_c / np.maximum(p_c + r_c, 1e-12), 0.)
    tps, pps, gps = tp.sum(), (tp + fp).sum(), (tp + fn).sum()
    o_p = tps / pps if pps > 0 else 0.
    o_r = tps / gps if gps > 0 else 0.
    o_f = 2 * o_p * o_r / (o_p + o_r) if o_p + o_r > 0 else 0.
    return dict(
        CP=100 * float(p_c.mean()),
        CR=100 * float(r_c.mean()),
        CF1=100 * float(f_c.mean()),
        OP=100 * float(o_p),
        OR=100 * float(o_r),
        OF1=100 * float(o_f))


def calibrate_thresholds(pred: np.ndarray,
                         target: np.ndarray,
                         default: float = 0.5) -> np.ndarray:
    """Per-class thresholds that maximise each class's F1 on ``(pred,
    target)`` (a validation split; never the test split).

    For class ``c`` the scores are sorted in decreasing order and F1 is
    evaluated at every cut between two *distinct* scores; the threshold is
    the midpoint of the two scores around the best cut (so that ``score >
    thr``, the official rule, predicts exactly the scores above the cut).
    The smallest threshold wins a tie in F1. Classes without a known
    positive keep ``default``. Targets < 0 are ignored. Thresholds are
    clipped to [0, 1], so a score of exactly 0 is never above one: the cuts
    that would predict such scores are not candidates (unless no other
    cut exists). Thresholds are kept off the fp32 grid
    (:func:`off_the_fp32_grid`), so that inference's ``score >= thr``
    labels as the metric counts.

    Returns:
        np.ndarray: ``(C,)`` float64 thresholds.
    """
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target)
    if pred.ndim != 2 or pred.shape != target.shape:
        raise ValueError(f'pred {pred.shape} and target {target.shape} must '
                         'both be (N, C).')
    thresholds = np.full(pred.shape[1], float(default))
    for c in range(pred.shape[1]):
        valid = target[:, c] >= 0
        s, y = pred[valid, c], target[valid, c] == 1
        num_pos = int(y.sum())
        if num_pos == 0:
            continue
        order = np.argsort(-s, kind='stable')
        s, y = s[order], y[order]
        # cut after position i (predict s[:i + 1]) only where the score
        # drops, so tied scores are never split
        cuts = np.flatnonzero(np.append(s[1:] < s[:-1], True))
        # a score of exactly 0 (an fp32 p below about 1e-45) is above no
        # threshold in [0, 1]: a cut that predicts it cannot be labelled
        reachable = s[cuts] > 0
        if reachable.any():
            cuts = cuts[reachable]
        tp = np.cumsum(y)[cuts]
        f1 = 2 * tp / (cuts + 1 + num_pos)
        best = cuts[len(f1) - 1 - int(np.argmax(f1[::-1]))]  # last max
        lower = s[best + 1] if best + 1 < len(s) else s[best] - 1e-6
        thresholds[c] = (s[best] + lower) / 2
    return off_the_fp32_grid(np.clip(thresholds, 0., 1.))


def off_the_fp32_grid(thresholds) -> np.ndarray:
    """``(C,)`` float64 thresholds moved off the fp32 grid: a threshold
    that is an fp32 number ``t < 1`` becomes the float64 halfway between
    ``t`` and the next fp32 number. No fp32 score then equals a threshold,
    so ``score > thr`` (the metric's rule) and ``score >= thr`` (what
    inference and the exports label with) label every score alike, and
    each labels as ``score > t`` did. Compare fp32 scores with the float64
    values: rounded to fp32, a threshold would be a score again. (A
    threshold of 1, which calibration does not give, stays: ``>`` labels
    nothing there, ``>=`` a score of exactly 1.)"""
    values = np.array(thresholds, dtype=np.float64, ndmin=1)
    grid = values.astype(np.float32)
    on = (grid.astype(np.float64) == values) & (values < 1)
    up = np.nextafter(grid, np.float32(np.inf)).astype(np.float64)
    return np.where(on, (values + up) / 2, values)


def check_class_thresholds(owner: str, thresholds,
                           num_classes: Optional[int] = None) -> List[float]:
    """Per-class thresholds: a sequence of finite numbers in [0, 1] (one
    per class when ``num_classes`` is given) -> a list of floats."""
    if isinstance(thresholds, np.ndarray):
        thresholds = thresholds.tolist() if thresholds.ndim == 1 else \
            thresholds
    if isinstance(thresholds, (str, bytes)) or not isinstance(
            thresholds, (list, tuple)) or not thresholds:
        raise ValueError(
            f'{owner}: class_thresholds must be None or a sequence of '
            f'numbers in [0, 1] (one per class), got {thresholds!r}.')
    for i, value in enumerate(thresholds):
        check_number(
            owner,
            f'class_thresholds[{i}]',
            value,
            0,
            1,
            what='scores are probabilities; thresholds fitted with '
            'calibrate=True on a validation split are')
    if num_classes is not None and len(thresholds) != num_classes:
        raise ValueError(
            f'{owner}: class_thresholds has {len(thresholds)} values, '
            f'expected {num_classes} (one threshold per class of the '
            'evaluated scores).')
    return [float(v) for v in thresholds]


def check_scores_and_targets(owner: str, pred: np.ndarray,
                             target: np.ndarray) -> None:
    """Refuse ``(N, C)`` scores that are not finite (the AP would rank a
    NaN first and thresholds would never predict it: a metric of a broken
    model without a word) and targets that are not tri-state
    (:mod:`mmcoop.utils.tri_state_targets`: a 0.5 or 2 would count as a
    negative, a -2 or NaN as unknown), naming the first sample and class."""
    for what, bad, fix in (
            ('pred_score', ~np.isfinite(pred),
             'the model produced NaN/inf scores (diverged weights, fp16 '
             'overflow). Fix: test another checkpoint, or run without '
             '--amp / autocast_dtype'),
            ('gt_score', invalid_targets(target),
             f'targets must be {TARGET_RULE}, as the training loss '
             'requires. Fix: check the gt_score the dataset produces')):
        if bad.any():
            i, c = np.argwhere(bad)[0]
            value = (pred if what == 'pred_score' else target)[i, c]
            raise ValueError(
                f'{owner}: {int(bad.sum())} {what} values are invalid, '
                f'e.g. sample {i}, class {c}: '
                f'{np.asarray(value).item()!r}; {fix}.')


@METRICS.register_module()
class PartialMultiLabelMetric(BaseMetric):
    """mAP, CP, CR, CF1, OP, OR, OF1 with the official definitions.

    Reads ``pred_score`` and ``gt_score`` (falls back to the one-hot of
    ``gt_label``) from each data sample; targets of -1 are ignored
    everywhere. The AP and top-k rank by ``pred_log_odds`` where the head
    gives it (mmcoop's heads do; :func:`ranking_scores`), the thresholds
    apply to ``pred_score``. See :func:`average_precision` and
    :func:`threshold_metrics` for the exact formulas. All values are
    percentages. Keys are prefixed with ``multi-label/`` (e.g.
    ``multi-label/mAP``) like mmpretrain's ``AveragePrecision`` /
    ``MultiLabelMetric``.

    How this compares to mmpretrain's ``AveragePrecision``: the same AP
    formula, -1 ignored, no-positive classes count 0 in both; the only
    difference is the tie order (mmpretrain uses an unspecified
    ``torch.argsort`` order). mmpretrain's ``MultiLabelMetric`` uses
    ``score >= thr`` instead of the official ``score > thr``.

    Every argument is checked when the metric is built (``ValueError``
    naming the field and the value); ``topk`` and ``class_thresholds``
    against the number of classes again when the scores arrive, with the
    scores (finite) and the targets (1, 0 or -1).

    Args:
        thr (float): Threshold of CP/CR/CF1/OP/OR/OF1, a number in [0, 1].
            Defaults to 0.5.
        no_positive (str): ``'zero'`` (official; a class without positive
            in the evaluated set contributes AP 0) or ``'ignore'`` (left out
            of the mean; a mean over no class is nan). Either way a warning
            names those classes.
            Defaults to ``'zero'``.
        per_class_ap (bool): Log a per-class AP table with class names.
            Defaults to False.
        topk (int, optional): Also report ``CF1_top{k}`` / ``OF1_top{k}``
            with the top-``k`` classes of every image predicted positive
            (:func:`topk_metrics`); an int from 1 to the number of
            classes (a larger one is refused when the scores arrive).
            Defaults to None (not reported).
        calibrate (bool): Fit per-class F1-maximising thresholds on the
            evaluated data (:func:`calibrate_thresholds`) and keep them in
            ``calibrated_thresholds`` (not reported: they are fitted on this
            data). Use it on a validation split only;
            :class:`~mmcoop.engine.ThresholdCalibrationHook` stores them in
            the checkpoints. Defaults to False.
        class_thresholds (sequence of float, optional): Per-class thresholds
            in [0, 1] fitted elsewhere (a validation split); reports
            ``CF1_calib`` / ``OF1_calib`` with them. Set from a
            checkpoint's meta by
            :class:`~mmcoop.engine.ThresholdCalibrationHook`. Defaults to
            None.
        collect_device (str): Defaults to ``'cpu'``.
        prefix (str, optional): Defaults to ``'multi-label'``.
    """
    default_prefix: Optional[str] = 'multi-label'

    def __init__(self,
                 thr: float = 0.5,
                 no_positive: str = 'zero',
                 per_class_ap: bool = False,
                 topk: Optional[int] = None,
                 calibrate: bool = False,
                 class_thresholds: Optional[Sequence[float]] = None,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        owner = type(self).__name__
        if no_positive not in NO_POSITIVE_MODES:
            raise ValueError(f'{owner}: no_positive must be one of '
                             f'{NO_POSITIVE_MODES}, got {no_positive!r}.')
        check_number(
            owner,
            'thr',
            thr,
            0,
            1,
            what='scores are probabilities; 0.5 by default')
        check_flag(owner, 'per_class_ap', per_class_ap)
        if topk is not None:
            check_int(owner, 'topk', topk, 1)
        check_flag(owner, 'calibrate', calibrate)
        if class_thresholds is not None:
            class_thresholds = check_class_thresholds(owner,
                                                      class_thresholds)
        self.thr = thr
        self.no_positive = no_positive
        self.per_class_ap = per_class_ap
        self.topk = topk
        self.calibrate = calibrate
        self.class_thresholds = class_thresholds
        self.calibrated_thresholds: Optional[np.ndarray] = None

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        """Store scores and targets of a batch."""
        # Copies, not views: a target that came from a dataloader worker is
        # backed by its own shared-memory segment (and file descriptor), and a
        # score is a row of the whole batch; keeping either alive until the
        # end of the evaluation would grow memory (and open fds) per batch.
        for sample in data_samples:
            score = sample['pred_score'].detach().cpu().to(
                torch.float32, copy=True)
            if 'gt_score' in sample:
                target = sample['gt_score'].detach().cpu().to(
                    torch.float32, copy=True)
            else:
                target = torch.zeros_like(score)
                labels = torch.as_tensor(sample['gt_label']).long().cpu()
                if labels.numel() and (int(labels.min()) < 0 or int(
                        labels.max()) >= score.numel()):
                    raise ValueError(
                        f'{type(self).__name__}: gt_label '
                        f'{labels.tolist()} holds a class index outside '
                        f'0..{score.numel() - 1} (the {score.numel()} '
                        'classes scored); a negative index would mark '
                        'another class. Fix: check the dataset labels and '
                        'the number of classes of the head.')
                target[labels] = 1.
            entry = dict(pred_score=score, gt_score=target)
            if RANK_FIELD in sample:
                entry[RANK_FIELD] = sample[RANK_FIELD].detach().cpu().to(
                    torch.float32, copy=True)
            self.results.append(entry)

    def _stack_results(
        self, results: List[dict]
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(N, C)`` scores, targets and :func:`ranking_scores` of the
        processed samples."""
        if not results:
            raise ValueError(
                f'{type(self).__name__}: no results to evaluate (no data '
                'sample was processed). Fix: check that the evaluated '
                'dataloader is not empty (dataset, ann_file, filters).')
        pred = torch.stack([r['pred_score'] for r in results]).numpy()
        target = torch.stack([r['gt_score'] for r in results]).numpy()
        check_scores_and_targets(type(self).__name__, pred, target)
        return pred, target, ranking_scores(results, pred)

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        """Compute the metrics from all processed samples."""
        pred, target, rank = self._stack_results(results)
        owner = type(self).__name__
        num_classes = pred.shape[1]
        if self.topk is not None and self.topk > num_classes:
            raise ValueError(
                f'{owner}: topk must be an int in 1..{num_classes} (the '
                f'number of classes scored), got {self.topk!r}: every image '
                f'would predict all classes, reported as CF1_top'
                f'{self.topk}. Fix: a smaller topk, or None.')
        if self.class_thresholds is not None:
            # also those set after building (ThresholdCalibrationHook)
            class_thresholds = check_class_thresholds(
                owner, self.class_thresholds, num_classes)
        ap, num_pos = average_precision_per_class(rank, target)
        classes = self._class_names(pred.shape[1])
        warn_undefined_ap(classes, target, num_pos, self.no_positive)
        # per-class AP of this evaluation (tools/test.py --out metrics)
        # (lazy: per_class imports this module)
        from ..per_class import format_ap_table, per_class_rows
        self.last_per_class_ap = per_class_rows(classes, ap, num_pos, target)
        metrics = dict(mAP=mean_of_ap(ap, num_pos, self.no_positive))
        metrics.update(threshold_metrics(pred, target, self.thr))
        if self.topk is not None:
            top = topk_metrics(rank, target, self.topk)
            metrics[f'CF1_top{self.topk}'] = top['CF1']
            metrics[f'OF1_top{self.topk}'] = top['OF1']
        if self.class_thresholds is not None:
            thr = np.asarray(class_thresholds, dtype=np.float64)
            calib = threshold_metrics(pred, target, thr)
            metrics['CF1_calib'] = calib['CF1']
            metrics['OF1_calib'] = calib['OF1']
        if self.calibrate:
            self.calibrated_thresholds = calibrate_thresholds(
                pred, target, default=self.thr)
        if self.per_class_ap:
            MMLogger.get_current_instance().info(
                'Per-class AP:\n' + format_ap_table(self.last_per_class_ap))
        return metrics

    def _class_names(self, num_classes: int) -> List[str]:
        meta = self.dataset_meta or {}
        classes = meta.get('classes')
        if classes is not None and len(classes) == num_classes:
            return [str(c) for c in classes]
        return [f'class_{i}' for i in range(num_classes)]

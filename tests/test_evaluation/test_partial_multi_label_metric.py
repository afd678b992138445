# Copyright (c) mmcoop contributors. All rights reserved.
import io
import logging
import re

import numpy as np
import pytest
import torch
from mmengine.evaluator import Evaluator
from mmengine.logging import MMLogger
from mmpretrain.evaluation import AveragePrecision, MultiLabelMetric

from mmcoop.evaluation import (PartialMultiLabelMetric, average_precision,
                               mean_average_precision, threshold_metrics)
from mmcoop.registry import METRICS


def official_ap(scores, targets):
    """The official ``utils/helper.py`` AP, restated for the tests: rank by
    ``argsort()[::-1]``, average precision@i over the positive ranks, divide
    by ``num_pos + 1e-8``."""
    order = np.argsort(scores, kind='stable')[::-1]
    hit = targets[order] == 1
    tp = np.cumsum(hit)
    prec = tp / np.arange(1, len(scores) + 1)
    return float((prec * hit).sum() / (hit.sum() + 1e-8))


# ------------------------------------------------------------ hand-made AP
def test_ap_hand_computed():
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    # positives at ranks 1, 3, 5: (1/1 + 2/3 + 3/5) / 3
    assert average_precision(s, np.array([1, 0, 1, 0, 1])) == \
        pytest.approx((1 + 2 / 3 + 3 / 5) / 3)  # 0.755556
    # all positives first -> 1; all last -> (1/4 + 2/5) / 2
    assert average_precision(s, np.array([1, 1, 0, 0, 0])) == 1.0
    assert average_precision(s, np.array([0, 0, 0, 1, 1])) == \
        pytest.approx((1 / 4 + 2 / 5) / 2)  # 0.325


def test_ap_ignores_unknown_targets():
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    # rank 2 removed: positives at ranks 1, 2, 4 of the rest
    assert average_precision(s, np.array([1, -1, 1, 0, 1])) == \
        pytest.approx((1 + 1 + 3 / 4) / 3)  # 0.916667
    # an unknown ranked above every positive changes nothing
    assert average_precision(s, np.array([-1, 1, 1, 0, 0])) == 1.0


def test_ap_ties_follow_official_order():
    # equal scores: the later sample is ranked first (argsort()[::-1])
    s = np.array([0.5, 0.5, 0.3])
    t = np.array([1, 0, 1])
    # order: #1 (neg), #0 (pos), #2 (pos) -> (1/2 + 2/3) / 2
    assert average_precision(s, t) == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert average_precision(s, t) == pytest.approx(official_ap(s, t))
    # reversed roles: #1 (pos) first -> (1/1 + 2/3) / 2
    t2 = np.array([0, 1, 1])
    assert average_precision(s, t2) == pytest.approx((1 + 2 / 3) / 2)
    # all tied
    s3 = np.zeros(4)
    t3 = np.array([1, 0, 0, 1])  # order 3, 2, 1, 0 -> (1/1 + 2/4) / 2
    assert average_precision(s3, t3) == pytest.approx(0.75)


def test_no_positive_class():
    s = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.3]])
    t = np.array([[1, 0], [0, 0], [1, -1]])  # class 1: no positive
    assert average_precision(s[:, 1], t[:, 1]) == 0.0  # official 0/1e-8
    assert mean_average_precision(s, t, 'zero') == pytest.approx(50.0)
    assert mean_average_precision(s, t, 'ignore') == pytest.approx(100.0)
    with pytest.raises(ValueError):
        mean_average_precision(s, t, 'skip')


def test_matches_official_and_mmpretrain_on_random_data():
    rng = np.random.default_rng(0)
    pred = rng.random((60, 7))
    target = (rng.random((60, 7)) < 0.3).astype(np.int64)
    target[:, 6] = 0  # a class without positives
    ours = np.array(
        [average_precision(pred[:, k], target[:, k]) for k in range(7)])
    ref = np.array([official_ap(pred[:, k], target[:, k]) for k in range(7)])
    assert np.allclose(ours, ref, atol=1e-7)
    mmp = AveragePrecision.calculate(
        torch.from_numpy(pred), torch.from_numpy(target), average=None)
    assert np.allclose(ours * 100, mmp.numpy(), atol=1e-4)
    assert mean_average_precision(pred, target) == pytest.approx(
        float(
            AveragePrecision.calculate(
                torch.from_numpy(pred), torch.from_numpy(target))),
        abs=1e-4)
    # with unknown (-1) targets mmpretrain agrees too
    target_u = target.copy()
    target_u[rng.random(target.shape) < 0.2] = -1
    mmp_u = AveragePrecision.calculate(
        torch.from_numpy(pred), torch.from_numpy(target_u), average=None)
    ours_u = [average_precision(pred[:, k], target_u[:, k]) for k in range(7)]
    assert np.allclose(np.array(ours_u) * 100, mmp_u.numpy(), atol=1e-4)


# ------------------------------------------------------ threshold metrics
def test_threshold_metrics_hand_computed():
    pred = np.array([[0.9, 0.2, 0.6], [0.7, 0.6, 0.1], [0.1, 0.8, 0.4],
                     [0.6, 0.3, 0.5]])
    target = np.array([[1, 0, 1], [0, 1, 0], [0, 1, -1], [1, -1, 0]])
    # predicted (> 0.5): [1,0,1], [1,1,0], [0,1,0], [1,0,0(0.5 not > 0.5)]
    # class 0: TP 2 (rows 0, 3), FP 1 (row 1), FN 0 -> P 2/3, R 1
    # class 1: TP 2 (rows 1, 2), FP 0, FN 0; row 3 unknown -> P 1, R 1
    # class 2: TP 1 (row 0), FP 0, FN 0; row 2 unknown -> P 1, R 1
    m = threshold_metrics(pred, target, 0.5)
    f0 = 2 * (2 / 3) / (2 / 3 + 1)
    assert m['CP'] == pytest.approx(100 * (2 / 3 + 1 + 1) / 3)
    assert m['CR'] == pytest.approx(100.)
    assert m['CF1'] == pytest.approx(100 * (f0 + 1 + 1) / 3)  # mean F1_c
    assert m['OP'] == pytest.approx(100 * 5 / 6)
    assert m['OR'] == pytest.approx(100.)
    assert m['OF1'] == pytest.approx(100 * 2 * (5 / 6) / (5 / 6 + 1))
    # a class with TP = 0 contributes 0 to CP/CR/CF1 (official)
    m2 = threshold_metrics(np.array([[0.9], [0.1]]), np.array([[0], [1]]))
    assert m2 == dict(CP=0., CR=0., CF1=0., OP=0., OR=0., OF1=0.)
    # mmpretrain uses >= thr: at exactly 0.5 they differ
    mp = MultiLabelMetric.calculate(
        torch.tensor([[0.5]]), torch.tensor([[1]]), thr=0.5)
    assert float(mp[0]) == 100.
    assert threshold_metrics(np.array([[0.5]]), np.array([[1]]))['CP'] == 0.


# --------------------------------------------------------- the metric
def _samples(pred, target):
    return [
        dict(
            pred_score=torch.tensor(p, dtype=torch.float32),
            gt_score=torch.tensor(t, dtype=torch.float32))
        for p, t in zip(pred, target)
    ]


def test_metric_through_evaluator():
    pred = np.array([[0.9, 0.2, 0.6], [0.7, 0.6, 0.1], [0.1, 0.8, 0.4],
                     [0.6, 0.3, 0.5]])
    target = np.array([[1, 0, 1], [0, 1, 0], [0, 1, -1], [1, -1, 0]])
    evaluator = Evaluator(METRICS.build(dict(type='PartialMultiLabelMetric')))
    evaluator.dataset_meta = dict(classes=('cat', 'dog', 'bird'))
    samples = _samples(pred, target)
    evaluator.process(samples[:2])
    evaluator.process(samples[2:])
    res = evaluator.evaluate(4)
    assert set(res) == {
        f'multi-label/{k}'
        for k in ('mAP', 'CP', 'CR', 'CF1', 'OP', 'OR', 'OF1')
    }
    # per class: cat: pos at ranks 1, 3 -> (1 + 2/3)/2 ; dog (row 3 unknown):
    # ranks 1, 2 -> 1 ; bird (row 2 unknown): rank 1 -> 1
    assert res['multi-label/mAP'] == pytest.approx(100 * (5 / 6 + 1 + 1) / 3)
    # score > 0.5 predicts cat in rows 0, 1, 3 (TP 2, FP 1, FN 0), dog in
    # rows 1, 2 (TP 2; row 3 unknown) and bird in row 0 (TP 1; row 2
    # unknown): P = (2/3, 1, 1), R = 1, F1 = (4/5, 1, 1); pooled: TP 5 of
    # 6 predicted and of 5 positives
    hand = dict(CP=100 * 8 / 9, CR=100., CF1=100 * 14 / 15, OP=100 * 5 / 6,
                OR=100., OF1=100 * 10 / 11)
    for k, v in hand.items():
        assert res[f'multi-label/{k}'] == pytest.approx(v), k
    ref = threshold_metrics(pred, target)
    for k, v in ref.items():
        assert res[f'multi-label/{k}'] == pytest.approx(v)


def test_saturated_scores_are_ranked_by_their_log_odds():
    """A confident head's p(present) rounds to exactly 1.0 in fp32 for
    log-odds above about 17 (half the demo's test scores): the AP of the
    tied probabilities depended on the order of the test images (the
    demo's mAP 38.4 to 42.8 over shuffles). The metric ranks by the
    log-odds the heads give: one mAP in any order, the AP of the model's
    own ranking."""
    from mmcoop.models.heads.base_head import (presence_log_odds,
                                               presence_probability)
    rng = np.random.default_rng(0)
    n, c = 40, 3
    target = rng.integers(0, 2, (n, c))
    target[0], target[1] = 1, 0
    # a confident model: positives mostly far above 17, negatives below
    margin = np.where(target == 1, rng.uniform(10, 60, (n, c)),
                      rng.uniform(-40, 25, (n, c)))
    logits = torch.zeros(n, 2, c)
    logits[:, 1] = torch.as_tensor(margin, dtype=torch.float32)
    probs = presence_probability(logits).numpy()
    odds = presence_log_odds(logits).numpy()
    assert (probs == 1.0).mean() > 0.3  # tied in fp32

    def evaluate(order, with_odds=True):
        metric = PartialMultiLabelMetric()
        metric.process(None, [
            dict(pred_score=torch.as_tensor(probs[i]),
                 gt_score=torch.as_tensor(target[i], dtype=torch.float32),
                 **({'pred_log_odds': torch.as_tensor(odds[i])}
                    if with_odds else {})) for i in order
        ])
        return metric.evaluate(n)['multi-label/mAP']

    # the AP of the log-odds ranking, by hand: no ties there
    expected = 100 * np.mean([official_ap(odds[:, k], target[:, k])
                              for k in range(c)])
    orders = [np.arange(n), np.arange(n)[::-1],
              *(rng.permutation(n) for _ in range(5))]
    for order in orders:
        assert evaluate(order) == pytest.approx(expected, abs=1e-6)
    # the probabilities alone: the order of the images decides
    assert len({round(evaluate(o, False), 6) for o in orders}) > 1


def _evaluate_no_bird(metric):
    """Evaluate two images of cat and dog (bird never present) over the
    classes cat, dog, bird; returns the metrics and the log text."""
    metric.dataset_meta = dict(classes=('cat', 'dog', 'bird'))
    metric.process(None, [
        dict(pred_score=torch.tensor([0.9, 0.1, 0.3]),
             gt_label=torch.tensor([0])),
        dict(pred_score=torch.tensor([0.2, 0.7, 0.3]),
             gt_label=torch.tensor([1])),
    ])
    logger = MMLogger.get_current_instance()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        res = metric.evaluate(2)
    finally:
        logger.removeHandler(handler)
    return res, stream.getvalue()


def test_metric_gt_label_fallback_and_options():
    metric = PartialMultiLabelMetric(
        per_class_ap=True, no_positive='ignore', prefix='val')
    res, text = _evaluate_no_bird(metric)
    assert res['val/mAP'] == pytest.approx(100.)  # bird left out
    assert 'Per-class AP' in text
    # class, AP (%), #pos, #neg, #unknown
    assert re.search(r'cat +100\.00 +1 +1 +0\n', text)
    assert re.search(r'bird +0\.00 +0 +2 +0', text)
    assert '1 classes have no positive' in text and 'bird' in text
    with pytest.raises(ValueError):
        PartialMultiLabelMetric(no_positive='drop')


def test_class_without_positive_warning_names_the_fix():
    """A val split where a class never appears (the default, official
    no_positive='zero'): the warning says the mAP is lowered and how to
    leave the class out (before: only 'their AP counts as 0')."""
    metric = PartialMultiLabelMetric()
    res, text = _evaluate_no_bird(metric)
    assert res['multi-label/mAP'] == pytest.approx(200. / 3)
    assert ("1 classes have no positive in the evaluated set (bird); their "
            'AP counts as 0 and lowers the mAP (the official rule). Fix: '
            "check the split's labels, or set no_positive='ignore' in "
            'val_evaluator / test_evaluator') in text


def test_class_without_a_known_negative_is_warned(mm_log):
    """A class whose known labels are all positives has AP 100 whatever the
    scores (a tri-state split whose negatives nobody filled in): the
    metric names it (before: mAP 100 for a model that is always wrong)."""
    metric = PartialMultiLabelMetric()
    metric.dataset_meta = dict(classes=('cat', 'dog'))
    metric.process(None, [  # every positive scored lowest
        dict(pred_score=torch.tensor([0.1, 0.9]),
             gt_score=torch.tensor([1., -1.])),
        dict(pred_score=torch.tensor([0.9, 0.1]),
             gt_score=torch.tensor([-1., 1.])),
        dict(pred_score=torch.tensor([0.9, 0.2]),
             gt_score=torch.tensor([-1., 0.])),
    ])
    res = metric.evaluate(3)
    assert res['multi-label/mAP'] == pytest.approx(75.)  # cat: 100, dog: 50
    text = mm_log.getvalue()
    assert ('1 classes have no known negative in the evaluated set (cat): '
            'every known label of them is a positive, so their AP is 100 '
            'whatever the model scores') in text
    assert 'dog' not in text.split('no known negative')[1].split(')')[0]


def test_process_stores_copies_not_views():
    """Results must not keep batch tensors (or worker shared memory) alive."""
    import torch

    from mmcoop.evaluation import PartialMultiLabelMetric
    metric = PartialMultiLabelMetric()
    probs = torch.rand(4, 3)
    targets = torch.tensor([[1., 0, -1], [0, 1, 1], [1, 1, 0], [0, 0, 1]])
    samples = [dict(pred_score=probs[i], gt_score=targets[i])
               for i in range(4)]
    metric.process(None, samples)
    for i, res in enumerate(metric.results):
        for key, src in (('pred_score', probs), ('gt_score', targets)):
            stored = res[key]
            assert stored.untyped_storage().data_ptr() != \
                src.untyped_storage().data_ptr()
            assert stored.untyped_storage().nbytes() == 3 * 4
            torch.testing.assert_close(stored, src[i])

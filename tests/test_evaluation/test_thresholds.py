# Copyright (c) mmcoop contributors. All rights reserved.
"""CF1/OF1 at top-k and with per-class thresholds calibrated on a
validation split (stored in checkpoints, used by the inference API)."""
import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.config import Config

from mmcoop.apis.inference import MultiLabelInferencer
from mmcoop.engine.hooks import ThresholdCalibrationHook
from mmcoop.engine.hooks.threshold_calibration_hook import stored_thresholds
from mmcoop.evaluation import (PartialMultiLabelMetric, calibrate_thresholds,
                               topk_metrics)


def test_calibrate_thresholds_by_hand():
    # class 0: scores .9 .8 .3 .2 with labels 1 0 1 0 -> F1 at cuts
    #   top1: 2*1/(1+2)=.667, top2: 2*1/(2+2)=.5, top3: 2*2/(3+2)=.8,
    #   top4: 2*2/(4+2)=.667 -> cut after .3: threshold (.3+.2)/2 = .25
    # class 1: all negative (or unknown) -> default .5
    # class 2: labels 1 1 -1 0, scores .4 .4 .9 .1: the unknown .9 is
    #   ignored; the tie .4/.4 is never split -> top2 F1 1 -> (.4+.1)/2
    pred = np.array([[.9, .1, .4], [.8, .2, .4], [.3, .3, .9], [.2, .4, .1]])
    target = np.array([[1, 0, 1], [0, 0, 1], [1, -1, -1], [0, 0, 0]])
    thr = calibrate_thresholds(pred, target)
    assert thr == pytest.approx([.25, .5, .25])


def test_topk_metrics_by_hand():
    pred = np.array([[.9, .8, .1], [.2, .7, .6]])
    target = np.array([[1, 0, 0], [0, 1, 1]])
    res = topk_metrics(pred, target, k=1)
    # predicted: img0 -> class 0 (TP), img1 -> class 1 (TP); class 2 FN
    assert res['OP'] == pytest.approx(100.)
    assert res['OR'] == pytest.approx(100 * 2 / 3)
    assert res['OF1'] == pytest.approx(100 * 2 * 1 * (2 / 3) / (1 + 2 / 3))
    # per class F1: 1, 1, 0
    assert res['CF1'] == pytest.approx(100 * 2 / 3)


def test_metric_reports_topk_and_calibrated():
    pred = np.array([[.9, .2], [.3, .45], [.1, .3]])
    target = np.array([[1, 0], [0, 1], [0, 0]])
    samples = [
        dict(pred_score=torch.tensor(p, dtype=torch.float32),
             gt_score=torch.tensor(t, dtype=torch.float32))
        for p, t in zip(pred, target)
    ]
    metric = PartialMultiLabelMetric(topk=1, calibrate=True,
                                     class_thresholds=[.5, .4])
    metric.process(None, samples)
    res = metric.compute_metrics(metric.results)
    # at 0.5 class 1 is never predicted; at 0.4 it is (TP), so CF1 = 100
    assert res['CF1'] == pytest.approx(50.)
    assert res['CF1_calib'] == pytest.approx(100.)
    # top-1: class 0 in img 0 (TP); class 1 in imgs 1 (TP) and 2 (FP):
    # F1 = 1 and 2/3
    assert res['CF1_top1'] == pytest.approx(100 * (1 + 2 / 3) / 2)
    assert metric.calibrated_thresholds == pytest.approx([.6, .375])


def test_hook_stores_thresholds_for_the_same_epoch_only():
    hook = ThresholdCalibrationHook()
    metric = PartialMultiLabelMetric(calibrate=True)
    metric.calibrated_thresholds = np.array([.3, .7])
    metric.dataset_meta = dict(classes=['a', 'b'])

    class Runner:
        epoch = 4
        val_evaluator = type('E', (), {'metrics': [metric]})()

    hook.after_val_epoch(Runner())
    same, older = dict(meta=dict(epoch=4)), dict(meta=dict(epoch=3))
    hook.before_save_checkpoint(Runner(), same)
    hook.before_save_checkpoint(Runner(), older)
    assert same['meta']['calibrated_thresholds']['thresholds'] == [.3, .7]
    assert same['meta']['calibrated_thresholds']['classes'] == ['a', 'b']
    assert 'calibrated_thresholds' not in older['meta']


def test_older_checkpoint_thresholds_read_back_clipped():
    """An older calibration could store -5e-7 (a midpoint below a score of
    0): both readers (the test hook and init_model) get it clipped to 0,
    so such a checkpoint still tests; a real out-of-range value is left
    to the consumers' range check."""
    stored = dict(thresholds=[-5e-7, .4, 1 + 5e-7], classes=['a', 'b', 'c'],
                  epoch=3, split='val')
    # read back off the fp32 grid (0 and 1 are on it; .4 is not)
    assert stored_thresholds(dict(calibrated_thresholds=stored)) == \
        pytest.approx([0., .4, 1.], abs=1e-7)
    assert stored_thresholds(dict(calibrated_thresholds=stored))[1] == .4
    assert stored_thresholds({}) is None and stored_thresholds(None) is None
    assert stored_thresholds(dict(calibrated_thresholds=dict(
        thresholds=[-.2, .4]))) == [-.2, .4]
    hook = ThresholdCalibrationHook()
    hook.after_load_checkpoint(None, dict(meta=dict(
        calibrated_thresholds=stored)))
    assert hook._loaded['thresholds'] == pytest.approx([0., .4, 1.],
                                                       abs=1e-7)
    metric = PartialMultiLabelMetric(thr=.5)
    hook.before_test(type('R', (), {
        'test_evaluator': type('E', (), {'metrics': [metric]})(),
        'logger': type('L', (), {'info': staticmethod(print)})()
    })(), )
    assert metric.class_thresholds == pytest.approx([0., .4, 1.], abs=1e-7)


def test_inference_threshold_calibrated():
    model = nn.Module()
    model.cfg = Config(dict(model=dict(type='ImageClassifier')))
    model.dataset_meta = dict(classes=['a', 'b', 'c'])
    inferencer = MultiLabelInferencer(model)
    with pytest.raises(ValueError, match='no meta.*calibrated_thresholds'
                       r".*Fix: train with the clean protocol"):
        inferencer._thresholds('calibrated')
    # a clean-protocol config whose checkpoint lost them (a release of an
    # earlier publish_model.py): the fix is to publish again, not to train
    model.cfg.protocol = dict(name='clean')
    with pytest.raises(ValueError, match='Its config trained with the clean'
                       r'.*Fix: publish the training checkpoint again'):
        inferencer._thresholds('calibrated')
    model.calibrated_thresholds = np.array([.2, .9, .5], np.float32)
    sample = type('S', (), {'pred_score': torch.tensor([.3, .8, .6])})()
    out = inferencer.postprocess(sample, 'x.jpg',
                                 inferencer._thresholds('calibrated'))
    assert out['classes'] == ['c', 'a']  # b (.8) is below its .9
    assert inferencer.postprocess(sample, 'x.jpg', .5)['classes'] == \
        ['b', 'c']


def _prf_by_loops(predicted, target):
    """CP/CR/CF1/OP/OR/OF1 (percent) of boolean predictions, counted entry
    by entry over the known targets (the official definitions)."""
    n, c = target.shape
    per_class, totals = [], [0, 0, 0]
    for k in range(c):
        tp = fp = fn = 0
        for i in range(n):
            if target[i, k] < 0:
                continue
            if predicted[i, k] and target[i, k] == 1:
                tp += 1
            elif predicted[i, k]:
                fp += 1
            elif target[i, k] == 1:
                fn += 1
        p = tp / (tp + fp) if tp else 0.
        r = tp / (tp + fn) if tp else 0.
        per_class.append((p, r, 2 * p * r / (p + r) if tp else 0.))
        totals = [totals[0] + tp, totals[1] + tp + fp, totals[2] + tp + fn]
    o_p = totals[0] / totals[1] if totals[1] else 0.
    o_r = totals[0] / totals[2] if totals[2] else 0.
    o_f = 2 * o_p * o_r / (o_p + o_r) if o_p + o_r else 0.
    cp, cr, cf = (100 * sum(v[j] for v in per_class) / c for j in range(3))
    return dict(CP=cp, CR=cr, CF1=cf, OP=100 * o_p, OR=100 * o_r,
                OF1=100 * o_f)


def _random_scores(seed, n=40, c=6):
    """Scores with many ties (2 decimals), targets with unknowns, one class
    without a known positive."""
    rng = np.random.default_rng(seed)
    pred = np.round(rng.random((n, c)), 2)
    target = (rng.random((n, c)) < 0.35).astype(np.int64)
    target[rng.random((n, c)) < 0.2] = -1
    target[:, -1] = np.where(target[:, -1] == 1, 0, target[:, -1])
    return pred, target


@pytest.mark.parametrize('seed', range(3))
def test_threshold_and_topk_metrics_equal_counting_by_loops(seed):
    from mmcoop.evaluation import threshold_metrics
    pred, target = _random_scores(seed)
    thr = np.linspace(0.2, 0.7, pred.shape[1])
    for threshold in (0.5, thr):
        got = threshold_metrics(pred, target, threshold)
        want = _prf_by_loops(pred > threshold, target)
        assert got == pytest.approx(want, abs=1e-9)
    for k in (1, 3):
        predicted = np.zeros(pred.shape, dtype=bool)
        for i, row in enumerate(pred):
            # the k highest scores; a tie goes to the lower class index
            top = sorted(range(len(row)), key=lambda j: (-row[j], j))[:k]
            predicted[i, top] = True
        assert topk_metrics(pred, target, k) == pytest.approx(
            _prf_by_loops(predicted, target), abs=1e-9)


@pytest.mark.parametrize('seed', range(3))
def test_calibrated_thresholds_maximise_f1_by_exhaustive_search(seed):
    """Against every threshold that separates the known scores: the
    calibrated one reaches the largest F1 of its class under the official
    ``score > thr`` rule and, among the thresholds that do, predicts the
    most entries (the smallest wins a tie); a class without a known
    positive keeps 0.5."""
    pred, target = _random_scores(seed)
    thr = calibrate_thresholds(pred, target)
    for k in range(pred.shape[1]):
        known = target[:, k] >= 0
        s, y = pred[known, k], target[known, k] == 1
        if not y.any():
            assert thr[k] == pytest.approx(0.5, abs=1e-7)
            continue

        def f1_count(t):
            hit = s > t
            tp = int((hit & y).sum())
            return 2 * tp / (hit.sum() + y.sum()), int(hit.sum())

        levels = np.unique(s)
        cands = [levels[0] - 1] + list((levels[1:] + levels[:-1]) / 2) + [
            levels[-1]]
        results = [f1_count(t) for t in cands]
        best = max(f for f, _ in results)
        most = max(n for f, n in results if f == pytest.approx(best))
        f1, count = f1_count(thr[k])
        assert f1 == pytest.approx(best, abs=1e-12)
        assert count == most
        assert 0 <= thr[k] <= 1


def _best_reachable_f1(s, y):
    """The largest F1 of ``score > t`` over thresholds t in [0, 1]."""
    levels = np.unique(np.append(s, [0., 1.]))
    cands = list((levels[1:] + levels[:-1]) / 2) + [0.]
    return max(2 * int(((s > t) & y).sum()) / ((s > t).sum() + y.sum())
               for t in cands)


@pytest.mark.parametrize('seed', range(4))
def test_calibration_with_scores_of_exactly_zero(seed):
    """An fp32 p(present) is exactly 0 below a log-odds of about -104 (the
    logits span +-100). No threshold in [0, 1] is below such a score, so a
    cut that predicts it is not a candidate: the calibrated threshold
    reaches the best F1 that ``score > thr`` can reach (it chose the
    unreachable "predict everything" and fell short before)."""
    # by hand: predicting everything (F1 11/12) is unreachable; among the
    # reachable cuts, 0.9 alone (F1 1/6) beats every non-zero score (1/7)
    s = np.array([0.9, 0.5, 0.4] + [0.] * 10, dtype=np.float32)
    y = np.array([1, 0, 0] + [1] * 10)
    rng = np.random.default_rng(seed)
    if seed:  # random scores with a block of zeros
        s = np.where(rng.random(40) < 0.4, 0., rng.random(40)).astype(
            np.float32)
        y = rng.integers(0, 2, 40)
        y[0] = 1
    thr = calibrate_thresholds(s[:, None], y[:, None])[0]
    f1 = 2 * int(((s > thr) & (y == 1)).sum()) / ((s > thr).sum() + y.sum())
    assert f1 == pytest.approx(_best_reachable_f1(s, y == 1), abs=1e-12)
    if not seed:
        assert 0.5 < thr < 0.9


def test_calibrated_thresholds_label_alike_under_both_rules():
    """The metric counts ``score > thr`` (official); inference and the
    exports label ``score >= thr``. A calibrated threshold that was an
    fp32 number (the midpoint of two scores often is), or rounded to one
    by init_model, was a score too: a test score equal to it was labelled
    by inference and not counted by CF1_calib (1 of 1250 labels of a
    3-epoch demo run, a saturated score 0.999997973). Thresholds are now
    kept off the fp32 grid and compared in float64."""
    from mmcoop.evaluation.metrics.multi_label import off_the_fp32_grid
    grid = np.array([0., 2.**-20, .375, .5, 1 - 2.**-24], np.float32)
    moved = off_the_fp32_grid(grid.astype(np.float64))
    # every fp32 number near each threshold: both rules agree, and each
    # labels as '>' did with the fp32 threshold
    for t, m in zip(grid, moved):
        near = [t]
        for _ in range(3):
            near = [np.nextafter(near[0], np.float32(-1)), *near,
                    np.nextafter(near[-1], np.float32(2))]
        near = np.array(near, np.float32)
        # a (C,) float64 array, as the metric and inference compare (a
        # float64 scalar would be cast to float32 by NumPy 1's value-based
        # casting, back onto the grid)
        m = np.array([m])
        assert ((near > m) == (near >= m)).all()
        assert ((near > m) == (near > t)).all()
    # thresholds off the grid are kept as they are
    assert off_the_fp32_grid([.4])[0] == .4
    # the calibration's and the stored thresholds are off the grid
    pred = np.array([[.25], [.5], [.75]], np.float32)
    thr = calibrate_thresholds(pred, np.array([[0], [1], [1]]))
    assert float(np.float32(thr[0])) != thr[0] and .25 < thr[0] < .5
    stored = stored_thresholds(dict(calibrated_thresholds=dict(
        thresholds=[.375], classes=['a'])))
    assert float(np.float32(stored[0])) != stored[0]


def test_inference_keeps_the_calibrated_thresholds_in_float64():
    """Rounded to fp32 (init_model, the threshold check of inference and
    export), a threshold between two adjacent fp32 scores became one of
    them, which '>=' then labels."""
    from mmcoop.apis.inference import check_threshold_values
    between = (1 - 2.**-24 + 1 - 2.**-23) / 2  # halfway between two fp32
    values = check_threshold_values([between, .5], ['a', 'b'])
    assert values.dtype == np.float64 and values[0] == between

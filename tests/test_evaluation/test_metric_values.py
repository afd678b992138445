# Copyright (c) mmcoop contributors. All rights reserved.
"""Metric arguments are checked when the metric is built (naming the
class, the field and the value), and against the number of classes when
the scores arrive; an evaluation without results says so."""
import re

import numpy as np
import pytest
import torch

from mmcoop.evaluation.metrics import (PartialMultiLabelMetric,
                                       UnseenClassMetric)
from mmcoop.evaluation.metrics.multi_label import calibrate_thresholds

NAN = float('nan')
PRED = [[.9, .2, .6], [.3, .45, .7], [.1, .3, .2]]
TARGET = [[1, 0, 1], [0, 1, 1], [0, 0, -1]]


def _refused(owner, field, value, expected):
    return (re.escape(f'{owner}: {field} must be ') + '.*' + expected +
            '.*' + re.escape(f'got {value!r}'))


def _process(metric, pred=PRED, target=TARGET):
    metric.dataset_meta = dict(classes=['a', 'b', 'c'])
    metric.process(None, [
        dict(pred_score=torch.tensor(p), gt_score=torch.tensor(t).float())
        for p, t in zip(pred, target)
    ])
    return metric


@pytest.mark.parametrize('thr', [-0.1, 1.5, NAN, float('inf'), 'x', None,
                                 True])
def test_thr_in_unit_interval(thr):
    with pytest.raises(ValueError,
                       match=_refused('PartialMultiLabelMetric', 'thr', thr,
                                      r'a number in \[0, 1\]')):
        PartialMultiLabelMetric(thr=thr)


@pytest.mark.parametrize('field', ['calibrate', 'per_class_ap'])
@pytest.mark.parametrize('value', ['False', 0, 1, None])
def test_flags_must_be_bool(field, value):
    with pytest.raises(ValueError,
                       match=_refused('PartialMultiLabelMetric', field,
                                      value, 'True or False')):
        PartialMultiLabelMetric(**{field: value})


@pytest.mark.parametrize('topk', [0, -1, 2.0, True, '3'])
def test_topk_must_be_positive_int(topk):
    with pytest.raises(ValueError,
                       match=_refused('PartialMultiLabelMetric', 'topk',
                                      topk, r'an int >= 1')):
        PartialMultiLabelMetric(topk=topk)


@pytest.mark.parametrize('thresholds,field,value', [
    ([2, 2, 2], 'class_thresholds[0]', 2),
    ([.5, NAN, .5], 'class_thresholds[1]', NAN),
    ([.5, .5, -0.5], 'class_thresholds[2]', -0.5),
    ([.5, '.5'], 'class_thresholds[1]', '.5'),
])
def test_class_thresholds_values(thresholds, field, value):
    with pytest.raises(ValueError,
                       match=_refused('PartialMultiLabelMetric', field,
                                      value, r'a number in \[0, 1\]')):
        PartialMultiLabelMetric(class_thresholds=thresholds)


@pytest.mark.parametrize('thresholds', ['abc', [], 0.5, {'a': 1}])
def test_class_thresholds_must_be_a_sequence(thresholds):
    with pytest.raises(ValueError,
                       match=re.escape(
                           'PartialMultiLabelMetric: class_thresholds must '
                           'be None or a sequence of numbers in [0, 1] (one '
                           f'per class), got {thresholds!r}.')):
        PartialMultiLabelMetric(class_thresholds=thresholds)


def test_class_thresholds_count_and_late_values():
    metric = _process(PartialMultiLabelMetric(class_thresholds=[.5, .5]))
    with pytest.raises(ValueError,
                       match=r'class_thresholds has 2 values, expected 3'):
        metric.evaluate(3)
    # set after building (as ThresholdCalibrationHook does): checked too
    metric = _process(PartialMultiLabelMetric())
    metric.class_thresholds = [.5, 3., .5]
    with pytest.raises(ValueError,
                       match=_refused('PartialMultiLabelMetric',
                                      'class_thresholds[1]', 3.,
                                      r'a number in \[0, 1\]')):
        metric.evaluate(3)


def test_legal_values_give_the_metrics():
    """thr bounds, numpy thresholds, topk = C."""
    out = _process(
        PartialMultiLabelMetric(
            thr=1, topk=3,
            class_thresholds=np.array([.5, .4, .65]))).evaluate(3)
    # thr = 1: nothing predicted
    assert out['multi-label/CF1'] == 0. and out['multi-label/OF1'] == 0.
    # top-3 of 3 classes: everything predicted; 4 positives among 8 known
    assert out['multi-label/OF1_top3'] == pytest.approx(100 * 2 * .5 / 1.5)
    # per class > (.5, .4, .65): a: img0 (TP); b: img1 (TP); c: img1 (TP)
    assert out['multi-label/CF1_calib'] == pytest.approx(
        100 * (1 + 1 + 2 / 3) / 3)
    out = _process(PartialMultiLabelMetric(thr=0)).evaluate(3)
    # thr = 0: every known entry predicted
    assert out['multi-label/OF1'] == pytest.approx(100 * 2 * .5 / 1.5)


def test_topk_larger_than_the_classes():
    metric = _process(PartialMultiLabelMetric(topk=10))
    with pytest.raises(ValueError,
                       match=re.escape(
                           'PartialMultiLabelMetric: topk must be an int in '
                           '1..3 (the number of classes scored), got 10')):
        metric.evaluate(3)


def test_calibrated_thresholds_stay_in_unit_interval():
    """Every positive, two of them at exactly 0: predicting them is
    reachable by no threshold in [0, 1] (``score > thr``), so the best
    reachable cut predicts the 0.2 alone, at the midpoint 0.1; the
    thresholds pass the class_thresholds check."""
    pred = np.array([[0.], [0.], [.2]])
    target = np.array([[1], [1], [1]])
    thr = calibrate_thresholds(pred, target)
    assert thr.tolist() == pytest.approx([0.1])
    PartialMultiLabelMetric(class_thresholds=thr)


@pytest.mark.parametrize('metric', [
    PartialMultiLabelMetric(),
    UnseenClassMetric(unseen_classes=['a']),
])
def test_no_results(metric):
    name = type(metric).__name__
    with pytest.raises(ValueError,
                       match=rf'{name}: no results to evaluate .*dataloader'):
        metric.evaluate(1)


@pytest.mark.parametrize('ks,field,value', [
    ((0, ), 'ks[0]', 0),
    ((3, -1), 'ks[1]', -1),
    ((2.7, ), 'ks[0]', 2.7),
    ((True, ), 'ks[0]', True),
    (0, 'ks[0]', 0),
])
def test_unseen_ks_values(ks, field, value):
    with pytest.raises(ValueError,
                       match=_refused('UnseenClassMetric', field, value,
                                      r'an int >= 1')):
        UnseenClassMetric(unseen_classes=['a'], ks=ks)


@pytest.mark.parametrize('ks', ['3', 3.0, None, (), []])
def test_unseen_ks_must_be_ints(ks):
    with pytest.raises(ValueError,
                       match=re.escape('UnseenClassMetric: ks must be an int '
                                       '>= 1 or a sequence of them')):
        UnseenClassMetric(unseen_classes=['a'], ks=ks)


def test_unseen_single_k():
    metric = UnseenClassMetric(unseen_classes=['b', 'c'], ks=1)
    assert metric.ks == (1, )
    out = _process(metric).evaluate(3)
    assert sorted(out) == sorted(f'zsl/{s}/{m}' for s in ('unseen', 'all')
                                 for m in ('mAP', 'F1@1'))
    # unseen {b, c}: top-1 c, c, b -> hits img0 c, img1 c; img2 has no
    # unseen positive (b 0, c unknown), so it is not scored (the official
    # image set): 2 hits of 2, 3 positives
    assert out['zsl/unseen/F1@1'] == pytest.approx(100 * 2 * (2 / 3) / (
        1 + 2 / 3))
    # every image scored: img2's prediction b counts (FP): 2 hits of 3
    every = UnseenClassMetric(unseen_classes=['b', 'c'], ks=1, images='all')
    assert _process(every).evaluate(3)['zsl/unseen/F1@1'] == \
        pytest.approx(100 * 2 / 3)
    assert UnseenClassMetric(unseen_classes=['a'], ks=[3, 5]).ks == (3, 5)


@pytest.mark.parametrize('cls,kwargs', [
    (PartialMultiLabelMetric, {}),
    (UnseenClassMetric, dict(unseen_classes=['b'], ks=1)),
])
@pytest.mark.parametrize('score', [NAN, float('inf')])
def test_non_finite_scores_are_refused(cls, kwargs, score):
    """A NaN score was ranked first by the AP and never predicted by a
    threshold: a metric of a broken model without a word."""
    pred = [[.9, .2, .6], [.3, score, .7], [.1, .3, .2]]
    metric, name = cls(**kwargs), cls.__name__
    with pytest.raises(ValueError,
                       match=re.escape(f'{name}: 1 pred_score values are '
                                       'invalid, e.g. sample 1, class 1: '
                                       f'{score!r}; the model produced '
                                       'NaN/inf')):
        _process(metric, pred=pred).evaluate(3)


@pytest.mark.parametrize('value', [.5, 2., -2., NAN])
def test_targets_other_than_tri_state_are_refused(value):
    """0.5 or 2 counted as a negative, -2 or NaN as unknown; the loss
    refuses them, and so does the metric."""
    target = [[1, 0, 1], [0, 1, 1], [0, value, -1]]
    with pytest.raises(ValueError,
                       match=re.escape('PartialMultiLabelMetric: 1 gt_score '
                                       'values are invalid, e.g. sample 2, '
                                       f'class 1: {value!r}; targets must '
                                       'be 1 (present), 0 (absent) or -1')):
        _process(PartialMultiLabelMetric(), target=target).evaluate(3)


@pytest.mark.parametrize('labels', [[3], [-1], [0, 5]])
def test_gt_label_outside_the_classes_is_refused(labels):
    """Without gt_score the one-hot of gt_label is used: -1 marked the last
    class positive, 3 failed with a bare IndexError."""
    metric = PartialMultiLabelMetric()
    with pytest.raises(ValueError,
                       match=re.escape(f'gt_label {labels} holds a class '
                                       'index outside 0..2')):
        metric.process(None, [
            dict(pred_score=torch.tensor(PRED[0]),
                 gt_label=torch.tensor(labels))
        ])
    metric.process(None, [
        dict(pred_score=torch.tensor(PRED[0]), gt_label=torch.tensor([0, 2]))
    ])
    assert metric.results[0]['gt_score'].tolist() == [1., 0., 1.]

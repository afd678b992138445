# Copyright (c) mmcoop contributors. All rights reserved.
"""Zero-shot / generalised zero-shot metrics, computed by hand on three
images; the COCO 48/17 split lists."""
import pytest
import torch

from mmcoop.datasets.categories import COCO2014_CATEGORIES
from mmcoop.datasets.unseen_splits import COCO_48_17_SEEN, COCO_48_17_UNSEEN
from mmcoop.evaluation.metrics import UnseenClassMetric

CLASSES = ['a', 'b', 'c', 'd']
PRED = [[.9, .8, .7, .1], [.2, .9, .6, .5], [.3, .1, .2, .8]]
TARGET = [[1, 0, 0, 1], [0, 1, 1, 0], [1, 0, -1, 1]]


def _evaluate(metric, target=TARGET):
    metric.dataset_meta = dict(classes=CLASSES)
    metric.process(None, [
        dict(pred_score=torch.tensor(p), gt_score=torch.tensor(t).float())
        for p, t in zip(PRED, target)
    ])
    return metric.evaluate(len(PRED))


def test_unseen_and_all_by_hand(tmp_path):
    seen = tmp_path / 'seen.txt'
    seen.write_text('a\n\n')  # 'b' is in neither list: never scored
    out = _evaluate(
        UnseenClassMetric(unseen_classes=['c', 'd'], seen_classes=str(seen),
                          ks=(1, 2)))
    # unseen {c, d}: top-1 hits 2 of 3 predictions, 3 positives;
    # top-2: 3 hits, 5 counted predictions (img2's c is unknown)
    assert out['zsl/unseen/F1@1'] == pytest.approx(100 * 2 / 3)
    assert out['zsl/unseen/F1@2'] == pytest.approx(75.)
    # AP(c) = 1/2, AP(d) = (1 + 2/3) / 2
    assert out['zsl/unseen/mAP'] == pytest.approx(100 * (0.5 + 5 / 6) / 2)
    # all = {a, c, d}: top-1 hits 3 of 3, 5 positives; top-2 4 of 6
    assert out['zsl/all/F1@1'] == pytest.approx(75.)
    assert out['zsl/all/F1@2'] == pytest.approx(100 * 16 / 22)
    assert out['zsl/all/mAP'] == pytest.approx(100 * (1 + 0.5 + 5 / 6) / 3)


def test_each_part_scores_the_images_with_a_positive_in_it():
    """DualCoOp's COCO 48/17 test files hold, for ZSL, only the images with
    an unseen object (for GZSL, with one of the 65 classes): every image
    was scored, and one without a positive adds k false positives to
    F1@k (a perfect model's unseen/F1@3 was 28.57 where the official
    image set gives 50). images='all' keeps the former rule."""
    import numpy as np
    classes = ('a', 'b', 'c', 'd')  # c, d unseen
    target = np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 1],
                       [1, 1, 0, 0]], np.float32)
    pred = np.where(target == 1, .9, .1).astype(np.float32)  # perfect

    def evaluate(**kwargs):
        metric = UnseenClassMetric(unseen_classes=['c', 'd'],
                                   seen_classes=['a', 'b'], ks=1, **kwargs)
        metric.dataset_meta = dict(classes=classes)
        metric.process(None, [
            dict(pred_score=torch.tensor(p), gt_score=torch.tensor(t))
            for p, t in zip(pred, target)
        ])
        return metric.evaluate(len(pred))

    official = evaluate()
    # ZSL: images 1 and 2 (an unseen positive each), both top-1 right
    assert official['zsl/unseen/F1@1'] == pytest.approx(100.)
    assert official['zsl/unseen/mAP'] == pytest.approx(100.)
    # every image: images 0 and 3 predict an unseen class wrongly
    assert evaluate(images='all')['zsl/unseen/F1@1'] == \
        pytest.approx(100 * 2 * .5 / 1.5)
    # GZSL: every image has a positive among a..d: the same either way
    assert official['zsl/all/F1@1'] == \
        evaluate(images='all')['zsl/all/F1@1']
    with pytest.raises(ValueError, match="images must be one of"):
        UnseenClassMetric(unseen_classes=['c'], images='some')


def test_default_all_is_every_class_and_keys():
    out = _evaluate(UnseenClassMetric(unseen_classes=['c', 'd'], ks=2))
    assert sorted(out) == sorted(f'zsl/{s}/{m}' for s in ('unseen', 'all')
                                 for m in ('mAP', 'F1@2'))
    # all = every class: top-2 of a, b, c, d
    assert out['zsl/all/mAP'] == pytest.approx(_evaluate(UnseenClassMetric(
        unseen_classes=['c', 'd'], seen_classes=['a', 'b'],
        ks=2))['zsl/all/mAP'])


def test_k_above_the_unseen_count_is_refused():
    """F1@5 over 2 unseen classes would be F1@2 under another name (the
    defaults, ks=(3, 5), on a small split)."""
    with pytest.raises(ValueError, match=r'ks \[3, 5\] exceed the 2 unseen '
                       r'classes.*F1@3 would be F1@2.*at most 2'):
        _evaluate(UnseenClassMetric(unseen_classes=['c', 'd']))


@pytest.mark.parametrize('kwargs, match', [
    (dict(unseen_classes=['c', 'zebra']), "unseen_classes \\['zebra'\\]"),
    (dict(unseen_classes=['c'], seen_classes=['c', 'a']), 'in both'),
])
def test_bad_class_lists(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _evaluate(UnseenClassMetric(**kwargs))


def test_coco_48_17_split():
    assert len(COCO_48_17_SEEN) == 48 and len(COCO_48_17_UNSEEN) == 17
    assert not set(COCO_48_17_SEEN) & set(COCO_48_17_UNSEEN)
    assert set(COCO_48_17_SEEN) | set(COCO_48_17_UNSEEN) <= set(
        COCO2014_CATEGORIES)


def _logged(fn):
    import io
    import logging

    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        return fn(), stream.getvalue()
    finally:
        logger.removeHandler(handler)


def test_unseen_classes_without_a_positive_are_named_and_not_zero():
    """Unseen classes with no positive in the evaluated set: warned as by
    PartialMultiLabelMetric (before: silently 0); with
    no_positive='ignore' and none left, the mAP is undefined (nan), not
    0."""
    import math
    metric = UnseenClassMetric(unseen_classes=['b', 'c'], ks=(1, ))
    target = [[1, 0, 0, 1], [0, 0, 0, 0], [1, 0, -1, 1]]  # no b, no c
    out, text = _logged(lambda: _evaluate(metric, target))
    assert out['zsl/unseen/mAP'] == 0.0  # the official rule
    assert '2 unseen classes have no positive in the evaluated set ' \
        '(b, c); their AP counts as 0' in text
    out, text = _logged(lambda: _evaluate(UnseenClassMetric(
        unseen_classes=['b', 'c'], ks=(1, ), no_positive='ignore'), target))
    assert math.isnan(out['zsl/unseen/mAP'])
    assert 'left out of the mAP, which is undefined (nan)' in text

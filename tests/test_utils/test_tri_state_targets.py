# Copyright (c) mmcoop contributors. All rights reserved.
"""One tri-state rule (1 present, 0 absent, -1 unknown): the loss, the
metric and the partial-label wrapper refuse the same targets and accept the
same ones (mmcoop.utils.tri_state_targets)."""
import re

import numpy as np
import pytest
import torch

from mmcoop.datasets.partial_label import complete_targets
from mmcoop.evaluation.metrics.multi_label import check_scores_and_targets
from mmcoop.models.losses.partial_asymmetric_loss import check_partial_targets
from mmcoop.utils.tri_state_targets import (TARGET_RULE, invalid_targets,
                                            invalid_values)


class _OneSample:
    """A dataset of one sample with the given ``gt_score``."""
    ann_file = 'ann.json'

    def __init__(self, score):
        self.score = score

    def __len__(self):
        return 1

    def get_data_info(self, i):
        return dict(img_path='0.jpg', gt_score=self.score)


def _loss(score):
    check_partial_targets(torch.zeros(1, 2, 3), torch.as_tensor(score)[None])


def _metric(score):
    check_scores_and_targets('PartialMultiLabelMetric', np.zeros((1, 3)),
                             score[None])


def _dataset(score):
    complete_targets(_OneSample(score), 3)


CHECKS = [_loss, _metric, _dataset]
NAN, INF = float('nan'), float('inf')


@pytest.mark.parametrize('score', [
    np.array([1., 2., 0.]),
    np.array([1., .5, 0.]),
    np.array([1., NAN, 0.]),
    np.array([1., -2., 0.]),
    np.array([1., INF, -1.]),
    np.array([1, 255, 0], np.uint8),  # the loss read it as a wrapped -1
    np.array([1, 1j, 0]),  # the loss and the metric dropped the 1j
], ids=['2', '0.5', 'nan', '-2', 'inf', 'uint8-255', 'complex'])
def test_loss_metric_and_dataset_refuse_the_same_targets(score):
    for check in CHECKS:
        with pytest.raises(ValueError, match=re.escape(TARGET_RULE)):
            check(score)
    # the one predicate, on arrays and tensors alike (a complex array holds
    # no target at all)
    mask = invalid_targets(score)
    assert mask[1] and mask.tolist() == invalid_targets(
        torch.as_tensor(score)).tolist()


@pytest.mark.parametrize('score', [
    np.array([1., 0., -1.], np.float32),
    np.array([1., -0., -1.], np.float16),
    np.array([1, 0, -1]),
    np.array([1, 0, -1], np.int8),
    np.array([True, False, True]),
], ids=['float32', 'float16', 'int64', 'int8', 'bool'])
def test_loss_metric_and_dataset_accept_the_same_targets(score):
    for check in CHECKS:
        check(score)
    assert not invalid_targets(score).any()
    assert not invalid_targets(torch.as_tensor(score)).any()


def test_invalid_values_name_each_bad_value_once():
    score = np.array([[.5, NAN, 2.], [.5, 1., -1.]])
    assert str(invalid_values(score)) == '[0.5, 2.0, nan]'
    assert str(invalid_values(torch.as_tensor(score))) == '[0.5, 2.0, nan]'
    assert invalid_values(np.array(['1', 'x'])) == ['1', 'x']

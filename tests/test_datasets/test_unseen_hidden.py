# Copyright (c) mmcoop contributors. All rights reserved.
"""``PartialLabelDataset(unseen_classes=...)``: the zero-shot protocols
hide the unseen classes in every training image."""
import numpy as np
import pytest
from _builders import coco_cfg

from mmcoop.datasets import COCO2014MultiLabel, PartialLabelDataset
from mmcoop.datasets.unseen_splits import COCO_48_17_UNSEEN

# the tiny tree's classes: bicycle=0, airplane=1, dog=2, fire hydrant=3;
# airplane and dog are unseen in COCO 48/17, bicycle is seen


def _scores(ds):
    return np.stack([ds.get_data_info(i)['gt_score'] for i in range(len(ds))])


@pytest.mark.parametrize('source', ['list', 'file'])
def test_unseen_columns_unknown_others_unchanged(coco_root, tmp_path,
                                                 source):
    unseen = ['airplane', 'dog']
    assert set(unseen) <= set(COCO_48_17_UNSEEN)
    if source == 'file':
        path = tmp_path / 'unseen.txt'
        path.write_text('airplane\n\ndog\n')
        unseen = str(path)
    inner = COCO2014MultiLabel(coco_root, split='train')
    full = np.stack([
        inner.get_data_info(i)['gt_score'] for i in range(len(inner))
    ])
    ds = PartialLabelDataset(
        coco_cfg(coco_root), known_proportion=1.0, unseen_classes=unseen)
    score = _scores(ds)
    # the fixture has positives in both unseen columns: they are hidden
    assert (full[:, [1, 2]] == 1).any(0).all()
    assert (score[:, [1, 2]] == -1).all()
    assert np.array_equal(score[:, [0, 3]], full[:, [0, 3]])
    assert ds.known_mask[:, [1, 2]].sum() == 0
    assert ds.known_mask[:, [0, 3]].all()
    # images 12 (bicycle, dog), 10 (bicycle, airplane), 14 (fire
    # hydrant), 11 (bicycle): only the seen positives stay in gt_label
    assert full.tolist() == [[1, 0, 1, 0], [1, 1, 0, 0], [0, 0, 0, 1],
                             [1, 0, 0, 0]]
    assert [ds.get_data_info(i)['gt_label'] for i in range(len(ds))] == \
        [[0], [0], [3], [0]]


def test_unseen_on_top_of_drawn_mask(coco_root):
    plain = PartialLabelDataset(coco_cfg(coco_root), 0.5, seed=3)
    hidden = PartialLabelDataset(
        coco_cfg(coco_root), 0.5, seed=3, unseen_classes=['dog'])
    assert np.array_equal(hidden.known_mask[:, [0, 1, 3]],
                          plain.known_mask[:, [0, 1, 3]])
    assert not hidden.known_mask[:, 2].any()


def test_unknown_unseen_name(coco_root):
    with pytest.raises(ValueError, match='unseen_classes.*cat'):
        PartialLabelDataset(
            coco_cfg(coco_root), 1.0, unseen_classes=['cat'])

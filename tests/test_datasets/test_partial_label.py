# Copyright (c) mmcoop contributors. All rights reserved.
import hashlib
import json
import os
import os.path as osp

import numpy as np
import pytest
from _builders import PIPELINE, build_voc, coco_cfg, save_image
from _common import tree_listing

from mmcoop.datasets import (COCO2014MultiLabel, PartialLabelDataset,
                             VOC2007MultiLabel, make_known_mask)
from mmcoop.datasets.partial_label import num_hidden_per_image
from mmcoop.registry import DATASETS


# ---------------------------------------------------------------- the mask
def test_mask_deterministic_and_seeded():
    a = make_known_mask(300, 80, 0.5, 'bernoulli', seed=3)
    b = make_known_mask(300, 80, 0.5, 'bernoulli', seed=3)
    c = make_known_mask(300, 80, 0.5, 'bernoulli', seed=4)
    assert a.dtype == np.bool_ and a.shape == (300, 80)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    # same mask on any machine: the NumPy PCG64 stream is pinned here
    golden = make_known_mask(4, 5, 0.5, 'bernoulli', seed=0)
    assert golden.astype(int).tolist() == [[0, 1, 1, 1, 0], [0, 0, 0, 0, 0],
                                           [0, 1, 0, 1, 0], [1, 0, 0, 1, 1]]

    def digest(m):
        return hashlib.sha1(np.packbits(m).tobytes()).hexdigest()[:16]

    assert digest(make_known_mask(1000, 80, 0.3, seed=0)) == \
        'c3c37c3665d8c9a0'
    assert digest(make_known_mask(1000, 80, 0.3, 'per_image_count',
                                  seed=0)) == '265aa9cb27d171dd'


@pytest.mark.parametrize('p', [0.1, 0.5, 0.9])
def test_bernoulli_statistics(p):
    n, c = 5000, 80  # 400k entries: std of the fraction <= 0.0008
    mask = make_known_mask(n, c, p, 'bernoulli', seed=0)
    assert abs(mask.mean() - p) < 0.004
    # independent per (image, class): per-image counts vary (binomial)
    per_image = mask.sum(1)
    assert per_image.std() == pytest.approx(np.sqrt(c * p * (1 - p)), rel=0.1)
    # and every class gets about p
    assert np.abs(mask.mean(0) - p).max() < 0.03


@pytest.mark.parametrize('p,c,hidden', [(0.5, 20, 10), (0.9, 20, 2),
                                        (0.1, 80, 72), (0.75, 10, 3),
                                        (0.3, 80, 56), (1.0, 80, 0)])
def test_per_image_count_exact(p, c, hidden):
    assert num_hidden_per_image(c, p) == hidden
    mask = make_known_mask(500, c, p, 'per_image_count', seed=1)
    assert (mask.sum(1) == c - hidden).all()
    if 0 < hidden < c:  # the hidden classes vary between images
        assert len({tuple(r) for r in mask[:50]}) > 40
        assert np.abs(mask.mean(0) - (c - hidden) / c).max() < 0.1


@pytest.mark.parametrize(
    'p', [0, 0.0, -0.1, 1.0001, 2,
          float('nan'), '0.5', None, True])
def test_bad_proportion(coco_root, p):
    with pytest.raises(ValueError, match=r'known_proportion.*\(0, 1\]'):
        make_known_mask(10, 4, p)
    with pytest.raises(ValueError, match=r'known_proportion.*\(0, 1\]'):
        PartialLabelDataset(coco_cfg(coco_root), known_proportion=p)


def test_bad_mode(coco_root):
    with pytest.raises(ValueError, match='mode'):
        PartialLabelDataset(coco_cfg(coco_root), 0.5, mode='random')


# ------------------------------------------------------------ the wrapper
def test_wrapper_targets(coco_root):
    inner = COCO2014MultiLabel(coco_root, pipeline=PIPELINE)
    ds = DATASETS.build(
        dict(
            type='PartialLabelDataset',
            dataset=coco_cfg(coco_root),
            known_proportion=0.5,
            seed=2))
    assert len(ds) == len(inner) == 4
    assert ds.metainfo == inner.metainfo
    assert ds.CLASSES == inner.CLASSES
    mask = ds.known_mask
    assert mask.shape == (4, 4) and mask.dtype == np.bool_
    assert np.array_equal(mask, make_known_mask(4, 4, 0.5, seed=2))
    with pytest.raises(ValueError):
        mask[0, 0] = True  # read-only
    for i in range(len(ds)):
        full = inner.get_data_info(i)['gt_score']
        info = ds.get_data_info(i)
        score = info['gt_score']
        assert score.dtype == np.float32
        assert np.array_equal(score[mask[i]], full[mask[i]])
        assert (score[~mask[i]] == -1).all()
        known_pos = np.flatnonzero(mask[i] & (full == 1)).tolist()
        assert info['gt_label'] == known_pos == ds.get_cat_ids(i)
        assert info['img_path'] == inner.get_data_info(i)['img_path']
        # through the inner pipeline
        out = ds[i]
        assert out['data_samples'].gt_score.tolist() == score.tolist()
        assert out['data_samples'].gt_label.tolist() == known_pos
        assert tuple(out['inputs'].shape) == (3, 30, 40)
    # the inner dataset is unchanged (complete labels)
    assert set(np.unique(inner.get_data_info(0)['gt_score'])) <= {0., 1.}


def test_full_proportion_keeps_labels(coco_root):
    ds = PartialLabelDataset(coco_cfg(coco_root), known_proportion=1)
    assert ds.known_mask.all()
    inner = COCO2014MultiLabel(coco_root)
    for i in range(len(ds)):
        assert np.array_equal(
            ds.get_data_info(i)['gt_score'],
            inner.get_data_info(i)['gt_score'])


def test_stats(coco_root):
    ds = PartialLabelDataset(coco_cfg(coco_root), 0.5, seed=0)
    s = ds.stats()
    t, m = ds.complete_targets, ds.known_mask
    assert s['num_images'] == 4 and s['num_classes'] == 4
    assert s['known_fraction'] == pytest.approx(m.mean())
    assert s['num_positives'] == 6 == int((t == 1).sum())
    assert s['num_known_positives'] == int(((t == 1) & m).sum())
    assert s['num_known_negatives'] == int(((t == 0) & m).sum())


def test_plain_multilabel_dataset(tmp_path):
    """mmpretrain's MultiLabelDataset (gt_label only) works too."""
    for k in range(3):
        save_image(str(tmp_path / 'img' / f'{k}.png'))
    ann = dict(
        metainfo=dict(classes=['a', 'b', 'c']),
        data_list=[
            dict(img_path=f'{k}.png', gt_label=lab)
            for k, lab in enumerate([[0, 2], [1], []])
        ])
    with open(tmp_path / 'ann.json', 'w') as f:
        json.dump(ann, f)
    cfg = dict(
        type='MultiLabelDataset',
        data_root=str(tmp_path),
        ann_file='ann.json',
        data_prefix='img',
        pipeline=PIPELINE)
    ds = PartialLabelDataset(cfg, known_proportion=1.0)
    assert ds.complete_targets.tolist() == [[1, 0, 1], [0, 1, 0], [0, 0, 0]]
    ds = PartialLabelDataset(cfg, known_proportion=0.5, seed=5)
    m = ds.known_mask
    for i, full in enumerate([[1, 0, 1], [0, 1, 0], [0, 0, 0]]):
        expect = np.where(m[i], full, -1)
        assert ds.get_data_info(i)['gt_score'].tolist() == expect.tolist()
        assert ds[i]['data_samples'].gt_score.tolist() == expect.tolist()


def test_voc_ignored_difficult_stays_unknown(tmp_path):
    root = build_voc(tmp_path / 'VOC2007')
    ds = PartialLabelDataset(
        dict(type='VOC2007MultiLabel', data_root=root, difficult_as='ignore'),
        known_proportion=1.0)
    cat = VOC2007MultiLabel.METAINFO['classes'].index('cat')
    assert ds.get_data_info(1)['gt_score'][cat] == -1


def test_refuses_test_sets(coco_root):
    with pytest.raises(ValueError, match='training sets only'):
        PartialLabelDataset(
            coco_cfg(coco_root, test_mode=True), known_proportion=0.5)


def test_lazy_init(coco_root):
    ds = PartialLabelDataset(
        coco_cfg(coco_root, lazy_init=True), 0.5, lazy_init=True)
    assert not ds._fully_initialized
    assert len(ds) == 4 and ds._fully_initialized


# ----------------------------------------------------------- mask files
def test_mask_file_saved_then_loaded(coco_root, tmp_path):
    path = str(tmp_path / 'out' / 'masks' / 'm.npy')
    before = tree_listing(coco_root)
    a = PartialLabelDataset(coco_cfg(coco_root), 0.5, seed=1, mask_file=path)
    assert osp.isfile(path)
    saved = np.load(path)
    assert saved.dtype == np.bool_ and np.array_equal(saved, a.known_mask)
    mtime = os.stat(path).st_mtime_ns
    # another seed: the existing file is loaded, never overwritten
    b = PartialLabelDataset(coco_cfg(coco_root), 0.5, seed=7, mask_file=path)
    assert np.array_equal(b.known_mask, saved)
    assert os.stat(path).st_mtime_ns == mtime
    assert tree_listing(coco_root) == before  # nothing in the dataset tree
    assert not [f for f in os.listdir(osp.dirname(path)) if f != 'm.npy']


@pytest.mark.parametrize('array,pattern', [
    (np.ones((5, 4), bool), '5 rows but the training set has 4 images'),
    (np.ones((4, 3), bool), r'shape \(4, 3\); expected \(4, 4\)'),
    (np.full((4, 4), 2.), r'values \[2.0\] found'),
    (np.ones((16, ), bool), r'shape \(16,\)'),
])
def test_mask_file_mismatch(coco_root, tmp_path, array, pattern):
    path = str(tmp_path / 'bad.npy')
    np.save(path, array)
    with pytest.raises(ValueError, match=pattern) as e:
        PartialLabelDataset(coco_cfg(coco_root), 0.5, mask_file=path)
    assert 'bad.npy' in str(e.value) and 'Fix' in str(e.value)
    assert np.array_equal(np.load(path), array)  # untouched


def test_mask_file_garbage(coco_root, tmp_path):
    path = tmp_path / 'garbage.npy'
    path.write_bytes(b'not numpy')
    with pytest.raises(ValueError, match='garbage.npy.*not a readable'):
        PartialLabelDataset(coco_cfg(coco_root), 0.5, mask_file=str(path))


@pytest.mark.parametrize(
    'rel', ['mask.npy', 'annotations/mask.npy', 'train2014/../mask.npy'])
def test_mask_file_inside_dataset_refused(coco_root, rel):
    before = tree_listing(coco_root)
    with pytest.raises(ValueError, match='never writes into a dataset tree'):
        PartialLabelDataset(
            coco_cfg(coco_root), 0.5, mask_file=osp.join(coco_root, rel))
    assert tree_listing(coco_root) == before


def test_save_mask_never_overwrites(coco_root, tmp_path):
    ds = PartialLabelDataset(coco_cfg(coco_root), 0.5, seed=0)
    path = str(tmp_path / 'm.npy')
    assert ds.check_mask_file(path) is False  # absent
    assert ds.save_mask(path) is True
    assert ds.check_mask_file(path) is True
    assert ds.save_mask(path) is False  # identical: kept (resume)
    other = PartialLabelDataset(coco_cfg(coco_root), 0.5, seed=1)
    assert not np.array_equal(other.known_mask, ds.known_mask)
    with pytest.raises(FileExistsError, match='m.npy.*refusing'):
        other.save_mask(path)
    with pytest.raises(FileExistsError):
        other.check_mask_file(path)  # what non-main ranks run
    assert np.array_equal(np.load(path), ds.known_mask)
    with pytest.raises(ValueError, match='dataset tree'):
        ds.save_mask(osp.join(coco_root, 'annotations', 'x.npy'))


@pytest.mark.parametrize('p', [np.int64(1), np.float32(0.5), np.float64(0.5),
                               np.int32(1)])
def test_numpy_scalar_proportion(coco_root, p):
    ds = PartialLabelDataset(coco_cfg(coco_root), known_proportion=p, seed=2)
    assert ds.known_proportion == float(p)
    assert isinstance(ds.known_proportion, float)
    assert np.array_equal(ds.known_mask,
                          make_known_mask(4, 4, float(p), seed=2))


def test_unseen_classes_match_up_to_case(coco_root):
    # classes: bicycle, airplane, dog, fire hydrant
    ds = PartialLabelDataset(
        coco_cfg(coco_root), 1.0, unseen_classes=['Dog', 'Fire_Hydrant'])
    assert not ds.known_mask[:, [2, 3]].any()
    assert ds.known_mask[:, [0, 1]].all()
    with pytest.raises(ValueError, match=r"unseen_classes \['unicorn'\] are "
                       'not among'):
        PartialLabelDataset(
            coco_cfg(coco_root), 1.0, unseen_classes=['dog', 'unicorn'])


def test_relative_ann_file_mask_not_written_into_dataset(
        tmp_path, monkeypatch):
    """``ann_file='train.csv'`` with the dataset folder as the working
    directory: ``osp.dirname`` gave ``''`` and the mask went into it."""
    from _builders import build_csv
    root = str(tmp_path / 'table')
    build_csv(root)
    before = tree_listing(root)
    monkeypatch.chdir(root)
    cfg = dict(type='MultiLabelCSVDataset', ann_file='train.csv',
               data_prefix='img', pipeline=PIPELINE)
    for path in ('mask.npy', osp.join('masks', 'm.npy'),
                 osp.join(root, 'img', 'm.npy')):
        with pytest.raises(ValueError,
                           match='never writes into a dataset tree'):
            PartialLabelDataset(cfg, 0.5, mask_file=path)
    assert tree_listing(root) == before
    out = str(tmp_path / 'work' / 'm.npy')
    ds = PartialLabelDataset(cfg, 0.5, mask_file=out)
    assert osp.isfile(out) and len(ds) == 3
    with pytest.raises(ValueError, match='dataset tree'):
        ds.save_mask('m2.npy')
    assert tree_listing(root) == before


def test_pipeline_warning_looks_through_the_held_out_split(coco_root,
                                                           tmp_path):
    """The clean protocol puts the pipeline a level deeper (HeldOutSplit):
    no warning there (before: every clean run warned that samples would
    not be loaded); an inner dataset without one is still named."""
    import io
    import logging

    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        PartialLabelDataset(dataset=dict(
            type='HeldOutSplit', dataset=coco_cfg(coco_root), part='train',
            split_file=str(tmp_path / 'split.json'), val_fraction=0.5,
            seed=0), known_proportion=0.5)
        assert 'no `pipeline`' not in stream.getvalue()
        bare = {k: v for k, v in coco_cfg(coco_root).items()
                if k != 'pipeline'}
        PartialLabelDataset(dataset=bare, known_proportion=0.5)
        assert 'PartialLabelDataset: the inner dataset has no `pipeline`' \
            in stream.getvalue()
    finally:
        logger.removeHandler(handler)


def test_a_mask_without_a_known_positive_is_warned(coco_root, tmp_path):
    """Before: logged at INFO among the statistics, and training went on
    with negatives only."""
    import io
    import logging

    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    full = PartialLabelDataset(dataset=coco_cfg(coco_root),
                               known_proportion=1.0)
    # every negative known, no positive
    mask = np.asarray(full.complete_targets) != 1
    np.save(tmp_path / 'mask.npy', mask)
    try:
        ds = PartialLabelDataset(dataset=coco_cfg(coco_root),
                                 known_proportion=0.5,
                                 mask_file=str(tmp_path / 'mask.npy'))
        assert ds.stats()['num_known_positives'] == 0
        assert ('PartialLabelDataset: none of the 6 positive labels is '
                'known') in stream.getvalue()
        assert 'training sees only negatives' in stream.getvalue()
    finally:
        logger.removeHandler(handler)
    assert 'only negatives' not in stream.getvalue().split('none of')[0]


def test_a_mask_without_a_known_negative_is_warned(coco_root, tmp_path,
                                                   mm_log):
    """Training would see only positives (e.g. a tri-state file whose
    negatives nobody filled in): warned, as the case without a known
    positive (before: INFO among the statistics)."""
    full = PartialLabelDataset(dataset=coco_cfg(coco_root),
                               known_proportion=1.0)
    assert 'no negative label is known' not in mm_log.getvalue()
    mask = np.asarray(full.complete_targets) == 1  # the positives only
    np.save(tmp_path / 'mask.npy', mask)
    ds = PartialLabelDataset(dataset=coco_cfg(coco_root),
                             known_proportion=0.5,
                             mask_file=str(tmp_path / 'mask.npy'))
    assert ds.stats()['num_known_negatives'] == 0
    msg = mm_log.getvalue()
    assert 'PartialLabelDataset: no negative label is known' in msg
    assert 'training sees only positives' in msg

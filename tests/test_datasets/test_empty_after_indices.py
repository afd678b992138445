# Copyright (c) mmcoop contributors. All rights reserved.
"""Every dataset type left without samples by ``indices`` (or its own
filters) is refused when loaded, naming the class, the file and the fix,
with or without ``serialize_data``: MMEngine's serializer fails on an empty
list with a bare numpy error, and an unserialized empty dataset would train
and validate on nothing."""
import pytest
from _builders import (build_coco, build_csv, build_nus_wide,
                       build_open_images, build_voc)

from mmcoop.datasets import (AnnotationError, COCO2014MultiLabel,
                             MultiLabelCSVDataset, MultiLabelJSONDataset,
                             NUSWIDEMultiLabel, OpenImagesMultiLabel,
                             VOC2007MultiLabel)


def coco(tmp_path, **kw):
    root = build_coco(tmp_path / 'coco', splits=('train', ), images=False)
    return COCO2014MultiLabel(root, split='train', **kw), \
        'instances_train2014.json'


def coco_json(tmp_path, **kw):
    root = build_coco(tmp_path / 'coco', splits=('train', ), images=False)
    return MultiLabelJSONDataset(
        'annotations/instances_train2014.json',
        data_root=root,
        data_prefix='train2014',
        check_images=False,
        **kw), 'instances_train2014.json'


def voc(tmp_path, **kw):
    root = build_voc(tmp_path / 'voc')
    return VOC2007MultiLabel(root, split='trainval', **kw), 'trainval.txt'


def csv(tmp_path, **kw):
    build_csv(tmp_path / 'csv')
    return MultiLabelCSVDataset(
        'train.csv', data_root=str(tmp_path / 'csv'), data_prefix='img',
        **kw), 'train.csv'


def nus_wide(tmp_path, **kw):
    root = build_nus_wide(tmp_path / 'nus')
    return NUSWIDEMultiLabel(root, **kw), 'TrainImagelist.txt'


def open_images(tmp_path, **kw):
    root = build_open_images(tmp_path / 'oi')
    return OpenImagesMultiLabel(root, split='train', **kw), \
        'train-annotations-human-imagelabels.csv'


BUILDERS = [coco, coco_json, voc, csv, nus_wide, open_images]


@pytest.mark.parametrize('serialize', [True, False])
@pytest.mark.parametrize('indices', [0, []])
@pytest.mark.parametrize('build', BUILDERS, ids=lambda b: b.__name__)
def test_no_samples_left_is_refused(tmp_path, build, indices, serialize):
    with pytest.raises(AnnotationError) as err:
        ds, _ = build(tmp_path, indices=indices, serialize_data=serialize)
        len(ds)  # a lazily initialised dataset loads here
    msg = str(err.value)
    name = build(tmp_path)[1]
    assert 'no samples left' in msg and f'indices={indices!r}' in msg
    assert name in msg and 'Fix' in msg


@pytest.mark.parametrize('build', BUILDERS, ids=lambda b: b.__name__)
def test_one_sample_left_loads(tmp_path, build):
    ds, _ = build(tmp_path, indices=1)
    assert len(ds) == 1 and ds.get_data_info(0)['img_path']


@pytest.mark.parametrize('indices, words', [
    ([0, 99], 'indices[1] is 99, but the dataset has'),
    ([-99], 'indices[0] is -99, but the dataset has'),
    ([0.5], 'indices[0] is 0.5 (float), not an integer'),
    ([True], 'indices[0] is True (bool), not an integer'),
    ('0', "indices='0' is not an int or a list of ints"),
])
@pytest.mark.parametrize('build', BUILDERS, ids=lambda b: b.__name__)
def test_bad_indices_are_refused(tmp_path, build, indices, words):
    """Not MMEngine's bare IndexError / TypeError, nor an index silently
    truncated to an int (Open Images took ``[0.5]`` as ``[0]``)."""
    with pytest.raises(ValueError) as err:
        ds, _ = build(tmp_path, indices=indices)
        len(ds)
    msg = str(err.value)
    assert words in msg and build(tmp_path)[1] in msg and 'Fix' in msg


@pytest.mark.parametrize('build', BUILDERS, ids=lambda b: b.__name__)
def test_negative_int_indices_keep_the_last_samples(tmp_path, build):
    """MMEngine's meaning of a negative int (the last N samples) for every
    dataset; Open Images kept all but the last N."""
    full, _ = build(tmp_path)
    ds, _ = build(tmp_path, indices=-1)
    assert len(ds) == 1
    assert ds.get_data_info(0)['img_path'] == full.get_data_info(
        len(full) - 1)['img_path']

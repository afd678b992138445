# Copyright (c) mmcoop contributors. All rights reserved.
import json
import os.path as osp
import random

import numpy as np
import pytest
from _builders import build_coco, coco_content, write_json
from _common import tree_listing

from mmcoop.datasets import (COCO2014_CATEGORIES, COCO2014_CATEGORY_IDS,
                             AnnotationError, COCO2014MultiLabel)
from mmcoop.registry import DATASETS

FILE_CLASSES = ('bicycle', 'airplane', 'dog', 'fire hydrant')


def test_official_class_list():
    # the official DualCoOp list (coco_detection.py), spot-checked
    assert len(COCO2014_CATEGORIES) == 80 == len(set(COCO2014_CATEGORIES))
    assert COCO2014_CATEGORIES[:5] == ('person', 'bicycle', 'car',
                                       'motorcycle', 'airplane')
    assert COCO2014_CATEGORIES[62] == 'tv'
    assert COCO2014_CATEGORIES[57] == 'couch'
    assert COCO2014_CATEGORIES[-2:] == ('hair drier', 'toothbrush')
    assert list(COCO2014_CATEGORY_IDS) == sorted(COCO2014_CATEGORY_IDS)
    assert len(COCO2014_CATEGORY_IDS) == 80 and COCO2014_CATEGORY_IDS[-1] == 90
    assert COCO2014MultiLabel.METAINFO['classes'] == COCO2014_CATEGORIES


def test_class_order_filter_and_targets(coco_root):
    ds = DATASETS.build(
        dict(type='COCO2014MultiLabel', data_root=coco_root, split='train'))
    # file categories are not COCO's -> the file's names, sorted by id
    assert ds.CLASSES == FILE_CLASSES
    # image 13 has no annotation; order = first annotation (official)
    assert [ds.get_data_info(i)['img_id'] for i in range(len(ds))] == \
        [12, 10, 14, 11]
    assert ds.num_images_total == 5
    expected = {12: [0, 2], 10: [0, 1], 14: [3], 11: [0]}
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        labels = expected[info['img_id']]
        assert info['gt_label'] == labels
        assert ds.get_cat_ids(i) == labels
        assert info['gt_score'].dtype == np.float32
        assert info['gt_score'].shape == (4, )
        assert np.flatnonzero(info['gt_score']).tolist() == labels
        assert set(np.unique(info['gt_score'])) <= {0., 1.}
        assert info['img_path'] == osp.join(
            coco_root, 'train2014',
            f'COCO_train2014_{info["img_id"]:012d}.jpg')


def test_image_classes_keep_the_images_of_a_class_subset(coco_root):
    """DualCoOp's zero-shot files hold one class subset's annotations, so
    their images are those with an object of it (the COCO 48/17 training
    set: a seen object); every image was used before."""
    # FILE_CLASSES: bicycle, airplane, dog, fire hydrant; images 12: 0, 2,
    # 10: 0, 1, 14: 3, 11: 0
    ds = COCO2014MultiLabel(coco_root, image_classes=['airplane', 'Dog'])
    assert [ds.get_data_info(i)['img_id'] for i in range(len(ds))] == \
        [12, 10]  # the file's order; all labels kept
    assert ds.get_data_info(0)['gt_label'] == [0, 2]
    with pytest.raises(ValueError, match='image_classes'):
        COCO2014MultiLabel(coco_root, image_classes=['unicorn'])


def test_val_split_and_keep_empty(coco_root):
    ds = COCO2014MultiLabel(coco_root, split='val', filter_empty=False)
    assert [ds.get_data_info(i)['img_id'] for i in range(len(ds))] == \
        [10, 11, 12, 13, 14]
    assert ds.get_data_info(3)['gt_label'] == []
    assert ds.get_data_info(3)['gt_score'].sum() == 0
    assert '/val2014/' in ds.get_data_info(0)['img_path']


def test_real_coco_categories_keep_official_names(tmp_path):
    """80 COCO categories, shuffled in the file: the default (official)
    class list is kept and category ids map by sorted id."""
    cats = [
        dict(id=i, name=n, supercategory='s')
        for i, n in zip(COCO2014_CATEGORY_IDS, COCO2014_CATEGORIES)
    ]
    random.Random(0).shuffle(cats)
    data = dict(
        images=[dict(id=1, file_name='a.jpg'),
                dict(id=2, file_name='b.jpg')],
        annotations=[
            dict(id=1, image_id=1, category_id=90),  # toothbrush -> 79
            dict(id=2, image_id=1, category_id=13),  # stop sign -> 11
            dict(id=3, image_id=2, category_id=1),  # person -> 0
        ],
        categories=cats)
    root = build_coco(
        tmp_path / 'c', splits=('train', ), content=data, images=False)
    ds = COCO2014MultiLabel(root, split='train')
    assert ds.CLASSES == COCO2014_CATEGORIES
    assert ds.get_data_info(0)['gt_label'] == [11, 79]
    assert ds.get_data_info(1)['gt_label'] == [0]
    assert ds.get_data_info(0)['gt_score'].shape == (80, )


def test_explicit_classes(coco_root):
    # matching up to case / underscores
    ds = COCO2014MultiLabel(
        coco_root, classes=['Bicycle', 'airplane', 'dog', 'fire_hydrant'])
    assert ds.CLASSES == ('Bicycle', 'airplane', 'dog', 'fire_hydrant')
    # other prompt wording needs strict_class_names=False
    words = ['bike', 'plane', 'puppy', 'hydrant']
    with pytest.raises(AnnotationError, match='strict_class_names=False'):
        COCO2014MultiLabel(coco_root, classes=words)
    ds = COCO2014MultiLabel(coco_root, classes=words, strict_class_names=False)
    assert ds.CLASSES == tuple(words)
    # wrong length: always an error, naming the file and both counts
    with pytest.raises(AnnotationError) as e:
        COCO2014MultiLabel(
            coco_root, classes=['a', 'b', 'c'], strict_class_names=False)
    assert 'instances_train2014.json' in str(e.value)
    assert '4 categories' in str(e.value) and 'given 3' in str(e.value)
    # wrong order is a mismatch too
    with pytest.raises(AnnotationError, match="#0: 'airplane' vs 'bicycle'"):
        COCO2014MultiLabel(
            coco_root, classes=['airplane', 'bicycle', 'dog', 'fire hydrant'])
    # ... also with own wording allowed: the file's names at other
    # positions (before: accepted, each class with another's labels)
    for moved in (['dog', 'fire hydrant', 'bicycle', 'airplane'],
                  ['bike', 'Dog', 'plane', 'hydrant']):
        with pytest.raises(AnnotationError, match=(
                r'instances_train2014\.json: the given classes name '
                r"categories of the file at other positions \(.*'[Dd]og' "
                r"given as class [01], the file's category 2")):
            COCO2014MultiLabel(coco_root, classes=moved,
                               strict_class_names=False)
    # a file name at its own position with own wording elsewhere: fine
    assert COCO2014MultiLabel(
        coco_root, classes=['bicycle', 'plane', 'dog', 'hydrant'],
        strict_class_names=False).CLASSES[2] == 'dog'
    # metainfo classes count as explicit
    with pytest.raises(AnnotationError, match="#0: 'w' vs 'bicycle'"):
        COCO2014MultiLabel(coco_root, metainfo=dict(classes=list('wxyz')))
    # and are checked as a class list (the head would refuse them later)
    with pytest.raises(ValueError, match=r"COCO2014MultiLabel\.metainfo\."
                       r"classes has duplicates: \[\['x', 'x', 'x', 'x'\]\]"):
        COCO2014MultiLabel(coco_root, metainfo=dict(classes=['x'] * 4))


def test_missing_file_and_bad_split(tmp_path):
    with pytest.raises(FileNotFoundError, match='instances_train2014.json'):
        COCO2014MultiLabel(str(tmp_path), split='train')
    with pytest.raises(ValueError, match='split'):
        COCO2014MultiLabel(str(tmp_path), split='test')


def _bad(tmp_path, mutate):
    data = coco_content()
    mutate(data)
    return build_coco(
        tmp_path / 'bad', splits=('train', ), content=data, images=False)


BAD_CASES = [
    ('missing_key', lambda d: d.pop('annotations'), "'annotations'"),
    ('images_not_list', lambda d: d.update(images={}), "'images' must be"),
    ('image_id_str', lambda d: d['images'][1].update(id='11'),
     r'images\[1\]\.id must be an integer'),
    ('no_file_name', lambda d: d['images'][0].pop('file_name'),
     r'images\[0\]'),
    ('dup_image',
     lambda d: d['images'].append(dict(id=12, file_name='other.jpg')),
     'duplicate image id 12'),
    ('unknown_cat', lambda d: d['annotations'][2].update(category_id=99),
     'category_id=99'),
    ('cat_id_str', lambda d: d['annotations'][0].update(category_id='7'),
     'category_id must be an integer'),
    ('missing_image', lambda d: d['annotations'][1].update(image_id=555),
     'image_id=555'),
    ('ann_no_cat', lambda d: d['annotations'][0].pop('category_id'),
     r"annotations\[0\] lacks \['category_id'\]"),
    ('dup_cat', lambda d: d['categories'].append(dict(id=7, name='cat')),
     'duplicate category id 7'),
    ('cat_no_name', lambda d: d['categories'][0].pop('name'), "has no 'name'"),
    ('no_annotations', lambda d: d.update(annotations=[]),
     'no image has an annotation'),
    ('empty_categories', lambda d: d.update(categories=[]),
     '"categories" is empty'),
]


@pytest.mark.parametrize(
    'name,mutate,pattern', BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_annotations(tmp_path, name, mutate, pattern):
    root = _bad(tmp_path, mutate)
    before = tree_listing(root)
    with pytest.raises(AnnotationError, match=pattern) as e:
        COCO2014MultiLabel(root, split='train')
    msg = str(e.value)
    assert 'instances_train2014.json' in msg  # names the file
    assert 'Fix' in msg  # and a fix
    assert tree_listing(root) == before  # nothing written


def test_malformed_json(tmp_path):
    text = json.dumps(coco_content())
    root = build_coco(
        tmp_path / 'm',
        splits=('train', ),
        content=text[:len(text) // 2],
        images=False)
    with pytest.raises(AnnotationError) as e:
        COCO2014MultiLabel(root)
    assert 'instances_train2014.json' in str(e.value)
    assert 'not valid JSON' in str(e.value) and 'line 1' in str(e.value)
    write_json(
        osp.join(root, 'annotations', 'instances_train2014.json'), '[1, 2]')
    with pytest.raises(AnnotationError, match='top level'):
        COCO2014MultiLabel(root)


@pytest.mark.parametrize('entry, looks', [
    (dict(id=1, file_name='x.jpg', height=4, width=4),
     "one image record ({'id': 1, 'file_name': 'x.jpg'})"),
    (dict(id=5, image_id=1, category_id=7, bbox=[0, 0, 1, 1]),
     'one annotation (an object with "image_id" and "category_id")'),
])
def test_one_entry_instead_of_the_file_is_named(tmp_path, entry, looks):
    """An image record as the whole file was "missing top-level key
    'images' (found ['file_name', 'id'])", an annotation "must be a JSON
    object, got tuple"."""
    root = build_coco(
        tmp_path / 'one', splits=('train', ), content=entry, images=False)
    with pytest.raises(AnnotationError) as e:
        COCO2014MultiLabel(root)
    msg = str(e.value)
    assert msg.startswith(osp.join(root, 'annotations',
                                   'instances_train2014.json'))
    assert f'the top level is {looks}, not a COCO instances file' in msg
    assert 'the lists "images", "annotations" and "categories"' in msg
    assert 'Fix: give the whole annotation file as ann_file' in msg


def test_lazy_init_and_pipeline(coco_root):
    ds = COCO2014MultiLabel(
        coco_root,
        lazy_init=True,
        pipeline=[
            dict(type='LoadImageFromFileChecked'),
            dict(type='PackInputs')
        ])
    assert ds.CLASSES == COCO2014_CATEGORIES  # default before loading
    out = ds[1]
    assert ds.CLASSES == FILE_CLASSES
    assert tuple(out['inputs'].shape) == (3, 30, 40)
    assert out['data_samples'].gt_score.tolist() == [1., 1., 0., 0.]
    assert out['data_samples'].gt_label.tolist() == [0, 1]

# Copyright (c) mmcoop contributors. All rights reserved.
import os
import os.path as osp

import numpy as np
import pytest
from _builders import build_voc, voc_xml
from _common import tree_listing
from mmpretrain.datasets import VOC

from mmcoop.datasets import (VOC2007_CATEGORIES, AnnotationError,
                             VOC2007MultiLabel)
from mmcoop.registry import DATASETS

C = VOC2007_CATEGORIES.index


def test_official_class_list():
    # official pascal_voc.py names == mmpretrain's VOC2007_CATEGORIES
    assert VOC2007MultiLabel.METAINFO['classes'] == VOC2007_CATEGORIES
    assert VOC.METAINFO['classes'] == VOC2007_CATEGORIES
    assert VOC2007_CATEGORIES[10] == 'diningtable'
    assert VOC2007_CATEGORIES[-1] == 'tvmonitor'


@pytest.mark.parametrize('difficult_as,value', [('negative', 0.),
                                                ('ignore', -1.),
                                                ('positive', 1.)])
def test_difficult_protocols(voc_root, difficult_as, value):
    ds = DATASETS.build(
        dict(
            type='VOC2007MultiLabel',
            data_root=voc_root,
            split='trainval',
            difficult_as=difficult_as))
    assert len(ds) == 2
    # 000001: dog, person (+ a difficult person -> still positive)
    a = ds.get_data_info(0)
    assert a['gt_label'] == [C('dog'), C('person')]
    assert np.flatnonzero(a['gt_score']).tolist() == [C('dog'), C('person')]
    assert a['gt_score'].dtype == np.float32 and a['gt_score'].shape == (20, )
    # 000002: chair, plus a difficult-only cat
    b = ds.get_data_info(1)
    assert b['gt_score'][C('chair')] == 1
    assert b['gt_score'][C('cat')] == value
    assert b['gt_label_difficult'] == [C('cat')]
    expected = [C('chair')] + ([C('cat')] if value == 1 else [])
    assert b['gt_label'] == sorted(expected)
    others = np.delete(b['gt_score'], [C('chair'), C('cat')])
    assert (others == 0).all()
    assert b['img_path'] == osp.join(voc_root, 'JPEGImages', '000002.jpg')


def test_test_split(voc_root):
    ds = VOC2007MultiLabel(voc_root, split='test', test_mode=True)
    info = ds.get_data_info(0)
    # car (with a difficult car too) positive, bus difficult-only -> 0
    assert info['gt_label'] == [C('car')]
    assert info['gt_score'][C('bus')] == 0
    assert info['gt_label_difficult'] == [C('bus'), C('car')]


def test_missing_difficult_tag_is_not_difficult(tmp_path):
    root = build_voc(
        tmp_path / 'v',
        objects={'000001': []},
        splits={'trainval': ['000001']})
    with open(osp.join(root, 'Annotations', '000001.xml'), 'w') as f:
        f.write(voc_xml([('horse', 1)], missing_difficult=True))
    ds = VOC2007MultiLabel(root, difficult_as='ignore')
    assert ds.get_data_info(0)['gt_label'] == [C('horse')]


def test_unknown_class_name(tmp_path):
    root = build_voc(
        tmp_path / 'v',
        objects={'000001': [('dog', 0), ('unicorn', 0)]},
        splits={'trainval': ['000001']})
    before = tree_listing(root)
    with pytest.raises(AnnotationError) as e:
        VOC2007MultiLabel(root)
    msg = str(e.value)
    assert '000001.xml' in msg and "'unicorn'" in msg and 'Fix' in msg
    assert tree_listing(root) == before
    # mmpretrain's VOC silently drops it
    assert VOC(root, split='trainval').get_data_info(0)['gt_label'] == \
        [C('dog')]


def test_empty_split_and_missing_files(tmp_path, voc_root):
    root = build_voc(tmp_path / 'e', splits={'trainval': []})
    with pytest.raises(AnnotationError, match='trainval.txt.*empty'):
        VOC2007MultiLabel(root)
    with pytest.raises(FileNotFoundError, match='val.txt'):
        VOC2007MultiLabel(voc_root, split='val')
    os.remove(osp.join(voc_root, 'Annotations', '000002.xml'))
    with pytest.raises(FileNotFoundError, match='000002.xml'):
        VOC2007MultiLabel(voc_root)


def test_malformed_xml_and_bad_args(voc_root):
    with open(osp.join(voc_root, 'Annotations', '000001.xml'), 'w') as f:
        f.write('<annotation><object><name>dog</name>')
    with pytest.raises(AnnotationError, match='000001.xml.*malformed XML'):
        VOC2007MultiLabel(voc_root)
    with pytest.raises(ValueError, match='difficult_as'):
        VOC2007MultiLabel(voc_root, difficult_as='drop')


@pytest.mark.parametrize('value', ['2', '-1', 'yes', ' '])
def test_bad_difficult_value(tmp_path, value):
    root = build_voc(
        tmp_path / 'v',
        objects={'000001': [('dog', 0), ('cat', value)]},
        splits={'trainval': ['000001']})
    before = tree_listing(root)
    with pytest.raises(AnnotationError) as e:
        VOC2007MultiLabel(root)
    msg = str(e.value)
    assert '000001.xml: <object> #1 (cat)' in msg
    assert f'<difficult>{value}</difficult>; expected 0 or 1' in msg
    assert tree_listing(root) == before


def test_difficult_with_spaces_is_read(tmp_path):
    root = build_voc(
        tmp_path / 'v',
        objects={'000001': [('dog', ' 0 '), ('cat', '\n1\n')]},
        splits={'trainval': ['000001']})
    info = VOC2007MultiLabel(root, difficult_as='ignore').get_data_info(0)
    assert info['gt_label'] == [C('dog')]
    assert info['gt_label_difficult'] == [C('cat')]


def test_folder_and_non_utf8_inputs(voc_root):
    xml = osp.join(voc_root, 'Annotations', '000002.xml')
    os.remove(xml)
    os.makedirs(xml)
    with pytest.raises(AnnotationError, match=r'000002.xml: is a folder'):
        VOC2007MultiLabel(voc_root)
    image_set = osp.join(voc_root, 'ImageSets', 'Main', 'test.txt')
    with open(image_set, 'wb') as f:
        f.write(b'00000\xb3\n')
    with pytest.raises(AnnotationError, match=r'test.txt: not UTF-8'):
        VOC2007MultiLabel(voc_root, split='test')

# Copyright (c) mmcoop contributors. All rights reserved.
"""``~`` in the paths a dataset config names is the user's home folder, for
every dataset and the partial-label mask file."""
import os.path as osp

import numpy as np
import pytest
from _builders import build_coco, build_voc

from mmcoop.datasets import (COCO2014MultiLabel, PartialLabelDataset,
                             VOC2007MultiLabel)


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / 'home'
    home.mkdir()
    monkeypatch.setenv('HOME', str(home))
    return home


def test_coco_and_voc_data_root(home, tmp_path):
    build_coco(home / 'coco')
    build_voc(home / 'VOC2007')
    coco = COCO2014MultiLabel('~/coco', split='train')
    reference = COCO2014MultiLabel(str(home / 'coco'), split='train')
    assert len(coco) == len(reference) > 0
    assert coco.get_data_info(0)['img_path'] == \
        reference.get_data_info(0)['img_path']
    assert coco.get_data_info(0)['img_path'].startswith(str(home))
    voc = VOC2007MultiLabel('~/VOC2007', split='trainval')
    assert len(voc) == 2
    assert voc.get_data_info(0)['img_path'].startswith(str(home))
    # ann_file and data_prefix too
    ann = osp.join('~', 'coco', 'annotations', 'instances_val2014.json')
    val = COCO2014MultiLabel(
        split='val', ann_file=ann, data_prefix='~/coco/val2014')
    assert len(val) > 0 and val.get_data_info(0)['img_path'].startswith(
        str(home / 'coco' / 'val2014'))


def test_mask_file(home):
    build_coco(home / 'coco')
    ds = PartialLabelDataset(
        dict(type='COCO2014MultiLabel', data_root='~/coco', split='train'),
        known_proportion=0.5,
        mask_file='~/masks/coco_p50.npy')
    assert ds.mask_file == str(home / 'masks' / 'coco_p50.npy')
    assert np.array_equal(
        np.load(home / 'masks' / 'coco_p50.npy'), ds.known_mask)


def test_unexpandable_home_is_named():
    with pytest.raises(ValueError, match=r'COCO2014MultiLabel.data_root='
                       r"'~no_such_user_x9/coco'.*full path"):
        COCO2014MultiLabel('~no_such_user_x9/coco')

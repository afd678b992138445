# Copyright (c) mmcoop contributors. All rights reserved.
import pytest
from _builders import build_coco, build_voc


@pytest.fixture
def coco_root(tmp_path):
    """A tiny COCO-2014 tree (train and val, 4 categories, JPEGs)."""
    return build_coco(tmp_path / 'coco')


@pytest.fixture
def voc_root(tmp_path):
    """A tiny VOC2007 tree (trainval: 000001, 000002; test: 000003)."""
    return build_voc(tmp_path / 'VOC2007')

# Copyright (c) mmcoop contributors. All rights reserved.
import os.path as osp
import sys

HERE = osp.dirname(osp.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import pytest  # noqa: E402


@pytest.fixture(scope='session')
def tiny_assets(tmp_path_factory):
    """Generated COCO-format data (8 train / 4 val images of 32 px, 8
    classes) and tiny CLIP weights, shared read-only by the tests that
    start short runs (copy the data before changing it)."""
    from _helpers import make_data, save_tiny_clip
    tmp = tmp_path_factory.mktemp('tiny_assets')
    data_root, classes = make_data(
        tmp / 'data', num_train=8, num_val=4, image_size=32)
    clip = save_tiny_clip(tmp / 'clip.pt')
    return dict(data_root=data_root, classes=classes, clip=clip)

# Copyright (c) mmcoop contributors. All rights reserved.
import json
import os.path as osp

import numpy as np
import pytest
from _perf_helpers import CLASSES, NUM_IMAGES
from PIL import Image


@pytest.fixture(scope='session')
def image_root(tmp_path_factory):
    """6 noise JPEGs of assorted sizes and a MultiLabelDataset annotation."""
    root = tmp_path_factory.mktemp('images')
    rng = np.random.default_rng(0)
    data_list = []
    for i in range(NUM_IMAGES):
        h, w = 40 + 4 * i, 56 - 2 * i
        arr = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(osp.join(root, f'img{i}.jpg'), quality=90)
        labels = sorted({i % 3, (i * 2) % 3} if i % 2 else {i % 3})
        data_list.append(dict(img_path=f'img{i}.jpg', gt_label=labels))
    with open(osp.join(root, 'ann.json'), 'w') as f:
        json.dump(dict(metainfo=dict(classes=CLASSES), data_list=data_list), f)
    return str(root)


@pytest.fixture(autouse=True)
def _plain_cpu_convolutions():
    """Use PyTorch's native CPU convolutions in these tests: oneDNN compiles
    a kernel per new input shape (~1 s each for the tiny towers here), which
    would dominate the run time. Semantics are unchanged."""
    import torch
    enabled = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    yield
    torch.backends.mkldnn.enabled = enabled

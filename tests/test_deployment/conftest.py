# Copyright (c) mmcoop contributors. All rights reserved.
"""Shared fixtures of the deployment tests: "trained" tiny models of every
method, the demo model checkpoint, generated images, the run_onnx tool."""
import os.path as osp

import numpy as np
import pytest
import torch
from _deploy_helpers import (DEMO_CONFIG, ROOT, calibrate_batchnorm,
                             tiny_method_config, train_head)
from PIL import Image

from mmcoop.apis import init_model


@pytest.fixture(scope='session')
def run_onnx(load_tool):
    """``tools/deployment/run_onnx.py`` as a module."""
    return load_tool('tools/deployment/run_onnx.py')


@pytest.fixture(scope='session')
def export_tool(load_tool):
    """``tools/deployment/export.py`` as a module."""
    return load_tool('tools/deployment/export.py')


@pytest.fixture(scope='session')
def method_models():
    """method -> "trained" tiny model (built once per session)."""
    cache = {}

    def get(method):
        if method not in cache:
            model = init_model(tiny_method_config(method))
            calibrate_batchnorm(model)
            cache[method] = train_head(model)
        return cache[method]

    return get


@pytest.fixture(scope='session')
def images(tmp_path_factory):
    """PNG files of several sizes and modes (RGB, grey, RGBA), coloured
    so that channel order matters."""
    root = tmp_path_factory.mktemp('deploy_images')
    rng = np.random.default_rng(0)
    paths = []
    specs = [((50, 70), 'RGB'), ((64, 64), 'RGB'), ((91, 37), 'L'),
             ((120, 80), 'RGBA')]
    for i, ((h, w), mode) in enumerate(specs):
        arr = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
        arr[..., i % 3] //= 4  # a dominant colour per image
        img = Image.fromarray(arr, 'RGBA').convert(mode)
        path = str(root / f'img{i}_{mode}.png')
        img.save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope='session')
def demo_checkpoint(tmp_path_factory):
    """``(config, checkpoint)`` of the demo model (tiny ViT, 96 px) with a
    "trained" head, as tools/train.py would save it (head only)."""
    root = tmp_path_factory.mktemp('demo_ckpt')
    config = osp.join(ROOT, DEMO_CONFIG)
    model = train_head(init_model(config))
    ckpt = str(root / 'demo_head.pth')
    torch.save(
        {
            'state_dict': model.state_dict(),
            'meta': {
                'dataset_meta': model.dataset_meta
            }
        }, ckpt)
    return config, ckpt

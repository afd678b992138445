# Copyright (c) mmcoop contributors. All rights reserved.
"""Config interpretation in ``MMCoopRunner.from_cfg`` (every launcher
behaves the same) and issue #12.4/#12.6/#13.5: config mistakes are named
before training starts, nothing is written into a dataset folder."""
import os
import os.path as osp

import pytest
from _helpers import base_cfg, make_data, save_tiny_clip, write_config
from mmengine.config import Config


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('cfgmistakes')
    data_root, classes = make_data(
        tmp / 'data', num_train=8, num_val=4, image_size=32)
    clip = save_tiny_clip(tmp / 'clip.pt')
    return dict(tmp=tmp, data_root=data_root, classes=classes, clip=clip)


def _cfg(setup, tmp_path, name='c.py', **over):
    s = base_cfg(setup['data_root'], setup['clip'], setup['classes'],
                 max_epochs=1, size=32)
    s['randomness'] = dict(seed=0)
    s.update(over)
    cfg = Config.fromfile(write_config(tmp_path / name, s))
    cfg.work_dir = str(tmp_path / 'work')
    return cfg


def test_every_launcher_applies_the_feature_cache(setup, tmp_path):
    """`RUNNERS.build` (tools, mim) and `MMCoopRunner.from_cfg` (notebooks)
    interpret `feature_cache` the same way; the config is not modified."""
    from mmcoop.engine import MMCoopRunner
    from mmcoop.registry import RUNNERS
    cfg = _cfg(setup, tmp_path, feature_cache=dict(dtype='float32'))
    before = cfg.to_dict()
    for build in (RUNNERS.build, MMCoopRunner.from_cfg):
        runner = build(cfg)
        assert type(runner.model.backbone).__name__ == 'PrecomputedFeatures'
        assert runner.cfg.train_dataloader.dataset.type.endswith(
            'CachedFeatureDataset')
    assert cfg.to_dict() == before

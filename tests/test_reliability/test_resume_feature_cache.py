# Copyright (c) mmcoop contributors. All rights reserved.
"""Issue #6.1 with the frozen-feature cache (``mmcoop/datasets/
feature_cache/``): a run that trains from cached CLIP features (2 cached
augmentation views read through ``EpochSeededSampler``) is SIGKILLed
mid-epoch and resumed; the resumed run reuses the cache written by the
killed run (not rebuilt, files untouched) and ends with the same parameters
and metrics as an uninterrupted run."""
import os

import pytest
import torch
from _helpers import (base_cfg, finish, load_ckpt, make_data, save_tiny_clip,
                      tool, train_records, train_until_killed,
                      tree_fingerprint, val_metrics, write_config)

from mmcoop.datasets.feature_cache import apply_feature_cache

EPOCHS = 3
ITERS = 12


def _cache_config(tmp, name, settings):
    from mmengine.config import Config
    raw = write_config(
        tmp / f'{name}_raw.py',
        dict(
            settings,
            feature_cache=dict(
                cache_root=str(tmp / name / 'feature_cache'),
                num_views=2,
                dtype='float32',
                progress=False)),
        extra_imports=['_killpoint', 'mmcoop.datasets.feature_cache'])
    cfg = apply_feature_cache(Config.fromfile(raw))
    assert cfg.model.backbone.type == 'mmcoop.PrecomputedFeatures'
    assert cfg.train_dataloader.sampler.type == 'mmcoop.EpochSeededSampler'
    path = str(tmp / f'{name}.py')
    cfg.dump(path)
    return path


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('resume_fc')
    data_root, classes = make_data(tmp / 'data')
    clip = save_tiny_clip(tmp / 'tiny_clip.pt')
    settings = base_cfg(data_root, clip, classes, max_epochs=EPOCHS)
    settings['custom_hooks'] = settings['custom_hooks'] + [
        dict(type='KillPointHook', epoch=2, batch=5)
    ]
    cfg_full = _cache_config(tmp, 'full', settings)
    cfg_killed = _cache_config(tmp, 'killed', settings)
    marker = tmp / 'parked'
    logs = {k: str(tmp / f'{k}.log') for k in ('full', 'killed', 'resumed')}
    p_full = tool(
        'train', cfg_full, '--work-dir', tmp / 'full', log=logs['full'])
    train_until_killed(
        cfg_killed, tmp / 'killed', logs['killed'], marker, timeout=120)
    cache = tmp / 'killed' / 'feature_cache'
    cache_before = tree_fingerprint(cache)
    p_res = tool(
        'train',
        cfg_killed,
        '--work-dir',
        tmp / 'killed',
        '--resume',
        log=logs['resumed'])
    texts = {}
    for name, proc in (('full', p_full), ('resumed', p_res)):
        rc, text = finish(proc, logs[name], timeout=180)
        assert rc == 0, f'{name} failed:\n{text[-3000:]}'
        texts[name] = text
    return dict(tmp=tmp, logs=texts, cache=cache, cache_before=cache_before)


def test_cache_survives_and_is_reused(runs):
    caches = os.listdir(runs['cache'])
    assert len(caches) == 2  # train (2 views) and val
    assert runs['logs']['resumed'].count('reusing') == 2
    assert 'extracting' not in runs['logs']['resumed']
    assert tree_fingerprint(runs['cache']) == runs['cache_before']


def test_resumed_equals_uninterrupted(runs):
    tmp = runs['tmp']
    full = load_ckpt(tmp / 'full' / f'epoch_{EPOCHS}.pth')
    resumed = load_ckpt(tmp / 'killed' / f'epoch_{EPOCHS}.pth')
    for key, value in full['state_dict'].items():
        assert torch.equal(value, resumed['state_dict'][key]), key
    assert full['param_schedulers'] == resumed['param_schedulers']
    f_rec, r_rec = train_records(tmp / 'full'), train_records(tmp / 'killed')
    for step in range(ITERS + 1, EPOCHS * ITERS + 1):
        assert f_rec[step] == r_rec[step], step
    assert val_metrics(tmp / 'full')[EPOCHS] == \
        val_metrics(tmp / 'killed')[EPOCHS]

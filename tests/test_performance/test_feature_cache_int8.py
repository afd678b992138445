# Copyright (c) mmcoop contributors. All rights reserved.
"""8-bit feature-cache storage: error bound, logits, checksums, options."""
import json

import numpy as np
import pytest
import torch
from _perf_helpers import (NUM_IMAGES, build_backbone, clip_preprocessor_cfg,
                           head_cfg, make_dataset)
from mmengine.dataset import pseudo_collate
from mmpretrain.models import ImageClassifier

from mmcoop.datasets.feature_cache import (MANIFEST, CachedFeatureDataset,
                                           FeatureCacheMismatchError,
                                           apply_feature_cache)
from mmcoop.datasets.feature_cache.quantize import dequantize, quantize
from mmcoop.registry import MODELS


def _cache(dataset, backbone, cache_dir, **kwargs):
    kwargs.setdefault('progress', False)
    return CachedFeatureDataset(
        dataset,
        backbone,
        str(cache_dir),
        data_preprocessor=clip_preprocessor_cfg(),
        **kwargs)


def test_round_trip_error_is_at_most_half_a_step():
    rng = np.random.default_rng(0)
    # (B, D, N) with token magnitudes from 1e-3 to 1e3, one zero token
    x = rng.standard_normal((3, 48, 20)) * np.logspace(-3, 3, 20)
    x[1, :, 4] = 0.0
    x = x.astype(np.float32)
    q, scale = quantize(x)
    assert q.dtype == np.int8 and q.shape == x.shape
    assert scale.dtype == np.float32 and scale.shape == (3, 20)
    # the step of token n is max_d |x[d, n]| / 127 (derivation in
    # mmcoop/datasets/feature_cache/quantize.py), here in float64
    step = np.abs(x.astype(np.float64)).max(axis=1) / 127
    np.testing.assert_allclose(scale, step, rtol=1e-6)
    err = np.abs(dequantize(q, scale).astype(np.float64) - x)
    half = np.broadcast_to(step[:, None, :] / 2, x.shape)
    assert (err <= half * (1 + 1e-5)).all()
    # the bound is tight (some element sits almost half a step away) ...
    nonzero = half > 0
    assert (err[nonzero] / half[nonzero]).max() > 0.95
    # ... the grid is symmetric and used in full, and zeros stay exact
    assert np.abs(q).max() == 127 and q.min() >= -127
    assert (np.abs(q).max(axis=1)[step > 0] == 127).all()
    assert (dequantize(q, scale)[1, :, 4] == 0).all()


def test_int8_cache_serves_features_and_logits_within_the_bound(
        image_root, tmp_path):
    dataset, backbone = make_dataset(image_root), build_backbone()
    c32 = _cache(dataset, backbone, tmp_path / 'c32', dtype='float32')
    c8 = _cache(dataset, backbone, tmp_path / 'c8', dtype='int8')
    f32 = torch.stack([c32.read(i) for i in range(NUM_IMAGES)])
    f8 = torch.stack([c8.read(i) for i in range(NUM_IMAGES)])
    assert f8.dtype == torch.float32 and f8.shape == f32.shape
    # per element: at most half a step of its token (max over D / 254)
    bound = f32.abs().amax(dim=1, keepdim=True) / 254
    assert ((f8 - f32).abs() <= bound * (1 + 1e-5) + 1e-7).all()
    assert not torch.equal(f8, f32)
    torch.manual_seed(1)
    model = ImageClassifier(
        backbone=dict(type='mmcoop.PrecomputedFeatures'),
        head=MODELS.build(head_cfg('PositiveCoOpHead')),
        data_preprocessor=dict(type='mmcoop.FeatureDataPreprocessor'))
    logits = {}
    for name, cache in (('float32', c32), ('int8', c8)):
        data = model.data_preprocessor(
            pseudo_collate([cache[i] for i in range(NUM_IMAGES)]), False)
        with torch.no_grad():
            logits[name] = model(data['inputs'], mode='tensor')
    # Documented in docs/benchmarks.md: measured at most 0.31 on the
    # ~±40 logits of the demo model; the test allows 0.5.
    diff = (logits['int8'] - logits['float32']).abs().max()
    assert 0 < diff < 0.5


def test_16_and_8_bit_storage_is_the_rounding_of_the_fp32_features(
        image_root, tmp_path):
    """What a float16 / int8 cache serves is exactly the fp32 features
    rounded: float16 to nearest (``Tensor.half``), int8 the per-token
    formula of quantize.py re-derived here in torch (step = max over D of
    |x| / 127, codes rounded half to even, clamped to +-127, read back as
    code x step in float32)."""
    dataset, backbone = make_dataset(image_root), build_backbone()
    f32, f16, f8 = (
        torch.stack([c.read(i) for i in range(NUM_IMAGES)])
        for c in (_cache(dataset, backbone, tmp_path / name, dtype=name)
                  for name in ('float32', 'float16', 'int8')))
    assert torch.equal(f16.float(), f32.half().float())
    step = f32.abs().amax(dim=1, keepdim=True) / 127
    codes = torch.round(f32 / torch.where(step > 0, step, 1.))
    codes = codes.clamp(-127, 127)
    assert torch.equal(f8, codes * step)
    assert not torch.equal(f8, f32) and not torch.equal(f16.float(), f32)


def test_int8_shards_and_scales_are_checksummed(image_root, tmp_path):
    dataset, backbone = make_dataset(image_root), build_backbone()
    cache_dir = tmp_path / 'c'
    _cache(dataset, backbone, cache_dir, dtype='int8', shard_size=4)
    with open(cache_dir / MANIFEST) as f:
        manifest = json.load(f)
    assert manifest['dtype'] == 'int8' and manifest['key']['dtype'] == 'int8'
    assert [(r['file'], r['scales']['file']) for r in manifest['shards']
            ] == [('v0_s00000.npy', 'v0_s00000.scale.npy'),
                  ('v0_s00001.npy', 'v0_s00001.scale.npy')]
    d, n = manifest['feature_shape']
    scales = np.load(cache_dir / 'v0_s00001.scale.npy')
    assert scales.shape == (2, n) and scales.dtype == np.float32
    assert np.load(cache_dir / 'v0_s00001.npy').dtype == np.int8
    # intact: reused, also after hashing every file and scanning the scales
    _cache(
        dataset,
        backbone,
        cache_dir,
        dtype='int8',
        on_mismatch='error',
        verify='full')
    # an altered scale file is caught by its checksum, not served
    scales[0, 0] *= 2
    np.save(cache_dir / 'v0_s00001.scale.npy', scales)
    with pytest.raises(
            FeatureCacheMismatchError,
            match=r'damaged.*v0_s00001\.scale\.npy.*SHA-256'):
        _cache(dataset, backbone, cache_dir, dtype='int8', on_mismatch='error')
    # the storage dtype is part of the key
    with pytest.raises(
            FeatureCacheMismatchError, match=r"dtype: 'int8' -> 'float16'"):
        _cache(dataset, backbone, cache_dir, on_mismatch='error')


@pytest.mark.parametrize('value', ['uint8', 'fp8', 8])
def test_wrong_dtype_is_named(image_root, tmp_path, value):
    expected = (r"dtype must be one of \['float16', 'float32', 'int8'\]; "
                f'got {value!r}')
    with pytest.raises(ValueError, match='CachedFeatureDataset.' + expected):
        _cache(
            make_dataset(image_root),
            build_backbone(),
            tmp_path / 'c',
            dtype=value)
    from mmengine.config import Config
    cfg = Config(
        dict(
            model=dict(
                type='ImageClassifier',
                backbone=dict(type='FrozenCLIP'),
                head=dict(type='PositiveCoOpHead')),
            feature_cache=dict(dtype=value)))
    with pytest.raises(ValueError, match='feature_cache.' + expected):
        apply_feature_cache(cfg)

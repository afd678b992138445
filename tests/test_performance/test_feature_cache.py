# Copyright (c) mmcoop contributors. All rights reserved.
"""The frozen-feature cache: equivalence, keys, atomicity, views."""
import json
import os
import os.path as osp
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from _perf_helpers import (NUM_IMAGES, RES, backbone_cfg, build_backbone,
                           clip_preprocessor_cfg, head_cfg, make_dataset,
                           random_pipeline, val_pipeline)
from mmengine.dataset import pseudo_collate
from mmengine.optim import OptimWrapper
from mmpretrain.models import ImageClassifier

from mmcoop.datasets import EpochIndex, EpochSeededSampler
from mmcoop.datasets.feature_cache import (MANIFEST, CachedFeatureDataset,
                                           FeatureCacheError,
                                           FeatureCacheMismatchError,
                                           SeededView, apply_feature_cache,
                                           hash_module_tensors)
from mmcoop.datasets.partial_label import PartialLabelDataset
from mmcoop.registry import MODELS


def _cache(dataset, backbone, cache_dir, **kwargs):
    kwargs.setdefault('batch_size', 4)
    kwargs.setdefault('progress', False)
    kwargs.setdefault('data_preprocessor', clip_preprocessor_cfg())
    return CachedFeatureDataset(dataset, backbone, str(cache_dir), **kwargs)


def _inputs(dataset):
    """The CLIP-normalised batch of the dataset's ``NUM_IMAGES`` images,
    as the uncached model gets it."""
    preprocessor = MODELS.build(clip_preprocessor_cfg())
    return preprocessor(
        pseudo_collate([dataset[i] for i in range(NUM_IMAGES)]),
        False)['inputs']


def _models(backbone, kind):
    torch.manual_seed(1)
    uncached = ImageClassifier(
        backbone=backbone,
        head=MODELS.build(head_cfg(kind)),
        data_preprocessor=clip_preprocessor_cfg())
    torch.manual_seed(1)  # same head, frozen text tower included
    cached = ImageClassifier(
        backbone=dict(type='mmcoop.PrecomputedFeatures'),
        head=MODELS.build(head_cfg(kind)),
        data_preprocessor=dict(type='mmcoop.FeatureDataPreprocessor'))
    return uncached, cached


def _logits(model, batch):
    data = model.data_preprocessor(batch, False)
    with torch.no_grad():
        return model(data['inputs'], mode='tensor')


@pytest.mark.parametrize('kind', ['PositiveCoOpHead', 'BaselineHead'])
def test_fp32_cache_gives_the_same_training(image_root, tmp_path, kind):
    dataset = make_dataset(image_root)
    backbone = build_backbone()
    cache = _cache(
        dataset, backbone, tmp_path / 'c', dtype='float32', batch_size=6)
    uncached, cached = _models(backbone, kind)
    # Same batch as the extraction: bit-identical features and logits.
    everything = list(range(NUM_IMAGES))
    batch_u = pseudo_collate([dataset[i] for i in everything])
    batch_c = pseudo_collate([cache[i] for i in everything])
    feats_u = backbone(uncached.data_preprocessor(batch_u)['inputs'])[0]
    assert torch.equal(torch.stack(batch_c['inputs']), feats_u)
    assert torch.equal(_logits(cached, batch_c), _logits(uncached, batch_u))
    # Other batch compositions: the convolutions of the uncached path may
    # sum in another order (~1e-7 relative on the features).
    opt_u = OptimWrapper(torch.optim.SGD(uncached.parameters(), lr=0.05))
    opt_c = OptimWrapper(torch.optim.SGD(cached.parameters(), lr=0.05))
    for step, idx in enumerate([[0, 1, 2], [5, 3], [4, 2, 0, 1]]):
        batch_u = pseudo_collate([dataset[i] for i in idx])
        batch_c = pseudo_collate([cache[i] for i in idx])
        torch.testing.assert_close(
            _logits(cached, batch_c),
            _logits(uncached, batch_u),
            rtol=1e-5,
            atol=1e-5)
        loss_u = uncached.train_step(batch_u, opt_u)['loss']
        loss_c = cached.train_step(batch_c, opt_c)['loss']
        torch.testing.assert_close(loss_c, loss_u, rtol=1e-5, atol=1e-5)
    # ~1e-7 feature differences, amplified by three SGD steps through the
    # text tower: up to ~6e-6 on the prompt context (values ~2e-2)
    for (name, p_c), (_, p_u) in zip(cached.head.named_parameters(),
                                     uncached.head.named_parameters()):
        torch.testing.assert_close(
            p_c, p_u, rtol=1e-5, atol=1e-5, msg=lambda m, n=name: f'{n}: {m}')
    for s_c, s_u in zip(cached.val_step(batch_c), uncached.val_step(batch_u)):
        torch.testing.assert_close(
            s_c.pred_score, s_u.pred_score, rtol=1e-5, atol=1e-6)
        assert torch.equal(s_c.gt_label, s_u.gt_label)
        assert s_c.img_path == s_u.img_path
    # A checkpoint of the cached model loads into the image-encoder model.
    state = cached.state_dict()
    assert all(k.startswith('head.') for k in state)
    missing, unexpected = uncached.load_state_dict(state, strict=False)
    assert not unexpected and not [
        k for k in missing if not k.startswith('backbone.')
    ]


def test_fp16_cache_error_is_small(image_root, tmp_path):
    dataset = make_dataset(image_root)
    backbone = build_backbone()
    c32 = _cache(dataset, backbone, tmp_path / 'c32', dtype='float32')
    c16 = _cache(dataset, backbone, tmp_path / 'c16', dtype='float16')
    f32 = torch.stack([c32[i]['inputs'] for i in range(NUM_IMAGES)])
    f16 = torch.stack([c16[i]['inputs'] for i in range(NUM_IMAGES)])
    assert f16.dtype == torch.float16 and f32.dtype == torch.float32
    rel = (f16.float() - f32).norm() / f32.norm()
    assert rel < 1e-3  # fp16 rounding: ~2**-11 per element
    _, cached = _models(backbone, 'PositiveCoOpHead')
    batch32 = pseudo_collate([c32[i] for i in range(NUM_IMAGES)])
    batch16 = pseudo_collate([c16[i] for i in range(NUM_IMAGES)])
    l32, l16 = _logits(cached, batch32), _logits(cached, batch16)
    # Documented tolerance (docs/benchmarks.md): logits within 1e-2
    # absolute on the 100-scale logits of the prompt heads.
    assert (l16 - l32).abs().max() < 1e-2


def test_labels_are_not_cached_partial_wrapper_inside(image_root, tmp_path):
    backbone = build_backbone()
    inner = make_dataset(image_root)
    part0 = PartialLabelDataset(inner, known_proportion=0.5, seed=0)
    cache0 = _cache(part0, backbone, tmp_path / 'c')
    manifest = osp.join(tmp_path, 'c', MANIFEST)
    mtime = os.stat(manifest).st_mtime_ns
    part1 = PartialLabelDataset(
        make_dataset(image_root), known_proportion=0.5, seed=1)
    cache1 = _cache(part1, backbone, tmp_path / 'c', on_mismatch='error')
    assert os.stat(manifest).st_mtime_ns == mtime  # reused, not rebuilt
    assert not np.array_equal(part0.known_mask, part1.known_mask)
    for i in range(NUM_IMAGES):
        s0, s1 = cache0[i], cache1[i]
        assert torch.equal(s0['inputs'], s1['inputs'])
        for part, s in ((part0, s0), (part1, s1)):
            expect = torch.from_numpy(part.get_data_info(i)['gt_score'])
            assert torch.equal(s['data_samples'].gt_score, expect)
    # A fully labelled set reuses the same features too.
    cache2 = _cache(
        make_dataset(image_root),
        backbone,
        tmp_path / 'c',
        on_mismatch='error')
    assert torch.equal(cache2[3]['inputs'], cache0[3]['inputs'])
    assert 'gt_score' not in cache2[3]['data_samples']


def test_partial_wrapper_outside_the_cache(image_root, tmp_path):
    backbone = build_backbone()
    cache = _cache(make_dataset(image_root), backbone, tmp_path / 'c')
    part = PartialLabelDataset(cache, known_proportion=0.5, seed=3)
    for i in range(NUM_IMAGES):
        sample = part[i]
        assert torch.equal(sample['inputs'], cache.read(i))
        score = sample['data_samples'].gt_score
        known = torch.from_numpy(part.known_mask[i].copy())
        assert torch.all(score[~known] == -1)
        assert set(score[known].tolist()) <= {0., 1.}


def _key_change(image_root, what):
    """(dataset, backbone) differing from the default in one respect."""
    if what == 'resolution':
        return (make_dataset(image_root,
                             val_pipeline(96)), build_backbone(res=96))
    if what == 'weights':
        return make_dataset(image_root), build_backbone(seed=7)
    if what == 'pipeline':
        pipe = val_pipeline()
        pipe[1]['interpolation'] = 'nearest'
        return make_dataset(image_root, pipe), build_backbone()
    if what == 'dataset':
        return make_dataset(image_root, indices=4), build_backbone()
    raise ValueError(what)


@pytest.mark.parametrize('what,field', [('resolution', 'input_resolution'),
                                        ('weights', 'weights_sha256'),
                                        ('pipeline', 'pipeline'),
                                        ('dataset', 'num_samples')])
def test_mismatched_cache_is_refused_or_rebuilt(image_root, tmp_path, what,
                                                field):
    cache_dir = tmp_path / 'c'
    _cache(make_dataset(image_root), build_backbone(), cache_dir)
    dataset, backbone = _key_change(image_root, what)
    with pytest.raises(FeatureCacheMismatchError, match=field):
        _cache(dataset, backbone, cache_dir, on_mismatch='error')
    rebuilt = _cache(dataset, backbone, cache_dir)  # default: rebuild
    with open(cache_dir / MANIFEST) as f:
        manifest = json.load(f)
    assert manifest['key'] == rebuilt.manifest['key']
    assert manifest['num_samples'] == len(dataset)
    # ... and the rebuilt cache is reused as is.
    _cache(dataset, backbone, cache_dir, on_mismatch='error')


@pytest.mark.parametrize('loader', [
    dict(type='mmcoop.LoadImageFromFileChecked'),
    dict(type='mmcoop.LoadImageTensor', scale=(RES, RES)),
])
def test_cache_of_an_older_rgb_rule_is_refused_or_rebuilt(
        image_root, tmp_path, monkeypatch, loader):
    """A cache records the RGB rule its loader decoded by; once the rule
    changes (a new ``RULE_VERSION``), the cache no longer holds the pixels
    the loader gives and is rebuilt, or refused naming the field."""
    from mmcoop.datasets.transforms.rgb import RULE_VERSION
    from mmcoop.registry import TRANSFORMS
    pipeline = [loader] + ([] if 'scale' in loader else [
        dict(type='Resize', scale=(RES, RES))
    ]) + [dict(type='PackInputs')]
    backbone, cache_dir = build_backbone(), tmp_path / 'c'
    built = _cache(make_dataset(image_root, pipeline), backbone, cache_dir)
    assert built.manifest['key']['pipeline'][0]['pixel_version'] == 2
    assert RULE_VERSION == 2
    if 'scale' not in loader:  # mmcv's Resize declares none: no field
        assert 'pixel_version' not in built.manifest['key']['pipeline'][1]
    cls = TRANSFORMS.get(loader['type'].split('.')[-1])
    monkeypatch.setattr(cls, 'PIXEL_VERSION', 3)  # the rule changed
    dataset = make_dataset(image_root, pipeline)
    with pytest.raises(FeatureCacheMismatchError,
                       match=r'pipeline\[0\]\.pixel_version: 2 -> 3'):
        _cache(dataset, backbone, cache_dir, on_mismatch='error')
    rebuilt = _cache(dataset, backbone, cache_dir)  # default: rebuild
    assert rebuilt.manifest['key']['pipeline'][0]['pixel_version'] == 3
    _cache(dataset, backbone, cache_dir, on_mismatch='error')  # reused


def test_a_cv2_cache_of_the_earlier_cv2_decode_is_refused_or_rebuilt(
        image_root, tmp_path, monkeypatch):
    """The cv2 decode of ``LoadImageFromFileChecked`` changed pixels (CMYK
    JPEGs a grey level off, fixed) without a new RGB rule, so a cv2 cache
    of the earlier decode matched the key and was reused with its pixels.
    The key of a cv2 loader records ``CV2_DECODE_VERSION`` too; a pillow
    loader's key is unchanged (its caches are kept)."""
    from mmcoop.datasets.transforms import loading
    pipeline = [
        dict(type='mmcoop.LoadImageFromFileChecked', imdecode_backend='cv2'),
        dict(type='Resize', scale=(RES, RES)),
        dict(type='PackInputs')
    ]
    backbone, cache_dir = build_backbone(), tmp_path / 'c'
    cls = loading.LoadImageFromFileChecked
    with monkeypatch.context() as m:  # the key an earlier version wrote
        m.setattr(cls, 'PIXEL_VERSION', 2)
        _cache(make_dataset(image_root, pipeline), backbone, cache_dir)
    dataset = make_dataset(image_root, pipeline)
    with pytest.raises(
            FeatureCacheMismatchError,
            match=r"pipeline\[0\]\.pixel_version: 2 -> '2\+cv2\.2'"):
        _cache(dataset, backbone, cache_dir, on_mismatch='error')
    rebuilt = _cache(dataset, backbone, cache_dir)
    assert rebuilt.manifest['key']['pipeline'][0]['pixel_version'] == \
        '2+cv2.2'
    assert cls().PIXEL_VERSION == 2  # pillow: the key of earlier caches
    # mmcv's other decoders took the same path (not installed here)
    from types import SimpleNamespace
    for backend in ('turbojpeg', 'tifffile'):
        assert cls.PIXEL_VERSION.fget(
            SimpleNamespace(imdecode_backend=backend)) == '2+cv2.2'


def test_cpu_bf16_cache_is_not_reused_as_fp32(image_root, tmp_path):
    cache_dir, dataset = tmp_path / 'c', make_dataset(image_root)
    bf16 = _cache(dataset, build_backbone(autocast_dtype='bf16',
                                          autocast_cpu=True), cache_dir)
    # bf16 autocast on CPU without autocast_cpu is fp32: not the same key
    for backbone in (build_backbone(), build_backbone(autocast_dtype='bf16')):
        with pytest.raises(FeatureCacheMismatchError, match='autocast_dtype'):
            _cache(dataset, backbone, cache_dir, on_mismatch='error')
    fp32 = _cache(dataset, build_backbone(), tmp_path / 'c32')
    assert not torch.equal(bf16.read(0), fp32.read(0))  # really bf16


def test_cpu_bf16_cache_serves_the_bf16_towers_features(image_root, tmp_path):
    """A cache built by a tower under CPU bf16 autocast serves that tower's
    features: float32 storage is the live tower's output on the same
    preprocessed images (to far less than the bf16 / fp32 difference),
    float16 storage its rounding to float16."""
    dataset = make_dataset(image_root)
    backbone = build_backbone(autocast_dtype='bf16', autocast_cpu=True)
    cached = {}
    for dtype in ('float32', 'float16'):
        cache = _cache(dataset, backbone, tmp_path / dtype, dtype=dtype)
        cached[dtype] = torch.stack(
            [cache.read(i) for i in range(NUM_IMAGES)])
    inputs = _inputs(dataset)
    with torch.no_grad():
        live = backbone(inputs)[0]
        fp32 = build_backbone()(inputs)[0]
    gap = (fp32 - live).abs().max()
    assert gap > 1e-3 * live.abs().max()  # bf16 really ran
    assert (cached['float32'] - live).abs().max() <= 0.01 * gap
    assert torch.equal(cached['float16'].float(),
                       cached['float32'].half().float())
    # NumPy's rounding (what the extraction used before it converted on
    # the tower's device): the same values
    assert np.array_equal(cached['float16'].numpy(),
                          cached['float32'].numpy().astype(np.float16))


def test_damaged_or_foreign_directories(image_root, tmp_path):
    dataset, backbone = make_dataset(image_root), build_backbone()
    cache_dir = tmp_path / 'c'
    _cache(dataset, backbone, cache_dir)
    shard = sorted(p for p in os.listdir(cache_dir) if p.endswith('.npy'))[0]
    with open(cache_dir / shard, 'r+b') as f:
        f.truncate(200)  # header intact, data cut
    with pytest.raises(FeatureCacheMismatchError, match='damaged'):
        _cache(dataset, backbone, cache_dir, on_mismatch='error')
    _cache(dataset, backbone, cache_dir)  # rebuilt
    # A directory that is not a cache is never deleted.
    foreign = tmp_path / 'mine'
    foreign.mkdir()
    (foreign / 'notes.txt').write_text('keep me')
    with pytest.raises(FeatureCacheError, match='not an mmcoop feature cache'):
        _cache(dataset, backbone, foreign)
    assert (foreign / 'notes.txt').read_text() == 'keep me'
    # Nor is a cache written into the dataset tree.
    with pytest.raises(ValueError, match='inside the dataset'):
        _cache(dataset, backbone, osp.join(image_root, 'cache'))


def test_empty_dataset_is_named_before_anything_is_built(tmp_path):
    """An empty plain mmpretrain dataset (serialize_data=False, which
    MMEngine does not refuse) built an empty cache and failed with
    "TypeError: 'NoneType' object is not iterable"."""
    from mmcoop.datasets import AnnotationError
    with open(tmp_path / 'ann.json', 'w') as f:
        json.dump(dict(metainfo=dict(classes=['a']), data_list=[]), f)
    dataset = make_dataset(str(tmp_path), serialize_data=False)
    with pytest.raises(AnnotationError) as err:
        _cache(dataset, backbone_cfg(), tmp_path / 'cache')
    assert str(err.value) == (
        f"MultiLabelDataset ({tmp_path / 'ann.json'}): no samples, so "
        'there is nothing to iterate over. Fix: check the annotation file, '
        '`data_root` and the split of the dataset.')
    assert not (tmp_path / 'cache').exists()


@pytest.mark.parametrize('dtype, suffix', [('float16', '.npy'),
                                           ('int8', '.scale.npy')])
def test_empty_shard_file_is_damage_not_a_crash(image_root, tmp_path,
                                                dtype, suffix):
    """A shard or scale file cut to 0 bytes (a full disk, an interrupted
    copy of the cache) is a damaged cache, refused or rebuilt as any other
    damage (before: numpy's EOFError at every run, until the user deleted
    the cache by hand)."""
    dataset, backbone = make_dataset(image_root), build_backbone()
    cache_dir = tmp_path / 'c'
    _cache(dataset, backbone, cache_dir, dtype=dtype)
    name = sorted(p for p in os.listdir(cache_dir) if p.endswith(suffix))[0]
    (cache_dir / name).write_bytes(b'')
    with pytest.raises(FeatureCacheMismatchError,
                       match=rf'is damaged: shard {name}: EOFError'):
        _cache(dataset, backbone, cache_dir, dtype=dtype,
               on_mismatch='error')
    cached = _cache(dataset, backbone, cache_dir, dtype=dtype)  # rebuilt
    assert (cache_dir / name).stat().st_size > 0
    assert cached.read(0).shape == (64, 1 + (RES // 32)**2)


def test_rebuild_never_deletes_what_the_cache_did_not_write(
        image_root, tmp_path):
    """A cache to rebuild whose folder also holds a user's file is refused
    naming the file, and nothing is deleted; a manifest whose shards do
    not cover every sample (edited by hand) is damaged, not an IndexError
    in the middle of training."""
    import json
    dataset, backbone = make_dataset(image_root), build_backbone()
    cache_dir = tmp_path / 'c'
    _cache(dataset, backbone, cache_dir, shard_size=2)
    shard = sorted(p for p in os.listdir(cache_dir) if p.endswith('.npy'))[0]
    with open(cache_dir / shard, 'r+b') as f:
        f.truncate(200)
    (cache_dir / 'notes.txt').write_text('keep me')
    before = sorted(os.listdir(cache_dir))
    with pytest.raises(FeatureCacheError, match=(
            r"also holds files the cache did not write: \['notes\.txt'\]; "
            r'nothing was deleted')):
        _cache(dataset, backbone, cache_dir)
    assert sorted(os.listdir(cache_dir)) == before
    os.remove(cache_dir / 'notes.txt')
    _cache(dataset, backbone, cache_dir, shard_size=2)  # rebuilt
    manifest_path = cache_dir / 'manifest.json'
    manifest = json.loads(manifest_path.read_text())
    manifest['shards'] = manifest['shards'][:-1]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(FeatureCacheMismatchError, match=(
            r'is damaged: manifest\.json: the shards of view 0 do not cover '
            rf'its {NUM_IMAGES} samples in shards of 2')):
        _cache(dataset, backbone, cache_dir, shard_size=2,
               on_mismatch='error')
    cached = _cache(dataset, backbone, cache_dir, shard_size=2)
    assert len(cached) == len(dataset)
    # every sample (the last shard's too) holds the live tower's features,
    # rounded to the default float16
    with torch.no_grad():
        live = backbone(_inputs(dataset))[0]
    assert live.shape == (NUM_IMAGES, 64, 1 + (RES // 32)**2)
    for i in range(NUM_IMAGES):
        assert cached.read(i).dtype == torch.float16
        # float16 keeps 11 significant bits (relative rounding <= 2**-11)
        torch.testing.assert_close(
            cached.read(i).float(), live[i], rtol=2**-10, atol=1e-6)


class _FailingBackbone(torch.nn.Module):
    """A tower that dies on its second batch."""

    def __init__(self, backbone):
        super().__init__()
        self.inner = backbone
        self.input_resolution = backbone.input_resolution
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls == 2:
            raise KeyboardInterrupt('simulated interruption')
        return self.inner(x)


def test_interrupted_extraction_leaves_no_complete_cache(image_root, tmp_path):
    dataset, backbone = make_dataset(image_root), build_backbone()
    cache_dir = tmp_path / 'c'
    with pytest.raises(KeyboardInterrupt):
        _cache(dataset, _FailingBackbone(backbone), cache_dir, batch_size=2)
    assert not cache_dir.exists()
    assert os.listdir(tmp_path) == []  # the partial directory is removed


def test_extraction_device_the_machine_lacks_is_refused(
        image_root, tmp_path):
    """A device this machine does not have (cuda:99 here, with or without
    CUDA) stops before anything is written, naming the option."""
    dataset, backbone = make_dataset(image_root), build_backbone()
    with pytest.raises(ValueError, match=(
            r"feature_cache\.device='cuda:99': this machine has no such "
            r"device\. Fix: leave it out .* or set it to 'cpu'")):
        _cache(dataset, backbone, tmp_path / 'c', device='cuda:99')
    assert os.listdir(tmp_path) == []
    cached = _cache(dataset, backbone, tmp_path / 'c', device='cpu')
    assert len(cached) == len(dataset)


KILL_SCRIPT = textwrap.dedent('''
    import os, sys, time
    sys.path.insert(0, {helpers!r})
    import torch
    torch.backends.mkldnn.enabled = False
    from _perf_helpers import make_dataset, build_backbone
    from mmcoop.datasets.feature_cache import CachedFeatureDataset
    backbone = build_backbone()
    forward = backbone.forward
    calls = []
    def dying_forward(x):
        calls.append(1)
        if len(calls) == 2:
            os._exit(9)  # like SIGKILL: no cleanup, no finally
        return forward(x)
    backbone.forward = dying_forward
    CachedFeatureDataset(make_dataset({root!r}), backbone, {cache!r},
                         batch_size=2, progress=False)
''')


def test_killed_extraction_leaves_no_complete_cache(image_root, tmp_path):
    cache_dir = tmp_path / 'c'
    script = KILL_SCRIPT.format(
        helpers=osp.dirname(__file__), root=image_root, cache=str(cache_dir))
    proc = subprocess.run([sys.executable, '-c', script],
                          capture_output=True,
                          text=True,
                          timeout=120)
    assert proc.returncode == 9, proc.stderr[-2000:]
    # the killed builder leaves its partial directory and its (released)
    # lock file
    leftovers = sorted(os.listdir(tmp_path))
    assert not cache_dir.exists()
    assert len(leftovers) == 2 and leftovers[0] == 'c.lock'
    assert '.partial-' in leftovers[1]
    assert not osp.exists(osp.join(tmp_path, leftovers[1], MANIFEST))
    # The next build completes and removes the dead process's leftovers.
    cache = _cache(make_dataset(image_root), build_backbone(), cache_dir)
    assert os.listdir(tmp_path) == ['c']
    assert cache.read(NUM_IMAGES - 1).shape == (64, 1 + (RES // 32)**2)


def test_k_views(image_root, tmp_path):
    dataset = make_dataset(image_root, random_pipeline())
    backbone = build_backbone()
    rng_before = (random.getstate(), np.random.get_state(),
                  torch.get_rng_state())
    cache = _cache(
        dataset, backbone, tmp_path / 'a', num_views=3, shard_size=4)
    # extraction leaves the global RNGs as they were
    assert random.getstate() == rng_before[0]
    assert np.array_equal(np.random.get_state()[1], rng_before[1][1])
    assert torch.equal(torch.get_rng_state(), rng_before[2])
    n = len(cache)
    assert n == NUM_IMAGES
    views = [
        torch.stack([cache.read(i, k) for i in range(n)]) for k in range(3)
    ]
    assert not torch.equal(views[0], views[1])
    assert not torch.equal(views[1], views[2])
    # index k * n + i is view k of sample i, with sample i's labels
    for k in range(3):
        for i in range(n):
            sample = cache[k * n + i]
            assert torch.equal(sample['inputs'], views[k][i])
            assert sample['data_samples'].sample_idx == i
    with pytest.raises(IndexError):
        cache[3 * n]
    # the label wrapper outside a multi-view cache read view 0 in every
    # epoch (plain indices); refused, naming the fix
    with pytest.raises(ValueError, match=r'PartialLabelDataset wraps a '
                       r'CachedFeatureDataset of num_views=3.*view 0.*Fix'):
        PartialLabelDataset(dataset=cache, known_proportion=0.5)
    # view k is a function of (seed, k, i): the same images in any order,
    # and the same features with other worker counts and shard sizes
    order = [(k, i) for k in range(3) for i in range(n)]
    images = {(k, i): SeededView(dataset, k, 0)[i][1] for k, i in order[::-1]}
    for k, i in order:
        assert torch.equal(SeededView(dataset, k, 0)[i][1], images[k, i])
    again = _cache(
        dataset,
        backbone,
        tmp_path / 'b',
        num_views=3,
        num_workers=2,
        shard_size=64)
    for k in range(3):
        for i in range(n):
            assert torch.equal(again.read(i, k), views[k][i])
    # with EpochSeededSampler, epoch e reads view e % K of every sample
    sampler = EpochSeededSampler(cache, shuffle=True, seed=0)
    for epoch in range(5):
        sampler.set_epoch(epoch)
        indices = list(sampler)
        assert sorted(indices) == list(range(n))
        for i in indices:
            assert torch.equal(cache[i]['inputs'], views[epoch % 3][i])
    # one view: every epoch reads view 0
    single = _cache(make_dataset(image_root), backbone, tmp_path / 'c')
    assert torch.equal(single[EpochIndex(2, epoch=7, seed=0)]['inputs'],
                       single.read(2, 0))


def test_views_of_a_pipeline_without_random_augmentation_are_named(
        image_root, tmp_path, mm_log):
    """num_views > 1 with a pipeline that draws nothing stored one view K
    times, K times the extraction and disk, without a word; warned now
    (not for a random pipeline, on the CPU or the device path)."""
    backbone = build_backbone()
    _cache(make_dataset(image_root), backbone, tmp_path / 'a', num_views=2)
    assert ('num_views=2, but the views of the first 16 images are '
            'identical: the pipeline seems to draw no random augmentation'
            ) in mm_log.getvalue()
    mm_log.truncate(0)
    _cache(make_dataset(image_root, random_pipeline()), backbone,
           tmp_path / 'b', num_views=2)
    scale = (RES, RES)
    device = [dict(type='mmcoop.LoadImageBytes', scale=scale, augment=True),
              dict(type='PackInputs', meta_keys=('img_path', 'device_aug'))]
    _cache(make_dataset(image_root, device), backbone, tmp_path / 'c',
           num_views=2,
           data_preprocessor=dict(type='mmcoop.DeviceAugmentPreprocessor'))
    assert 'identical' not in mm_log.getvalue()


def test_device_path_cache_stores_the_cpu_pipelines_views(
        image_root, tmp_path):
    """A feature cache of a device-path config (LoadImageBytes +
    DeviceAugmentPreprocessor) stores the views the CPU tensor pipeline
    gives for the same seeds: the same draws, decoded and augmented by
    the preprocessor (here on CPU tensors); the test pipeline's cache is
    not augmented."""
    backbone = build_backbone()
    scale = (RES, RES)

    def views(pipeline, preprocessor, name, num_views):
        cache = _cache(make_dataset(image_root, pipeline), backbone,
                       tmp_path / name, num_views=num_views,
                       data_preprocessor=dict(type=preprocessor),
                       dtype='float32')
        return torch.stack([cache.read(i, k) for k in range(num_views)
                            for i in range(NUM_IMAGES)])

    def tensor(augment):
        return ([dict(type='mmcoop.LoadImageTensor', scale=scale)] +
                ([dict(type='mmcoop.TensorCutout'),
                  dict(type='mmcoop.TensorRandAugment')] if augment else
                 []) + [dict(type='PackInputs')])

    def device(augment):
        return [dict(type='mmcoop.LoadImageBytes', scale=scale,
                     augment=augment),
                dict(type='PackInputs', meta_keys=('img_path', 'device_aug'))]

    cpu = views(tensor(True), 'mmcoop.CLIPDataPreprocessor', 'cpu', 2)
    dev = views(device(True), 'mmcoop.DeviceAugmentPreprocessor', 'dev', 2)
    cpu_val = views(tensor(False), 'mmcoop.CLIPDataPreprocessor', 'cv', 1)
    dev_val = views(device(False), 'mmcoop.DeviceAugmentPreprocessor', 'dv',
                    1)
    assert torch.equal(dev_val, cpu_val)
    # the augmentation moves these random tiny features by ~2e-3; the two
    # paths give the same pixels (tests/test_datasets), so the same features
    assert (cpu[:NUM_IMAGES] - cpu_val).abs().max() > 1e-3
    assert (cpu[:NUM_IMAGES] - cpu[NUM_IMAGES:]).abs().max() > 1e-3
    assert torch.equal(dev, cpu)


def test_device_path_cache_of_an_older_augmentation_is_refused_or_rebuilt(
        image_root, tmp_path, monkeypatch):
    """A device-path cache records the version of the preprocessor's
    augmentation pixels (``DeviceAugmentPreprocessor.PIXEL_VERSION``); once
    it changes, the cache is rebuilt, or refused naming the field. A
    preprocessor that declares none (CLIP's) records no field."""
    from mmcoop.models import DeviceAugmentPreprocessor
    pipeline = [dict(type='mmcoop.LoadImageBytes', scale=(RES, RES)),
                dict(type='PackInputs', meta_keys=('img_path', 'device_aug'))]
    backbone, cache_dir = build_backbone(), tmp_path / 'c'
    device = dict(type='mmcoop.DeviceAugmentPreprocessor')
    built = _cache(make_dataset(image_root, pipeline), backbone, cache_dir,
                   data_preprocessor=device)
    assert built.manifest['key']['data_preprocessor']['pixel_version'] == 2
    plain = _cache(make_dataset(image_root), backbone, tmp_path / 'p')
    assert 'pixel_version' not in plain.manifest['key']['data_preprocessor']
    monkeypatch.setattr(DeviceAugmentPreprocessor, 'PIXEL_VERSION', 3)
    dataset = make_dataset(image_root, pipeline)
    with pytest.raises(FeatureCacheMismatchError,
                       match=r'data_preprocessor\.pixel_version: 2 -> 3'):
        _cache(dataset, backbone, cache_dir, data_preprocessor=device,
               on_mismatch='error')
    rebuilt = _cache(dataset, backbone, cache_dir, data_preprocessor=device)
    assert rebuilt.manifest['key']['data_preprocessor']['pixel_version'] == 3


def test_view_seed_is_not_the_tower_seed(image_root, tmp_path):
    """The cache's ``seed`` draws the views only; a random tower is decided
    by its own ``init_seed`` (one owner), as in the uncached model."""
    dataset = make_dataset(image_root, random_pipeline())
    caches = {
        (seed, init):
        _cache(
            dataset,
            backbone_cfg(init_seed=init),
            tmp_path / f's{seed}_i{init}',
            seed=seed)
        for seed, init in ((0, 0), (5, 0), (0, 5))
    }
    towers = {
        k: c.manifest['key']['backbone']['weights_sha256']
        for k, c in caches.items()
    }
    assert towers[0, 0] == towers[5, 0] != towers[0, 5]
    model_tower = MODELS.build(backbone_cfg(init_seed=5))
    assert towers[0, 5] == hash_module_tensors(model_tower)
    # the views follow the cache's seed
    assert not torch.equal(caches[0, 0].read(0), caches[5, 0].read(0))


def _image_config(image_root, work_dir, weights, feature_cache=True):
    from mmengine.config import Config
    train_ds = dict(
        type='PartialLabelDataset',
        known_proportion=0.5,
        dataset=dict(
            type='MultiLabelDataset',
            ann_file='ann.json',
            data_root=image_root,
            data_prefix='',
            pipeline=val_pipeline()))
    val_ds = dict(
        type='MultiLabelDataset',
        ann_file='ann.json',
        data_root=image_root,
        data_prefix='',
        test_mode=True,
        pipeline=val_pipeline())
    loader = dict(batch_size=3, num_workers=0)
    return Config(
        dict(
            default_scope='mmcoop',
            work_dir=str(work_dir),
            model=dict(
                type='ImageClassifier',
                data_preprocessor=clip_preprocessor_cfg(),
                backbone=backbone_cfg(pretrained=weights),
                head=head_cfg('PositiveCoOpHead', pretrained=weights)),
            train_dataloader=dict(
                loader,
                sampler=dict(type='DefaultSampler', shuffle=True),
                dataset=train_ds),
            val_dataloader=dict(
                loader,
                sampler=dict(type='DefaultSampler', shuffle=False),
                dataset=val_ds),
            val_evaluator=dict(type='AveragePrecision'),
            test_dataloader=dict(
                loader,
                sampler=dict(type='DefaultSampler', shuffle=False),
                dataset=val_ds),
            test_evaluator=dict(type='AveragePrecision'),
            train_cfg=dict(by_epoch=True, max_epochs=2, val_interval=1),
            val_cfg=dict(),
            test_cfg=dict(),
            optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
            randomness=dict(seed=0),
            default_hooks=dict(
                checkpoint=dict(type='CheckpointHook', interval=1),
                logger=dict(type='LoggerHook', interval=1)),
            **(dict(
                feature_cache=dict(
                    cache_root=str(work_dir / 'feature_cache'),
                    dtype='float32',
                    num_views=2,
                    progress=False)) if feature_cache else {})))


@pytest.fixture(scope='module')
def tiny_weights(tmp_path_factory):
    """A saved tiny CLIP state dict: deterministic towers across builds."""
    from _perf_helpers import TINY

    from mmcoop.models import build_open_clip
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp('weights') / 'tiny_clip.pth'
    torch.save(build_open_clip(TINY).state_dict(), path)
    return str(path)


def test_config_switch_trains_with_the_runner(image_root, tmp_path,
                                              tiny_weights):
    from mmengine.runner import Runner
    cfg = apply_feature_cache(
        _image_config(image_root, tmp_path / 'work', tiny_weights))
    assert cfg.model.backbone.type == 'mmcoop.PrecomputedFeatures'
    assert cfg.model.data_preprocessor.type == \
        'mmcoop.FeatureDataPreprocessor'
    train_ds = cfg.train_dataloader.dataset
    assert train_ds.type == 'mmcoop.CachedFeatureDataset'
    assert train_ds.num_views == 2 and cfg.val_dataloader.dataset.num_views \
        == 1
    assert train_ds.dataset.type == 'PartialLabelDataset'  # labels inside
    assert train_ds.backbone == backbone_cfg(pretrained=tiny_weights)
    assert cfg.train_dataloader.sampler == dict(
        type='mmcoop.EpochSeededSampler', shuffle=True)
    # val and test share one cache directory
    assert cfg.val_dataloader.dataset.cache_dir == \
        cfg.test_dataloader.dataset.cache_dir != train_ds.cache_dir
    assert apply_feature_cache(cfg) is cfg  # idempotent
    runner = Runner.from_cfg(cfg)
    runner.train()
    metrics = runner.test()
    assert 'multi-label/mAP' in metrics
    roots = os.listdir(tmp_path / 'work' / 'feature_cache')
    assert len(roots) == 2  # train (2 views) + val/test


def test_the_config_of_a_cached_run_gives_the_image_model(
        image_root, tmp_path, tiny_weights):
    """The config a cached run dumps in its work dir (PrecomputedFeatures,
    FeatureDataPreprocessor) given to init_model: the image tower comes
    back from its CachedFeatureDataset, and its checkpoint scores images
    as with the config the run was started with (before: a ValueError of
    FeatureDataPreprocessor at the first image, and export_model asked for
    a mean and std)."""
    from mmengine.config import Config

    from mmcoop.apis import inference_model, init_model
    image = osp.join(image_root, 'img1.jpg')
    plain = init_model(
        _image_config(image_root, tmp_path, tiny_weights, False))
    ckpt = str(tmp_path / 'head.pth')
    torch.save({'state_dict': plain.state_dict()}, ckpt)
    dumped = str(tmp_path / 'dumped.py')
    apply_feature_cache(_image_config(image_root, tmp_path,
                                      tiny_weights)).dump(dumped)
    assert Config.fromfile(dumped).model.backbone.type == \
        'mmcoop.PrecomputedFeatures'
    model = init_model(dumped, ckpt)
    assert type(model.backbone).__name__ == 'FrozenCLIP'
    assert type(model.data_preprocessor).__name__ == 'CLIPDataPreprocessor'
    np.testing.assert_array_equal(
        inference_model(model, image)[0]['scores'],
        inference_model(init_model(
            _image_config(image_root, tmp_path, tiny_weights, False), ckpt),
                        image)[0]['scores'])


def test_a_dumped_cached_config_with_another_tower_gets_its_own_folder(
        image_root, tmp_path, tiny_weights):
    """A cached run's dumped config given another tower (``--cfg-options
    test_dataloader.dataset.backbone...``) kept the folder named for the
    original tower: its run rebuilt, in place, the cache the original run
    was reading. The converted config's folders are now named again from
    its fields: unchanged ones keep theirs, a changed one gets its own,
    a folder the user named is kept."""
    from mmengine.config import Config
    cfg = apply_feature_cache(
        _image_config(image_root, tmp_path / 'work', tiny_weights))
    dirs = {
        k: cfg[k].dataset.cache_dir
        for k in ('train_dataloader', 'val_dataloader', 'test_dataloader')
    }
    dumped = str(tmp_path / 'dumped.py')
    cfg.dump(dumped)
    again = apply_feature_cache(Config.fromfile(dumped))
    assert {k: again[k].dataset.cache_dir for k in dirs} == dirs
    other = Config.fromfile(dumped)
    other.merge_from_dict({'test_dataloader.dataset.backbone.init_seed': 7})
    other = apply_feature_cache(other)
    moved = other.test_dataloader.dataset.cache_dir
    assert moved != dirs['test_dataloader']
    assert osp.dirname(moved) == osp.dirname(dirs['test_dataloader'])
    assert other.val_dataloader.dataset.cache_dir == dirs['val_dataloader']
    # the same change made before the conversion names the same folder
    original = _image_config(image_root, tmp_path / 'work', tiny_weights)
    original.model.backbone.init_seed = 7
    assert apply_feature_cache(original).test_dataloader.dataset.cache_dir \
        == moved
    mine = Config.fromfile(dumped)
    mine.test_dataloader.dataset.cache_dir = str(tmp_path / 'my_cache')
    mine.merge_from_dict({'test_dataloader.dataset.backbone.init_seed': 7})
    assert apply_feature_cache(mine).test_dataloader.dataset.cache_dir == \
        str(tmp_path / 'my_cache')


def test_config_switch_is_off_by_default(image_root, tmp_path):
    cfg = _image_config(image_root, tmp_path, None)
    cfg.feature_cache.enabled = False
    before = cfg.to_dict()
    assert apply_feature_cache(cfg).to_dict() == before
    cfg = _image_config(image_root, tmp_path, None, feature_cache=False)
    assert apply_feature_cache(cfg).model.backbone.type == 'FrozenCLIP'
    cfg = _image_config(image_root, tmp_path, None)
    cfg.feature_cache.num_view = 3  # typo
    with pytest.raises(ValueError, match='num_view'):
        apply_feature_cache(cfg)


@pytest.mark.parametrize('value,match', [
    (True, r'feature_cache must be a dict of options .*got True \(bool\)'),
    ('on', r'feature_cache must be a dict .*got \'on\' \(str\)'),
    (dict(num_views='2'), r'feature_cache.num_views must be a positive int'),
    (dict(num_views=0), r'feature_cache.num_views must be a positive int'),
    (dict(dtype='fp16'), r"feature_cache.dtype must be one of \['float16'"),
    (dict(verify='quick'), r"feature_cache.verify must be 'fast'"),
    (dict(lock_timeout=-1), r'feature_cache.lock_timeout must be None'),
    (dict(enabled='yes'), r'feature_cache.enabled must be True or False'),
    (dict(cache_root=3), r'feature_cache.cache_root must be a folder'),
    (dict(cache_dir='x'), r"unknown keys \['cache_dir'\]"),
    (dict(device='gpu'), r"feature_cache.device must be None .* or a torch "
     r"device string such as 'cpu'.*got 'gpu'"),
    (dict(device=0), r'feature_cache.device must be None'),
])
def test_config_switch_names_wrong_values(image_root, tmp_path, value, match):
    cfg = _image_config(image_root, tmp_path, None)
    cfg.feature_cache = value
    with pytest.raises(ValueError, match=match):
        apply_feature_cache(cfg)
    # an empty dict turns the cache on with the defaults; None/False: off
    cfg.feature_cache = dict()
    cfg = apply_feature_cache(cfg)
    assert cfg.train_dataloader.dataset.cache_dir.startswith(
        str(tmp_path / 'feature_cache'))
    for off in (None, False):
        cfg = _image_config(image_root, tmp_path, None)
        cfg.feature_cache = off
        assert apply_feature_cache(cfg).model.backbone.type == 'FrozenCLIP'


def test_cache_root_that_is_a_file_is_named_when_the_config_is_read(
        image_root, tmp_path):
    """Before: accepted, then ``FileExistsError`` from ``os.makedirs``
    when the dataset was built, after the image tower, without the field;
    the file is left as it was."""
    from mmcoop.utils.paths import OutputPathError
    afile = tmp_path / 'notes.txt'
    afile.write_text('mine')
    cfg = _image_config(image_root, tmp_path, None)
    cfg.feature_cache = dict(cache_root=str(afile))
    with pytest.raises(OutputPathError, match=r"feature_cache.cache_root "
                       r"'.*notes\.txt': '.*notes\.txt' is a file, not a "
                       r'folder.*Fix'):
        apply_feature_cache(cfg)
    assert afile.read_text() == 'mine'


def test_config_switch_equals_uncached_training_random_towers(
        image_root, tmp_path):
    """Random-weight towers (pretrained=None, as in the demo): the switch
    gives the same run as the image path. The towers are drawn from their
    own seed (``init_seed``), so building the image tower in the cache's
    dataset wrapper instead of the model changes neither the tower nor the
    prompt initialisation that follows it."""
    from mmengine.runner import Runner

    runs = {}
    for cached in (False, True):
        work = tmp_path / ('cached' if cached else 'plain')
        cfg = _image_config(image_root, work, None, feature_cache=cached)
        if cached:
            cfg.feature_cache.num_views = 1
            cfg = apply_feature_cache(cfg)
        runner = Runner.from_cfg(cfg)
        runner.train()
        head = runner.model.head
        runs[cached] = ({
            k: v.detach().clone()
            for k, v in head.named_parameters() if v.requires_grad
        }, runner.test()['multi-label/mAP'])
    (plain, map_plain), (cached, map_cached) = runs[False], runs[True]
    assert plain.keys() == cached.keys() and plain
    for key in plain:
        torch.testing.assert_close(
            cached[key], plain[key], rtol=1e-5, atol=1e-6, msg=key)
    assert map_cached == pytest.approx(map_plain, abs=1e-4)

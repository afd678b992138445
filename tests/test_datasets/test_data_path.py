# Copyright (c) mmcoop contributors. All rights reserved.
"""``data_path='device'`` / ``'device-decode'``: every shipped config
moves onto the device path, and the batches it gives (augmented, and with
``device-decode`` decoded, by the preprocessor, here on CPU tensors) are
the CPU pipelines' batches; what cannot be translated exactly is refused
naming the pipeline and the fix."""
import copy
import glob
import os.path as osp
import warnings

import numpy as np
import pytest
import torch
from _builders import build_coco, photo
from mmengine.config import Config
from mmengine.dataset import pseudo_collate

import mmcoop.datasets  # noqa: F401
import mmcoop.models  # noqa: F401
from mmcoop.datasets.data_path import apply_data_path, device_pipeline
from mmcoop.models.data_preprocessors.clip_preprocessor import CLIP_STD
from mmcoop.registry import DATASETS, MODELS

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = sorted(
    p for p in glob.glob(osp.join(REPO, 'configs', '**', '*.py'),
                         recursive=True) if '_base_' not in p)
COCO_P50 = osp.join(
    REPO, 'configs', 'positivecoop',
    'positivecoop_clip-rn101_openai-pre_1xb32-coslr-50e_coco14-448px-p50.py')


def _innermost(dataset):
    while 'pipeline' not in dataset:
        dataset = dataset['dataset']
    return dataset


def _device(cfg, data_path='device'):
    cfg = copy.deepcopy(cfg)
    cfg.data_path = data_path
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # no CUDA here: tested below
        return apply_data_path(cfg)


def test_every_shipped_config_moves_to_the_device_path():
    assert len(CONFIGS) > 200
    for path in CONFIGS:
        cpu = Config.fromfile(path)
        cfg = _device(cpu)
        train = _innermost(cfg.train_dataloader.dataset).pipeline
        test = cfg.test_dataloader.dataset.pipeline
        cpu_train = _innermost(cpu.train_dataloader.dataset).pipeline
        augmented = any('RandAugment' in t['type'] for t in cpu_train)
        scale = next(t['scale'] for t in cpu_train if 'scale' in t)
        # the workers decode and resize as the CPU pipelines: a tensor
        # loader's resize (torchvision), a test pipeline's (PIL's)
        resize = cpu_train[0].get('resize_backend', 'torchvision') if \
            cpu_train[0]['type'].endswith('LoadImageTensor') else 'pillow'
        assert train[0] == dict(type='mmcoop.LoadImageBytes', decode='cpu',
                                scale=scale, resize_backend=resize,
                                augment=augmented,
                                **(dict(cutout_factor=0.5)
                                   if augmented else {})), path
        assert test[0] == dict(type='mmcoop.LoadImageBytes', decode='cpu',
                               scale=scale, resize_backend='pillow',
                               augment=False), path
        for p in (train, test, cfg.val_dataloader.dataset.pipeline):
            assert len(p) == 2 and 'device_aug' in p[1]['meta_keys'], path
        pre = cfg.model.data_preprocessor
        assert pre['type'] == 'mmcoop.DeviceAugmentPreprocessor', path
        assert _device(cfg).to_dict() == cfg.to_dict()  # kept as it is
    cpu = Config.fromfile(COCO_P50)
    # device-decode: the device decodes and resizes (torchvision's kernel)
    dev = _device(cpu, 'device-decode')
    for p in (_innermost(dev.train_dataloader.dataset).pipeline,
              dev.test_dataloader.dataset.pipeline):
        assert p[0]['decode'] == 'device'
        assert p[0]['resize_backend'] == 'torchvision'
    cpu.data_path = 'cpu'
    assert apply_data_path(copy.deepcopy(cpu)).to_dict() == cpu.to_dict()


@pytest.fixture(scope='module')
def coco_root(tmp_path_factory):
    root = build_coco(tmp_path_factory.mktemp('coco'))
    # COCO-sized photos: the resize shrinks them, as on real data
    for split in ('train', 'val'):
        for k, path in enumerate(
                sorted(glob.glob(osp.join(root, f'{split}2014', '*')))):
            photo(480, 640, seed=k).save(path, 'JPEG', quality=90)
    return root


def _batches(cfg, loader, seed=0):
    """The first two samples of ``loader`` through the config's pipeline
    (numpy's RNG seeded per sample, as EpochSeededSampler does) and its
    data preprocessor, in training mode."""
    dataset = DATASETS.build(copy.deepcopy(cfg[loader].dataset))
    samples = []
    for i in range(2):
        np.random.seed(seed + i)
        samples.append(dataset[i])
    pre = MODELS.build(copy.deepcopy(cfg.model.data_preprocessor))
    return pre(pseudo_collate(samples), training=loader == 'train_dataloader')


@pytest.mark.parametrize('data_path', ['device', 'device-decode'])
def test_device_path_batches_are_the_cpu_pipelines_batches(
        coco_root, data_path):
    cpu = Config.fromfile(COCO_P50)
    for loader in ('train_dataloader', 'val_dataloader'):
        _innermost(cpu[loader].dataset).data_root = coco_root
    dev = _device(cpu, data_path)
    for seed in (0, 7):
        a = _batches(cpu, 'train_dataloader', seed)['inputs']
        b = _batches(dev, 'train_dataloader', seed)['inputs']
        assert a.shape == b.shape == (2, 3, 448, 448)
        # the same draws, augmented by the preprocessor: equal
        assert (a - b).abs().max() < 1e-4
    a = _batches(cpu, 'val_dataloader')['inputs']
    b = _batches(dev, 'val_dataloader')['inputs']
    grey = (a - b).abs() * torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    if data_path == 'device':
        # the test pipeline's decode and PIL's resize in the workers
        assert grey.max() < 1e-3
    else:
        # PIL's resize (bit-identical to the official) vs the device
        # resize, within one grey level
        assert grey.max() < 1.01 and (grey > 0.5).float().mean() < 0.01


def _train_pipeline(cfg):
    return _innermost(cfg.train_dataloader.dataset).pipeline


@pytest.mark.parametrize('change, match', [
    (lambda c: _train_pipeline(c).insert(1, dict(type='RandomFlip')),
     r'train_dataloader\.dataset\.dataset\.pipeline: the transforms '
     r"\['RandomFlip', 'TensorCutout', 'TensorRandAugment'\]"),
    (lambda c: (_train_pipeline(c)[0].update(resize_backend='pillow'),
                c.update(data_path='device-decode')),
     r"LoadImageTensor\(resize_backend='pillow'\): PIL's own resize runs "
     r"in the loader workers only: use data_path='device'"),
    (lambda c: _train_pipeline(c)[0].update(ignore_empty=True),
     r'ignore_empty=True\): the device path reads every file'),
    (lambda c: c.val_dataloader.dataset.pipeline[1].update(keep_ratio=True),
     r'val_dataloader\.dataset\.pipeline: Resize\(keep_ratio=True\)'),
    # a left-out argument is checked with the class's default: mmcv's
    # Resize resizes with cv2 (no antialiasing) unless told otherwise
    (lambda c: c.val_dataloader.dataset.pipeline[1].pop('backend'),
     r"val_dataloader\.dataset\.pipeline: Resize\(backend='cv2', its "
     r"default\): .*set backend='pillow', interpolation='bilinear' \(the "
     r'official resize\) or keep data_path=cpu'),
    (lambda c: c.val_dataloader.dataset.pipeline[1].update(
        type='mmpretrain.Resize', backend='cv2'),
     r"Resize\(backend='cv2'\): the device resize is PIL-style"),
    (lambda c: c.val_dataloader.dataset.pipeline[1].update(
        interpolation='nearest'),
     r"Resize\(interpolation='nearest'\): the device resize is bilinear"),
    (lambda c: c.val_dataloader.dataset.pipeline[1].pop('scale'),
     r'val_dataloader\.dataset\.pipeline: Resize: scale must be a positive '
     r'int or a \(w, h\) pair of positive ints, got None'),
    # a value LoadImageBytes would refuse: named as the user wrote it
    (lambda c: _train_pipeline(c)[1].update(cutout_factor='x'),
     r'train_dataloader\.dataset\.dataset\.pipeline: TensorCutout: '
     r"cutout_factor must be a number in \(0, 1\].*, got 'x'"),
    (lambda c: _train_pipeline(c)[0].update(scale=(224, )),
     r'train_dataloader\.dataset\.dataset\.pipeline: LoadImageTensor: '
     r'scale must be .*, got \(224,\)'),
    # legal in mmengine's Compose, but not a config to translate
    (lambda c: _train_pipeline(c).insert(1, lambda r: r),
     r'train_dataloader\.dataset\.dataset\.pipeline: transform \[1\] '
     r'<function .*> is not a config dict with a type'),
    (lambda c: c.model.update(data_preprocessor=dict(
        type='ClsDataPreprocessor')),
     r'model\.data_preprocessor: ClsDataPreprocessor is not '
     r'CLIPDataPreprocessor'),
    (lambda c: c.update(data_path='gpu'),
     r"data_path must be one of \('cpu', 'device', 'device-decode'\), "
     r"got 'gpu'"),
])
def test_what_cannot_be_translated_is_refused(change, match):
    cfg = Config.fromfile(COCO_P50)
    change(cfg)
    if cfg.get('data_path', None) is None:
        cfg.data_path = 'device'
    with pytest.raises(ValueError, match=match) as info, \
            warnings.catch_warnings():
        warnings.simplefilter('ignore')
        apply_data_path(cfg)
    if 'data_path must be' not in match:
        message = str(info.value)
        assert ': remove data_path=device, or write the device pipeline ' \
            'by hand' in message
        assert 'LoadImageBytes:' not in message  # never written by the user


def test_pipelines_and_preprocessor_of_two_data_paths_are_refused():
    """A hand-written ``LoadImageBytes`` pipeline (with any data_path,
    'cpu' too) needs ``DeviceAugmentPreprocessor`` and a ``PackInputs``
    keeping ``'device_aug'``; ``DeviceAugmentPreprocessor`` needs
    ``LoadImageBytes`` in every pipeline it serves. Before: with
    ``CLIPDataPreprocessor`` the RGB images were read as BGR, never
    augmented (the demo's test mAP 25.9 -> 22.4, without a word)."""
    own = [dict(type='mmcoop.LoadImageBytes', scale=(448, 448),
                augment=False, resize_backend='pillow'),
           dict(type='PackInputs', meta_keys=('img_path', 'device_aug'))]
    for data_path in ('cpu', 'device'):
        cfg = Config.fromfile(COCO_P50)
        cfg.data_path = data_path
        cfg.val_dataloader.dataset.pipeline = copy.deepcopy(own)
        if data_path == 'cpu':
            with pytest.raises(ValueError, match=(
                    r'^val_dataloader\.dataset\.pipeline loads with '
                    r'LoadImageBytes .* but model\.data_preprocessor is '
                    r'CLIPDataPreprocessor, which would take the RGB images '
                    r"for BGR .*Fix: set model\.data_preprocessor=dict\("
                    r"type='DeviceAugmentPreprocessor'\)")):
                apply_data_path(cfg)
        else:  # the CPU pipelines move, and the preprocessor with them
            _device(cfg)
    cfg = Config.fromfile(COCO_P50)
    cfg.model.data_preprocessor = dict(type='DeviceAugmentPreprocessor')
    with pytest.raises(ValueError, match=(
            r'^train_dataloader\.dataset\.dataset\.pipeline loads with '
            r'LoadImageTensor, but model\.data_preprocessor is '
            r"DeviceAugmentPreprocessor.* Fix: keep the CPU pipeline and set "
            r"data_path='device'")):
        apply_data_path(cfg)
    # every pipeline on the device path: accepted, with any data_path
    dev = _device(Config.fromfile(COCO_P50))
    for data_path in ('cpu', 'device'):
        _device(dev, data_path)
    dev.data_path = 'cpu'
    dev.test_dataloader.dataset.pipeline = [
        own[0], dict(type='PackInputs')]
    with pytest.raises(ValueError, match=(
            r"^test_dataloader\.dataset\.pipeline: its PackInputs drops "
            r"'device_aug' .*Fix: PackInputs\(meta_keys=\('img_path', "
            r"'device_aug', \.\.\.\)\)")):
        apply_data_path(dev)
    # a feature cache's dataset names the preprocessor its images reach
    cfg = Config.fromfile(COCO_P50)
    cfg.model.data_preprocessor = dict(type='FeatureDataPreprocessor')
    cfg.val_dataloader.dataset = dict(
        type='CachedFeatureDataset', dataset=dict(
            cfg.val_dataloader.dataset, pipeline=copy.deepcopy(own)),
        data_preprocessor=dict(type='DeviceAugmentPreprocessor'))
    cfg.train_dataloader.dataset = copy.deepcopy(cfg.val_dataloader.dataset)
    cfg.test_dataloader = copy.deepcopy(cfg.val_dataloader)
    apply_data_path(cfg)
    cfg.val_dataloader.dataset.data_preprocessor = dict(
        type='CLIPDataPreprocessor')
    with pytest.raises(ValueError, match=(
            r'^val_dataloader\.dataset\.dataset\.pipeline loads with '
            r'LoadImageBytes .* but val_dataloader\.dataset\.'
            r'data_preprocessor is CLIPDataPreprocessor.* Fix: set '
            r"val_dataloader\.dataset\.data_preprocessor=dict\("
            r"type='DeviceAugmentPreprocessor'\)")):
        apply_data_path(cfg)


def test_the_preprocessor_a_cached_dataset_holds_by_default():
    """A hand-written ``CachedFeatureDataset`` without ``data_preprocessor``
    holds its class default, ``CLIPDataPreprocessor``: with
    ``data_path='device'`` it moves to the device path with its pipelines
    (before: the pipelines moved, it stayed, and the config was refused
    naming the model's ``FeatureDataPreprocessor``, with the fix of setting
    the model's preprocessor); a ``LoadImageBytes`` pipeline inside it is
    refused naming the dataset's preprocessor and that fix."""
    cfg = Config.fromfile(COCO_P50)
    cfg.model.data_preprocessor = dict(type='FeatureDataPreprocessor')
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[name].dataset = dict(type='mmcoop.CachedFeatureDataset',
                                 dataset=cfg[name].dataset,
                                 cache_dir='unused')
    out = _device(cfg)
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert out[name].dataset.data_preprocessor == dict(
            type='mmcoop.DeviceAugmentPreprocessor')
        assert _innermost(out[name].dataset).pipeline[0]['type'] == (
            'mmcoop.LoadImageBytes')
    assert out.model.data_preprocessor['type'] == 'FeatureDataPreprocessor'
    apply_data_path(cfg)  # 'cpu': the CPU pipelines, as they are
    _innermost(cfg.val_dataloader.dataset).pipeline = _innermost(
        out.val_dataloader.dataset).pipeline
    with pytest.raises(ValueError, match=(
            r'^val_dataloader\.dataset\.dataset\.pipeline loads with '
            r'LoadImageBytes .* but val_dataloader\.dataset\.'
            r'data_preprocessor is CLIPDataPreprocessor.* Fix: set '
            r"val_dataloader\.dataset\.data_preprocessor=dict\(")):
        apply_data_path(cfg)


def test_a_top_level_data_preprocessor_keeps_its_statistics():
    """A ``data_preprocessor`` given at the top level only (MMEngine hands
    it to a model without its own) moves to the device path with its mean
    and std, and the model gets none of its own (before: the model got a
    ``DeviceAugmentPreprocessor`` with CLIP's statistics, which MMEngine
    uses, so the config's were dropped without a word)."""
    cfg = Config.fromfile(COCO_P50)
    del cfg.model['data_preprocessor']
    cfg.data_preprocessor = dict(type='CLIPDataPreprocessor',
                                 mean=[127.5] * 3, std=[127.5] * 3)
    out = _device(cfg)
    assert out.model.get('data_preprocessor', None) is None
    assert out.data_preprocessor == dict(
        type='mmcoop.DeviceAugmentPreprocessor', mean=[127.5] * 3,
        std=[127.5] * 3)
    # and back to the CPU test path for inference (init_model gives the
    # top-level one to the model too)
    from mmcoop.datasets.data_path import restore_cpu_data_path
    restore_cpu_data_path(out)
    assert out.data_preprocessor == dict(
        type='mmcoop.CLIPDataPreprocessor', mean=[127.5] * 3,
        std=[127.5] * 3)
    assert out.model.get('data_preprocessor', None) is None
    assert out.test_dataloader.dataset.pipeline[0]['type'] == (
        'mmcoop.LoadImageFromFileChecked')


def test_a_built_model_s_preprocessor_is_the_one_checked():
    """MMEngine's Runner takes a built model too: its
    ``data_preprocessor`` module is the one the pipelines are checked
    against (before: none was found, and the device-path pipelines were
    refused as served by the model's default)."""
    from mmcoop.datasets.data_path import check_device_path
    from mmcoop.models.data_preprocessors import DeviceAugmentPreprocessor
    cfg = _device(Config.fromfile(COCO_P50))
    model = torch.nn.Module()
    model.data_preprocessor = DeviceAugmentPreprocessor()
    cfg.model = model
    check_device_path(cfg)
    model.data_preprocessor = torch.nn.Identity()
    with pytest.raises(ValueError, match=r'but model\.data_preprocessor is '
                       r'Identity, which would never augment them'):
        check_device_path(cfg)


def test_a_built_model_is_not_rewritten_by_a_data_path():
    """A built model cannot get the device's preprocessor from a config
    rewrite: one with it keeps it (the pipelines move), any other is
    refused naming the fix (before: an AttributeError, ``Module.get``)."""
    from mmcoop.models.data_preprocessors import (CLIPDataPreprocessor,
                                                  DeviceAugmentPreprocessor)
    cfg = Config.fromfile(COCO_P50)
    model = torch.nn.Module()
    model.data_preprocessor = CLIPDataPreprocessor()
    cfg.model = model
    with pytest.raises(ValueError, match=(
            r"data_path='device' gives the model a DeviceAugmentPreprocessor"
            r' through its config, but model is a built Module \(its data '
            r'preprocessor: CLIPDataPreprocessor\)\. Fix: pass model as a '
            'config dict')):
        _device(cfg)
    model.data_preprocessor = DeviceAugmentPreprocessor()
    out = _device(cfg)
    assert isinstance(out.model.data_preprocessor, DeviceAugmentPreprocessor)
    assert out.train_dataloader.dataset.dataset.pipeline[0]['type'] == (
        'mmcoop.LoadImageBytes')


def test_a_device_pipeline_of_the_other_device_path_is_refused():
    """A pipeline already on one device path (the config a run dumped)
    given the other ``data_path`` is refused naming both; before it was
    kept without a word (``device-decode`` asked, the workers decoded)."""
    for made, asked in (('device', 'device-decode'),
                        ('device-decode', 'device')):
        dumped = _device(Config.fromfile(COCO_P50), made)
        have = 'cpu' if made == 'device' else 'device'
        with pytest.raises(ValueError, match=(
                rf"pipeline: LoadImageBytes\(decode='{have}'\) is the "
                rf"pipeline data_path='{made}' writes, not "
                rf"data_path='{asked}' .*Fix: set data_path='{made}'")):
            _device(dumped, asked)
        _device(dumped, made)  # the same one: kept


def test_left_out_arguments_are_the_transforms_defaults():
    """A ``Resize`` is what mmcv builds from it: without ``backend`` a cv2
    resize, refused; with ``backend='pillow'`` written out (interpolation
    and keep_ratio left to their defaults, bilinear and False) the device
    resize."""
    load, pack = dict(type='LoadImageFromFileChecked'), dict(type='PackInputs')
    resize = dict(type='Resize', scale=(64, 48), keep_ratio=False)
    with pytest.raises(ValueError, match=r"^data_path=device: test\.pipeline: "
                       r"Resize\(backend='cv2', its default\)"):
        device_pipeline([load, resize, pack], 'test.pipeline')
    for written in (dict(resize, backend='pillow'),
                    dict(type='Resize', scale=(64, 48), backend='pillow')):
        out = device_pipeline([load, written, pack], 'test.pipeline')
        assert out[0] == dict(type='mmcoop.LoadImageBytes', decode='cpu',
                              scale=(64, 48), resize_backend='pillow',
                              augment=False)
    # LoadImageFromFileChecked's own defaults (pillow, no EXIF rotation)
    # are read past its **kwargs: mmcv's (cv2, 'color') would be refused
    with pytest.raises(ValueError, match=r"LoadImageFromFileChecked\("
                       r"imdecode_backend='cv2'\): the official loader"):
        device_pipeline([dict(load, imdecode_backend='cv2'),
                         dict(resize, backend='pillow'), pack], 'test')


def _concat(cfg, times=None):
    """``cfg``'s train set twice in a ``ConcatDataset`` (in a
    ``RepeatDataset`` with ``times``)."""
    inner = cfg.train_dataloader.dataset.to_dict()
    data = dict(type='ConcatDataset',
                datasets=[copy.deepcopy(inner), copy.deepcopy(inner)])
    if times:
        data = dict(type='RepeatDataset', times=times, dataset=data)
    cfg.train_dataloader.dataset = Config(dict(d=data)).d
    return cfg


def test_wrapped_datasets_pipelines_move_to_the_device_path():
    """Every pipeline inside dataset wrappers (``datasets=[...]`` and
    ``dataset=``, at any depth) is rewritten; a bad one is refused naming
    its config path, before the preprocessor is switched."""
    plain = _device(Config.fromfile(COCO_P50))
    expected = _train_pipeline(plain)
    cfg = _device(_concat(Config.fromfile(COCO_P50)))
    for inner in cfg.train_dataloader.dataset.datasets:
        assert inner.dataset.pipeline == expected
        assert inner.dataset.pipeline[0]['type'] == 'mmcoop.LoadImageBytes'
    assert cfg.model.data_preprocessor['type'] == (
        'mmcoop.DeviceAugmentPreprocessor')
    bad = _concat(Config.fromfile(COCO_P50), times=2)
    bad.train_dataloader.dataset.dataset.datasets[1].dataset.pipeline[
        0].update(ignore_empty=True)
    with pytest.raises(ValueError, match=r'train_dataloader\.dataset\.dataset'
                       r'\.datasets\[1\]\.dataset\.pipeline: LoadImageTensor'
                       r'\(ignore_empty=True\)'):
        _device(bad)
    assert bad.model.data_preprocessor['type'] == 'CLIPDataPreprocessor'


def _runner_configs(monkeypatch) -> list:
    """The list of the configs ``MMCoopRunner.from_cfg`` hands on to
    MMEngine's ``Runner.from_cfg`` (patched to build nothing)."""
    from mmengine.runner import Runner
    seen = []
    monkeypatch.setattr(Runner, 'from_cfg',
                        classmethod(lambda cls, cfg: seen.append(cfg)))
    return seen


def test_runner_reads_data_path_first(monkeypatch):
    """``MMCoopRunner.from_cfg`` (every launcher) applies ``data_path``
    before the protocol copies the test pipeline to a held-out split."""
    from mmcoop.engine import MMCoopRunner
    seen = _runner_configs(monkeypatch)
    cfg = Config.fromfile(COCO_P50)
    cfg.merge_from_dict(dict(data_path='device', protocol=dict(name='clean'),
                             work_dir='unused'))
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    with pytest.warns(UserWarning, match=r"data_path='device' without a "
                      r'CUDA device.*slower here'):
        MMCoopRunner.from_cfg(cfg)
    out = seen[0]
    assert _innermost(out.train_dataloader.dataset).pipeline[0][
        'type'] == 'mmcoop.LoadImageBytes'
    held_out = _innermost(out.val_dataloader.dataset)
    assert held_out.pipeline[0] == dict(
        type='mmcoop.LoadImageBytes', decode='cpu', scale=(448, 448),
        resize_backend='pillow', augment=False)
    assert out.model.data_preprocessor['type'] == (
        'mmcoop.DeviceAugmentPreprocessor')


def test_inspection_shows_device_path_images_decoded_on_the_cpu(tmp_path):
    """``browse_dataset``'s view of a device-path sample whose file the
    device does not decode (a PNG: PIL in ``LoadImageBytes``) is the CPU
    test pipeline's image."""
    from mmcv.transforms import Compose

    from mmcoop.datasets.inspection import _device_path_view
    from mmcoop.registry import TRANSFORMS
    path = str(tmp_path / 'a.png')
    photo(120, 160).save(path)
    load = TRANSFORMS.build(dict(type='LoadImageBytes', scale=(64, 48),
                                 augment=False))
    res = load(dict(img_path=path))
    assert res['img'].dim() == 3  # decoded by PIL, not file bytes
    view = _device_path_view(res['img'], res['device_aug'])
    cpu = Compose([TRANSFORMS.build(dict(type='LoadImageTensor',
                                         scale=(64, 48)))])
    ref = cpu(dict(img_path=path))['img'].flip(0).permute(1, 2, 0).numpy()
    assert view.shape == (48, 64, 3) and np.array_equal(view, ref)


def test_feature_cache_extracts_through_the_device_path(monkeypatch):
    """With ``feature_cache`` too, the cache is built from the device-path
    pipelines with ``DeviceAugmentPreprocessor`` (data_path is applied
    first), and the model reads the cached features."""
    from mmcoop.engine import MMCoopRunner
    seen = _runner_configs(monkeypatch)
    cfg = Config.fromfile(COCO_P50)
    cfg.merge_from_dict(dict(data_path='device', work_dir='unused',
                             feature_cache=dict(enabled=True,
                                                cache_root='unused')))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        MMCoopRunner.from_cfg(cfg)
    out = seen[0]
    for name in ('train_dataloader', 'val_dataloader'):
        cached = out[name].dataset
        assert cached['type'] == 'mmcoop.CachedFeatureDataset'
        assert cached.data_preprocessor['type'] == (
            'mmcoop.DeviceAugmentPreprocessor')
        assert _innermost(cached.dataset).pipeline[0]['type'] == (
            'mmcoop.LoadImageBytes')
    assert out.model.data_preprocessor['type'] == (
        'mmcoop.FeatureDataPreprocessor')


def test_the_dump_of_a_cached_device_path_run_runs_again(monkeypatch):
    """The config a ``data_path`` + ``feature_cache`` run dumps (the
    model's ``FeatureDataPreprocessor``, the image preprocessor in each
    ``CachedFeatureDataset``) is read again by ``tools/test.py`` or a new
    run: kept as it is. Before: ``FeatureDataPreprocessor is not
    CLIPDataPreprocessor``, so the run's own config could not be tested.
    A cached dataset's own ``CLIPDataPreprocessor`` moves to the device
    path with its pipelines."""
    from mmcoop.engine import MMCoopRunner
    seen = _runner_configs(monkeypatch)
    cfg = Config.fromfile(COCO_P50)
    cfg.merge_from_dict(dict(data_path='device-decode', work_dir='unused',
                             feature_cache=dict(enabled=True,
                                                cache_root='unused')))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        MMCoopRunner.from_cfg(cfg)
        dumped = Config.fromstring(seen[0].dump(), '.py')
        MMCoopRunner.from_cfg(dumped)
    assert seen[1].to_dict() == seen[0].to_dict()
    cached = copy.deepcopy(seen[0])
    cached.data_path = 'cpu'
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dataset = cached[name].dataset
        dataset.data_preprocessor = dict(type='CLIPDataPreprocessor')
        _innermost(dataset).pipeline = Config.fromfile(COCO_P50)[
            name].dataset.get('pipeline') or _train_pipeline(
                Config.fromfile(COCO_P50))
    out = _device(cached, 'device')
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dataset = out[name].dataset
        assert dataset.data_preprocessor['type'] == (
            'mmcoop.DeviceAugmentPreprocessor')
        assert _innermost(dataset).pipeline[0]['decode'] == 'cpu'
    assert out.model.data_preprocessor['type'] == (
        'mmcoop.FeatureDataPreprocessor')


def test_load_image_bytes_decode_values_are_checked():
    """``decode`` is ``'cpu'`` or ``'device'``; PIL's resize only where the
    workers resize."""
    from mmcoop.datasets.transforms import LoadImageBytes
    with pytest.raises(ValueError, match=r"LoadImageBytes: decode must be "
                       r"one of \('cpu', 'device'\), got 'gpu'"):
        LoadImageBytes(scale=8, decode='gpu')
    with pytest.raises(ValueError, match=r"resize_backend='pillow' needs "
                       r"decode='cpu'.*Fix: set decode='cpu'"):
        LoadImageBytes(scale=8, decode='device', resize_backend='pillow')
    # the cache key (the repr) tells the two apart
    assert repr(LoadImageBytes(scale=8)) != repr(
        LoadImageBytes(scale=8, decode='device'))


def test_draft_is_carried_where_the_workers_decode(tmp_path):
    """``LoadImageTensor(draft=True)`` keeps its DCT-scaled pixels with
    ``data_path='device'`` (the workers decode); ``'device-decode'``
    decodes whole JPEGs on the device, as before."""
    from mmcoop.datasets.transforms import LoadImageBytes, LoadImageTensor
    path = str(tmp_path / 'a.jpg')
    photo(480, 640).save(path, 'JPEG', quality=90)
    bgr = LoadImageTensor(scale=224, draft=True)(dict(img_path=path))['img']
    rgb = LoadImageBytes(scale=224, draft=True)(dict(img_path=path))['img']
    assert torch.equal(rgb, bgr.flip(0))
    cpu = Config.fromfile(COCO_P50)
    _train_pipeline(cpu)[0].update(draft=True)
    assert _train_pipeline(_device(cpu))[0]['draft'] is True
    assert 'draft' not in _train_pipeline(_device(cpu, 'device-decode'))[0]
    with pytest.raises(ValueError, match=r"draft=True needs decode='cpu'"):
        LoadImageBytes(scale=8, decode='device', draft=True)
    with pytest.raises(ValueError, match=r'LoadImageBytes: draft must be '
                       r"True or False, got 'yes'"):
        LoadImageBytes(scale=8, draft='yes')


def test_a_device_path_dump_infers_and_exports_as_its_cpu_config():
    """The config a data_path='device' run dumps (LoadImageBytes test
    pipeline, DeviceAugmentPreprocessor) could not score an array, be
    exported or benchmarked: init_model restores the CPU test path it was
    made from (restore_cpu_data_path), with the same scores."""
    from mmcoop.apis import inference_model, init_model
    from mmcoop.deployment.export import pipeline_steps
    demo = osp.join(REPO, 'configs', 'demo',
                    'positivecoop_clip-tiny-vit_1xb16-coslr-20e_demo-'
                    'shapes-p50.py')
    cpu = Config.fromfile(demo)
    dumped = Config.fromstring(_device(cpu).dump(), '.py')
    assert dumped.model.data_preprocessor.type.endswith(
        'DeviceAugmentPreprocessor')
    image = np.asarray(photo(60, 80, seed=3))
    models = [init_model(c) for c in (cpu, dumped)]
    scores = [inference_model(m, image)[0]['scores'] for m in models]
    np.testing.assert_array_equal(scores[0], scores[1])
    model = models[1]
    assert model.cfg.data_path == 'cpu'
    loading, resize = pipeline_steps(model.cfg)
    assert type(loading).__name__ == 'LoadImageFromFileChecked'
    assert resize.scale == tuple(cpu.test_dataloader.dataset.pipeline[1][
        'scale']) and resize.backend == 'pillow'
    assert type(model.data_preprocessor).__name__ == 'CLIPDataPreprocessor'


def test_device_preprocessor_names_a_sample_without_draws():
    """A batch in which some samples lack ``device_aug`` (a pipeline of
    another data path in a ``ConcatDataset``, built without the runner's
    check) is refused naming the sample and the fix. Before: only the
    first sample was looked at, and a later one stopped the batch with an
    ``AttributeError`` deep in the augmentation."""
    from mmpretrain.structures import DataSample
    pre = MODELS.build(dict(type='DeviceAugmentPreprocessor'))
    img = torch.zeros(3, 8, 8, dtype=torch.uint8)
    good = DataSample(metainfo=dict(img_path='a.jpg',
                                    device_aug=dict(size=(8, 8))))
    bad = DataSample(metainfo=dict(img_path='b.jpg'))
    for samples in ([good, bad], [bad, good]):
        with pytest.raises(ValueError, match=(
                r"^DeviceAugmentPreprocessor needs every pipeline .*the "
                r"sample of 'b\.jpg' has no device_aug\. Fix: set "
                r"data_path='device'")):
            pre(dict(inputs=[img, img], data_samples=samples), True)
    out = pre(dict(inputs=[img, img], data_samples=[good, good]), True)
    assert out['inputs'].shape == (2, 3, 8, 8)


def test_device_preprocessor_names_samples_of_other_sizes():
    """Samples of one batch drawn at other output sizes (a ConcatDataset
    of pipelines with other scales) are named with the fix. Before:
    torch's ``stack expects each tensor to be equal size``."""
    from mmpretrain.structures import DataSample
    pre = MODELS.build(dict(type='DeviceAugmentPreprocessor'))
    samples = [
        DataSample(metainfo=dict(img_path=f'{name}.jpg',
                                 device_aug=dict(size=size)))
        for name, size in (('a', (8, 8)), ('b', (8, 8)), ('c', (6, 8)))
    ]
    imgs = [torch.zeros(3, 8, 8, dtype=torch.uint8)] * 3
    with pytest.raises(ValueError, match=(
            r"^DeviceAugmentPreprocessor: the samples of one batch have "
            r"other output sizes \(h, w\): 'a\.jpg' \(8, 8\), 'c\.jpg' "
            r'\(6, 8\): .* Fix: give the pipelines of one dataloader')):
        pre(dict(inputs=imgs, data_samples=samples), True)

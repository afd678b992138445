# Copyright (c) mmcoop contributors. All rights reserved.
"""Every config parses, follows the model-zoo naming, encodes the recipe it
claims and builds (model with a tiny CLIP, optimizer, schedulers,
pipelines, metric, datasets)."""
import copy
import glob
import math
import os
import os.path as osp
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope
from PIL import Image

import mmcoop.datasets  # noqa: F401
import mmcoop.engine  # noqa: F401
import mmcoop.evaluation  # noqa: F401
import mmcoop.models  # noqa: F401
from mmcoop.datasets.categories import VOC2007_CATEGORIES
from mmcoop.registry import (DATASETS, METRICS, MODELS, PARAM_SCHEDULERS,
                             TRANSFORMS)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = osp.join(REPO, 'configs')
METHODS = ('positivecoop', 'negativecoop', 'dualcoop', 'baseline')
DATASETS_ = {'coco14': 'COCO2014MultiLabel', 'voc07': 'VOC2007MultiLabel'}
HEADS = {
    'positivecoop': 'PositiveCoOpHead',
    'negativecoop': 'NegativeCoOpHead',
    'dualcoop': 'DualCoOpHead',
    'baseline': 'BaselineHead',
}
NAME_RE = re.compile(
    r'^(?P<algo>positivecoop|negativecoop|dualcoop|baseline)'
    r'_clip-rn101_openai-pre_(?P<gpus>\d+)xb(?P<bs>\d+)-coslr-(?P<ep>\d+)e'
    r'_(?P<data>coco14|voc07)-(?P<px>\d+)px-p(?P<p>\d+)\.py$')
PAPER_CONFIGS = sorted(
    p for m in METHODS for p in glob.glob(osp.join(CONFIGS, m, '*.py')))
DEMO_CONFIGS = sorted(glob.glob(osp.join(CONFIGS, 'demo', '*.py')))
ALL_CONFIGS = PAPER_CONFIGS + DEMO_CONFIGS
# the official preprocessing: torchvision Normalize on the 0..1 scale
OFFICIAL_MEAN = (0.48145466, 0.4578275, 0.40821073)
OFFICIAL_STD = (0.26862954, 0.26130258, 0.27577711)


def _id(path):
    return osp.relpath(path, CONFIGS)


def _fields(path):
    return NAME_RE.match(osp.basename(path)).groupdict()


def _tiny(model_cfg):
    """The config's model with a tiny random CLIP (same structure)."""
    model = copy.deepcopy(model_cfg)
    model.backbone.update(
        model_name='mmcoop-tiny-RN', pretrained=None, input_resolution=64)
    if 'text_encoder' in model.head:
        model.head.text_encoder.update(
            model_name='mmcoop-tiny-RN', pretrained=None)
    else:
        model.head.in_channels = 64  # the tiny CLIP's feature width
    return model


def _build_model(cfg):
    with DefaultScope.overwrite_default_scope('mmcoop'):
        torch.manual_seed(0)
        return MODELS.build(_tiny(cfg.model))


# --------------------------------------------------------------------------
def test_zoo_is_complete_and_named_by_convention():
    names = [osp.basename(p) for p in PAPER_CONFIGS]
    assert len(names) == 4 * 2 * 9
    for path in PAPER_CONFIGS:
        name = osp.basename(path)
        m = NAME_RE.match(name)
        assert m, f'{name} does not follow the naming convention'
        assert osp.basename(osp.dirname(path)) == m['algo']
        # mmpretrain .dev_scripts/check_metafile.py rules
        fields = name[:-3].split('_')
        assert len(fields) == 5
        assert fields[2].endswith('-pre')
        assert re.match(r'\d+xb\d+', fields[3])
    expected = {
        f'{m}_clip-rn101_openai-pre_1xb32-coslr-50e_{d}-448px-p{p}.py'
        for m in METHODS
        for d in DATASETS_
        for p in range(10, 100, 10)
    }
    assert set(names) == expected
    assert sorted(osp.basename(p) for p in DEMO_CONFIGS) == [
        'baseline_clip-tiny-vit_1xb16-coslr-20e_demo-shapes-p50.py',
        'positivecoop_clip-tiny-vit_1xb16-coslr-20e_demo-shapes-p50.py'
    ]


def _bases(path):
    """The literal ``_base_`` entries of a config file."""
    import ast
    for node in ast.parse(open(path).read()).body:
        if isinstance(node, ast.Assign) and any(
                getattr(t, 'id', None) == '_base_' for t in node.targets):
            value = ast.literal_eval(node.value)
            return [value] if isinstance(value, str) else list(value)
    return []


def test_bases_are_vendored_and_relative():
    """No `mmpretrain::` bases (pkg_resources / `_scope_` stamping)."""
    paths = glob.glob(osp.join(CONFIGS, '**', '*.py'), recursive=True)
    num_bases = 0
    for path in paths:
        for base in _bases(path):
            num_bases += 1
            assert '::' not in base and base.startswith('.'), (path, base)
            assert osp.isfile(osp.normpath(osp.join(osp.dirname(path),
                                                    base))), (path, base)
    # parents x 4 bases, children, demos, dataset bases inheriting COCO's
    # (VOC, NUS-WIDE, Open Images, CSV, JSON + the zero-shot split);
    # configs/clip_families: 18 families x 6 configs x 2 bases (method
    # config, family), 19 x 2 zero-shot x 1; configs/zero_shot: COCO 2 x 4
    # (model, zero-shot data, schedule, runtime), NUS-WIDE 4; the COCO base:
    # the shared pipelines; the 4 model bases: the shared frozen CLIP model
    assert num_bases == (8 * 4 + 64 + 2 + 6 + 18 * 6 * 2 + 19 * 2 + 2 * 4 + 4
                         + 1 + 4)


def test_default_runtime():
    cfg = Config.fromfile(osp.join(CONFIGS, '_base_', 'default_runtime.py'))
    assert cfg.default_scope == 'mmcoop'
    assert cfg.runner_type == 'mmcoop.engine.MMCoopRunner'
    assert cfg.custom_imports == dict(
        imports=[
            'mmcoop.models', 'mmcoop.datasets', 'mmcoop.evaluation',
            'mmcoop.engine'
        ],
        allow_failed_imports=False)
    hooks = cfg.default_hooks
    assert {h.type
            for h in hooks.values()} >= {
                'IterTimerHook', 'LoggerHook', 'ParamSchedulerHook',
                'CheckpointHook'
            }
    assert hooks.checkpoint.interval == 1
    assert 0 < hooks.checkpoint.max_keep_ckpts <= 5
    assert cfg.randomness == dict(seed=0, deterministic=False)
    assert cfg.load_from is None and cfg.resume is False
    assert [b.type for b in cfg.visualizer.vis_backends] == ['LocalVisBackend']
    assert 'TensorboardVisBackend' in open(
        osp.join(CONFIGS, '_base_', 'default_runtime.py')).read()


@pytest.mark.parametrize('path', PAPER_CONFIGS, ids=_id)
def test_paper_config_encodes_its_name_and_recipe(path):
    f = _fields(path)
    cfg = Config.fromfile(path)
    method, data = f['algo'], f['data']
    # runtime
    assert cfg.default_scope == 'mmcoop'
    assert cfg.runner_type == 'mmcoop.engine.MMCoopRunner'
    # model
    assert cfg.model.type == 'ImageClassifier'
    # CLIP's statistics are the preprocessor's defaults, not typed here
    assert cfg.model.data_preprocessor == dict(type='CLIPDataPreprocessor')
    with DefaultScope.overwrite_default_scope('mmcoop'):
        pre = MODELS.build(cfg.model.data_preprocessor)
    assert pre.to_rgb is True
    for got, official in ((pre.mean, OFFICIAL_MEAN), (pre.std, OFFICIAL_STD)):
        expect = torch.tensor(official, dtype=torch.float64) * 255
        assert torch.equal(got.flatten(), expect.float())
    backbone = cfg.model.backbone
    assert (backbone.type, backbone.model_name,
            backbone.pretrained) == ('FrozenCLIP', 'RN101-quickgelu', 'openai')
    assert backbone.input_resolution == int(f['px']) == 448
    head = cfg.model.head
    assert head.type == HEADS[method]
    assert head.classnames == DATASETS_[data]
    if method == 'baseline':
        assert 'text_encoder' not in head and head.in_channels == 512
    else:
        assert head.text_encoder.model_name == 'RN101-quickgelu'
        assert head.text_encoder.pretrained == 'openai'
        assert head.n_ctx == 16 and head.class_specific is True
    assert head.loss == dict(
        type='PartialAsymmetricLoss',
        gamma_neg=2,
        gamma_pos=1,
        clip=0.05,
        loss_weight=0.03)
    # data
    train = cfg.train_dataloader
    assert train.batch_size == int(f['bs']) == 32 and int(f['gpus']) == 1
    assert train.sampler.shuffle is True
    assert train.dataset.type == 'PartialLabelDataset'
    assert train.dataset.known_proportion == pytest.approx(int(f['p']) / 100)
    assert train.dataset.mode == 'bernoulli' and train.dataset.seed == 0
    inner = train.dataset.dataset
    assert inner.type == DATASETS_[data]
    assert inner.split == {'coco14': 'train', 'voc07': 'trainval'}[data]
    for loader in (cfg.val_dataloader, cfg.test_dataloader):
        assert loader.dataset.type == DATASETS_[data]  # complete labels
        assert loader.dataset.split == {'coco14': 'val', 'voc07': 'test'}[data]
        assert loader.dataset.test_mode is True
    if data == 'voc07':
        assert inner.difficult_as == 'negative'
        assert cfg.val_dataloader.dataset.difficult_as == 'negative'
    train_types = [t.type for t in inner.pipeline]
    # the official Resize -> CutoutPIL(0.5) -> RandAugment(), tensor path
    assert train_types == [
        'mmcoop.LoadImageTensor', 'TensorCutout', 'TensorRandAugment',
        'PackInputs'
    ]
    assert inner.pipeline[0].scale == (448, 448)
    assert inner.pipeline[1].cutout_factor == 0.5
    test_types = [t.type for t in cfg.test_dataloader.dataset.pipeline]
    assert test_types == [
        'mmcoop.LoadImageFromFileChecked', 'Resize', 'PackInputs'
    ]
    resize = cfg.test_dataloader.dataset.pipeline[1]
    assert resize.scale == (448, 448) and resize.keep_ratio is False
    assert (resize.backend, resize.interpolation) == ('pillow', 'bilinear')
    assert cfg.val_evaluator.type == 'PartialMultiLabelMetric'
    assert cfg.test_evaluator.type == 'PartialMultiLabelMetric'
    assert [h.type for h in cfg.custom_hooks] == ['PartialLabelMaskHook']
    # schedule
    epochs = int(f['ep'])
    assert cfg.train_cfg.max_epochs == epochs == 50
    warmup, cosine = cfg.param_scheduler
    assert warmup.type == 'ConstantAbsoluteLR'
    assert (warmup.begin, warmup.end, warmup.by_epoch) == (0, 1, True)
    assert cosine.type == 'CosineAnnealingLR'
    assert (cosine.begin, cosine.end, cosine.T_max) == (1, epochs, epochs)
    assert cosine.by_epoch is True and cosine.eta_min == 0
    assert 'convert_to_iter_based' not in warmup
    assert 'convert_to_iter_based' not in cosine
    opt = cfg.optim_wrapper.optimizer
    assert cfg.optim_wrapper.constructor == \
        'TrainableParamsOptimWrapperConstructor'
    assert (opt.type, opt.momentum, opt.dampening,
            opt.nesterov) == ('SGD', 0.9, 0, False)
    if method == 'dualcoop':
        assert opt.lr == {'coco14': 0.002, 'voc07': 0.001}[data]
        assert opt.weight_decay == 5e-4
        assert warmup.value == 1e-5
        assert 'paramwise_cfg' not in cfg.optim_wrapper
    else:
        assert opt.lr == 0.5 and opt.weight_decay == 0
        assert warmup.value == 5e-3
    assert cfg.auto_scale_lr.base_batch_size == 32


# expected (lr, weight decay) of every trainable tensor, per method/dataset
EXPECTED_GROUPS = {
    ('positivecoop', 'coco14'): {
        'head.pos_prompt.ctx': (0.005, 0.),
        'head.neg_embedding': (0.5, 0.),
        'head.pos_residual': (0.5, 0.),
    },
    ('negativecoop', 'coco14'): {
        'head.neg_prompt.ctx': (0.005, 0.),
        'head.pos_embedding': (0.5, 0.),
        'head.neg_residual': (0.5, 0.),
    },
    ('dualcoop', 'coco14'): {
        'head.pos_prompt.ctx': (0.002, 5e-4),
        'head.neg_prompt.ctx': (0.002, 5e-4),
    },
    ('dualcoop', 'voc07'): {
        'head.pos_prompt.ctx': (0.001, 5e-4),
        'head.neg_prompt.ctx': (0.001, 5e-4),
    },
    ('baseline', 'voc07'): {
        'head.fc.weight': (0.005, 0.),
        'head.fc.bias': (0.005, 0.),
    },
}


@pytest.mark.parametrize('method,data', sorted(EXPECTED_GROUPS), ids='-'.join)
def test_optimizer_groups_as_the_official_code(method, data):
    """lr and weight decay per trained tensor, as the official train.py."""
    path = osp.join(
        CONFIGS, method,
        f'{method}_clip-rn101_openai-pre_1xb32-coslr-50e_{data}-448px-p50.py')
    cfg = Config.fromfile(path)
    model = _build_model(cfg)
    with DefaultScope.overwrite_default_scope('mmcoop'):
        optim = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
    names = {id(p): n for n, p in model.named_parameters()}
    seen = {}
    for group in optim.optimizer.param_groups:
        assert group['momentum'] == 0.9 and group['dampening'] == 0
        assert group['nesterov'] is False
        for p in group['params']:
            assert id(p) not in seen, 'a tensor is in two param groups'
            seen[id(p)] = (names[id(p)], group['lr'], group['weight_decay'])
    got = {n: (lr, wd) for n, lr, wd in seen.values()}
    expected = EXPECTED_GROUPS[(method, data)]
    # exactly the trainable tensors, none of the frozen CLIP
    assert set(got) == set(expected) == {
        n
        for n, p in model.named_parameters() if p.requires_grad
    }
    for name, (lr, wd) in expected.items():
        assert got[name][0] == pytest.approx(lr, rel=1e-12), name
        assert got[name][1] == pytest.approx(wd, rel=1e-12), name
    # the first group (whose lr MMEngine logs) is a trained tensor
    first = optim.optimizer.param_groups[0]['params'][0]
    assert first.requires_grad


# ------------------------------------------------------------------ Dassl
class _DasslConstantWarmup(torch.optim.lr_scheduler.LRScheduler):
    """Reference: Dassl.pytorch dassl/optim/lr_scheduler.py
    (_BaseWarmupScheduler + ConstantWarmupScheduler), as called by
    build_lr_scheduler with WARMUP_RECOUNT=True."""

    def __init__(self, optimizer, successor, warmup_epoch, cons_lr):
        self.successor = successor
        self.warmup_epoch = warmup_epoch
        self.cons_lr = cons_lr
        super().__init__(optimizer)

    def get_lr(self):
        if self.last_epoch >= self.warmup_epoch:
            return self.successor.get_last_lr()
        return [self.cons_lr for _ in self.base_lrs]

    def step(self, epoch=None):
        if self.last_epoch >= self.warmup_epoch:
            self.successor.step(epoch)
            self._last_lr = self.successor.get_last_lr()
        else:
            super().step(epoch)


def _dassl_lrs(base_lrs, max_epoch, cons_lr):
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in base_lrs]
    opt = torch.optim.SGD(
        [dict(params=[p], lr=lr) for p, lr in zip(params, base_lrs)],
        lr=base_lrs[0],
        momentum=0.9)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, float(max_epoch))
    sched = _DasslConstantWarmup(opt, cosine, 1, cons_lr)
    out = []
    for _ in range(max_epoch):  # official: sched.step() after each epoch
        out.append([g['lr'] for g in opt.param_groups])
        opt.step()
        sched.step()
    return np.array(out)


@pytest.mark.parametrize('method', ['positivecoop', 'dualcoop', 'baseline'])
def test_schedule_per_epoch_equals_official(method):
    path = osp.join(
        CONFIGS, method,
        f'{method}_clip-rn101_openai-pre_1xb32-coslr-50e_coco14-448px-p50.py')
    cfg = Config.fromfile(path)
    model = _build_model(cfg)
    with DefaultScope.overwrite_default_scope('mmcoop'):
        optim = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
        schedulers = [
            PARAM_SCHEDULERS.build(dict(copy.deepcopy(s), optimizer=optim))
            for s in cfg.param_scheduler
        ]
    epochs = cfg.train_cfg.max_epochs
    ours = []
    for _ in range(epochs):  # what ParamSchedulerHook does per epoch
        ours.append([g['lr'] for g in optim.optimizer.param_groups])
        optim.step()  # no gradients: a no-op that the schedulers count
        for s in schedulers:
            s.step()
    ours = np.array(ours)
    base = ours[1]  # epoch 2 runs at the base lrs
    cons = cfg.param_scheduler[0].value
    ref = _dassl_lrs(list(base), epochs, cons)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-15)
    # spelled out: epoch 1 at the absolute warm-up lr for every group,
    # then cosine over epochs 2..50 with T_max = 50
    assert np.all(ours[0] == cons)
    for e in (1, 2, 25, 49):
        np.testing.assert_allclose(
            ours[e],
            base * (1 + math.cos(math.pi * (e - 1) / epochs)) / 2,
            rtol=1e-9)


# ---------------------------------------------------------------- building
def _voc_tree(root):
    """Two trainval and two test images of the real VOC2007 layout."""
    from PIL import Image
    for sub in ('Annotations', 'JPEGImages', 'ImageSets/Main'):
        os.makedirs(osp.join(root, sub), exist_ok=True)
    ids = {'trainval': ['000005', '000007'], 'test': ['000001', '000002']}
    for split, split_ids in ids.items():
        with open(osp.join(root, 'ImageSets/Main', f'{split}.txt'), 'w') as f:
            f.write('\n'.join(split_ids) + '\n')
        for k, img_id in enumerate(split_ids):
            Image.new('RGB', (50, 40), (10 * k, 80, 160)).save(
                osp.join(root, 'JPEGImages', f'{img_id}.jpg'))
            ann = ET.Element('annotation')
            for name, difficult in ((VOC2007_CATEGORIES[k], 0),
                                    (VOC2007_CATEGORIES[5], 1)):
                obj = ET.SubElement(ann, 'object')
                ET.SubElement(obj, 'name').text = name
                ET.SubElement(obj, 'difficult').text = str(difficult)
            ET.ElementTree(ann).write(
                osp.join(root, 'Annotations', f'{img_id}.xml'))
    return root


@pytest.fixture(scope='module')
def voc_root(tmp_path_factory):
    return _voc_tree(str(tmp_path_factory.mktemp('voc') / 'VOC2007'))


@pytest.mark.parametrize('path', ALL_CONFIGS, ids=_id)
def test_config_builds(path, voc_root, tmp_path):
    cfg = Config.fromfile(path)
    model = _build_model(cfg)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith('head.') for n in trainable)
    # checkpoints hold only the trained tensors (frozen CLIP left out)
    assert set(model.state_dict()) == trainable
    with DefaultScope.overwrite_default_scope('mmcoop'):
        optim = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
        for s in cfg.param_scheduler:
            PARAM_SCHEDULERS.build(dict(copy.deepcopy(s), optimizer=optim))
        METRICS.build(copy.deepcopy(cfg.val_evaluator))
        inner = cfg.train_dataloader.dataset.dataset
        pipelines = (inner.pipeline, cfg.val_dataloader.dataset.pipeline)
        transforms = [[TRANSFORMS.build(copy.deepcopy(t)) for t in p]
                      for p in pipelines]
        # run the train pipeline on a random 400 x 300 JPEG
        img_path = str(tmp_path / 'random.jpg')
        Image.fromarray(
            np.random.RandomState(0).randint(0, 256, (300, 400, 3),
                                             dtype=np.uint8)).save(img_path)
        results = dict(
            img_path=img_path,
            gt_label=[1],
            gt_score=np.array([1.] + [-1.] * 9, np.float32))
        for t in transforms[0]:
            results = t(results)
        size = cfg.model.backbone.input_resolution
        assert tuple(results['inputs'].shape) == (3, size, size)
        assert results['data_samples'].gt_score.tolist()[:2] == [1., -1.]
        if cfg.train_dataloader.dataset.dataset.type == 'VOC2007MultiLabel':
            train_cfg = copy.deepcopy(cfg.train_dataloader.dataset)
            train_cfg.dataset.data_root = voc_root
            train_cfg.mask_file = str(tmp_path / 'mask.npy')
            train = DATASETS.build(train_cfg)
            val_cfg = copy.deepcopy(cfg.val_dataloader.dataset)
            val_cfg.data_root = voc_root
            val = DATASETS.build(val_cfg)
            assert len(train) == len(val) == 2
            assert train.known_proportion == \
                cfg.train_dataloader.dataset.known_proportion
            # the test set keeps complete labels; difficult -> negative
            score = val.get_data_info(0)['gt_score']
            assert set(np.unique(score)) <= {0., 1.} and score[5] == 0
            sample = train[0]
            assert tuple(sample['inputs'].shape) == (3, size, size)

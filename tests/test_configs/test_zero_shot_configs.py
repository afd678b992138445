# Copyright (c) mmcoop contributors. All rights reserved.
"""The zero-shot configs (COCO 48/17): shared-context DualCoOp and
PositiveCoOp with a shared negative embedding, unseen classes hidden in
training, scored by ``UnseenClassMetric``; heads that cannot score unseen
classes are refused before anything is built."""
import glob
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from test_configs import CONFIGS, _build_model

from mmcoop.datasets.categories import COCO2014_CATEGORIES
from mmcoop.datasets.unseen_splits import COCO_48_17_SEEN, COCO_48_17_UNSEEN
from mmcoop.engine.config_checks import (UnseenClassHeadError,
                                         check_unknown_keys,
                                         check_unseen_class_head,
                                         unseen_class_fields)
from mmcoop.registry import METRICS

CONFIG = osp.join(CONFIGS, 'zero_shot',
                  'dualcoop-shared_clip-rn101_coco14-48-17.py')
SHAREDNEG = osp.join(CONFIGS, 'zero_shot',
                     'positivecoop-sharedneg_clip-rn101_coco14-48-17.py')
NUS_CONFIG = osp.join(CONFIGS, 'zero_shot',
                      'dualcoop-shared_clip-rn101_nuswide-925-81.py')
HEADS = {  # the COCO 48/17 configs
    CONFIG: ('DualCoOpHead', dict(class_specific=False)),
    SHAREDNEG: ('PositiveCoOpHead',
                dict(class_specific=False, use_residual=False,
                     shared_embedding=True)),
}


def test_the_zero_shot_configs():
    assert sorted(glob.glob(osp.join(CONFIGS, 'zero_shot', '*.py'))) == \
        sorted([*HEADS, NUS_CONFIG])


@pytest.mark.parametrize('path', sorted(HEADS))
def test_config_keys_and_no_unknown_key(path):
    cfg = Config.fromfile(path)
    assert check_unknown_keys(cfg) == []
    head_type, fields = HEADS[path]
    assert cfg.model.head.type == head_type
    for key, value in fields.items():
        assert cfg.model.head[key] is value
    assert cfg.model.head.classnames == 'COCO2014MultiLabel'
    check_unseen_class_head(cfg)  # no error: the head can
    train = cfg.train_dataloader.dataset
    assert train.type == 'PartialLabelDataset'
    assert train.known_proportion == 1.0
    # only the 48 seen classes are trained on: the 17 unseen and the 15
    # classes outside the split are hidden
    hidden = set(train.unseen_classes)
    assert len(hidden) == 32 and hidden >= set(COCO_48_17_UNSEEN)
    assert hidden | set(COCO_48_17_SEEN) == set(COCO2014_CATEGORIES)
    # the official image sets: training images with a seen object; the
    # metric scores each part's images with a positive (its default)
    assert tuple(train.dataset.image_classes) == COCO_48_17_SEEN
    for evaluator in (cfg.val_evaluator, cfg.test_evaluator):
        assert evaluator.get('images', 'with_positive') == 'with_positive'
        assert evaluator.type == 'UnseenClassMetric'
        assert 'thr' not in evaluator  # the base's metric key is dropped
        assert tuple(evaluator.unseen_classes) == COCO_48_17_UNSEEN
        assert tuple(evaluator.seen_classes) == COCO_48_17_SEEN


def test_model_has_one_shared_context():
    model = _build_model(Config.fromfile(CONFIG))
    for prompt in (model.head.pos_prompt, model.head.neg_prompt):
        assert prompt.ctx.shape == (16, 64)  # (n_ctx, tiny CLIP width)
    assert model.head.scores_unseen_classes


def test_sharedneg_model_has_no_per_class_parameter():
    model = _build_model(Config.fromfile(SHAREDNEG))
    trainable = {n: tuple(p.shape) for n, p in model.named_parameters()
                 if p.requires_grad}
    # (n_ctx, W) + (1, D) with the tiny CLIP (W = D = 64): n_ctx*W + D
    assert trainable == {'head.pos_prompt.ctx': (16, 64),
                         'head.neg_embedding': (1, 64)}
    assert model.head.pos_residual is None
    assert model.head.scores_unseen_classes
    neg, pos = model.head.class_features()
    assert neg.shape == pos.shape == (80, 64)


def test_zero_shot_head_on_the_sharedneg_config():
    """``--cfg-options model.head.type=ZeroShotHead``: the written-prompt
    reference row of the same config."""
    cfg = Config.fromfile(SHAREDNEG)
    cfg.model.head.type = 'ZeroShotHead'
    check_unseen_class_head(cfg)
    model = _build_model(cfg)
    assert type(model.head).__name__ == 'ZeroShotHead'
    assert not any(p.requires_grad for p in model.parameters())


def test_sharedneg_schedule_builds():
    """The PositiveCoOp recipe: the context at 0.01 x lr, the shared
    embedding at lr."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import DefaultScope
    cfg = Config.fromfile(SHAREDNEG)
    model = _build_model(cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    with DefaultScope.overwrite_default_scope('mmcoop'):
        wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    lrs = {names[id(p)]: g['lr'] for g in wrapper.optimizer.param_groups
           for p in g['params']}
    assert lrs == pytest.approx({'head.pos_prompt.ctx': 0.005,
                                 'head.neg_embedding': 0.5})


@pytest.mark.parametrize('path,override,fields', [
    (CONFIG, dict(class_specific=True), ['class_specific=True']),
    (SHAREDNEG, dict(use_residual=True), ['use_residual=True']),
    (SHAREDNEG, dict(shared_embedding=False), ['shared_embedding=False']),
    (SHAREDNEG, dict(class_specific=True, shared_embedding=False),
     ['class_specific=True', 'shared_embedding=False']),
])
def test_head_that_cannot_score_unseen_classes_is_refused(
        path, override, fields, tmp_path):
    """The check every launcher reaches (``MMCoopRunner.from_cfg``, behind
    ``tools/train.py``, ``tools/test.py``, ``mim``, ``RUNNERS.build``),
    before the model is built or the work dir is made."""
    from mmcoop.engine import MMCoopRunner
    from mmcoop.registry import RUNNERS
    cfg = Config.fromfile(path)
    cfg.model.head.update(override)
    cfg.work_dir = str(tmp_path / 'work')
    for build in (check_unseen_class_head, MMCoopRunner.from_cfg,
                  RUNNERS.build):
        with pytest.raises(UnseenClassHeadError) as err:
            build(cfg)
        msg = str(err.value)
        assert msg.startswith(
            '`train_dataloader.dataset.unseen_classes` (PartialLabelDataset)'
            ' and `val_evaluator.unseen_classes` (UnseenClassMetric) and '
            '`test_evaluator.unseen_classes` (UnseenClassMetric) in '
            f'{path} set unseen classes, but `model.head` ('
            f'{cfg.model.head.type}) cannot score a class it never trained '
            'on: ')
        assert [f for f in fields if f'`model.head.{f}`' in msg] == fields
        assert msg.count('Fix: ') == len(fields)
    assert not osp.exists(tmp_path / 'work')


def test_cli_train_is_refused(tmp_path, load_tool):
    train = load_tool('tools/train.py')
    with pytest.raises(UnseenClassHeadError, match='`model.head.use_res'):
        train.main([SHAREDNEG, '--work-dir', str(tmp_path / 'work'),
                    '--cfg-options', 'model.head.use_residual=True'])
    assert not osp.exists(tmp_path / 'work')


@pytest.mark.parametrize('head,refused', [
    (dict(type='BaselineHead'), True),
    (dict(type='mmcoop.DualCoOpHead'), True),  # CSC by default
    (dict(type='DualCoOpHead', class_specific=False), False),
    (dict(type='ZeroShotHead'), False),
    (dict(type='NegativeCoOpHead', class_specific=False, use_residual=False,
          shared_embedding=True), False),
    (dict(type='MultiLabelLinearClsHead'), True),  # does not say
])
def test_hidden_classes_need_a_head_that_can(head, refused):
    """Hiding classes in training needs a head that can score them; the
    metric alone (nothing hidden: the split's upper bound) is allowed for
    every head, with a warning that it is not a zero-shot result."""
    cfg = Config(dict(
        model=dict(type='ImageClassifier', head=head),
        train_dataloader=dict(dataset=dict(type='PartialLabelDataset',
                                           unseen_classes=None)),
        val_evaluator=None,
        test_evaluator=[dict(type='PartialMultiLabelMetric'),
                        dict(type='UnseenClassMetric',
                             unseen_classes=['cat'])]))
    assert unseen_class_fields(cfg) == [
        '`test_evaluator[1].unseen_classes` (UnseenClassMetric)']
    with pytest.warns(UserWarning, match='upper bound, not a zero-shot'):
        check_unseen_class_head(cfg)
    cfg.train_dataloader.dataset.unseen_classes = ['cat']
    if refused:
        with pytest.raises(UnseenClassHeadError,
                           match=r'`train_dataloader.dataset.unseen_classes'
                           r'` \(PartialLabelDataset\) and '
                           r'`test_evaluator\[1\].unseen_classes`'):
            check_unseen_class_head(cfg)
    else:
        check_unseen_class_head(cfg)
    cfg.train_dataloader.dataset.unseen_classes = None
    # without unseen classes nothing is checked
    cfg.test_evaluator.pop()
    assert unseen_class_fields(cfg) == []
    check_unseen_class_head(cfg)


def test_metric_scores_unseen_and_65_classes():
    metric = METRICS.build(Config.fromfile(CONFIG).val_evaluator)
    metric.dataset_meta = dict(classes=list(COCO2014_CATEGORIES))
    rng = np.random.default_rng(0)
    target = (rng.random((6, 80)) < 0.3).astype(np.float32)
    target[0] = 1  # every class has a positive
    target[1] = 0  # ... and a negative
    # perfect scores on the 65 split classes, inverted on the other 15
    split = [COCO2014_CATEGORIES.index(c)
             for c in COCO_48_17_SEEN + COCO_48_17_UNSEEN]
    pred = 1 - target
    pred[:, split] = target[:, split]
    metric.process(None, [
        dict(pred_score=torch.tensor(p), gt_score=torch.tensor(t))
        for p, t in zip(pred, target)
    ])
    res = metric.evaluate(6)
    assert res['zsl/unseen/mAP'] == 100.0
    assert res['zsl/all/mAP'] == 100.0  # the 15 other classes take no part


# --------------------------------------------------------------------------
# NUS-WIDE 925/81


def test_nuswide_config_keys_and_no_unknown_key():
    from mmcoop.datasets.unseen_splits import NUSWIDE_81_UNSEEN
    cfg = Config.fromfile(NUS_CONFIG)
    assert check_unknown_keys(cfg) == []
    head = cfg.model.head
    assert head.type == 'DualCoOpHead' and head.class_specific is False
    assert head.classnames == dict(
        type='NUSWIDEMultiLabel', data_root='data/nus-wide', tags='925')
    assert cfg.optim_wrapper.optimizer.lr == 0.001
    train = cfg.train_dataloader.dataset
    assert train.known_proportion == 1.0
    assert tuple(train.unseen_classes) == NUSWIDE_81_UNSEEN
    assert train.dataset.type == 'NUSWIDEMultiLabel'
    for loader in (train, cfg.val_dataloader.dataset,
                   cfg.test_dataloader.dataset):
        inner = loader.get('dataset', loader)
        assert (inner.tags, inner.data_root) == ('925', 'data/nus-wide')
    assert cfg.test_dataloader.dataset.split == 'test'
    for evaluator in (cfg.val_evaluator, cfg.test_evaluator):
        assert evaluator.type == 'UnseenClassMetric'
        assert tuple(evaluator.unseen_classes) == NUSWIDE_81_UNSEEN
        assert 'seen_classes' not in evaluator  # "all": the 1006 classes
        # stated, not inherited from the metric's default: LESA scores
        # every image, DualCoOp's lists are filtered (docs/data.md)
        assert evaluator.images == 'with_positive'


def test_nuswide_config_on_files_in_the_official_format(tmp_path):
    """Dataset, head and metric of the config on a generated tree: 1006
    classes, the 81 concepts hidden in training, the head built with the
    dataset's class names, ZSL scored over the 81."""
    from test_datasets._builders import build_nus_wide, build_nus_wide_tags

    from mmcoop.datasets.categories import NUSWIDE_CONCEPTS
    from mmcoop.registry import DATASETS
    root = build_nus_wide(
        tmp_path / 'nus',
        splits={'Train': [('a\\1.jpg', (55, )), ('b\\2.jpg', ())],
                'Test': [('c\\3.jpg', (0, )), ('d\\4.jpg', (1, ))]},
        concepts=NUSWIDE_CONCEPTS)
    build_nus_wide_tags(root, {'Train': [{'tag003'}, {'tag007', 'sky'}],
                               'Test': [set(), {'tag003'}]})
    cfg = Config.fromfile(NUS_CONFIG)
    cfg.model.head.classnames.data_root = root
    train = cfg.train_dataloader.dataset
    train.dataset.update(data_root=root, pipeline=[])
    dataset = DATASETS.build(train)
    classes = dataset.metainfo['classes']
    assert len(classes) == 1006 and classes[:81] == NUSWIDE_CONCEPTS
    score = dataset.get_data_info(0)['gt_score']
    assert (score[:81] == -1).all()  # concepts hidden, sky included
    assert score[81 + 3] == 1 and (np.delete(score[81:], 3) == 0).all()
    # the config's class subset is exactly the 925 tags (scale 1: the loss
    # of all 1006 classes, the hidden 81 not encoded)
    from mmcoop.models.heads.class_subset import sample_class_subset
    subset = cfg.model.head.class_subset
    target = torch.tensor(
        np.stack([dataset.get_data_info(i)['gt_score'] for i in range(2)]))
    index, scale = sample_class_subset(target, subset.num_classes,
                                       fill=subset.fill)
    assert index.tolist() == list(range(81, 1006)) and scale == 1.
    model = _build_model(cfg)
    assert model.head.classnames == list(classes)
    assert model.head.pos_prompt.ctx.shape == (16, 64)  # one shared context
    metric = METRICS.build(cfg.val_evaluator)
    metric.dataset_meta = dict(classes=list(classes))
    rng = np.random.default_rng(0)
    target = (rng.random((6, 1006)) < 0.3).astype(np.float32)
    target[0] = 1  # every class has a positive
    target[1] = 0  # ... and a negative
    # perfect on the 81 concepts, inverted on the 925 tags
    pred = 1 - target
    pred[:, :81] = target[:, :81]
    metric.process(None, [
        dict(pred_score=torch.tensor(p), gt_score=torch.tensor(t))
        for p, t in zip(pred, target)
    ])
    res = metric.evaluate(6)
    assert res['zsl/unseen/mAP'] == 100.0  # the 81 only
    assert res['zsl/all/mAP'] < 50.0  # the 1006, the 925 inverted


def test_nuswide_config_without_the_files_names_them(tmp_path):
    from test_datasets._builders import build_nus_wide

    from mmcoop.datasets.categories import NUSWIDE_CONCEPTS
    cfg = Config.fromfile(NUS_CONFIG)
    cfg.model.head.classnames.data_root = str(tmp_path / 'none')
    with pytest.raises(FileNotFoundError,
                       match=r'concept list .*Concepts81.txt.*Fix: unpack'):
        _build_model(cfg)
    # concepts there, the tag list not
    root = build_nus_wide(
        tmp_path / 'nus', concepts=NUSWIDE_CONCEPTS, images=False)
    cfg.model.head.classnames.data_root = root
    with pytest.raises(FileNotFoundError,
                       match=r'TagList1k.txt.*Fix: unpack NUS_WID_Tags.zip'):
        _build_model(cfg)

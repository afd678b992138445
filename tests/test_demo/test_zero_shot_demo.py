# Copyright (c) mmcoop contributors. All rights reserved.
"""A demo-sized zero-shot run end to end: the PositiveCoOp demo config with
the class-agnostic head of configs/zero_shot (shared context, no residual,
one shared negative embedding), two classes hidden in every training image
by ``PartialLabelDataset(unseen_classes=...)``, evaluated by
``UnseenClassMetric``, through ``MMCoopRunner.from_cfg`` as every launcher."""
import math
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook

from mmcoop.engine.config_checks import UnseenClassHeadError

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO = osp.join(
    REPO, 'configs', 'demo',
    'positivecoop_clip-tiny-vit_1xb16-coslr-20e_demo-shapes-p50.py')
SHAREDNEG = osp.join(REPO, 'configs', 'zero_shot',
                     'positivecoop-sharedneg_clip-rn101_coco14-48-17.py')
UNSEEN = ['cyan ring', 'pink hexagon']
SMALL = dict(num_train=32, num_val=16, image_size=64, seed=0)


def _config(tmp_path, head_type='PositiveCoOpHead', **head):
    cfg = Config.fromfile(DEMO)
    if head_type == 'PositiveCoOpHead':
        # the head fields of the zero-shot config, on the demo's tiny CLIP
        shared = Config.fromfile(SHAREDNEG).model.head
        head = dict({k: shared[k] for k in ('class_specific', 'use_residual',
                                            'shared_embedding')}, **head)
    else:  # DualCoOp with shared contexts (configs/zero_shot too)
        cfg.model.head.pop('use_residual')
        head = dict(dict(class_specific=False), **head)
    cfg.model.head.update(head, type=head_type)
    cfg.model.backbone.input_resolution = 64
    for stage in ('train', 'test'):
        pipeline = cfg[f'{stage}_pipeline']
        pipeline[1].scale = (64, 64)
    demo = dict(type='DemoShapesDataset', data_root=str(tmp_path / 'demo'),
                generate=True, classes=cfg.classes, **SMALL)
    cfg.train_dataloader.batch_size = 8
    cfg.train_dataloader.dataset.update(
        known_proportion=1.0, unseen_classes=UNSEEN,
        dataset=dict(demo, pipeline=cfg.train_pipeline))
    cfg.val_dataloader.dataset = dict(demo, split='val',
                                      pipeline=cfg.test_pipeline)
    cfg.test_dataloader = cfg.val_dataloader
    cfg.val_evaluator = cfg.test_evaluator = dict(
        type='UnseenClassMetric', unseen_classes=UNSEEN, ks=(1, 2))
    cfg.train_cfg = dict(by_epoch=True, max_epochs=2, val_interval=2)
    cfg.param_scheduler = None
    cfg.optim_wrapper.optimizer.lr = 0.5
    cfg.custom_hooks = [dict(type='PartialLabelMaskHook')]
    cfg.randomness = dict(seed=0)
    cfg.work_dir = str(tmp_path / 'work')
    for helper in ('data_root', 'img_size'):  # replaced above
        cfg.pop(helper)
    return cfg


class _Record(Hook):
    """The training targets of every step and the validation metrics."""

    def __init__(self):
        self.targets, self.metrics = [], None

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.targets.extend(ds.gt_score.clone()
                            for ds in data_batch['data_samples'])

    def after_val_epoch(self, runner, metrics=None):
        self.metrics = metrics


@pytest.mark.parametrize('head_type,trainable', [
    # nothing belongs to one class: (n_ctx, W) + (1, D) = 16*64 + 64 values
    ('PositiveCoOpHead', {'pos_prompt.ctx': (16, 64),
                          'neg_embedding': (1, 64)}),
    ('DualCoOpHead', {'pos_prompt.ctx': (16, 64),
                      'neg_prompt.ctx': (16, 64)}),
])
def test_zero_shot_demo_run(tmp_path, head_type, trainable):
    from mmcoop.engine import MMCoopRunner
    runner = MMCoopRunner.from_cfg(_config(tmp_path, head_type))
    head = runner.model.head
    assert head.scores_unseen_classes
    classes = list(head.classnames)
    hidden = [classes.index(c) for c in UNSEEN]
    assert {n: tuple(p.shape) for n, p in head.named_parameters()
            if p.requires_grad} == trainable
    with torch.no_grad():
        before = [f[hidden].clone() for f in head.class_features()]
    record = _Record()
    runner.register_hook(record)
    runner.train()

    # the hidden classes were unknown (-1) in every training image, the
    # other classes fully labelled
    targets = torch.stack(record.targets)
    assert len(targets) == 2 * len(runner.train_dataloader.dataset)
    assert (targets[:, hidden] == -1).all()
    seen = [i for i in range(len(classes)) if i not in hidden]
    assert (targets[:, seen] >= 0).all() and targets[:, seen].sum() > 0
    mask = np.load(osp.join(runner.work_dir, 'partial_labels',
                            'mask_p1.00_seed0.npy'))
    assert not mask[:, hidden].any() and mask[:, seen].all()

    # yet their features moved, through the shared parameters only
    with torch.no_grad():
        after = [f[hidden] for f in head.class_features()]
    for old, new in zip(before, after):
        assert not torch.allclose(old, new)
    if head_type == 'PositiveCoOpHead':  # one shared negative row
        assert torch.equal(after[0][0], after[0][1])

    # ZSL (the 2 hidden classes) and GZSL (all 10) figures, all finite
    keys = {f'zsl/{s}/{m}' for s in ('unseen', 'all')
            for m in ('mAP', 'F1@1', 'F1@2')}
    assert set(record.metrics) == keys
    for key in keys:
        assert math.isfinite(record.metrics[key])
        assert 0 <= record.metrics[key] <= 100


@pytest.mark.parametrize('head_type,head', [
    ('PositiveCoOpHead', dict(use_residual=True)),
    ('PositiveCoOpHead', dict(class_specific=True)),
    ('DualCoOpHead', dict(class_specific=True)),
])
def test_zero_shot_demo_refuses_per_class_parameters(tmp_path, head_type,
                                                     head):
    from mmcoop.engine import MMCoopRunner
    field = next(iter(head))
    with pytest.raises(UnseenClassHeadError,
                       match=f'`model.head.{field}=True`'):
        MMCoopRunner.from_cfg(_config(tmp_path, head_type, **head))
    assert not osp.exists(tmp_path / 'work')
    assert not osp.exists(tmp_path / 'demo')  # nothing was built

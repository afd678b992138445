# Copyright (c) mmcoop contributors. All rights reserved.
"""The zero-shot config (COCO 48/17): shared-context DualCoOp, unseen
classes hidden in training, scored by ``UnseenClassMetric``."""
import os.path as osp

import numpy as np
import torch
from mmengine.config import Config
from test_configs import CONFIGS, _build_model

from mmcoop.datasets.categories import COCO2014_CATEGORIES
from mmcoop.datasets.unseen_splits import COCO_48_17_SEEN, COCO_48_17_UNSEEN
from mmcoop.engine.config_checks import check_unknown_keys
from mmcoop.registry import METRICS

CONFIG = osp.join(CONFIGS, 'zero_shot',
                  'dualcoop-shared_clip-rn101_coco14-48-17.py')


def test_config_keys_and_no_unknown_key():
    cfg = Config.fromfile(CONFIG)
    assert check_unknown_keys(cfg) == []
    assert cfg.model.head.type == 'DualCoOpHead'
    assert cfg.model.head.class_specific is False
    train = cfg.train_dataloader.dataset
    assert train.type == 'PartialLabelDataset'
    assert train.known_proportion == 1.0
    # only the 48 seen classes are trained on: the 17 unseen and the 15
    # classes outside the split are hidden
    hidden = set(train.unseen_classes)
    assert len(hidden) == 32 and hidden >= set(COCO_48_17_UNSEEN)
    assert hidden | set(COCO_48_17_SEEN) == set(COCO2014_CATEGORIES)
    for evaluator in (cfg.val_evaluator, cfg.test_evaluator):
        assert evaluator.type == 'UnseenClassMetric'
        assert 'thr' not in evaluator  # the base's metric key is dropped
        assert tuple(evaluator.unseen_classes) == COCO_48_17_UNSEEN
        assert tuple(evaluator.seen_classes) == COCO_48_17_SEEN


def test_model_has_one_shared_context():
    model = _build_model(Config.fromfile(CONFIG))
    for prompt in (model.head.pos_prompt, model.head.neg_prompt):
        assert prompt.ctx.shape == (16, 64)  # (n_ctx, tiny CLIP width)


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

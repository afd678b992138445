# Copyright (c) mmcoop contributors. All rights reserved.
"""End to end: each new dataset, built from its ``_base_`` config on a tiny
tree in the real format, feeds one training step of the demo-sized model
(tiny random CLIP ViT, PositiveCoOp) -- through ``PartialLabelDataset``
where the config wraps it, as is for Open Images (real unknowns)."""
import os.path as osp

import numpy as np
import pytest
import torch
from _builders import (build_coco, build_csv, build_nus_wide,
                       build_open_images, write_text)
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.optim import OptimWrapper

from mmcoop.models.backbones import register_mmcoop_clip_configs
from mmcoop.registry import DATASETS, MODELS
from mmcoop.utils import register_all_modules

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
BASE = osp.join(REPO, 'configs', '_base_', 'datasets')
DEMO = osp.join(
    REPO, 'configs', 'demo',
    'positivecoop_clip-tiny-vit_1xb16-coslr-20e_demo-shapes-p50.py')


def _csv(root):
    build_csv(root, name='train.csv')
    write_text(osp.join(root, 'classes.txt'), 'car\ncat\ndog\nperson\n')
    return dict(
        data_root=root,
        data_prefix='img',
        classes=osp.join(root, 'classes.txt'))


def _coco80(root):
    """A COCO-2014 train file with the 80 real categories: images with a
    seen (bicycle, train), an unseen (cat) and a non-split (stop sign)
    class."""
    from mmcoop.datasets.categories import (COCO2014_CATEGORIES,
                                            COCO2014_CATEGORY_IDS)
    ids = dict(zip(COCO2014_CATEGORIES, COCO2014_CATEGORY_IDS))
    labels = [('bicycle', 'cat'), ('train', ), ('bicycle', 'stop sign')]
    data = dict(
        images=[dict(id=i, file_name=f'COCO_train2014_{i:012d}.jpg')
                for i in range(len(labels))],
        annotations=[dict(id=10 * i + k, image_id=i, category_id=ids[n])
                     for i, names in enumerate(labels)
                     for k, n in enumerate(names)],
        categories=[dict(id=ids[n], name=n) for n in COCO2014_CATEGORIES])
    return dict(data_root=build_coco(root, splits=('train', ), content=data))


def _json(root):
    build_coco(root, splits=('train', ))
    return dict(
        data_root=root,
        data_prefix='train2014',
        ann_file='annotations/instances_train2014.json')


CASES = {
    # COCO 2014 with the 32 classes outside the 48 seen ones hidden
    'coco14_zero-shot-48-17_448': _coco80,
    'multilabel_csv_partial_448': _csv,
    'multilabel_json_partial_448': _json,
    'nuswide_partial_448': lambda r: dict(data_root=build_nus_wide(r)),
    'openimages_boxable_448': lambda r: dict(data_root=build_open_images(r)),
}


@pytest.fixture(scope='module', autouse=True)
def _register():
    register_all_modules()
    register_mmcoop_clip_configs()


@pytest.mark.parametrize('name', sorted(CASES))
def test_config_dataset_feeds_one_train_step(tmp_path, name):
    cfg = Config.fromfile(osp.join(BASE, f'{name}.py'))
    demo = Config.fromfile(DEMO)
    overrides = CASES[name](str(tmp_path / 'data'))
    outer = cfg.train_dataloader.dataset
    inner = outer.get('dataset', outer)
    inner.update(overrides)
    inner.pipeline = demo.train_pipeline
    if 'known_proportion' in outer:
        outer.known_proportion = 0.75
    dataset = DATASETS.build(outer)
    assert len(dataset) >= 3
    model_cfg = demo.model
    model_cfg.head.classnames = list(dataset.metainfo['classes'])
    # a random tiny CLIP can saturate the 2-way softmax (zero gradients)
    # for some initialisations: fix the draw
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    trainable = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trainable]
    optim = OptimWrapper(torch.optim.SGD(trainable, lr=0.5))
    batch = pseudo_collate([dataset[i] for i in range(3)])
    # the targets reach the model unchanged, -1 (unknown) included
    for i, sample in enumerate(batch['data_samples']):
        np.testing.assert_array_equal(sample.gt_score.numpy(),
                                      dataset.get_data_info(i)['gt_score'])
    targets = torch.stack([s.gt_score for s in batch['data_samples']])
    assert (targets == 1).any() and set(
        targets.unique().tolist()) <= {-1., 0., 1.}
    if name in ('openimages_boxable_448', 'multilabel_csv_partial_448'):
        assert (targets == -1).any()
    if name == 'coco14_zero-shot-48-17_448':  # every non-seen class hidden
        from mmcoop.datasets.unseen_splits import COCO_48_17_SEEN
        classes = list(dataset.metainfo['classes'])
        hidden = [classes.index(c) for c in classes
                  if c not in COCO_48_17_SEEN]
        assert len(hidden) == 32 and (targets[:, hidden] == -1).all()
    model.train()
    log = model.train_step(batch, optim)
    assert torch.isfinite(log['loss']) and log['loss'] > 0
    changed = [
        not torch.equal(a, p.detach()) for a, p in zip(before, trainable)
    ]
    assert any(changed)

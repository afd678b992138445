# Copyright (c) mmcoop contributors. All rights reserved.
"""Multi-view feature caching with every shipped dataset config: the COCO
and VOC bases (through a paper config that inherits each) and the demo, on
tiny generated trees in their real formats, with a tiny random CLIP.

``feature_cache=dict(num_views=2)`` keeps the config's train sampler
(``EpochSeededSampler``); epoch ``e`` then serves view ``e % 2`` of every
sample, with the partial labels of the wrapped dataset."""
import glob
import os
import os.path as osp

import numpy as np
import pytest
import torch
from _builders import build_voc, write_json
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from PIL import Image
from test_datasets_train_step import CASES as OTHER_BASES

from mmcoop.datasets import CachedFeatureDataset, apply_feature_cache

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = {
    'coco14':
    glob.glob(osp.join(REPO, 'configs/positivecoop/*_coco14-448px-p50.py'))[0],
    'voc07':
    glob.glob(osp.join(REPO, 'configs/positivecoop/*_voc07-448px-p50.py'))[0],
    'demo':
    glob.glob(osp.join(REPO, 'configs/demo/*.py'))[0],
}
# the shipped dataset bases are all reached: COCO and VOC here, the others
# (which inherit the COCO one) by test_datasets_train_step.py
assert {
    osp.basename(p)
    for p in glob.glob(osp.join(REPO, 'configs/_base_/datasets/*.py'))
} == {'coco14_partial_448.py', 'voc07_partial_448.py'} | {
    f'{name}.py'
    for name in OTHER_BASES
}


def _noise_jpeg(path, seed, size=(40, 32)):
    rng = np.random.default_rng(seed)
    arr = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
    Image.fromarray(arr).save(path, quality=90)


def _coco_tree(root, classes, num_images=5):
    """COCO-2014 train/val annotation files with one category per class and
    noise JPEGs (every image has an object)."""
    for split in ('train', 'val'):
        images, anns = [], []
        for i in range(num_images):
            name = f'COCO_{split}2014_{i:012d}.jpg'
            folder = osp.join(root, f'{split}2014')
            os.makedirs(folder, exist_ok=True)
            _noise_jpeg(osp.join(folder, name), seed=i)
            images.append(dict(id=i, file_name=name, height=32, width=40))
            for c in {i % len(classes), (3 * i + 1) % len(classes)}:
                anns.append(
                    dict(
                        id=len(anns) + 1,
                        image_id=i,
                        category_id=c + 1,
                        iscrowd=0,
                        area=10.0,
                        bbox=[1.0, 1.0, 5.0, 5.0],
                        segmentation=[[1.0, 1.0, 6.0, 1.0, 6.0, 6.0]]))
        write_json(
            osp.join(root, 'annotations', f'instances_{split}2014.json'),
            dict(
                images=images,
                annotations=anns,
                categories=[
                    dict(id=k + 1, name=c, supercategory='x')
                    for k, c in enumerate(classes)
                ]))
    return str(root)


def _voc_tree(root):
    tree = build_voc(root)
    for k, jpg in enumerate(
            sorted(glob.glob(osp.join(tree, 'JPEGImages', '*.jpg')))):
        _noise_jpeg(jpg, seed=k)
    return tree


def _tiny_config(name, tmp_path):
    cfg = Config.fromfile(CONFIGS[name])
    train, val = cfg.train_dataloader, cfg.val_dataloader
    inner = train.dataset.dataset
    if name == 'voc07':
        root = _voc_tree(tmp_path / 'VOC2007')
    elif name == 'coco14':
        root = _coco_tree(tmp_path / 'coco', ['dog', 'cat', 'car', 'bus'])
        inner.classes = val.dataset.classes = ['dog', 'cat', 'car', 'bus']
    else:  # the demo dataset writes its own (small) tree
        root = str(tmp_path / 'demo')
        for ds in (inner, val.dataset):
            ds.update(generate=True, num_train=6, num_val=4, image_size=48)
    inner.data_root = val.dataset.data_root = root
    if name != 'demo':  # tiny RN tower at 64 px for the 448 px configs
        cfg.model.backbone.update(
            model_name='mmcoop-tiny-RN', pretrained=None, input_resolution=64)
        for t in inner.pipeline + val.dataset.pipeline:
            if 'scale' in t:  # Resize, LoadImageTensor
                t['scale'] = (64, 64)
    for loader in (train, val):
        loader.update(num_workers=0, persistent_workers=False, batch_size=2)
    cfg.test_dataloader = val
    cfg.work_dir = str(tmp_path / 'work')
    cfg.feature_cache = dict(num_views=2, dtype='float32', progress=False)
    return cfg


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_two_views_with_every_shipped_dataset_config(name, tmp_path):
    torch.backends.mkldnn.enabled = False  # tiny shapes: native kernels
    cfg = apply_feature_cache(_tiny_config(name, tmp_path))
    assert cfg.model.backbone.type == 'mmcoop.PrecomputedFeatures'
    # the shipped sampler is kept: it tells the cache the epoch
    assert cfg.train_dataloader.sampler.type == 'EpochSeededSampler'
    assert cfg.train_dataloader.dataset.num_views == 2
    assert cfg.val_dataloader.dataset.num_views == 1
    with DefaultScope.overwrite_default_scope('mmcoop'):
        loader = Runner.build_dataloader(cfg.train_dataloader, seed=0)
    cache = loader.dataset
    assert isinstance(cache, CachedFeatureDataset)
    n = len(cache)
    assert n == {'coco14': 5, 'voc07': 2}.get(name, n) > 0
    views = [torch.stack([cache.read(i, k) for i in range(n)]) for k in (0, 1)]
    if name != 'demo':  # RandomCutout + RandAugment: two different views
        assert not torch.equal(views[0], views[1])
    else:  # the demo's train pipeline is deterministic
        assert torch.equal(views[0], views[1])
    partial = cache.dataset  # PartialLabelDataset inside the cache
    for epoch in range(3):
        loader.sampler.set_epoch(epoch)
        seen = []
        for batch in loader:
            for x, sample in zip(batch['inputs'], batch['data_samples']):
                i = sample.sample_idx
                seen.append(i)
                assert torch.equal(x, views[epoch % 2][i])
                expect = partial.get_data_info(i)['gt_score']
                assert sample.gt_score.tolist() == expect.tolist()
        assert sorted(seen) == list(range(n))

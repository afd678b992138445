# Copyright (c) mmcoop contributors. All rights reserved.
"""Shared helpers of the tools tests: generated data, a fixed tiny CLIP and
small configs that inherit the real ones."""
import json
import os
import os.path as osp
import subprocess
import sys

import torch

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
PYTHON = sys.executable
DEMO_CONFIG = osp.join(
    REPO, 'configs', 'demo',
    'positivecoop_clip-tiny-vit_1xb16-coslr-20e_demo-shapes-p50.py')
METHOD_CONFIGS = {
    m:
    osp.join(REPO, 'configs', m,
             f'{m}_clip-rn101_openai-pre_1xb32-coslr-50e_coco14-448px-p50.py')
    for m in ('positivecoop', 'negativecoop', 'dualcoop', 'baseline')
}
TINY_CLIP = 'mmcoop-tiny-ViT'
DEMO_CLASSES = [
    'red circle', 'green square', 'blue triangle', 'yellow star',
    'purple diamond', 'orange cross', 'cyan ring', 'pink hexagon',
    'white pentagon', 'black arrow'
]

DEMO_TRAIN, DEMO_VAL, DEMO_SIZE = 72, 24, 64


def make_demo_data(root):
    """The generated COCO-format demo tree the test configs train on."""
    from mmcoop.demo import generate_demo_coco
    return generate_demo_coco(
        root,
        num_train=DEMO_TRAIN,
        num_val=DEMO_VAL,
        image_size=DEMO_SIZE,
        seed=0,
        num_classes=10)


def make_tiny_clip(path, seed=0):
    """Save the state dict of a seeded tiny open_clip model (the same CLIP
    in every process that loads it with ``pretrained=path``)."""
    import open_clip

    from mmcoop.models.backbones import register_mmcoop_clip_configs
    register_mmcoop_clip_configs()
    torch.manual_seed(seed)
    model = open_clip.create_model(TINY_CLIP, pretrained=None)
    torch.save(model.state_dict(), path)
    return path


def write_config(path,
                 base,
                 data_root,
                 clip=None,
                 img_size=64,
                 batch_size=16,
                 num_train=None,
                 num_val=None,
                 max_epochs=2,
                 val_interval=1,
                 augment=False,
                 shuffle=True,
                 text_encoder=True,
                 extra=''):
    """A config inheriting ``base`` (absolute path) that trains a tiny CLIP
    on the demo tree at ``data_root``."""
    clip_repr = repr(clip)
    # prompt heads have a text encoder, the Baseline has none
    head_extra = (f', text_encoder=dict(model_name={TINY_CLIP!r}, '
                  f'pretrained={clip_repr})') if text_encoder else \
        ', in_channels=64'
    # the paper configs' train pipeline (Cutout + RandAugment on the tensor
    # path) or the demo's plain load + resize
    load = f"""
    dict(type='LoadImageFromFileChecked'),
    dict(type='Resize', scale=({img_size}, {img_size}), keep_ratio=False,
         backend='pillow', interpolation='bilinear'),"""
    train_load = f"""
    dict(type='LoadImageTensor', scale=({img_size}, {img_size})),
    dict(type='TensorCutout', cutout_factor=0.5),
    dict(type='TensorRandAugment'),""" if augment else load
    indices_train = f', indices={num_train}' if num_train else ''
    indices_val = f', indices={num_val}' if num_val else ''
    text = f"""_base_ = {base!r}
classes = {DEMO_CLASSES!r}
# the demo tree, generated on first use by the dataset (idempotent)
_demo = dict(type='DemoShapesDataset', data_root={data_root!r}, generate=True,
            num_train={DEMO_TRAIN}, num_val={DEMO_VAL},
            image_size={DEMO_SIZE}, seed=0)
model = dict(
    backbone=dict(model_name={TINY_CLIP!r}, pretrained={clip_repr},
                  input_resolution={img_size}),
    head=dict(classnames=classes{head_extra}))
train_pipeline = [{train_load}
    dict(type='PackInputs'),
]
test_pipeline = [{load}
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size={batch_size}, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle={shuffle}),
    dataset=dict(dataset=dict(**_demo, classes=classes,
                              pipeline=train_pipeline{indices_train})))
val_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    dataset=dict(**_demo, classes=classes,
                 pipeline=test_pipeline{indices_val}))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs={max_epochs}, val_interval={val_interval})
default_hooks = dict(logger=dict(interval=1))
custom_hooks = [dict(type='PartialLabelMaskHook'), dict(type='DemoResultHook')]
"""
    # `extra` may only mutate the dicts above (a new `model = ...` would
    # replace them)
    text += extra
    with open(path, 'w') as f:
        f.write(text)
    return path


def read_scalars(work_dir):
    """Rows of ``vis_data/scalars.json`` of the (only) run in work_dir."""
    rows = []
    for d in sorted(os.listdir(work_dir)):
        path = osp.join(work_dir, d, 'vis_data', 'scalars.json')
        if osp.isfile(path):
            with open(path) as f:
                rows.extend(json.loads(line) for line in f if line.strip())
    return rows


def val_map(work_dir):
    """The mAP of the last validation of the run in work_dir."""
    rows = [r for r in read_scalars(work_dir) if 'multi-label/mAP' in r]
    return rows[-1]['multi-label/mAP']


def run(cmd, cwd=REPO, env=None, timeout=300):
    full_env = dict(os.environ)
    full_env.pop('PYTHONPATH', None)
    full_env.update(env or {})
    return subprocess.run(
        cmd,
        cwd=cwd,
        env=full_env,
        timeout=timeout,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True)

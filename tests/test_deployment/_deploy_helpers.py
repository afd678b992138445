# Copyright (c) mmcoop contributors. All rights reserved.
"""Helpers of the deployment tests: the method configs on tiny random
CLIPs, "trained" heads."""
import os.path as osp

import torch
from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CLASSES = ['cat', 'dog', 'traffic light', 'hair drier', 'red circle']
TINY_RN = 'mmcoop-tiny-RN'
RESOLUTION = 64
METHOD_CONFIGS = {
    'positivecoop':
    'configs/positivecoop/positivecoop_clip-rn101_openai-pre_'
    '1xb32-coslr-50e_coco14-448px-p50.py',
    'negativecoop':
    'configs/negativecoop/negativecoop_clip-rn101_openai-pre_'
    '1xb32-coslr-50e_coco14-448px-p50.py',
    'dualcoop':
    'configs/dualcoop/dualcoop_clip-rn101_openai-pre_1xb32-'
    'coslr-50e_coco14-448px-p50.py',
    'baseline':
    'configs/baseline/baseline_clip-rn101_openai-pre_1xb32-'
    'coslr-50e_coco14-448px-p50.py',
    # one (1, D) negative embedding broadcast to every class
    'positivecoop-sharedneg':
    'configs/zero_shot/positivecoop-sharedneg_clip-rn101_coco14-48-17.py',
}
DEMO_CONFIG = ('configs/demo/positivecoop_clip-tiny-vit_1xb16-coslr-20e_'
               'demo-shapes-p50.py')


def tiny_method_config(method: str) -> Config:
    """A method's real COCO config with a tiny random RN CLIP at 64 px, 5
    classes and 4 context tokens (the pipeline, preprocessor and head
    arguments stay those of the config)."""
    cfg = Config.fromfile(osp.join(ROOT, METHOD_CONFIGS[method]))
    cfg.model.backbone.update(
        model_name=TINY_RN, pretrained=None, input_resolution=RESOLUTION)
    head = cfg.model.head
    head.classnames = CLASSES
    if 'text_encoder' in head:
        head.text_encoder.update(model_name=TINY_RN, pretrained=None)
        head.n_ctx = 4
    else:
        head.in_channels = 64
    pipeline = cfg.test_dataloader.dataset.pipeline
    for step in pipeline:
        if step['type'] == 'Resize':
            step['scale'] = (RESOLUTION, RESOLUTION)
    return cfg


def calibrate_batchnorm(model, seed=0):
    """BatchNorm statistics of a random open_clip ResNet measured on random
    images. A fresh one zeroes the last BN of each block and maps every
    image to nearly the same dense feature (cosine ~0.99999), which would
    make parity checks vacuous; calibrated, images stay apart."""
    bns = [
        m for m in model.backbone.modules()
        if isinstance(m, torch.nn.BatchNorm2d)
    ]
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over the batch
            bn.weight.fill_(1.)
            bn.bias.zero_()
            bn.training = True
        model.backbone(
            torch.randn(8, 3, RESOLUTION, RESOLUTION, generator=gen))
        for bn in bns:
            bn.training = False


def train_head(model, seed=1, scale=0.3):
    """Move the trainable head parameters away from their initialisation
    (a stand-in for training)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.head.parameters():
            if p.requires_grad:
                p.add_(scale * torch.randn(p.shape, generator=gen))
    return model

# Copyright (c) mmcoop contributors. All rights reserved.
"""Helpers of the performance tests: tiny datasets, towers and heads."""
import torch

import mmcoop.datasets  # noqa: F401  (registers the datasets)
import mmcoop.models  # noqa: F401  (registers the models)

CLASSES = ['dog', 'cat', 'car']
NUM_IMAGES = 6
RES = 64
TINY = 'mmcoop-tiny-RN'  # RN tower (D=64), 2-layer width-64 text tower


def val_pipeline(res=RES):
    return [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=(res, res)),
        dict(type='PackInputs'),
    ]


def random_pipeline(res=RES):
    return [
        dict(type='LoadImageFromFile'),
        dict(type='RandomResizedCrop', scale=res),
        dict(type='RandomFlip', prob=0.5, direction='horizontal'),
        dict(type='PackInputs'),
    ]


def make_dataset(root, pipeline=None, **kwargs):
    from mmpretrain.datasets import MultiLabelDataset
    return MultiLabelDataset(
        ann_file='ann.json',
        data_root=root,
        data_prefix='',
        pipeline=pipeline if pipeline is not None else val_pipeline(),
        **kwargs)


def backbone_cfg(res=RES, **kwargs):
    return dict(
        type='FrozenCLIP', model_name=TINY, input_resolution=res, **kwargs)


def build_backbone(seed=0, res=RES, **kwargs):
    from mmcoop.models import FrozenCLIP
    torch.manual_seed(seed)
    return FrozenCLIP(
        model_name=TINY, input_resolution=res, init_seed=seed, **kwargs)


def clip_preprocessor_cfg():
    return dict(type='mmcoop.CLIPDataPreprocessor')


def head_cfg(kind='PositiveCoOpHead', **text_kwargs):
    """A tiny head; the scope prefix builds it without a default scope."""
    if kind == 'BaselineHead':
        return dict(type=f'mmcoop.{kind}', classnames=CLASSES, in_channels=64)
    return dict(
        type=f'mmcoop.{kind}',
        classnames=CLASSES,
        n_ctx=4,
        text_encoder=dict(
            type='FrozenCLIPTextEncoder', model_name=TINY, **text_kwargs))

# Copyright (c) mmcoop contributors. All rights reserved.
"""Helpers shared by test files of several folders (imported by
``tests/conftest.py``, which puts this folder on ``sys.path``): loading the
command-line tools as modules, a listing of a file tree, a toy
model/dataset/runner for checkpoint and resume mechanics, random tiny
CLIP weights, and a pickle payload that must never be unpickled."""
import importlib.util
import itertools
import os
import os.path as osp
import re

import numpy as np
import torch
import torch.nn as nn
from mmengine.model import BaseModel
from torch.utils.data import Dataset

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def make_clip_state_dict(model_name: str, seed: int = 0) -> dict:
    """Random open_clip weights of ``model_name`` (seeded through the
    global RNG) with non-trivial BatchNorm statistics, so that eval-mode BN
    differs from train-mode BN and a ResNet tower does not map every image
    to nearly the same feature."""
    import open_clip

    from mmcoop.models.backbones import register_mmcoop_clip_configs
    register_mmcoop_clip_configs()
    torch.manual_seed(seed)
    model = open_clip.create_model(model_name, pretrained=None)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
    return model.state_dict()


def tiny_classifier_config(head: dict) -> dict:
    """A config of an ``ImageClassifier`` with ``head`` on a random
    ``mmcoop-tiny-RN`` image tower at 64 px, CLIP normalisation, and a
    test pipeline (for the inference API and the analysis tools)."""
    from mmcoop.models.data_preprocessors import CLIP_MEAN, CLIP_STD
    return dict(
        default_scope='mmcoop',
        model=dict(
            type='ImageClassifier',
            data_preprocessor=dict(
                type='ClsDataPreprocessor',
                mean=list(CLIP_MEAN),
                std=list(CLIP_STD),
                to_rgb=True),
            backbone=dict(
                type='FrozenCLIP',
                model_name='mmcoop-tiny-RN',
                pretrained=None,
                input_resolution=64),
            head=head),
        test_dataloader=dict(
            dataset=dict(
                type='CustomDataset',
                pipeline=[
                    dict(type='LoadImageFromFile'),
                    dict(type='Resize', scale=(64, 64), keep_ratio=False),
                    dict(type='PackInputs')
                ])))


def load_tool(relpath: str, name: str = None):
    """The script ``ROOT/relpath`` (e.g. ``'tools/train.py'``) as a module."""
    name = name or 'mmcoop_' + osp.splitext(relpath)[0].replace('/', '_')
    spec = importlib.util.spec_from_file_location(name, osp.join(ROOT,
                                                                 relpath))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tree_listing(root):
    """Sorted (path, size, mtime) of every file below ``root``."""
    out = []
    for d, _, files in os.walk(root):
        for f in files:
            p = osp.join(d, f)
            st = os.stat(p)
            out.append((osp.relpath(p, root), st.st_size, st.st_mtime_ns))
    return sorted(out)


class WritesFile:
    """Unpickling this object would create ``self.path``."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, 'w'))


class ToyModel(BaseModel):
    """y = linear(x) with a squared loss."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, labels=None, mode='tensor'):
        inputs = torch.stack(inputs) if isinstance(inputs, list) else inputs
        out = self.linear(inputs)
        if mode == 'loss':
            labels = torch.stack(labels) if isinstance(labels,
                                                       list) else labels
            return dict(loss=((out.squeeze(-1) - labels)**2).mean())
        return out


class ToyDataset(Dataset):
    """8 points in 2-D with binary targets."""
    METAINFO = dict()

    def __len__(self):
        return 8

    def __getitem__(self, idx):
        x = torch.tensor([idx / 8., 1. - idx / 8.])
        return dict(inputs=x, labels=torch.tensor(float(idx % 2)))


_RUNS = itertools.count()


def toy_runner(work_dir,
               max_epochs,
               shuffle=False,
               momentum=0.,
               by_epoch=True,
               **kwargs):
    """An ``MMCoopRunner`` training :class:`ToyModel` (identical initial
    weights every time) with a checkpoint per epoch; with
    ``by_epoch=False`` an ``IterBasedTrainLoop`` of ``max_epochs``
    iterations with a checkpoint per iteration. ``optim_wrapper`` and
    ``default_hooks`` in ``kwargs`` replace the defaults."""
    from mmcoop.engine.runner import MMCoopRunner
    torch.manual_seed(0)
    length = 'max_epochs' if by_epoch else 'max_iters'
    return MMCoopRunner(
        model=ToyModel(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=ToyDataset(),
            sampler=dict(type='DefaultSampler', shuffle=shuffle),
            batch_size=4,
            num_workers=0,
            collate_fn=dict(type='default_collate')),
        optim_wrapper=kwargs.pop(
            'optim_wrapper',
            dict(optimizer=dict(type='SGD', lr=0.1, momentum=momentum))),
        train_cfg={'by_epoch': by_epoch, length: max_epochs},
        default_hooks=kwargs.pop(
            'default_hooks',
            dict(
                checkpoint=dict(
                    type='CheckpointHook', interval=1, by_epoch=by_epoch),
                logger=dict(type='LoggerHook', interval=1))),
        randomness=dict(seed=0),
        default_scope='mmcoop',
        experiment_name=f'toy_{next(_RUNS)}',
        **kwargs)


def toy_runtime_cfg(work_dir, max_epochs=1, **over):
    """The shipped runtime (``configs/_base_/default_runtime.py``: its
    default hooks, the runner type) around :class:`ToyModel` and
    :class:`ToyDataset` (8 samples, batch 4, no shuffle), as a config for
    ``MMCoopRunner.from_cfg``; ``over`` is merged last."""
    from mmengine.config import Config

    from mmcoop.registry import DATASETS, MODELS
    MODELS.register_module('CommonToyModel', module=ToyModel, force=True)
    DATASETS.register_module('CommonToyDataset', module=ToyDataset,
                             force=True)
    runtime = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))),
                       'configs', '_base_', 'default_runtime.py')
    cfg = Config.fromfile(runtime)
    cfg.merge_from_dict(dict(
        work_dir=str(work_dir),
        experiment_name=f'toy_cfg_{next(_RUNS)}',
        model=dict(type='CommonToyModel'),
        train_dataloader=dict(
            dataset=dict(type='CommonToyDataset'),
            sampler=dict(type='DefaultSampler', shuffle=False),
            batch_size=4,
            num_workers=0,
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        checkpoint_check=dict(classes=False)))
    cfg.default_hooks.logger.interval = 1
    cfg.merge_from_dict(over)
    return cfg


def expand_braces(path):
    """``tools/x/{a,b}.py`` -> ``tools/x/a.py``, ``tools/x/b.py``."""
    m = re.search(r'\{([^}]*)\}', path)
    if not m:
        return [path]
    return [
        p for alt in m.group(1).split(',')
        for p in expand_braces(path[:m.start()] + alt + path[m.end():])
    ]


def every_op_draws(n_images=30, seed=0):
    """Device-path draws of ``n_images`` where every op is drawn and
    applied in both slots (with the official magnitudes and signs)."""
    from mmcoop.datasets.transforms.tensor_augment import RANDAUG_OPS
    rs = np.random.RandomState(seed)
    draws = []
    for i in range(n_images):
        ops = []
        for k in range(2):
            op = RANDAUG_OPS[(i + 7 * k) % len(RANDAUG_OPS)]
            ops.append(dict(op=op, index=int(rs.randint(1, 10)),
                            applied=bool(i % 5 != k),
                            sign=int(rs.choice([-1, 1])),
                            centre=(float(rs.rand()), float(rs.rand()))))
        draws.append(dict(cutout_centre=(int(rs.randint(48)),
                                         int(rs.randint(64))),
                          cutout_colour=tuple(int(c) for c in
                                              rs.randint(0, 256, 3)),
                          cutout_factor=0.5, randaugment=ops,
                          size=(48, 64)))
    return draws

# Copyright (c) mmcoop contributors. All rights reserved.
"""Helpers shared by test files of several folders (imported by
``tests/conftest.py``, which puts this folder on ``sys.path``): loading the
command-line tools as modules, a listing of a file tree, a toy
model/dataset/runner for checkpoint and resume mechanics, and a pickle
payload that must never be unpickled."""
import importlib.util
import itertools
import os
import os.path as osp

import torch
import torch.nn as nn
from mmengine.model import BaseModel
from torch.utils.data import Dataset

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


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


def toy_runner(work_dir, max_epochs, shuffle=False, momentum=0., **kwargs):
    """An ``MMCoopRunner`` training :class:`ToyModel` (identical initial
    weights every time) with a checkpoint per epoch."""
    from mmcoop.engine.runner import MMCoopRunner
    torch.manual_seed(0)
    return MMCoopRunner(
        model=ToyModel(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=ToyDataset(),
            sampler=dict(type='DefaultSampler', shuffle=shuffle),
            batch_size=4,
            num_workers=0,
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(
            optimizer=dict(type='SGD', lr=0.1, momentum=momentum)),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=1),
            logger=dict(type='LoggerHook', interval=1)),
        randomness=dict(seed=0),
        default_scope='mmcoop',
        experiment_name=f'toy_{next(_RUNS)}',
        **kwargs)

# Copyright (c) mmcoop contributors. All rights reserved.
"""Training settings MMEngine reads only when the run reaches them, or
never checks, are refused (or warned about) by ``MMCoopRunner.from_cfg``
before anything is built or written, naming the field, the value and the
fix (:mod:`mmcoop.engine.train_checks`)."""
import itertools
import os.path as osp
import re

import pytest
import torch
from _common import ToyDataset, ToyModel
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope

from mmcoop.engine import MMCoopRunner
from mmcoop.registry import DATASETS, MODELS

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
RUNTIME = osp.join(REPO, 'configs', '_base_', 'default_runtime.py')
_RUNS = itertools.count()


def _cfg(work_dir, **over):
    """The shipped runtime around the toy model (8 samples, batch 4)."""
    MODELS.register_module('TrainCheckToyModel', module=ToyModel, force=True)
    DATASETS.register_module('TrainCheckToyDataset', module=ToyDataset,
                             force=True)
    cfg = Config.fromfile(RUNTIME)
    cfg.merge_from_dict(dict(
        work_dir=str(work_dir),
        experiment_name=f'train_checks_{next(_RUNS)}',
        model=dict(type='TrainCheckToyModel'),
        train_dataloader=dict(
            dataset=dict(type='TrainCheckToyDataset'),
            sampler=dict(type='DefaultSampler', shuffle=False),
            batch_size=4,
            num_workers=0,
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        train_cfg=dict(by_epoch=True, max_epochs=2),
        checkpoint_check=dict(classes=False)))
    cfg.default_hooks.logger.interval = 1
    cfg.merge_from_dict(over)
    for key in [k for k, v in cfg.train_cfg.items() if v is None]:
        cfg.train_cfg.pop(key)  # None: remove the base's key
    return cfg


def _refused(tmp_path, match, **over):
    """``from_cfg`` refuses ``over`` before the work dir is made."""
    work = tmp_path / 'work'
    with pytest.raises(ValueError, match=match) as info:
        MMCoopRunner.from_cfg(_cfg(work, **over))
    assert not work.exists()
    return str(info.value)


# --------------------------------------------------------------------------
# optim_wrapper.clip_grad
# --------------------------------------------------------------------------


@pytest.mark.parametrize('clip_grad,match', [
    (dict(max_norm=-1), r'clip_grad\.max_norm must be a finite number > 0 '
     r'\(.*flips them \(gradient ascent\).*got -1\.'),
    (dict(max_norm=0), r'clip_grad\.max_norm .*0 zeroes them.*got 0\.'),
    (dict(max_norm=float('nan')), r'clip_grad\.max_norm .*got nan'),
    (dict(type='value', clip_value=-1),
     r'clip_grad\.clip_value must be a finite number > 0 .*sets every '
     r'gradient to -clip_value.*got -1\.'),
    (dict(type='value', clip_value=0), r'clip_grad\.clip_value .*got 0\.'),
    (dict(type='Norm', max_norm=1), r"clip_grad\.type.* must be 'norm' .*or "
     r"'value' .*got 'Norm'"),
    (dict(type='value', max_norm=1), r"has \['max_norm'\], which clipping "
     r"by value does not take.*allowed: \['clip_value', 'foreach'\]"),
    (dict(max_nrom=1), r"Did you mean 'max_nrom' -> 'max_norm'\?"),
    (dict(norm_type=2), r"clip_grad .*needs max_norm"),
    (dict(max_norm=1, norm_type=0), r'clip_grad\.norm_type .*a number > 0 '
     r"\(the p of the p-norm.*or inf \('inf'\), got 0"),
    (dict(max_norm=1, error_if_nonfinite='yes'),
     r"clip_grad\.error_if_nonfinite must be True or False, got 'yes'"),
    ('1.0', r'clip_grad .*must be None \(no clipping\) or a dict'),
])
def test_clip_grad_values_are_refused_before_anything_is_built(
        tmp_path, clip_grad, match):
    """Before: max_norm=-1 trained by gradient ascent, 0 trained nothing,
    clip_value=-1 set every gradient to 1 (all exit 0); a wrong key failed
    at the first step, after the data and the model were built."""
    msg = _refused(tmp_path, match,
                   optim_wrapper=dict(clip_grad=clip_grad))
    assert 'optim_wrapper.clip_grad' in msg


def test_clip_grad_is_checked_by_the_constructor_too():
    """A wrapper built without the runner (``build_optim_wrapper``) with
    mmcoop's constructor gets the same check."""
    cfg = dict(constructor='TrainableParamsOptimWrapperConstructor',
               optimizer=dict(type='SGD', lr=0.1),
               clip_grad=dict(max_norm=-1))
    with DefaultScope.overwrite_default_scope('mmcoop'):
        with pytest.raises(ValueError, match=re.escape(
                'TrainableParamsOptimWrapperConstructor: optim_wrapper.'
                'clip_grad.max_norm must be a finite number > 0')):
            build_optim_wrapper(ToyModel(), cfg)


@pytest.mark.parametrize('clip_grad', [
    dict(max_norm=1.0), dict(max_norm=2, norm_type='inf'),
    dict(max_norm=0.5, norm_type=float('inf'), error_if_nonfinite=True),
    dict(type='value', clip_value=0.1, foreach=None),
    dict(type='norm', max_norm=35, norm_type=2)
])
def test_good_clip_grad_trains(tmp_path, clip_grad):
    runner = MMCoopRunner.from_cfg(
        _cfg(tmp_path / 'work', optim_wrapper=dict(clip_grad=clip_grad),
             train_cfg=dict(max_epochs=1)))
    before = runner.model.linear.weight.detach().clone()
    runner.train()
    assert not torch.equal(runner.model.linear.weight, before)


# --------------------------------------------------------------------------
# runs that would train zero iterations
# --------------------------------------------------------------------------


@pytest.mark.parametrize('train_cfg,match', [
    (dict(max_epochs=0), r'train_cfg\.max_epochs.* must be an int >= 1 '
     r'\(the number of epochs to train\), got 0: 0 or less trains nothing'),
    (dict(max_epochs=-1), r'train_cfg\.max_epochs.*got -1: 0 or less'),
    (dict(max_epochs=1.5), r'train_cfg\.max_epochs.*got 1\.5: MMEngine '
     r'stops on it'),
    (dict(max_epochs='3'), r"train_cfg\.max_epochs.*got '3'"),
    (dict(by_epoch=False, max_epochs=None, max_iters=0),
     r'train_cfg\.max_iters.* must be an int >= 1 \(the number of '
     r'iterations to train\), got 0'),
    (dict(by_epoch=False, max_epochs=None, max_iters=2.5),
     r'train_cfg\.max_iters.*got 2\.5'),
    (dict(type='IterBasedTrainLoop', by_epoch=None, max_epochs=None,
          max_iters=-4), r'train_cfg\.max_iters.*got -4'),
    (dict(by_epoch=False, max_iters=None),
     r'train_cfg.* has no max_iters .*iter-based loop\), only max_epochs'),
])
def test_train_lengths_that_train_nothing_are_refused(
        tmp_path, train_cfg, match):
    """Before: max_epochs 0 or -1 trained nothing, saved checkpoints and
    exited 0; 1.5 stopped with MMEngine's bare AssertionError after the
    data and the model were built."""
    _refused(tmp_path, match + '.*Fix: ', train_cfg=train_cfg)


def test_iteration_loop_of_a_whole_number_of_iterations_trains(tmp_path):
    cfg = _cfg(tmp_path / 'work', train_cfg=dict(
        by_epoch=False, max_epochs=None, max_iters=3, val_interval=3))
    MMCoopRunner.from_cfg(cfg).train()
    assert osp.isfile(tmp_path / 'work' / 'epoch_1.pth') or \
        osp.isfile(tmp_path / 'work' / 'iter_3.pth')


@pytest.mark.parametrize('by_epoch', [True, False])
def test_a_batch_larger_than_the_training_set_with_drop_last_is_refused(
        tmp_path, by_epoch):
    """8 samples, batch_size 16, drop_last: no batch. Before: zero
    iterations, untrained checkpoints saved, exit 0 (an iteration loop
    would wait for a batch for ever). Refused when the loop is built,
    before anything is trained or saved."""
    train_cfg = dict(by_epoch=True, max_epochs=2) if by_epoch else dict(
        by_epoch=False, max_epochs=None, max_iters=2)
    cfg = _cfg(tmp_path / 'work', train_cfg=train_cfg,
                          train_dataloader=dict(batch_size=16,
                                                drop_last=True))
    runner = MMCoopRunner.from_cfg(cfg)
    before = runner.model.linear.weight.detach().clone()
    with pytest.raises(ValueError, match=(
            r'train_dataloader gives no batch: the training set has 8 '
            r'samples, train_dataloader\.batch_size=16 and drop_last=True.*'
            r'Fix: train_dataloader\.batch_size <= 8, or train_dataloader\.'
            r'drop_last=False\.')):
        runner.train()
    assert torch.equal(runner.model.linear.weight, before)
    assert not [f for f in (tmp_path / 'work').rglob('*.pth')]
    # without drop_last the one incomplete batch trains
    cfg.train_dataloader.drop_last = False
    cfg.work_dir = str(tmp_path / 'kept')
    MMCoopRunner.from_cfg(cfg).train()
    assert [f for f in (tmp_path / 'kept').rglob('*.pth')]

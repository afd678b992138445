# Copyright (c) mmcoop contributors. All rights reserved.
"""Config values of the engine (schedulers, optimizer constructor, hooks,
``mmcoop_hooks``) and of the data preprocessors are checked when built,
naming the field, the value and the fix."""
import logging
import math
import os.path as osp
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.optim import OptimWrapper, build_optim_wrapper
from mmengine.optim.scheduler.param_scheduler import INF
from mmengine.registry import DefaultScope

import mmcoop.engine  # noqa: F401
import mmcoop.engine.optim.constructor as constructor_module
from mmcoop.engine.hooks import (ClassCheckHook, FiniteCheckHook,
                                 NonFiniteError, ProtocolCheckHook,
                                 ResumeValidationHook, RNGStateHook)
from mmcoop.engine.hooks.partial_label_mask_hook import PartialLabelMaskHook
from mmcoop.engine.hooks.threshold_calibration_hook import \
    ThresholdCalibrationHook
from mmcoop.engine.optim import ConstantAbsoluteLR
from mmcoop.engine.runner import MMCoopRunner
from mmcoop.models.data_preprocessors import (CLIP_MEAN, CLIP_STD,
                                              CLIPDataPreprocessor,
                                              DeviceAugmentPreprocessor,
                                              FeatureDataPreprocessor)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

# --------------------------------------------------------------------------
# ConstantAbsoluteLR
# --------------------------------------------------------------------------


def _optim(lrs=(0.1, 0.001)):
    params = [nn.Parameter(torch.zeros(2)) for _ in lrs]
    return OptimWrapper(
        torch.optim.SGD([dict(params=[p], lr=lr)
                         for p, lr in zip(params, lrs)],
                        lr=lrs[0]))


def _lrs(optim, sched, steps):
    out = []
    for _ in range(steps):
        out.append([g['lr'] for g in optim.optimizer.param_groups])
        optim.step()
        sched.step()
    return out


@pytest.mark.parametrize('field,kwargs,given', [
    ('end', dict(end=1.5), '1.5'),
    ('end', dict(end='1'), "'1'"),
    ('end', dict(end=True), 'True'),
    ('begin', dict(begin=0.5, end=2), '0.5'),
    ('begin', dict(begin=-1, end=2), '-1'),
])
def test_scheduler_refuses_non_int_steps(field, kwargs, given):
    with pytest.raises(ValueError) as err:
        ConstantAbsoluteLR(_optim(), value=5e-3, **kwargs)
    msg = str(err.value)
    assert msg.startswith(f'ConstantAbsoluteLR: {field} must be an int >= 0')
    assert f'got {given}.' in msg and 'convert_to_iter_based=True' in msg


@pytest.mark.parametrize('field', ['by_epoch', 'verbose'])
@pytest.mark.parametrize('flag', ['no', 0, None])
def test_scheduler_flags_must_be_bool(field, flag):
    with pytest.raises(ValueError,
                       match=re.escape(f'ConstantAbsoluteLR: {field} must '
                                       f'be True or False, got {flag!r}.')):
        ConstantAbsoluteLR(_optim(), value=0.1, end=1, **{field: flag})


def test_scheduler_refuses_end_not_after_begin():
    with pytest.raises(ValueError, match=r'end \(2\) must be greater than '
                       r'begin \(2\)'):
        ConstantAbsoluteLR(_optim(), value=5e-3, begin=2, end=2)


@pytest.mark.parametrize(
    'value', [float('nan'), float('inf'), True, 'x', None, 0, -1e-3])
def test_scheduler_refuses_bad_value(value):
    with pytest.raises(ValueError) as err:
        ConstantAbsoluteLR(_optim(), value=value, end=1)
    assert str(err.value) == (
        'ConstantAbsoluteLR: value must be a finite number > 0 (the '
        'absolute warm-up value of every param group, e.g. 5e-3), got '
        f'{value!r}.')


def test_scheduler_default_end_is_inf_and_int_end_restores():
    optim = _optim()
    assert ConstantAbsoluteLR(optim, value=5e-3).end == INF
    optim = _optim()
    sched = ConstantAbsoluteLR(optim, value=5e-3, begin=0, end=2)
    assert _lrs(optim, sched, 3) == [[5e-3] * 2] * 2 + [[0.1, 0.001]]


def test_fractional_epochs_convert_to_whole_iterations():
    optim = _optim()
    sched = ConstantAbsoluteLR.build_iter_from_epoch(
        optim, value=5e-3, begin=0, end=1.5, epoch_length=4)
    assert (sched.begin, sched.end, sched.by_epoch) == (0, 6, False)
    # the base lrs come back after 6 iterations (the bug: never)
    assert _lrs(optim, sched, 7) == [[5e-3] * 2] * 6 + [[0.1, 0.001]]
    with pytest.raises(ValueError, match=r"end must be a finite number >= 0 "
                       r"\(epochs.*got 'x'"):
        ConstantAbsoluteLR.build_iter_from_epoch(
            _optim(), value=5e-3, end='x', epoch_length=4)


# --------------------------------------------------------------------------
# FiniteCheckHook
# --------------------------------------------------------------------------


@pytest.mark.parametrize('interval', [0, -1, 1.5, '2', True, None])
def test_finite_check_interval_refused(interval):
    with pytest.raises(ValueError) as err:
        FiniteCheckHook(interval=interval)
    msg = str(err.value)
    assert msg.startswith('FiniteCheckHook: interval must be an int >= 1, '
                          f'got {interval!r}.')
    assert 'mmcoop_hooks = dict(finite_check=False)' in msg


@pytest.mark.parametrize('flag', ['no', 0, 1, None])
def test_finite_check_params_flag_refused(flag):
    with pytest.raises(ValueError) as err:
        FiniteCheckHook(check_params=flag)
    assert str(err.value) == ('FiniteCheckHook: check_params must be True '
                              f'or False, got {flag!r}.')


def test_finite_check_interval_2_checks_every_second_iteration():
    hook = FiniteCheckHook(interval=2, check_params=False)
    nan = dict(loss=torch.tensor(float('nan')))
    runner = SimpleNamespace(iter=0, epoch=0)
    hook.after_train_iter(runner, 0, outputs=nan)  # iteration 1: skipped
    runner.iter = 1
    with pytest.raises(NonFiniteError, match='iteration 2'):
        hook.after_train_iter(runner, 1, outputs=nan)


# --------------------------------------------------------------------------
# mmcoop_hooks (MMCoopRunner._register_mmcoop_hooks)
# --------------------------------------------------------------------------


def _register(mmcoop_hooks='unset'):
    cfg = {} if mmcoop_hooks == 'unset' else dict(mmcoop_hooks=mmcoop_hooks)
    hooks = []
    fake = SimpleNamespace(
        cfg=Config(cfg), hooks=hooks, register_hook=hooks.append)
    MMCoopRunner._register_mmcoop_hooks(fake)
    return {type(h) for h in hooks}


def test_mmcoop_hooks_defaults_and_switches():
    everything = {
        RNGStateHook, FiniteCheckHook, ClassCheckHook, ResumeValidationHook,
        ProtocolCheckHook
    }
    assert _register() == everything
    assert _register(None) == everything
    assert _register(dict(finite_check=False)) == everything - {
        FiniteCheckHook
    }
    assert _register(
        dict(rng_state=False, finite_check=False, class_check=False,
             resume_validation=False, protocol_check=False)) == set()


def test_hooks_tell_a_resume_from_a_load_through_public_state():
    from mmcoop.engine.hooks.rng_state_hook import is_resuming

    # MMCoopRunner: its `resuming` property (True inside resume())
    assert is_resuming(SimpleNamespace(resuming=True, cfg=Config()))
    assert not is_resuming(
        SimpleNamespace(resuming=False, cfg=Config(dict(resume=True))))
    # another runner: its config's `resume`
    assert is_resuming(SimpleNamespace(cfg=Config(dict(resume=True))))
    assert not is_resuming(SimpleNamespace(cfg=Config(dict(load_from='x'))))
    assert MMCoopRunner.resuming.fget(
        SimpleNamespace(_resuming=True)) is True


@pytest.mark.parametrize('key,flag', [('finite_check', 'False'),
                                      ('rng_state', 0), ('class_check', None)])
def test_mmcoop_hooks_values_must_be_bools(key, flag):
    with pytest.raises(ValueError) as err:
        _register({key: flag})
    assert str(err.value) == (f'MMCoopRunner: mmcoop_hooks.{key} must be '
                              f'True or False, got {flag!r}.')


@pytest.mark.parametrize('given', [False, True, ['finite_check'], 'none'])
def test_mmcoop_hooks_must_be_a_dict(given):
    with pytest.raises(ValueError) as err:
        _register(given)
    msg = str(err.value)
    assert msg.startswith('MMCoopRunner: mmcoop_hooks must be a dict')
    assert 'dict(finite_check=False)' in msg and msg.endswith(
        f'got {given!r}.')


def test_mmcoop_hooks_unknown_key():
    with pytest.raises(ValueError, match=r"unknown keys \['finite'\]"):
        _register(dict(finite=False))


def test_runner_refuses_bad_mmcoop_hooks_and_releases_the_lock(
        tmp_path, toy_runner):
    work = tmp_path / 'w'
    with pytest.raises(ValueError, match='mmcoop_hooks.finite_check must '
                       "be True or False, got 'False'"):
        toy_runner(work, 1, cfg=dict(mmcoop_hooks=dict(finite_check='False')))
    # the refused build released the work-dir lock: a good one builds
    runner = toy_runner(work, 1, cfg=dict(mmcoop_hooks=dict(
        finite_check=False)))
    assert FiniteCheckHook not in {type(h) for h in runner.hooks}
    runner._release_work_dir()


# --------------------------------------------------------------------------
# TrainableParamsOptimWrapperConstructor
# --------------------------------------------------------------------------


class _Head(nn.Module):

    def __init__(self):
        super().__init__()
        self.pos_prompt = nn.Module()
        self.pos_prompt.ctx = nn.Parameter(torch.zeros(4))
        self.neg_embedding = nn.Parameter(torch.zeros(3))
        self.fc = nn.Linear(3, 2)


class _Model(nn.Module):

    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(3, 3)
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.head = _Head()


def _build(optimizer=None, **paramwise):
    cfg = dict(
        constructor='TrainableParamsOptimWrapperConstructor',
        optimizer=optimizer or dict(type='SGD', lr=0.5, momentum=0.9))
    if paramwise:
        cfg['paramwise_cfg'] = paramwise
    with DefaultScope.overwrite_default_scope('mmcoop'):
        return build_optim_wrapper(_Model(), cfg)


@pytest.fixture
def logs(monkeypatch):
    records = []

    def record(msg, logger=None, level=logging.INFO):
        records.append((level, msg))

    monkeypatch.setattr(constructor_module, 'print_log', record)
    return records


@pytest.mark.parametrize('lr', [0, -0.1, float('nan'), float('inf'), '0.1'])
def test_constructor_refuses_bad_optimizer_lr(lr):
    with pytest.raises(ValueError) as err:
        _build(dict(type='SGD', lr=lr))
    msg = str(err.value)
    assert msg.startswith('TrainableParamsOptimWrapperConstructor: '
                          'optim_wrapper.optimizer.lr must be a finite '
                          'number > 0')
    assert msg.endswith(f'got {lr!r}.')


@pytest.mark.parametrize('mult', [-1, 0])
def test_constructor_refuses_non_positive_group_lr(mult):
    with pytest.raises(ValueError) as err:
        _build(custom_keys={'pos_prompt.ctx': dict(lr_mult=mult)})
    msg = str(err.value)
    assert "custom_keys['pos_prompt.ctx'].lr_mult must be a finite number " \
        '> 0' in msg and msg.endswith(f'got {mult!r}.')
    assert 'requires_grad=False' in msg


def test_constructor_refuses_negative_bias_lr_mult():
    with pytest.raises(ValueError, match=r'\(head.fc.bias\) gets lr -0.5 '
                       'from the optimizer lr and paramwise_cfg'):
        _build(bias_lr_mult=-1.)


@pytest.mark.parametrize('mult', [float('nan'), 'x', None])
def test_constructor_refuses_non_number_multipliers(mult):
    with pytest.raises(ValueError) as err:
        _build(custom_keys={'ctx': dict(lr_mult=mult)})
    msg = str(err.value)
    assert msg.startswith(
        'TrainableParamsOptimWrapperConstructor: optim_wrapper.paramwise_'
        "cfg.custom_keys['ctx'].lr_mult must be a finite number > 0")
    assert msg.endswith(f'got {mult!r}.')
    if mult is not None:  # None: unset, as in MMEngine
        with pytest.raises(ValueError, match='paramwise_cfg.bias_lr_mult '
                           'must be a finite number'):
            _build(bias_lr_mult=mult)


def test_constructor_refuses_negative_group_weight_decay():
    """The optimizers check only their default weight_decay: a negative
    multiplier gave a param group a negative decay without a word."""
    with pytest.raises(ValueError) as err:
        _build(dict(type='SGD', lr=0.5, weight_decay=1e-4),
               bias_decay_mult=-2.)
    msg = str(err.value)
    assert '(head.fc.bias) gets weight_decay -' in msg
    assert ('from the optimizer weight_decay and paramwise_cfg multipliers; '
            'it must be a finite number >= 0') in msg
    _build(dict(type='SGD', lr=0.5, weight_decay=1e-4),
           custom_keys={'pos_prompt.ctx': dict(decay_mult=0.)})


@pytest.mark.parametrize('optimizer,option,value,expected', [
    (dict(weight_decay=0.), 'decay_mult', -1, 'a finite number >= 0'),
    ({}, 'lr', -0.1, 'a finite number > 0'),
    ({}, 'lr_mult', -1, 'a finite number > 0'),
    ({}, 'momentum', -1, 'SGD refuses (Invalid momentum value: -1)'),
    ({}, 'weight_decay', -1, 'SGD refuses (Invalid weight_decay value'),
    (dict(type='AdamW'), 'betas', (2, .9), 'AdamW refuses (Invalid beta'),
])
def test_constructor_refuses_out_of_range_custom_key_values(
        optimizer, option, value, expected):
    """torch checks only the options an optimizer is built with and
    MMEngine copies custom_keys options into the param groups: momentum=-1
    trained, and a decay_mult of -1 passed with weight_decay=0."""
    with pytest.raises(ValueError) as err:
        _build(dict(dict(type='SGD', lr=0.5), **optimizer),
               custom_keys={'pos_prompt.ctx': {option: value}})
    msg = str(err.value)
    field = f"optim_wrapper.paramwise_cfg.custom_keys['pos_prompt.ctx']." \
        f'{option}'
    assert msg.startswith(f'TrainableParamsOptimWrapperConstructor: {field}')
    assert expected in msg and repr(value) in msg and 'Fix: ' in msg


def test_constructor_refuses_custom_options_the_optimizer_ignores():
    """MMEngine copies every custom_keys option into the param group,
    where a misspelled one is never read."""
    with pytest.raises(ValueError) as err:
        _build(custom_keys={'ctx': dict(lr_mul=0.01)})
    msg = str(err.value)
    assert ("optim_wrapper.paramwise_cfg.custom_keys['ctx'] has "
            "['lr_mul'], which SGD does not read") in msg
    assert "Did you mean 'lr_mul' -> 'lr_mult'?" in msg
    # the optimizer's own options are legal per group
    wrapper = _build(custom_keys={'ctx': dict(lr_mult=0.1, momentum=0.5)})
    assert {g['momentum'] for g in wrapper.optimizer.param_groups} == {
        0.5, 0.9}


def test_constructor_refuses_misspelled_paramwise_keys():
    with pytest.raises(ValueError) as err:
        _build(cusotm_keys={'ctx': dict(lr_mult=0.01)})
    msg = str(err.value)
    assert "unknown optim_wrapper.paramwise_cfg keys ['cusotm_keys']" in msg
    assert "Did you mean 'cusotm_keys' -> 'custom_keys'?" in msg
    with pytest.raises(ValueError, match='custom_keys must be a dict'):
        _build(custom_keys=['ctx'])
    with pytest.raises(ValueError, match=r"custom_keys\['ctx'\] must be a "
                       'dict such as dict\\(lr_mult=0.01\\), got 0.01'):
        _build(custom_keys={'ctx': 0.01})


def test_constructor_warns_when_no_custom_key_matches(logs):
    optim = _build(custom_keys={'head.pos_promt.ctx': dict(lr_mult=0.01)})
    warnings = [m for level, m in logs if level == logging.WARNING]
    assert len(warnings) == 1
    assert "custom_keys entry ['head.pos_promt.ctx'] matches a trainable" in \
        warnings[0]
    assert 'head.pos_prompt.ctx' in warnings[0]  # the names to pick from
    # a warning, not an error: everything trains at the base lr
    assert {g['lr'] for g in optim.optimizer.param_groups} == {0.5}


def test_constructor_partial_match_is_logged_not_warned(logs):
    optim = _build(
        custom_keys={
            'head.pos_prompt.ctx': dict(lr_mult=0.01),
            'head.neg_prompt.ctx': dict(lr_mult=0.01),
        })
    assert not [m for level, m in logs if level >= logging.WARNING]
    assert any("['head.neg_prompt.ctx'] match no trainable" in m
               for _, m in logs)
    lrs = sorted(g['lr'] for g in optim.optimizer.param_groups)
    assert lrs == pytest.approx([0.005, 0.5, 0.5, 0.5])


def test_constructor_warns_on_a_typo_among_matching_keys(logs):
    """One key a typo away from a trainable name while the others match
    (before: INFO only, as for another head's tensors)."""
    _build(
        custom_keys={
            'head.pos_prompt.ctx': dict(lr_mult=0.01),
            'head.neg_prompt.ctx': dict(lr_mult=0.01),  # another head's
            'head.fc.wieght': dict(lr_mult=0.1),  # a typo
        })
    warnings = [m for level, m in logs if level == logging.WARNING]
    assert len(warnings) == 1
    assert "custom_keys 'head.fc.wieght' matches no trainable parameter; " \
        "did you mean 'head.fc.weight'?" in warnings[0]
    assert any("['head.neg_prompt.ctx'] match no trainable" in m
               for level, m in logs if level == logging.INFO)


def test_constructor_warns_on_keys_that_match_only_frozen_tensors(logs):
    """A key aimed at the frozen CLIP tower (a user trying to fine-tune it
    with lr_mult=10): before, INFO only, as for another head's tensors."""
    optim = _build(custom_keys={'backbone': dict(lr_mult=10.)})
    warnings = [m for level, m in logs if level == logging.WARNING]
    assert len(warnings) == 1, logs
    assert ("custom_keys ['backbone'] match only frozen tensors "
            '(requires_grad=False, e.g. backbone.weight): the CLIP towers '
            'are frozen by design') in warnings[0]
    assert 'nothing there is trained' in warnings[0]
    assert 'head.pos_prompt.ctx' in warnings[0]  # the trainable names
    assert {g['lr'] for g in optim.optimizer.param_groups} == {0.5}
    # among keys that match, with another head's key: the frozen one warns,
    # the other head's stays at INFO
    logs.clear()
    _build(custom_keys={'head.pos_prompt.ctx': dict(lr_mult=0.01),
                        'head.neg_prompt.ctx': dict(lr_mult=0.01),
                        'backbone.bias': dict(lr_mult=10.)})
    warnings = [m for level, m in logs if level == logging.WARNING]
    assert len(warnings) == 1 and "['backbone.bias'] match only frozen" in \
        warnings[0]
    assert any("['head.neg_prompt.ctx'] match no trainable" in m
               for level, m in logs if level == logging.INFO)
    # a key matching nothing at all next to a frozen one: both named
    logs.clear()
    _build(custom_keys={'backbone': dict(lr_mult=10.),
                        'head.pos_promt': dict(lr_mult=0.1)})
    warnings = [m for level, m in logs if level == logging.WARNING]
    assert len(warnings) == 2, warnings
    assert "entry ['head.pos_promt'] matches a trainable" in warnings[1]


def test_shipped_positivecoop_schedule_builds_without_warnings(logs):
    cfg = Config.fromfile(
        osp.join(ROOT, 'configs', '_base_', 'schedules',
                 'sgd-coslr-50e_positivecoop.py'))
    with DefaultScope.overwrite_default_scope('mmcoop'):
        optim = build_optim_wrapper(_Model(), cfg.optim_wrapper.to_dict())
    assert not [m for level, m in logs if level >= logging.WARNING]
    got = {
        id(p): g['lr']
        for g in optim.optimizer.param_groups for p in g['params']
    }
    assert sorted(got.values()) == pytest.approx([0.005, 0.005, 0.005, 0.5])


# --------------------------------------------------------------------------
# data preprocessors
# --------------------------------------------------------------------------


@pytest.mark.parametrize('flag', ['no', 0, None])
def test_feature_preprocessor_non_blocking_flag(flag):
    with pytest.raises(ValueError) as err:
        FeatureDataPreprocessor(non_blocking=flag)
    assert str(err.value) == ('FeatureDataPreprocessor: non_blocking must '
                              f'be True or False, got {flag!r}.')
    assert FeatureDataPreprocessor(non_blocking=False)._non_blocking is False


@pytest.mark.parametrize('field,value,expected', [
    ('pad_size_divisor', 0, 'an int >= 1'),  # was narrow(): length ...
    ('pad_size_divisor', -2, 'an int >= 1'),  # was no padding
    ('pad_size_divisor', 2.5, 'an int >= 1'),  # padded 4 to 5
    ('pad_value', float('nan'), 'a finite number'),
    ('to_onehot', 'no', 'True or False'),
    ('num_classes', 0, 'an int >= 1'),
    ('batch_augments', 'mixup', "None or a dict such as dict(augments="),
])
def test_clip_preprocessor_refuses_bad_values(field, value, expected):
    """The arguments CLIPDataPreprocessor hands to mmpretrain are checked
    as its own (mean, std, to_rgb) are."""
    with pytest.raises(ValueError) as err:
        CLIPDataPreprocessor(**{field: value})
    msg = str(err.value)
    assert msg.startswith(f'CLIPDataPreprocessor: {field} must be {expected}')
    assert msg.endswith(f'got {value!r}.')
    pre = CLIPDataPreprocessor(pad_size_divisor=4, pad_value=0,
                               to_onehot=False, num_classes=3,
                               batch_augments=None)
    assert pre(dict(inputs=[torch.zeros(3, 5, 6, dtype=torch.uint8)]))[
        'inputs'].shape == (1, 3, 8, 8)


def test_batch_augmentations_are_refused_when_the_model_is_built():
    """Mixup / CutMix (``model.train_cfg.augments``) mix two images'
    tri-state targets: refused when the model is built. Before: the loss
    refused the mixed targets at the first step, and since the loss reads
    device targets at its first call only, a ``RandomBatchAugment`` that
    left the first batch unmixed would have trained on them."""
    from mmpretrain.models import ImageClassifier
    with pytest.raises(ValueError, match=r"CLIPDataPreprocessor: batch "
                       r"augmentations \(\[\{'type': 'Mixup'.*-1 \(unknown\)"
                       r'.*Fix: remove model.train_cfg.augments'):
        ImageClassifier(
            backbone=dict(type='mmcoop.PrecomputedFeatures'),
            head=dict(type='mmcoop.BaselineHead', classnames=['a', 'b'],
                      in_channels=4),
            data_preprocessor=dict(type='mmcoop.CLIPDataPreprocessor'),
            train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8)]))
    # an empty list augments nothing
    CLIPDataPreprocessor(batch_augments=dict(augments=[]))


@pytest.mark.parametrize('cls', [CLIPDataPreprocessor,
                                 DeviceAugmentPreprocessor])
def test_channel_stats_as_tensors(cls):
    as_tensor = cls(mean=torch.tensor(CLIP_MEAN), std=torch.tensor(CLIP_STD))
    as_numpy = cls(mean=np.array(CLIP_MEAN), std=np.array(CLIP_STD))
    assert as_tensor.mean.dtype == as_numpy.mean.dtype == torch.float32
    torch.testing.assert_close(as_tensor.mean, as_numpy.mean)
    torch.testing.assert_close(as_tensor.std, as_numpy.std)
    with pytest.raises(ValueError, match='std must be positive'):
        cls(std=torch.tensor([1., 0., 1.]))
    with pytest.raises(ValueError, match=r'mean must be 3 finite numbers.*'
                       r'got tensor\(\[\[1., 2., 3.\]\]\)'):
        cls(mean=torch.tensor([[1., 2., 3.]]))


@pytest.mark.parametrize('pre,inputs', [
    (FeatureDataPreprocessor(), []),
    (FeatureDataPreprocessor(), torch.zeros(0, 4, 2)),
    (CLIPDataPreprocessor(), []),
    (CLIPDataPreprocessor(), torch.zeros(0, 3, 8, 8)),
    (DeviceAugmentPreprocessor(), []),
])
def test_empty_batch_is_a_clear_error(pre, inputs):
    with pytest.raises(ValueError) as err:
        pre(dict(inputs=inputs, data_samples=[]))
    msg = str(err.value)
    assert msg.startswith(f'{type(pre).__name__}: empty batch (no samples)')
    assert 'batch_size' in msg


def _samples_with(*scores):
    from mmpretrain.structures import DataSample
    return [DataSample().set_gt_score(torch.tensor(s)) for s in scores]


@pytest.mark.parametrize('pre,inputs', [
    (FeatureDataPreprocessor(), [torch.zeros(4, 2)] * 2),
    (CLIPDataPreprocessor(), [torch.zeros(3, 8, 8, dtype=torch.uint8)] * 2),
    (DeviceAugmentPreprocessor(), [torch.zeros(3, 8, 8,
                                               dtype=torch.uint8)] * 2),
])
def test_targets_are_checked_on_the_host_before_the_transfer(pre, inputs):
    """The loss reads targets on a device at its first call only: every
    batch's targets are checked by the preprocessor, on the host."""
    bad = _samples_with([1., 0., -1.], [1., 0.5, float('nan')])
    with pytest.raises(ValueError) as err:
        pre(dict(inputs=inputs, data_samples=bad), True)
    msg = str(err.value)
    assert msg.startswith(f'{type(pre).__name__}: targets (the `gt_score` '
                          'of the data samples) must be 1 (present), 0 ')
    assert 'found [0.5, nan]' in msg and 'Fix: check the `gt_score`' in msg
    if not isinstance(pre, DeviceAugmentPreprocessor):  # needs device_aug
        out = pre(dict(inputs=inputs, data_samples=_samples_with(
            [1., 0., -1.], [0., 0., 1.])), True)
        assert len(out['data_samples']) == 2


# --------------------------------------------------------------------------
# PartialLabelMaskHook / ThresholdCalibrationHook
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    'subdir',
    [None, 5, '', '  ', '/abs/path', '../../escape', 'a/../../b', '..'])
def test_partial_label_mask_hook_subdir_refused(subdir):
    with pytest.raises(ValueError) as err:
        PartialLabelMaskHook(subdir=subdir)
    msg = str(err.value)
    assert msg.startswith('PartialLabelMaskHook: subdir must be a relative '
                          'folder inside the work dir')
    assert f'got {subdir!r}.' in msg and 'mask_file' in msg


@pytest.mark.parametrize('subdir', ['partial_labels', 'masks/p50', '.'])
def test_partial_label_mask_hook_subdir_accepted(subdir):
    assert PartialLabelMaskHook(subdir=subdir).subdir == subdir


@pytest.mark.parametrize('split', [None, 5, '', ['val']])
def test_threshold_hook_split_must_be_str(split):
    with pytest.raises(ValueError) as err:
        ThresholdCalibrationHook(split=split)
    assert str(err.value).startswith(
        'ThresholdCalibrationHook: split must be a non-empty str')
    assert f'got {split!r}.' in str(err.value)


class _Logger:

    def __init__(self):
        self.warnings = []

    def warning(self, msg):
        self.warnings.append(msg)

    def info(self, msg):
        pass


def _val_runner(*metrics):
    return SimpleNamespace(
        val_evaluator=SimpleNamespace(metrics=list(metrics)),
        logger=_Logger(),
        epoch=1)


def test_threshold_hook_warns_once_without_a_calibrating_metric():
    hook = ThresholdCalibrationHook()
    runner = _val_runner(SimpleNamespace(calibrate=False))
    hook.after_val_epoch(runner)
    hook.after_val_epoch(runner)
    assert len(runner.logger.warnings) == 1
    msg = runner.logger.warnings[0]
    assert 'no validation metric has calibrate=True' in msg
    assert "dict(type='PartialMultiLabelMetric', calibrate=True" in msg
    assert hook._latest is None


def test_threshold_hook_calibrating_metric_no_warning():
    hook = ThresholdCalibrationHook()
    metric = SimpleNamespace(
        calibrate=True, calibrated_thresholds=None, dataset_meta={})
    runner = _val_runner(metric)
    hook.after_val_epoch(runner)  # nothing fitted yet: still no warning
    metric.calibrated_thresholds = np.array([0.25, 0.5])
    metric.dataset_meta = dict(classes=('a', 'b'))
    hook.after_val_epoch(runner)
    assert runner.logger.warnings == []
    assert hook._latest['thresholds'] == [0.25, 0.5]
    assert math.isclose(hook._latest['thresholds'][0], 0.25)


@pytest.mark.parametrize('field,value,expected', [
    ('topk', 0, 'an int >= 1'),
    ('topk', -1, 'an int >= 1'),
    ('topk', '10', 'an int >= 1'),
    ('threshold', 50, r'a number in \[0, 1\]'),
    ('threshold', '0.5', r'a number in \[0, 1\]'),
    ('force', 'no', 'True or False'),
])
def test_prediction_draw_hook_values(tmp_path, field, value, expected):
    """topk=-1 drew all but the lowest score, 'no' forced drawing into a
    folder that is not empty, 50 drew the threshold off the chart."""
    from mmcoop.engine.hooks import PredictionDrawHook
    with pytest.raises(ValueError,
                       match=f'PredictionDrawHook: {field} must be '
                       f'{expected}.*got {re.escape(repr(value))}'):
        PredictionDrawHook(str(tmp_path / 'vis'), **{field: value})
    PredictionDrawHook(str(tmp_path / 'vis'), topk=1, threshold=1)

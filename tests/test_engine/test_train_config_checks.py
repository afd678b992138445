# Copyright (c) mmcoop contributors. All rights reserved.
"""Training settings MMEngine reads only when the run reaches them, or
never checks, are refused (or warned about) by ``MMCoopRunner.from_cfg``
before anything is built or written, naming the field, the value and the
fix (:mod:`mmcoop.engine.train_checks`)."""
import os.path as osp
import re

import pytest
import torch
from _common import ToyModel, toy_runtime_cfg
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope

from mmcoop.engine import MMCoopRunner


def _cfg(work_dir, **over):
    """The shipped runtime around the toy model (8 samples, batch 4)."""
    cfg = toy_runtime_cfg(work_dir, max_epochs=2, **over)
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


# --------------------------------------------------------------------------
# the schedule against train_cfg
# --------------------------------------------------------------------------

def _warm_up_and_cosine(warm_up_end, cosine_end, **kw):
    return [
        dict(type='LinearLR', start_factor=0.1, begin=0, end=warm_up_end,
             **kw),
        dict(type='CosineAnnealingLR', begin=warm_up_end, end=cosine_end,
             **kw)
    ]


def test_a_scheduler_that_starts_after_the_run_is_named(tmp_path):
    """A warm-up longer than the run: the cosine never starts (before: the
    whole run at the warm-up lr, without a word)."""
    cfg = _cfg(tmp_path / 'work', train_cfg=dict(max_epochs=3),
               param_scheduler=_warm_up_and_cosine(5, 20))
    with pytest.warns(UserWarning) as record:
        MMCoopRunner.from_cfg(cfg)
    msgs = [str(w.message) for w in record
            if 'param_scheduler[' in str(w.message)]
    assert len(msgs) == 2, msgs
    assert msgs[0].startswith(
        'param_scheduler[0] (LinearLR) (in ') and \
        'ends at epoch 5 (begin=0, end=5), after the run (train_cfg.' \
        'max_epochs=3)' in msgs[0] and 'Fix: end it at 3' in msgs[0]
    assert msgs[1].startswith('param_scheduler[1] (CosineAnnealingLR)') and \
        'starts at epoch 5 (begin=5, end=20), but the run ends before ' \
        '(train_cfg.max_epochs=3): it never takes effect' in msgs[1]


def test_a_schedule_within_the_run_says_nothing(tmp_path):
    import warnings
    cfg = _cfg(tmp_path / 'work', train_cfg=dict(max_epochs=3),
               param_scheduler=_warm_up_and_cosine(1, 3) +
               [dict(type='ConstantLR', factor=1.0, begin=0)])  # end: INF
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter('always')
        runner = MMCoopRunner.from_cfg(cfg)
        runner.train_loop  # builds it: the iteration schedulers compared
    assert not [w for w in record if 'param_scheduler' in str(w.message)]


def test_epoch_schedulers_in_an_iteration_loop_are_refused(tmp_path):
    """IterBasedTrainLoop ends no epoch: a by_epoch scheduler never stepped
    and the lr stayed at its first value (before: silently)."""
    over = dict(train_cfg=dict(by_epoch=False, max_epochs=None, max_iters=6))
    msg = _refused(
        tmp_path, r'param_scheduler\[1\] \(CosineAnnealingLR\).* has '
        r"by_epoch=True \(MMEngine's default\), but train_cfg builds an "
        r'iteration-based loop.*Fix: by_epoch=False .*\(the run is '
        r'train_cfg\.max_iters=6\), or convert_to_iter_based=True',
        param_scheduler=_warm_up_and_cosine(1, 3, by_epoch=False)[:1] +
        _warm_up_and_cosine(1, 3)[1:], **over)
    assert 'param_scheduler[0]' not in msg
    # converted, or counted in iterations: accepted
    for schedule in (_warm_up_and_cosine(1, 3, convert_to_iter_based=True),
                     _warm_up_and_cosine(2, 6, by_epoch=False)):
        MMCoopRunner.from_cfg(_cfg(tmp_path / f'w{len(schedule)}',
                                   param_scheduler=schedule, **over))


def test_schedulers_in_the_other_unit_are_compared_when_the_loop_is_built(
        tmp_path):
    """by_epoch=False in an epoch loop counts iterations: compared with
    max_epochs * len(train_dataloader) once the dataloader is built (2
    epochs of 2 iterations here), before a step."""
    cfg = _cfg(tmp_path / 'work',
               param_scheduler=_warm_up_and_cosine(10, 50, by_epoch=False))
    runner = MMCoopRunner.from_cfg(cfg)
    with pytest.warns(UserWarning) as record:
        runner.train_loop
    msgs = [str(w.message) for w in record]
    assert any('param_scheduler[1] (CosineAnnealingLR)' in m and
               'starts at iteration 10 (begin=10, end=50), but the run ends '
               'before (train_cfg.max_epochs=2 of 2 iterations each: 4 '
               'iterations)' in m for m in msgs), msgs
    # the same in epochs, converted, in an iteration loop
    cfg = _cfg(tmp_path / 'iter',
               train_cfg=dict(by_epoch=False, max_epochs=None, max_iters=4),
               param_scheduler=_warm_up_and_cosine(
                   1, 5, convert_to_iter_based=True))
    runner = MMCoopRunner.from_cfg(cfg)
    with pytest.warns(UserWarning, match=re.escape(
            'param_scheduler[1] (CosineAnnealingLR) (in ') + '.*' +
            re.escape('ends at epoch 5 (begin=1, end=5), after the run '
                      '(train_cfg.max_iters=4 in epochs of 2 iterations: 2 '
                      'epochs)')):
        runner.train_loop


def test_shipped_configs_pass_the_train_checks(shipped_configs):
    """No shipped config is refused or warned about."""
    import warnings

    from mmcoop.engine.train_checks import check_train_settings
    for path, cfg in shipped_configs.items():
        with warnings.catch_warnings():
            warnings.simplefilter('error')
            check_train_settings(cfg.copy())


# --------------------------------------------------------------------------
# values MMEngine / numpy / torch refused late, without the field
# --------------------------------------------------------------------------


@pytest.mark.parametrize('over,match', [
    (dict(train_cfg=dict(val_interval=0)),
     r'train_cfg\.val_interval.* must be an int >= 1 \(validate every '
     r'val_interval epochs\), got 0: MMEngine divides by it after the first '
     r'epoch was trained \(0: ZeroDivisionError\)'),
    (dict(train_cfg=dict(val_interval=-2)), r'val_interval.*got -2'),
    (dict(train_cfg=dict(val_interval=1.5)), r'val_interval.*got 1\.5'),
    (dict(randomness=dict(seed=-1)), r'randomness\.seed.* must be None \(a '
     r"seed drawn for the run\) or an int in \[0, 2\*\*32 - 1\] \(numpy's "
     r'range\), got -1\. Fix: '),
    (dict(randomness=dict(seed=1.5)), r'randomness\.seed.*got 1\.5'),
    (dict(randomness=dict(seed=2**32)), r'randomness\.seed.*got 4294967296'),
    (dict(randomness=dict(seed=0, determinstic=True)),
     r"randomness.* has \['determinstic'\], which MMEngine does not take.*"
     r"Did you mean 'determinstic' -> 'deterministic'\?"),
    (dict(randomness=dict(seed=0, deterministic='no')),
     r"randomness\.deterministic must be True or False, got 'no'"),
    (dict(train_dataloader=dict(batch_size=0)),
     r'train_dataloader\.batch_size.* must be an int >= 1 \(samples per '
     r'batch.*got 0\. Fix: e\.g\. --cfg-options train_dataloader\.'
     r'batch_size=1'),
    (dict(train_dataloader=dict(batch_size=2.5)),
     r'train_dataloader\.batch_size.*got 2\.5'),
    (dict(val_dataloader=dict(batch_size=0)),
     r'val_dataloader\.batch_size.*got 0'),
    (dict(train_dataloader=dict(num_workers=-1)),
     r'train_dataloader\.num_workers.* must be an int >= 0 \(worker '
     r'processes.*got -1'),
    (dict(train_dataloader=dict(drop_last='no')),
     r"train_dataloader\.drop_last must be True or False, got 'no'"),
    (dict(train_dataloader=dict(persistent_workers=True)),
     r'train_dataloader\.persistent_workers=True.* needs workers, but '
     r'num_workers is 0'),
    (dict(optim_wrapper=dict(accumulative_counts=0)),
     r'optim_wrapper\.accumulative_counts.* must be an int >= 1 \(the '
     r'iterations whose gradients are summed.*got 0\. Fix: '),
    (dict(optim_wrapper=dict(accumulative_counts=2.0)),
     r'accumulative_counts.*got 2\.0'),
])
def test_late_raw_errors_are_named_before_anything_is_built(
        tmp_path, over, match):
    """Before: val_interval=0 a ZeroDivisionError after the first epoch was
    trained; seed -1 / 1.5 numpy's error; batch_size=0, num_workers=-1
    torch's error after the datasets were built; accumulative_counts=0
    MMEngine's bare AssertionError; none named the field."""
    if 'val_dataloader' in over:
        over = dict(over, val_dataloader=dict(
            _cfg(tmp_path / 'x').train_dataloader, batch_size=0),
            val_cfg=dict(), val_evaluator=dict(type='Accuracy'))
    _refused(tmp_path, match, **over)


def test_iteration_loop_val_interval_names_iterations(tmp_path):
    _refused(tmp_path, r'validate every val_interval iterations\), got 0',
             train_cfg=dict(by_epoch=False, max_epochs=None, max_iters=4,
                            val_interval=0))


def test_amp_optim_wrapper_without_an_accelerator_is_named(
        tmp_path, monkeypatch):
    """``optim_wrapper.type='AmpOptimWrapper'`` set in the config or with
    --cfg-options (``tools/train.py --amp`` says it in the CLI): refused
    when training starts, before the data and the optimizer are built
    (before: MMEngine's bare AssertionError). Building the runner, as
    tools/test.py does with the config of a run trained with --amp, is
    not refused."""
    import mmcoop.engine.train_checks as checks
    monkeypatch.setattr(checks, 'amp_device_available', lambda: False)
    runner = MMCoopRunner.from_cfg(_cfg(
        tmp_path / 'work', optim_wrapper=dict(type='AmpOptimWrapper')))
    with pytest.raises(ValueError, match=re.escape(
            "MMCoopRunner: optim_wrapper.type='AmpOptimWrapper' (in ") +
            '.*' + re.escape(
                '(mixed precision, what tools/train.py --amp sets) needs a '
                'GPU (CUDA), NPU or MLU; none is available here. Fix: '
                "optim_wrapper.type='OptimWrapper'")):
        runner.train()
    assert isinstance(runner._train_loop, dict)  # not built
    assert not list((tmp_path / 'work').rglob('*.pth'))
    # tools/train.py: before the runner makes the work dir
    from _common import load_tool
    cfg = _cfg(tmp_path / 'cli')
    config = str(tmp_path / 'cli.py')
    cfg.dump(config)
    with pytest.raises(ValueError, match="type='AmpOptimWrapper' "):
        load_tool('tools/train.py').main([
            config, '--work-dir', str(tmp_path / 'cli'), '--cfg-options',
            'optim_wrapper.type=AmpOptimWrapper'])
    assert not (tmp_path / 'cli').exists()


def test_accumulative_counts_longer_than_the_run_warns(tmp_path):
    """2 epochs of 2 iterations and accumulative_counts=8: one update, at
    the last iteration."""
    runner = MMCoopRunner.from_cfg(_cfg(
        tmp_path / 'work', optim_wrapper=dict(accumulative_counts=8)))
    with pytest.warns(UserWarning, match=(
            r'optim_wrapper\.accumulative_counts=8.* is larger than the '
            r'whole run \(4 iterations\): the parameters are updated once')):
        runner.train_loop
    import warnings
    runner = MMCoopRunner.from_cfg(_cfg(
        tmp_path / 'ok', optim_wrapper=dict(accumulative_counts=4)))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter('always')
        runner.train_loop
    assert not [w for w in record if 'accumulative' in str(w.message)]

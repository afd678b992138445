# Copyright (c) mmcoop contributors. All rights reserved.
"""ConstantAbsoluteLR and TrainableParamsOptimWrapperConstructor."""
import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.optim import OptimWrapper, build_optim_wrapper
from mmengine.optim.scheduler import ConstantLR, CosineAnnealingLR
from mmengine.registry import DefaultScope

import mmcoop.engine  # noqa: F401
from mmcoop.engine.optim import (ConstantAbsoluteLR,
                                 TrainableParamsOptimWrapperConstructor)
from mmcoop.registry import PARAM_SCHEDULERS

BASE_LRS = [0.1, 0.001, 1.0]


def _optim(lrs=BASE_LRS):
    params = [nn.Parameter(torch.zeros(2)) for _ in lrs]
    opt = torch.optim.SGD(
        [dict(params=[p], lr=lr) for p, lr in zip(params, lrs)],
        lr=lrs[0],
        momentum=0.9)
    return OptimWrapper(opt)


def _run(optim, schedulers, steps):
    lrs = []
    for _ in range(steps):
        lrs.append([g['lr'] for g in optim.optimizer.param_groups])
        optim.step()
        for s in schedulers:
            s.step()
    return lrs


def test_registered_in_mmcoop_scope():
    with DefaultScope.overwrite_default_scope('mmcoop'):
        assert PARAM_SCHEDULERS.get('ConstantAbsoluteLR') is \
            ConstantAbsoluteLR


def test_absolute_value_for_every_group_then_restored():
    optim = _optim()
    sched = ConstantAbsoluteLR(optim, value=5e-3, begin=0, end=2)
    lrs = _run(optim, [sched], 4)
    assert lrs == [[5e-3] * 3, [5e-3] * 3, BASE_LRS, BASE_LRS]
    # mmengine's ConstantLR is a factor: it cannot give all groups 5e-3
    optim2 = _optim()
    ConstantLR(optim2, factor=5e-3 / 0.1, begin=0, end=2)
    assert [g['lr'] for g in optim2.optimizer.param_groups] != [5e-3] * 3


def test_begin_after_zero_restores_the_values_at_begin():
    optim = _optim()
    sched = ConstantAbsoluteLR(optim, value=0.5, begin=2, end=4)
    lrs = _run(optim, [sched], 6)
    assert lrs == [
        BASE_LRS, BASE_LRS, [0.5] * 3, [0.5] * 3, BASE_LRS, BASE_LRS
    ]


def test_chained_cosine_starts_from_the_base_lrs():
    optim = _optim()
    scheds = [
        ConstantAbsoluteLR(optim, value=5e-3, begin=0, end=1),
        CosineAnnealingLR(optim, T_max=4, begin=1, end=4),
    ]
    lrs = _run(optim, scheds, 4)
    assert lrs[0] == [5e-3] * 3
    np.testing.assert_allclose(lrs[1], BASE_LRS, rtol=1e-12)
    np.testing.assert_allclose(
        lrs[2], [lr * (1 + 2**-0.5) / 2 for lr in BASE_LRS], rtol=1e-12)
    np.testing.assert_allclose(lrs[3], [lr / 2 for lr in BASE_LRS], rtol=1e-12)


def test_resume_from_state_dict_continues_identically():

    def build():
        optim = _optim()
        return optim, [
            ConstantAbsoluteLR(optim, value=5e-3, begin=0, end=2),
            CosineAnnealingLR(optim, T_max=5, begin=2, end=5),
        ]

    optim, scheds = build()
    full = _run(optim, scheds, 5)

    optim, scheds = build()
    _run(optim, scheds, 1)  # interrupted inside the warm-up
    states = [s.state_dict() for s in scheds]
    optim_state = copy.deepcopy(optim.state_dict())
    optim2, scheds2 = build()
    optim2.load_state_dict(optim_state)
    for s, state in zip(scheds2, states):
        s.load_state_dict(state)
    resumed = _run(optim2, scheds2, 4)
    np.testing.assert_allclose(resumed, full[1:], rtol=1e-12)
    assert resumed[0] == [5e-3] * 3 and resumed[1] == BASE_LRS


def test_iter_based_conversion():
    optim = _optim()
    sched = ConstantAbsoluteLR.build_iter_from_epoch(
        optim, value=1e-5, begin=0, end=1, epoch_length=3)
    assert (sched.begin, sched.end, sched.by_epoch) == (0, 3, False)
    lrs = _run(optim, [sched], 4)
    assert lrs == [[1e-5] * 3] * 3 + [BASE_LRS]


def test_rejects_negative_value():
    with pytest.raises(ValueError, match='value must be a finite number > 0'):
        ConstantAbsoluteLR(_optim(), value=-1.)


class _Toy(nn.Module):

    def __init__(self):
        super().__init__()
        self.frozen = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
        for p in self.frozen.parameters():
            p.requires_grad_(False)
        self.ctx = nn.Parameter(torch.zeros(4))
        self.fc = nn.Linear(3, 2)


@pytest.mark.parametrize('paramwise', [False, True])
def test_constructor_optimises_only_trainable_tensors(paramwise, caplog):
    model = _Toy()
    cfg = dict(
        constructor='TrainableParamsOptimWrapperConstructor',
        optimizer=dict(type='SGD', lr=0.5, momentum=0.9, weight_decay=1e-4))
    if paramwise:
        cfg['paramwise_cfg'] = dict(custom_keys={'ctx': dict(lr_mult=0.01)})
    with DefaultScope.overwrite_default_scope('mmcoop'):
        optim = build_optim_wrapper(model, cfg)
    groups = optim.optimizer.param_groups
    got = [p for g in groups for p in g['params']]
    assert {id(p)
            for p in got
            } == {id(model.ctx),
                  id(model.fc.weight),
                  id(model.fc.bias)}
    assert len(got) == 3
    lr = {id(p): g['lr'] for g in groups for p in g['params']}
    assert lr[id(model.ctx)] == pytest.approx(0.005 if paramwise else 0.5)
    assert lr[id(model.fc.weight)] == 0.5
    assert not any('is skipped since its requires_grad' in r.getMessage()
                   for r in caplog.records)


def test_constructor_refuses_a_model_without_trainable_tensors():
    model = _Toy()
    for p in model.parameters():
        p.requires_grad_(False)
    constructor = TrainableParamsOptimWrapperConstructor(
        dict(optimizer=dict(type='SGD', lr=0.1)))
    with pytest.raises(ValueError, match=r'no trainable parameter.* Fix: a '
                       r'zero-shot model .* evaluate it with tools/test\.py '
                       r'CONFIG, which needs no checkpoint'):
        constructor(model)

# Copyright (c) mmcoop contributors. All rights reserved.
"""An optimizer-wrapper constructor that never sees the frozen CLIP."""
import inspect
from typing import List, Optional, Union

import torch.nn as nn
from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper

from mmcoop.registry import (OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS,
                             OPTIMIZERS)

__all__ = ['TrainableParamsOptimWrapperConstructor']


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class TrainableParamsOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """:class:`~mmengine.optim.DefaultOptimWrapperConstructor` restricted to
    parameters with ``requires_grad=True``.

    mmcoop models are a frozen CLIP plus a few prompt / embedding tensors.
    The default constructor puts every frozen tensor into the optimizer
    (without ``paramwise_cfg``) or logs one warning per frozen tensor (with
    it; several hundred for RN101). This one skips modules whose parameters
    are all frozen, hands only trainable tensors to the optimizer, logs one
    summary line, and fails if nothing is trainable. ``paramwise_cfg``
    (``custom_keys``, ``lr_mult``, ``decay_mult``, ...) works as in MMEngine,
    so the first param group, whose lr MMEngine logs, is a trained one.

    Select it with ``optim_wrapper = dict(constructor=
    'TrainableParamsOptimWrapperConstructor', ...)``.
    """

    def add_params(self,
                   params: List[dict],
                   module: nn.Module,
                   prefix: str = '',
                   is_dcn_module: Optional[Union[int, float]] = None) -> None:
        if not any(p.requires_grad for p in module.parameters()):
            return  # a frozen tower: nothing to optimise, nothing to log
        super().add_params(params, module, prefix, is_dcn_module)

    def __call__(self, model: nn.Module) -> OptimWrapper:
        if hasattr(model, 'module'):
            model = model.module
        trainable = [(n, p) for n, p in model.named_parameters()
                     if p.requires_grad]
        if not trainable:
            raise ValueError(
                'The model has no trainable parameter (all have '
                'requires_grad=False); there is nothing to optimise.')

        optim_wrapper_cfg = self.optim_wrapper_cfg.copy()
        optim_wrapper_cfg.setdefault('type', 'OptimWrapper')
        optimizer_cfg = self.optimizer_cfg.copy()
        optimizer_cls = self.optimizer_cfg['type']
        if isinstance(optimizer_cls, str):
            with OPTIMIZERS.switch_scope_and_registry(None) as registry:
                optimizer_cls = registry.get(self.optimizer_cfg['type'])
        first_arg_name = next(
            iter(inspect.signature(optimizer_cls).parameters))
        if not self.paramwise_cfg:
            params = [p for _, p in trainable]
            num_groups = 1
        else:
            params = []
            self.add_params(params, model)
            num_groups = len(params)
        optimizer_cfg[first_arg_name] = params
        optimizer = OPTIMIZERS.build(optimizer_cfg)

        num_frozen = sum(1 for p in model.parameters() if not p.requires_grad)
        print_log(
            f'Optimizer: {len(trainable)} trainable parameter tensors '
            f'({sum(p.numel() for _, p in trainable):,} values) in '
            f'{num_groups} param group(s); {num_frozen} frozen tensors are '
            'not optimised.',
            logger='current')
        return OPTIM_WRAPPERS.build(
            optim_wrapper_cfg, default_args=dict(optimizer=optimizer))

# Copyright (c) mmcoop contributors. All rights reserved.
import math
from typing import Optional

import torch
from mmengine.hooks import Hook

from mmcoop.registry import HOOKS
from mmcoop.utils.value_checks import check_flag, check_int


class NonFiniteError(FloatingPointError):
    """Training produced NaN/Inf; raised before any checkpoint is written."""


@HOOKS.register_module()
class FiniteCheckHook(Hook):
    """Stop training at the first NaN/Inf loss or trainable parameter.

    Runs after every ``interval`` training iterations, before the checkpoint
    hook (higher priority), so a diverged run stops with a message naming
    the epoch and iteration instead of writing NaN checkpoints; the last
    good checkpoint stays resumable.

    Args:
        interval (int): check every ``interval`` iterations (an int >= 1;
            to switch the hook off, set ``mmcoop_hooks =
            dict(finite_check=False)``). Defaults to 1.
        check_params (bool): also check the trainable parameters after the
            update. Defaults to True.
    """

    priority = 'ABOVE_NORMAL'

    def __init__(self, interval: int = 1, check_params: bool = True):
        try:  # 0 or -1 would switch the guard off without a word
            self.interval = check_int('FiniteCheckHook', 'interval',
                                      interval)
        except ValueError as e:
            raise ValueError(
                f'{e} To switch the check off, set mmcoop_hooks = '
                'dict(finite_check=False) (and drop FiniteCheckHook from '
                'custom_hooks).') from None
        self.check_params = check_flag('FiniteCheckHook', 'check_params',
                                       check_params)

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch: Optional[dict] = None,
                         outputs: Optional[dict] = None) -> None:
        if not self.every_n_train_iters(runner, self.interval):
            return
        where = (f'epoch {runner.epoch + 1}, iteration {runner.iter + 1} '
                 f'(batch {batch_idx + 1} of the epoch)')
        # one flag per output and trainable parameter, read back at once:
        # one wait for the device per check, not one per tensor
        checks, flags = [], []
        for name, value in (outputs or {}).items():
            if isinstance(value, torch.Tensor):
                value = value.detach().float().sum()
                checks.append(('output', name, value))
                flags.append(torch.isfinite(value))
            elif not math.isfinite(float(value)):
                self._stop('output', name, float(value), where)
        if self.check_params:
            model = runner.model.module if hasattr(
                runner.model, 'module') else runner.model
            for pname, param in model.named_parameters():
                if param.requires_grad:
                    checks.append(('parameter', pname, param))
                    flags.append(torch.isfinite(param).all())
        finite = {}
        for device in {f.device for f in flags}:  # one read per device
            on = [i for i, f in enumerate(flags) if f.device == device]
            finite.update(
                zip(on, torch.stack([flags[i] for i in on]).tolist()))
        for i, (kind, name, value) in enumerate(checks):
            if not finite[i]:
                self._stop(kind, name, value, where)

    @staticmethod
    def _stop(kind: str, name: str, value, where: str) -> None:
        """Raise :class:`NonFiniteError` for the ``output`` or
        ``parameter`` ``name`` (``value``: the output's value) at
        ``where``."""
        if kind == 'parameter':
            raise NonFiniteError(
                f'Parameter {name} has NaN/Inf values at {where}. '
                'No checkpoint was written for it; lower the learning '
                'rate and resume from the last checkpoint.')
        value = float(value)
        raise NonFiniteError(
            f'{name} became {value} at {where}. No checkpoint was '
            'written for it. Lower the learning rate or loss_weight '
            '(`optim_wrapper.optimizer.lr`, '
            '`model.head.loss.loss_weight`), check the inputs, and '
            'resume from the last checkpoint with --resume.')

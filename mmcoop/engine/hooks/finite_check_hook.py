# Copyright (c) mmcoop contributors. All rights reserved.
import os.path as osp
from typing import Optional

import numpy as np
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
    good checkpoint stays resumable. Every checkpoint save also checks the
    trainable parameters first (``before_save_checkpoint``), whatever
    ``interval`` and ``check_params``: with ``interval`` > 1 a save can
    fall between two checks.

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
                continue
            bad = _not_finite(value)
            if bad is not None:
                self._stop('output', name, bad, where, runner)
        if self.check_params:
            self._add_params(runner, checks, flags)
        self._check(checks, flags, where, runner)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Refuse to save non-finite trainable parameters (MMEngine calls
        this with the checkpoint gathered, before it writes the file)."""
        checks, flags = [], []
        self._add_params(runner, checks, flags)
        where = (f'the checkpoint save {_save_position(checkpoint, runner)} '
                 '(checked before every save; FiniteCheckHook(interval='
                 f'{self.interval}, check_params={self.check_params}) '
                 'checks the iterations)')
        self._check(checks, flags, where, runner)

    @staticmethod
    def _add_params(runner, checks: list, flags: list) -> None:
        model = runner.model.module if hasattr(
            runner.model, 'module') else runner.model
        for pname, param in model.named_parameters():
            if param.requires_grad:
                checks.append(('parameter', pname, param))
                flags.append(torch.isfinite(param).all())

    def _check(self, checks: list, flags: list, where: str, runner) -> None:
        """Stop at the first of ``checks`` whose flag is False, the flags
        read with one copy per device."""
        finite = {}
        for device in {f.device for f in flags}:  # one read per device
            on = [i for i, f in enumerate(flags) if f.device == device]
            finite.update(
                zip(on, torch.stack([flags[i] for i in on]).tolist()))
        for i, (kind, name, value) in enumerate(checks):
            if not finite[i]:
                self._stop(kind, name, value, where, runner)

    @staticmethod
    def _stop(kind: str, name: str, value, where: str, runner=None) -> None:
        """Raise :class:`NonFiniteError` for the ``output`` or
        ``parameter`` ``name`` (``value``: the output's value) at
        ``where``, with the way back: a new run from the run's last
        checkpoint (:func:`_last_checkpoint`) with a lower learning rate.
        Not ``--resume``: it restores the checkpoint's learning rate and
        scheduler (the config's new one is only warned about) and, bit
        for bit, the same steps, so it diverges again."""
        if kind == 'parameter':
            what = f'Parameter {name} has NaN/Inf values at {where}'
        else:
            what = f'{name} became {float(value)} at {where}'
        last = _last_checkpoint(runner)
        if last is None:
            back = 'train again (the run had written no checkpoint yet)'
        else:
            back = (f'start a new run from the last checkpoint, {last}, '
                    f'with --cfg-options load_from={last} and another '
                    '--work-dir (not --resume: it restores the '
                    "checkpoint's learning rate and repeats the same steps)")
        raise NonFiniteError(
            f'{what}. No checkpoint was written for it. Fix: lower the '
            'learning rate (`optim_wrapper.optimizer.lr`, or the value of '
            'an absolute `param_scheduler` such as ConstantAbsoluteLR) or '
            'the loss weight (`model.head.loss.loss_weight`), check the '
            f'inputs, and {back}.')


def _save_position(checkpoint: dict, runner) -> str:
    """Where a save is, as the checkpoint records it (MMEngine's ``meta``:
    the epochs and iterations done; epoch 0 in an iteration-based run):
    ``'in epoch E (iteration I)'`` or ``'at iteration I'``; from the
    runner when the checkpoint has no such record."""
    meta = checkpoint.get('meta') or {}
    epoch, it = meta.get('epoch'), meta.get('iter')
    if not isinstance(epoch, int) or not isinstance(it, int):
        return f'in epoch {runner.epoch + 1}'
    return f'in epoch {epoch} (iteration {it})' if epoch else \
        f'at iteration {it}'


def _not_finite(value) -> Optional[float]:
    """The first NaN/Inf of a non-tensor output (a number or an array),
    None when it has none or is not numeric (a string, a list of names:
    nothing to check)."""
    if isinstance(value, bool) or not isinstance(
            value, (int, float, np.number, np.ndarray)):
        return None
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    bad = array[~np.isfinite(array)]
    return float(bad.flat[0]) if bad.size else None


def _last_checkpoint(runner) -> Optional[str]:
    """The checkpoint the run's ``last_checkpoint`` file names
    (:func:`~mmcoop.engine.runner.last_checkpoint_named`), when it exists;
    None before the first save or without a work dir."""
    from mmcoop.engine.runner import last_checkpoint_named
    work_dir = getattr(runner, 'work_dir', None)
    if not isinstance(work_dir, str):
        return None
    try:
        named = last_checkpoint_named(work_dir)
    except OSError:  # unreadable: the stop's message names no checkpoint
        return None
    return named if named and osp.isfile(named) else None

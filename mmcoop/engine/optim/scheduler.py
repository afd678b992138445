# Copyright (c) mmcoop contributors. All rights reserved.
"""Constant warm-up at an *absolute* value, as Dassl's
``ConstantWarmupScheduler`` used by the official DualCoOp / PositiveCoOp."""
import numbers
from typing import List, Optional, Union

from mmengine.optim import BaseOptimWrapper, _ParamScheduler
from mmengine.optim.scheduler.lr_scheduler import LRSchedulerMixin
from mmengine.optim.scheduler.param_scheduler import INF
from torch.optim import Optimizer

from mmcoop.registry import PARAM_SCHEDULERS
from mmcoop.utils.value_checks import check_flag, check_number

__all__ = ['ConstantAbsoluteParamScheduler', 'ConstantAbsoluteLR']


@PARAM_SCHEDULERS.register_module()
class ConstantAbsoluteParamScheduler(_ParamScheduler):
    """Hold a parameter of *every* param group at one absolute ``value`` in
    ``[begin, end)``, then give each group back the value it had at
    ``begin``.

    This is Dassl's ``ConstantWarmupScheduler`` (``dassl/optim/
    lr_scheduler.py``: ``get_lr`` returns ``[cons_lr for _ in base_lrs]``),
    which the official code uses for its 1-epoch warm-up. mmengine's
    ``ConstantLR`` multiplies each group by a *factor*, so it cannot give
    the same absolute warm-up lr to groups whose base lrs differ (the
    PositiveCoOp recipe has groups at ``lr`` and ``0.01 * lr``); this
    scheduler can.

    Put it *before* the main schedule in ``param_scheduler``: at step
    ``end`` it restores the saved values first, so a chained scheduler
    that starts at ``begin=end`` (e.g. ``CosineAnnealingLR``) starts from
    each group's base value, as Dassl's successor scheduler does.

    Args:
        optimizer (Optimizer | BaseOptimWrapper): Wrapped optimizer.
        param_name (str): Name of the parameter, e.g. ``'lr'``.
        value (float): Absolute value of every group in ``[begin, end)``,
            a finite number > 0.
        begin (int): First step (epoch or iteration), an int >= 0.
            Defaults to 0.
        end (int): Step at which the saved values come back, an int >
            ``begin`` (a fractional one would never be reached: the whole
            run would stay at ``value``; for a fraction of an epoch add
            ``convert_to_iter_based=True``). Defaults to INF (never).
        last_step (int): Index of the last step, for resuming without a
            state dict. Defaults to -1.
        by_epoch (bool): Step per epoch (True) or iteration. Defaults to
            True.
        verbose (bool): Print every update. Defaults to False.

    Examples:
        >>> param_scheduler = [
        ...     dict(type='ConstantAbsoluteLR', value=5e-3, begin=0, end=1),
        ...     dict(type='CosineAnnealingLR', T_max=50, begin=1, end=50),
        ... ]
    """

    def __init__(self,
                 optimizer: Union[Optimizer, BaseOptimWrapper],
                 param_name: str,
                 value: float,
                 begin: int = 0,
                 end: int = INF,
                 last_step: int = -1,
                 by_epoch: bool = True,
                 verbose: bool = False):
        owner = type(self).__name__
        self.value = float(
            check_number(
                owner,
                'value',
                value,
                0,
                above=True,
                what='the absolute warm-up value of every param group, '
                'e.g. 5e-3'))
        # `end` is met by equality (`step`): a fractional one would never
        # give the saved values back, so the whole run would stay at `value`
        what = ('the base values come back at step `end` exactly; for a '
                'fraction of an epoch add convert_to_iter_based=True, which '
                'converts epochs to whole iterations')
        for field, step in (('begin', begin), ('end', end)):
            if isinstance(step, bool) or not isinstance(
                    step, numbers.Integral) or step < 0:
                raise ValueError(f'{owner}: {field} must be an int >= 0 '
                                 f'({what}), got {step!r}.')
        for field, flag in (('by_epoch', by_epoch), ('verbose', verbose)):
            check_flag(owner, field, flag)
        if end <= begin:
            raise ValueError(
                f'{owner}: end ({end}) must be greater than begin ({begin}); '
                'the value is held in [begin, end).')
        # values of every group when the schedule started (restored at end)
        self.saved_values: Optional[List[float]] = None
        super().__init__(
            optimizer,
            param_name=param_name,
            begin=begin,
            end=end,
            last_step=last_step,
            by_epoch=by_epoch,
            verbose=verbose)

    @classmethod
    def build_iter_from_epoch(cls,
                              *args,
                              begin=0,
                              end=INF,
                              by_epoch=True,
                              epoch_length=None,
                              **kwargs):
        """Build an iteration-based instance from an epoch-based config."""
        assert by_epoch, 'Only epoch-based kwargs whose `by_epoch=True` can ' \
                         'be converted to iter-based.'
        assert epoch_length is not None and epoch_length > 0, \
            f'`epoch_length` must be a positive integer, got {epoch_length}.'
        # epochs may be fractional here: they become whole iterations
        for field, step in (('begin', begin), ('end', end)):
            check_number(
                cls.__name__,
                field,
                step,
                0,
                what='epochs, converted to iterations '
                '(convert_to_iter_based=True)')
        begin = int(begin * epoch_length)
        if end != INF:
            end = int(end * epoch_length)
        return cls(*args, begin=begin, end=end, by_epoch=False, **kwargs)

    def _get_value(self) -> list:
        groups = self.optimizer.param_groups
        if self.last_step == 0 or self.saved_values is None:
            self.saved_values = [group[self.param_name] for group in groups]
        return [self.value for _ in groups]

    def step(self) -> None:
        """Step as mmengine schedulers do; at step ``end`` restore the
        values saved at ``begin``."""
        super().step()
        if self._global_step == self.end and self.saved_values is not None:
            groups = self.optimizer.param_groups
            for i, (group, value) in enumerate(zip(groups, self.saved_values)):
                group[self.param_name] = value
                self.print_value(self.verbose, i, value)
            self._last_value = [group[self.param_name] for group in groups]


@PARAM_SCHEDULERS.register_module()
class ConstantAbsoluteLR(LRSchedulerMixin, ConstantAbsoluteParamScheduler):
    """Learning rate of every param group held at an absolute ``value`` in
    ``[begin, end)`` (Dassl's constant warm-up); see
    :class:`ConstantAbsoluteParamScheduler`.

    Args:
        optimizer (Optimizer | BaseOptimWrapper): Wrapped optimizer.
        value (float): The warm-up learning rate of every group.
        begin (int): First step. Defaults to 0.
        end (int): Step at which the base learning rates come back.
            Defaults to INF.
        last_step (int): Defaults to -1.
        by_epoch (bool): Defaults to True.
        verbose (bool): Defaults to False.
    """

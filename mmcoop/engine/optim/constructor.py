# Copyright (c) mmcoop contributors. All rights reserved.
"""An optimizer-wrapper constructor that never sees the frozen CLIP."""
import difflib
import inspect
import logging
import math
from typing import List, Optional, Sequence, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper

from mmcoop.engine.train_checks import check_clip_grad
from mmcoop.registry import (OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS,
                             OPTIMIZERS)
from mmcoop.utils.value_checks import check_number, is_real, renames_hint

__all__ = ['TrainableParamsOptimWrapperConstructor']

_OWNER = 'TrainableParamsOptimWrapperConstructor'

#: the ``paramwise_cfg`` keys MMEngine's DefaultOptimWrapperConstructor
#: reads (``add_params``); any other key would be ignored silently
PARAMWISE_KEYS = ('custom_keys', 'bias_lr_mult', 'bias_decay_mult',
                  'norm_decay_mult', 'dwconv_decay_mult', 'flat_decay_mult',
                  'bypass_duplicate', 'dcn_offset_lr_mult')


#: why an lr must be > 0, and how to freeze tensors instead (the messages
#: of the optimizer lr, the lr options of ``custom_keys`` and the group lrs)
_LR_WHY = 'a negative lr is gradient ascent, 0 trains nothing'
_FREEZE = 'to freeze the tensors, set requires_grad=False'
#: the ``custom_keys`` options MMEngine reads itself (``add_params``), with
#: their ranges (:func:`~mmcoop.utils.value_checks.check_number` bounds and
#: the why and fix of the message); every other option is the optimizer's,
#: checked by the optimizer (``_check_custom_options``)
CUSTOM_KEY_RANGES = {
    'lr_mult':
    dict(
        low=0,
        above=True,
        what=f'it multiplies the optimizer lr: {_LR_WHY}. Fix: a positive '
        f'lr_mult; {_FREEZE}'),
    'decay_mult':
    dict(
        low=0,
        what='it multiplies the optimizer weight_decay: a negative one '
        'pushes the weights away from 0. Fix: a decay_mult >= 0 (0: no '
        'decay)'),
    'lr':
    dict(
        low=0,
        above=True,
        what=f'the lr of these tensors: {_LR_WHY}. Fix: a positive lr; '
        f'{_FREEZE}'),
}


def _match_name(name: str) -> str:
    """The string MMEngine matches ``custom_keys`` against (``add_params``:
    ``f'{prefix}.{name}'``, so a top-level parameter reads ``'.ctx'``)."""
    return name if '.' in name else f'.{name}'


def _default_of(optimizer_cls, option: str):
    """The default of ``option`` in the signature of ``optimizer_cls``
    (None when it has none)."""
    param = inspect.signature(optimizer_cls).parameters.get(option)
    if param is None or param.default is inspect.Parameter.empty:
        return None
    return param.default


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

    Checks (a wrong value would train silently at the wrong lr):

    * the optimizer's ``lr`` and the lr of every resulting param group
      (``lr_mult``, ``bias_lr_mult``, ...) must be finite and > 0: a
      negative one is gradient ascent, 0 or NaN trains nothing; freeze a
      tensor with ``requires_grad=False`` instead of ``lr_mult=0``;
    * the weight decay of every param group must be finite and >= 0 (a
      negative ``decay_mult`` pushes the weights away from 0);
    * ``paramwise_cfg`` keys MMEngine does not read (a misspelled
      ``cusotm_keys``), and ``custom_keys`` options that neither MMEngine
      nor the optimizer reads (``lr_mul``), are refused;
    * ``optim_wrapper.clip_grad``: a ``type`` of ``'norm'`` or ``'value'``,
      only the keys its clip function takes, ``max_norm`` / ``clip_value``
      finite and > 0 (a negative one flips or fixes every gradient, 0
      zeroes them), ``norm_type`` > 0 or inf
      (:func:`~mmcoop.engine.train_checks.check_clip_grad`, also run by
      ``MMCoopRunner.from_cfg`` for any constructor);
    * the values of ``custom_keys`` options: ``lr_mult`` and ``lr`` > 0,
      ``decay_mult`` >= 0 (:data:`CUSTOM_KEY_RANGES`, when the constructor
      is built); the optimizer's own options (``momentum``,
      ``weight_decay``, ``betas``, ...) by the optimizer class, as if they
      were in ``optim_wrapper.optimizer`` (torch checks only those);
    * ``custom_keys`` that match no trainable parameter name: a warning
      when *none* of them matches (a typo, or a recipe written for another
      model, would drop every multiplier); when some match, the others are
      listed at INFO level only, because a shared recipe lists the keys of
      every head variant (``sgd-coslr-50e_positivecoop.py`` names the
      PositiveCoOp, NegativeCoOp and Baseline tensors, and each model has
      only some of them); a key that matches only frozen tensors (e.g.
      ``backbone``, a user trying to fine-tune CLIP) gets a warning of its
      own: the CLIP towers are frozen by design, nothing there is trained.
    """

    def _validate_cfg(self) -> None:
        if not isinstance(self.paramwise_cfg, dict):
            raise ValueError(
                f'{_OWNER}: optim_wrapper.paramwise_cfg must be a dict (or '
                f'None), got {self.paramwise_cfg!r}.')
        custom_keys = self.paramwise_cfg.get('custom_keys', {})
        if not isinstance(custom_keys, dict):
            raise ValueError(
                f'{_OWNER}: optim_wrapper.paramwise_cfg.custom_keys must be '
                "a dict such as {'head.ctx': dict(lr_mult=0.01)}, got "
                f'{custom_keys!r}.')
        lr = self.optimizer_cfg.get('lr', None)
        if lr is not None:
            check_number(
                _OWNER,
                'optim_wrapper.optimizer.lr',
                lr,
                0,
                above=True,
                what=_LR_WHY)
        unknown = sorted(set(self.paramwise_cfg) - set(PARAMWISE_KEYS))
        if unknown:
            raise ValueError(
                f'{_OWNER}: unknown optim_wrapper.paramwise_cfg keys '
                f'{unknown} (MMEngine would ignore them); allowed: '
                f'{list(PARAMWISE_KEYS)}.' +
                renames_hint(unknown, PARAMWISE_KEYS))
        for key, opts in custom_keys.items():
            where = f'optim_wrapper.paramwise_cfg.custom_keys[{key!r}]'
            if not isinstance(opts, dict):
                raise ValueError(
                    f'{_OWNER}: {where} must be a dict such as '
                    f'dict(lr_mult=0.01), got {opts!r}.')
            for field, bounds in CUSTOM_KEY_RANGES.items():
                if field in opts:
                    check_number(_OWNER, f'{where}.{field}', opts[field],
                                 **bounds)
        for field in ('bias_lr_mult', 'dcn_offset_lr_mult', 'bias_decay_mult',
                      'norm_decay_mult', 'dwconv_decay_mult',
                      'flat_decay_mult'):
            value = self.paramwise_cfg.get(field, None)
            if value is not None:
                check_number(_OWNER, f'optim_wrapper.paramwise_cfg.{field}',
                             value)
        check_clip_grad(self.optim_wrapper_cfg.get('clip_grad', None), _OWNER)
        super()._validate_cfg()

    def _custom_key_of(self, name: str) -> Optional[str]:
        """The ``custom_keys`` entry MMEngine applies to parameter
        ``name`` (the longest matching key, then alphabetical)."""
        keys = self.paramwise_cfg.get('custom_keys', {})
        for key in sorted(sorted(keys), key=len, reverse=True):
            if key in _match_name(name):
                return key
        return None

    def _check_custom_keys(self, trainable: list,
                           frozen: Sequence[str] = ()) -> None:
        """Report the ``custom_keys`` that match no trainable parameter
        (``trainable``: ``(name, param)`` pairs; ``frozen``: the names of
        the frozen parameters): see the class docstring."""
        keys = list(self.paramwise_cfg.get('custom_keys', {}))
        if not keys:
            return
        unmatched = [
            k for k in keys
            if not any(k in _match_name(n) for n, _ in trainable)
        ]
        if not unmatched:
            return
        names = [n for n, _ in trainable]
        shown = ', '.join(names[:8]) + (
            f', ... ({len(names)} in all)' if len(names) > 8 else '')
        frozen_only = [
            k for k in unmatched
            if any(k in _match_name(n) for n in frozen)
        ]
        if frozen_only:
            example = next(n for n in frozen if frozen_only[0] in
                           _match_name(n))
            print_log(
                f'{_OWNER}: optim_wrapper.paramwise_cfg.custom_keys '
                f'{frozen_only} match only frozen tensors (requires_grad='
                f'False, e.g. {example}): the CLIP towers are frozen by '
                'design and never reach the optimizer, so nothing there is '
                'trained and these multipliers change nothing (fine-tuning '
                'CLIP is not supported). Fix: remove them; the trainable '
                f'parameters are: {shown}.',
                logger='current',
                level=logging.WARNING)
            unmatched = [k for k in unmatched if k not in frozen_only]
            if not unmatched:
                return
        if len(unmatched) + len(frozen_only) == len(keys):
            print_log(
                f'{_OWNER}: no optim_wrapper.paramwise_cfg.custom_keys '
                f'entry {unmatched} matches a trainable parameter name (keys '
                'are matched as substrings), so every trainable tensor '
                'trains at the base lr and weight decay. Trainable '
                f'parameters: {shown}. Fix: correct the keys, or remove '
                'paramwise_cfg.',
                logger='current',
                level=logging.WARNING)
        else:
            # a key one typo away from a trainable name (or a dotted prefix
            # of one) is a mistake; the other heads' tensors of a shared
            # recipe ('neg_' for 'pos_') are further apart
            targets = sorted({
                '.'.join(n.split('.')[:i])
                for n, _ in trainable for i in range(1, n.count('.') + 2)
            })
            typos = {
                k: close
                for k in unmatched for close in [
                    difflib.get_close_matches(k, targets, n=1, cutoff=0.9)
                ] if close
            }
            for key, close in typos.items():
                print_log(
                    f'{_OWNER}: custom_keys {key!r} matches no trainable '
                    f'parameter; did you mean {close[0]!r}? Its tensors '
                    'train with the multipliers of the other keys, or the '
                    'base lr and weight decay. Fix: correct the key.',
                    logger='current',
                    level=logging.WARNING)
            rest = [k for k in unmatched if k not in typos]
            if rest:
                print_log(
                    f'{_OWNER}: custom_keys {rest} match no trainable '
                    'parameter of this model (expected for a recipe that '
                    'lists the tensors of several heads; check them if '
                    'not).',
                    logger='current')

    def _check_group_lrs(self, optimizer, names: dict) -> None:
        """Every param group's lr finite and > 0, naming its tensors and
        the ``custom_keys`` entry that set it."""
        for i, group in enumerate(optimizer.param_groups):
            lr = group.get('lr', None)
            if isinstance(lr, torch.Tensor) and lr.numel() == 1:
                lr = lr.item()
            if is_real(lr) and math.isfinite(lr) and lr > 0:
                continue
            tensors = [names.get(id(p), '?') for p in group['params']]
            keys = sorted({k for k in map(self._custom_key_of, tensors) if k})
            source = (f'custom_keys {keys}' if keys else
                      'the optimizer lr and paramwise_cfg multipliers')
            raise ValueError(
                f'{_OWNER}: param group {i} ({", ".join(tensors)}) gets lr '
                f'{lr!r} from {source}; every group lr must be a finite '
                f'number > 0 ({_LR_WHY}, NaN too). Fix: a positive lr_mult; '
                f'{_FREEZE}.')

    def _check_group_decays(self, optimizer, names: dict) -> None:
        """Every param group's ``weight_decay`` a finite number >= 0 (the
        optimizers check only their default: a negative ``decay_mult``
        would pull the tensors away from 0)."""
        for i, group in enumerate(optimizer.param_groups):
            wd = group.get('weight_decay', None)
            if wd is None or (is_real(wd) and math.isfinite(wd) and wd >= 0):
                continue
            tensors = [names.get(id(p), '?') for p in group['params']]
            keys = sorted({k for k in map(self._custom_key_of, tensors) if k})
            source = (f'custom_keys {keys}' if keys else
                      'the optimizer weight_decay and paramwise_cfg '
                      'multipliers')
            raise ValueError(
                f'{_OWNER}: param group {i} ({", ".join(tensors)}) gets '
                f'weight_decay {wd!r} from {source}; it must be a finite '
                'number >= 0 (a negative one pushes the weights away from '
                '0). Fix: a decay_mult >= 0 (0: no decay).')

    def _check_custom_options(self, optimizer) -> None:
        """Each ``custom_keys`` entry names only ``lr_mult``,
        ``decay_mult`` and options of the optimizer: MMEngine copies any
        other key into the param group, where the optimizer never reads it
        (``lr_mul`` would train at the base lr without a word). The values
        of the optimizer's options are then checked by the optimizer
        (:meth:`_check_custom_values`)."""
        allowed = set(CUSTOM_KEY_RANGES) | set(optimizer.defaults)
        custom_keys = self.paramwise_cfg.get('custom_keys', {})
        for key, opts in custom_keys.items():
            unknown = sorted(set(opts) - allowed)
            if not unknown:
                continue
            raise ValueError(
                f'{_OWNER}: optim_wrapper.paramwise_cfg.custom_keys[{key!r}]'
                f' has {unknown}, which {type(optimizer).__name__} does not '
                f'read (it would be ignored); allowed: {sorted(allowed)}.' +
                renames_hint(unknown, allowed))
        self._check_custom_values(type(optimizer), custom_keys)

    def _check_custom_values(self, optimizer_cls, custom_keys: dict) -> None:
        """The value of each optimizer option of ``custom_keys``
        (``momentum``, ``weight_decay``, ``betas``, ``eps``...) checked by the
        optimizer class itself, as if it were in ``optim_wrapper.optimizer``:
        torch checks only the options an optimizer is built with, and
        MMEngine copies these into the param groups unchecked
        (``momentum=-1`` trained). An optimizer that cannot be built here on
        one CPU tensor (e.g. ``fused=True``) is not checked."""
        own = {k: v for k, v in self.optimizer_cfg.items() if k != 'type'}
        probe = [torch.zeros(1, requires_grad=True)]
        try:
            optimizer_cls(probe, **own)
        except Exception:  # noqa: BLE001 - no probe, no check
            return
        for key, opts in custom_keys.items():
            for option, value in opts.items():
                if option in CUSTOM_KEY_RANGES:
                    continue  # MMEngine's own, checked in _validate_cfg
                try:
                    optimizer_cls(probe, **{**own, option: value})
                except (ValueError, TypeError) as e:
                    raise ValueError(
                        f'{_OWNER}: optim_wrapper.paramwise_cfg.custom_keys'
                        f'[{key!r}].{option} is {value!r}, which '
                        f'{optimizer_cls.__name__} refuses ({e}); torch '
                        'checks only the options the optimizer is built '
                        'with, so these tensors would train with it. Fix: '
                        f'a value {optimizer_cls.__name__} accepts as '
                        f'optim_wrapper.optimizer.{option} (its default: '
                        f'{_default_of(optimizer_cls, option)!r}), or leave '
                        'it out to use the optimizer\'s.') from None

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
                'requires_grad=False); there is nothing to optimise. Fix: '
                'a zero-shot model (model.head.type=ZeroShotHead) learns '
                'nothing: evaluate it with tools/test.py CONFIG, which '
                'needs no checkpoint for it; to train, use a prompt head '
                '(PositiveCoOpHead, NegativeCoOpHead, DualCoOpHead, ...).')

        optim_wrapper_cfg = self.optim_wrapper_cfg.copy()
        optim_wrapper_cfg.setdefault('type', 'OptimWrapper')
        # a plain dict: a ConfigDict would turn the param groups into
        # ConfigDicts, which torch.compile cannot trace through
        # `optimizer.step` (MMEngine's `compile` config key)
        optimizer_cfg = dict(self.optimizer_cfg)
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
            self._check_custom_keys(
                trainable, [n for n, p in model.named_parameters()
                            if not p.requires_grad])
            params = []
            self.add_params(params, model)
            num_groups = len(params)
        optimizer_cfg[first_arg_name] = params
        optimizer = OPTIMIZERS.build(optimizer_cfg)
        names = {id(p): n for n, p in trainable}
        if self.paramwise_cfg:
            self._check_custom_options(optimizer)
        self._check_group_lrs(optimizer, names)
        self._check_group_decays(optimizer, names)

        num_frozen = sum(1 for p in model.parameters() if not p.requires_grad)
        print_log(
            f'Optimizer: {len(trainable)} trainable parameter tensors '
            f'({sum(p.numel() for _, p in trainable):,} values) in '
            f'{num_groups} param group(s); {num_frozen} frozen tensors are '
            'not optimised.',
            logger='current')
        return OPTIM_WRAPPERS.build(
            optim_wrapper_cfg, default_args=dict(optimizer=optimizer))

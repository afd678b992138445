# Copyright (c) mmcoop contributors. All rights reserved.
"""Does a checkpoint fit a model? One policy for every way of loading.

``load_from`` and ``--resume`` (:class:`~mmcoop.engine.MMCoopRunner`),
``tools/test.py``, :func:`mmcoop.apis.init_model` and ``demo/image_demo.py``
all call :func:`check_checkpoint_fits` before loading. It raises
:class:`~mmcoop.utils.checkpoint.CheckpointMismatchError` when

* ``shapes``: a tensor present in both has another shape;
* ``missing``: a *trainable* parameter of the model is not in the
  checkpoint (it would keep its random initial value: another method's
  checkpoint, an unconverted official file);
* ``classes``: the checkpoint's ``meta.dataset_meta.classes`` (or a
  converter's ``meta.classnames``) differ from the classes the model is
  used with, ignoring case, ``_`` and spacing
  (:func:`mmcoop.datasets.utils.normalize_class_name`);
* ``towers``: the checkpoint's ``meta.clip_towers`` (the frozen CLIP
  towers it was trained on, recorded by
  :class:`~mmcoop.engine.MMCoopRunner`) show another CLIP than the
  model's for a tower both have (another architecture, QuickGELU, weights
  tag or random seed; weights files are not compared by path): a head
  trained on RN101 fits ViT-B/16's shapes, and would score nonsense;
* the checkpoint shares no parameter name with the model at all (always).

Keys the model does not have (besides frozen towers a full checkpoint may
carry) are returned as a warning and not loaded. A file that looks like an
official DualCoOp / PositiveCoOp checkpoint gets the converter command in
the message. Each check can be switched off on explicit request only
(``checkpoint_check = dict(missing=False, ...)`` in a config,
``init_model(..., strict=False)``).
"""
import os.path as osp
import re
from collections import OrderedDict
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.model import is_model_wrapper
from mmengine.runner import load_state_dict

from mmcoop.datasets.utils import describe_class_difference, same_class_names
from mmcoop.utils.checkpoint import (CheckpointMismatchError,
                                     CheckpointReadError)

__all__ = [
    'CHECKS', 'resolve_checks', 'check_checkpoint_fits',
    'checkpoint_classes', 'revised_state_dict', 'load_checkpoint_weights'
]

#: the checks of the policy, all on by default.
CHECKS = ('shapes', 'missing', 'classes', 'towers')

#: key fragments of the official DualCoOp / PositiveCoOp checkpoints (see
#: tools/model_converters/official_to_mmcoop.py).
_OFFICIAL_KEYS = re.compile(r'^(prompt_learner\.|txt_prompt_|linear_layer\.|'
                            r'image_encoder\.|clip_model\.)')

_FIX = ('Fix: use the config the checkpoint was trained with (its '
        "meta['cfg'] holds it) or a checkpoint trained for this config")


def resolve_checks(options: Optional[dict] = None,
                   where: str = 'checkpoint_check') -> dict:
    """``{check: bool}`` with the defaults (all True) and ``options``."""
    checks = {name: True for name in CHECKS}
    unknown = set(options or {}) - set(CHECKS)
    if unknown:
        raise ValueError(f'{where}: unknown keys {sorted(unknown)}; allowed: '
                         f'{list(CHECKS)} (True/False).')
    checks.update(options or {})
    return checks


def revised_state_dict(checkpoint: dict,
                       filename: str,
                       revise_keys: Sequence[Tuple[str, str]] = (
                           (r'^module\.', ''), )) -> dict:
    """The checkpoint's ``state_dict`` with ``revise_keys`` applied (and
    its ``_metadata``, the module versions ``nn.Module.state_dict``
    records, kept)."""
    state_dict = checkpoint.get('state_dict', checkpoint)
    if not isinstance(state_dict, dict):
        raise CheckpointReadError(
            f'{filename!r}: `state_dict` is a {type(state_dict).__name__}, '
            'not a dict of tensors.')
    revised = OrderedDict()
    for key, value in state_dict.items():
        for pattern, repl in revise_keys:
            key = re.sub(pattern, repl, key)
        revised[key] = value
    metadata = getattr(state_dict, '_metadata', None)
    if metadata is not None:
        revised._metadata = metadata
    return revised


def load_checkpoint_weights(model: nn.Module,
                            checkpoint: dict,
                            filename: str,
                            strict: bool = False,
                            logger=None,
                            revise_keys: Sequence[Tuple[str, str]] = (
                                (r'^module\.', ''), )) -> dict:
    """Load a checkpoint already read (and checked by
    :func:`check_checkpoint_fits`) into ``model`` with MMEngine's public
    ``load_state_dict`` (which reports missing and unexpected keys);
    returns ``checkpoint``. The runner's ``load_checkpoint`` and
    ``init_model`` load through it."""
    load_state_dict(model, revised_state_dict(checkpoint, filename,
                                              revise_keys), strict, logger)
    return checkpoint


def checkpoint_classes(checkpoint: dict) -> Optional[List[str]]:
    """Class names recorded in a checkpoint's meta, or None."""
    meta = checkpoint.get('meta') or {}
    meta = meta if isinstance(meta, dict) else {}
    dataset_meta = meta.get('dataset_meta') or {}
    classes = (dataset_meta.get('classes') if isinstance(
        dataset_meta, dict) else None) or meta.get('classnames')
    return list(classes) if classes else None


def _check_towers(model: nn.Module, checkpoint: dict, filename: str,
                  towers: Optional[Dict[str, dict]] = None) -> None:
    """The ``towers`` check (module docstring); ``towers``: those of the
    run (default: the model's own, :func:`clip_towers`)."""
    from mmcoop.models.backbones.clip_loader import clip_difference
    from mmcoop.models.backbones.frozen_clip import clip_towers
    meta = checkpoint.get('meta')
    recorded = meta.get('clip_towers') if isinstance(meta, dict) else None
    if not isinstance(recorded, dict):
        return  # not recorded (older, converted or foreign checkpoints)
    towers = clip_towers(model) if towers is None else towers
    for name, now in towers.items():
        then = recorded.get(name)
        field = clip_difference(then, now) if isinstance(then,
                                                         dict) else None
        if field is not None:
            raise CheckpointMismatchError(
                f'Checkpoint {filename!r} was trained with another CLIP '
                f'as `{name}`: {field}={then.get(field)!r} there, '
                f'{now.get(field)!r} in this config (the checkpoint: '
                f'{then}; the model: {now}). Its learned prompts and '
                f'embeddings belong to that CLIP. {_FIX}; or set '
                '`checkpoint_check = dict(towers=False)` to load it anyway.')


def _frozen_keys(model: nn.Module) -> set:
    """State-dict keys of frozen towers (a full checkpoint may carry them)."""
    from mmcoop.models.backbones.frozen import FrozenMixin
    keys = set()
    for name, module in model.named_modules():
        if isinstance(module, FrozenMixin):
            save, module.save_frozen = module.save_frozen, True
            try:
                prefix = f'{name}.' if name else ''
                keys.update(module.state_dict(prefix=prefix).keys())
            finally:
                module.save_frozen = save
    return keys


def _converter_hint(model: nn.Module, revised: dict, filename: str) -> str:
    if not any(_OFFICIAL_KEYS.match(k) for k in revised):
        return ''
    head = getattr(model, 'head', None)
    method = type(head).__name__
    method = method[:-4].lower() if method.endswith('Head') else 'METHOD'
    stem = osp.splitext(osp.basename(filename))[0].split('.')[0]
    return (' The file looks like an official DualCoOp/PositiveCoOp '
            'checkpoint; convert it first: python tools/model_converters/'
            f'official_to_mmcoop.py {filename} {stem}_mmcoop.pth '
            f'--method {method}')


def _listed(keys: Sequence[str], limit: int = 8) -> str:
    more = f' (and {len(keys) - limit} more)' if len(keys) > limit else ''
    return ', '.join(keys[:limit]) + more


def check_checkpoint_fits(
        model: nn.Module,
        checkpoint: dict,
        filename: str,
        checks: Optional[dict] = None,
        class_targets: Iterable[Tuple[str, Sequence[str]]] = (),
        revise_keys: Sequence[Tuple[str, str]] = ((r'^module\.', ''), ),
        towers: Optional[Dict[str, dict]] = None) -> List[str]:
    """Apply the load policy (module docstring).

    Args:
        model: the model (a DDP wrapper is unwrapped).
        checkpoint: the loaded checkpoint dict.
        filename: its path, for the messages.
        checks: ``{'shapes'|'missing'|'classes'|'towers': bool}``;
            missing keys are True.
        class_targets: ``(what, classes)`` pairs the checkpoint's classes
            must equal, e.g. ``('the test dataset', [...])``. When empty,
            the head's ``classnames`` are used.
        revise_keys: as MMEngine's ``load_checkpoint``.
        towers: the frozen CLIP towers of the run, ``{path: identity}``
            (default: the model's; a cached run's image tower is held by
            its feature cache, see ``MMCoopRunner.clip_towers``).

    Returns:
        list[str]: warnings (keys that will not be loaded).
    """
    checks = resolve_checks(checks)
    model = model.module if is_model_wrapper(model) else model
    revised = revised_state_dict(checkpoint, filename, revise_keys)
    own = {n: tuple(t.shape) for n, t in model.named_parameters()}
    own.update({n: tuple(t.shape) for n, t in model.named_buffers()})
    ckpt_classes = checkpoint_classes(checkpoint)
    head_classes = getattr(getattr(model, 'head', None), 'classnames', None)
    hint = _converter_hint(model, revised, filename)

    if revised and own and not any(k in own for k in revised):
        raise CheckpointMismatchError(
            f'Checkpoint {filename!r} shares no parameter name with the '
            f'model of this config (checkpoint keys like '
            f'{list(revised)[:3]}, model keys like {list(own)[:3]}); '
            f'nothing would be loaded.{hint} {_FIX}.')
    if checks['towers']:
        _check_towers(model, checkpoint, filename, towers)
    if checks['shapes']:
        bad = [(k, tuple(v.shape), own[k]) for k, v in revised.items()
               if k in own and isinstance(v, torch.Tensor)
               and tuple(v.shape) != own[k]]
        if bad:
            lines = '; '.join(f'{k}: checkpoint {list(c)} vs model '
                              f'{list(m)}' for k, c, m in bad[:10])
            more = f' (and {len(bad) - 10} more)' if len(bad) > 10 else ''
            classes = ''
            if ckpt_classes and head_classes is not None and \
                    not same_class_names(ckpt_classes, list(head_classes)):
                classes = (
                    f' The checkpoint was trained for {len(ckpt_classes)} '
                    f'classes, the model head has {len(head_classes)}: ' +
                    describe_class_difference(ckpt_classes,
                                              list(head_classes)) + '.')
            raise CheckpointMismatchError(
                f'Checkpoint {filename!r} does not fit the model of this '
                f'config: {len(bad)} tensor(s) have other shapes '
                f'({lines}{more}).{classes}{hint} {_FIX}; or set '
                '`checkpoint_check = dict(shapes=False)` to load only '
                'the tensors that fit.')
    if checks['missing']:
        missing = [
            n for n, p in model.named_parameters()
            if p.requires_grad and n not in revised
        ]
        if missing:
            raise CheckpointMismatchError(
                f'Checkpoint {filename!r} leaves {len(missing)} trainable '
                f'parameter(s) of the model unloaded (missing keys: '
                f'{_listed(missing)}); they would keep their random initial '
                f'values. Checkpoint keys: {_listed(list(revised))}.{hint} '
                f'{_FIX}; or, to load a part on purpose, set '
                '`checkpoint_check = dict(missing=False)` (init_model: '
                '`strict=False`).')
    if checks['classes'] and ckpt_classes:
        targets = list(class_targets)
        if not targets and head_classes is not None:
            targets = [('the model head (`model.head.classnames`)',
                        list(head_classes))]
        for what, classes in targets:
            classes = list(classes)
            if not same_class_names(classes, ckpt_classes):
                raise CheckpointMismatchError(
                    f'Checkpoint {filename!r} was trained for other classes '
                    f'than {what}: ' +
                    describe_class_difference(ckpt_classes, classes) +
                    f'. Checkpoint classes: {ckpt_classes[:20]}'
                    f'{"..." if len(ckpt_classes) > 20 else ""}; config: '
                    f'{classes[:20]}{"..." if len(classes) > 20 else ""}. '
                    f'{_FIX}; or, to reuse class-agnostic parameters on '
                    'purpose, set `checkpoint_check = dict(classes=False)`.')
    unexpected = sorted(
        set(revised) - set(own) - _frozen_keys(model)) if revised else []
    if unexpected:
        return [
            f'Checkpoint {filename!r} has {len(unexpected)} key(s) the model '
            f'does not have; they are not loaded: {_listed(unexpected)}.'
        ]
    return []

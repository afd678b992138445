# Copyright (c) mmcoop contributors. All rights reserved.
"""Checks of the training settings of a config (the optimizer wrapper, the
train loop, the schedule, the dataloaders, the randomness), run by
``MMCoopRunner.from_cfg`` before anything is built, so that every launcher
gets them. MMEngine reads these values only when the run reaches them:
some fail late with a bare ``AssertionError`` or numpy's error, others
train silently wrong (``clip_grad.max_norm=-1`` is gradient ascent) or not
at all (``max_epochs=0`` exits 0 with untrained checkpoints).

Each ``check_*`` raises ``ValueError`` naming the config field, the value
given and the fix; where a value may be deliberate it warns instead.
"""
import math
import warnings
from typing import Any, Optional

from mmcoop.utils.value_checks import (check_flag, check_number, is_int,
                                       is_real, renames_hint)

__all__ = [
    'CLIP_GRAD_KEYS', 'check_clip_grad', 'train_loop_kind', 'check_train_cfg',
    'check_train_dataloader_length', 'check_schedule', 'AMP_DEVICES',
    'amp_device_available', 'check_amp_optim_wrapper', 'check_randomness',
    'check_dataloaders', 'check_accumulative_counts', 'check_train_settings'
]

#: what mixed precision (MMEngine's ``AmpOptimWrapper``) runs on: the one
#: sentence of ``tools/train.py --amp`` and of the config check.
AMP_DEVICES = 'a GPU (CUDA), NPU or MLU'

#: the keys of ``optim_wrapper.clip_grad`` per ``type`` (MMEngine's
#: ``OptimWrapper`` passes them to ``torch.nn.utils.clip_grad_norm_`` /
#: ``clip_grad_value_``), the first one required.
CLIP_GRAD_KEYS = {
    'norm': ('max_norm', 'norm_type', 'error_if_nonfinite', 'foreach'),
    'value': ('clip_value', 'foreach'),
}

_CLIP_WHY = {
    'max_norm': 'the gradients are scaled by max_norm / norm: a negative '
    'max_norm flips them (gradient ascent), 0 zeroes them (nothing trains)',
    'clip_value': 'the gradients are clamped to [-clip_value, clip_value]: '
    'a negative clip_value sets every gradient to -clip_value, 0 zeroes them '
    '(nothing trains)',
}


def _where(cfg) -> str:
    filename = getattr(cfg, 'filename', None)
    return f' (in {filename})' if filename else ''


def check_clip_grad(clip_grad: Any,
                    owner: str = 'MMCoopRunner',
                    where: str = '') -> None:
    """Refuse an ``optim_wrapper.clip_grad`` that MMEngine would accept but
    that clips wrongly or fails at the first step: not a non-empty dict, a
    ``type`` other than ``'norm'`` / ``'value'``, keys the clip function
    does not take, a missing or non-positive ``max_norm`` / ``clip_value``
    (finite > 0), a ``norm_type`` that is not a positive number or inf,
    flags that are not bools. None: no clipping."""
    field = 'optim_wrapper.clip_grad'
    if clip_grad is None:
        return
    example = ("dict(max_norm=1.0) (clip the gradients' norm) or "
               "dict(type='value', clip_value=0.5) (clamp each gradient)")
    if not isinstance(clip_grad, dict) or not clip_grad:
        raise ValueError(
            f'{owner}: {field}{where} must be None (no clipping) or a dict '
            f'such as {example}, got {clip_grad!r}.')
    kind = clip_grad.get('type', 'norm')
    if kind not in CLIP_GRAD_KEYS:
        raise ValueError(
            f'{owner}: {field}.type{where} must be \'norm\' (torch.nn.utils.'
            "clip_grad_norm_, MMEngine's default) or 'value' (clip_grad_"
            f'value_), got {kind!r}. Fix: {example}.')
    allowed = CLIP_GRAD_KEYS[kind]
    unknown = sorted(set(clip_grad) - set(allowed) - {'type'}, key=str)
    if unknown:
        raise ValueError(
            f'{owner}: {field}{where} has {unknown}, which clipping by '
            f'{kind} does not take (the first step would fail with '
            f'"unexpected keyword argument"); allowed: {list(allowed)} and '
            "'type'." + renames_hint(unknown, allowed + ('type', )) +
            f' Fix: {example}.')
    required = allowed[0]
    if required not in clip_grad:
        raise ValueError(
            f'{owner}: {field}{where} (type {kind!r}) needs {required}; '
            f'got {clip_grad!r}. Fix: {example}.')
    check_number(
        owner, f'{field}.{required}', clip_grad[required], 0, above=True,
        what=f'{_CLIP_WHY[required]}. Fix: a positive {required}, or '
        f'remove {field} not to clip{where}')
    norm_type = clip_grad.get('norm_type', 2.0)
    if not ((is_real(norm_type) and norm_type > 0 and not math.isnan(
            norm_type)) or norm_type == 'inf'):
        raise ValueError(
            f'{owner}: {field}.norm_type{where} must be a number > 0 (the p '
            f"of the p-norm: 2 Euclidean) or inf ('inf'), got "
            f'{norm_type!r}. Fix: norm_type=2.0 (the default).')
    if 'error_if_nonfinite' in clip_grad:
        check_flag(owner, f'{field}.error_if_nonfinite',
                   clip_grad['error_if_nonfinite'])
    if clip_grad.get('foreach', None) is not None:
        check_flag(owner, f'{field}.foreach (or None)', clip_grad['foreach'])


def _optim_wrapper(cfg) -> Optional[dict]:
    wrapper = cfg.get('optim_wrapper', None)
    return wrapper if isinstance(wrapper, dict) else None


def train_loop_kind(train_cfg: Any) -> Optional[str]:
    """``'epoch'`` or ``'iter'``: the unit of the train loop that
    ``train_cfg`` builds (MMEngine's ``Runner.build_train_loop``: a
    ``type`` from ``LOOPS``, a subclass of ``EpochBasedTrainLoop`` /
    ``IterBasedTrainLoop`` included, else ``by_epoch``); None for another
    loop, or one that cannot be told from the config."""
    from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop

    from mmcoop.registry import LOOPS
    from mmcoop.utils.config_types import registered_class
    if not isinstance(train_cfg, dict):
        return None
    if 'type' in train_cfg:
        cls = registered_class(LOOPS, train_cfg)
        return None if cls is None else 'epoch' if issubclass(
            cls, EpochBasedTrainLoop) else 'iter' if issubclass(
                cls, IterBasedTrainLoop) else None
    if 'by_epoch' not in train_cfg:
        return None
    return 'epoch' if train_cfg['by_epoch'] else 'iter'


#: the length field of each loop kind, and what it counts.
_LOOP_LENGTH = {'epoch': ('max_epochs', 'epochs'),
                'iter': ('max_iters', 'iterations')}


def check_train_cfg(cfg) -> None:
    """``train_cfg.max_epochs`` (an epoch-based loop) or ``max_iters`` (an
    iteration-based one) must be an int >= 1: MMEngine trains nothing for 0
    or less and exits 0 after saving untrained checkpoints, and stops with
    a bare ``AssertionError`` for 1.5. Other loops are checked for the
    field they are given. ``val_interval`` of the two built-in loops: an
    int >= 1 (0 was a ``ZeroDivisionError`` after the first epoch)."""
    train_cfg = cfg.get('train_cfg', None)
    if not isinstance(train_cfg, dict):
        return
    kind = train_loop_kind(train_cfg)
    fields = [_LOOP_LENGTH[kind]] if kind else [
        v for k, v in _LOOP_LENGTH.items() if v[0] in train_cfg
    ]
    for field, unit in fields:
        if field not in train_cfg:
            other = [f for f, _ in _LOOP_LENGTH.values() if f != field]
            raise ValueError(
                f'MMCoopRunner: train_cfg{_where(cfg)} has no {field} (the '
                f'number of {unit} of this {kind}-based loop)' +
                (f', only {other[0]}' if other[0] in train_cfg else '') +
                f'. Fix: e.g. --cfg-options train_cfg.{field}=20.')
        value = train_cfg[field]
        if not is_int(value) or value < 1:
            example = max(1, round(value)) if is_real(value) and \
                math.isfinite(value) else 20
            raise ValueError(
                f'MMCoopRunner: train_cfg.{field}{_where(cfg)} must be an int '
                f'>= 1 (the number of {unit} to train), got {value!r}: ' +
                ('0 or less trains nothing (the run would save untrained '
                 'checkpoints and exit 0)' if is_real(value) and value < 1
                 else 'MMEngine stops on it after the data and the model '
                 'are built') + f'. Fix: a whole number of {unit}, e.g. '
                f'--cfg-options train_cfg.{field}={example}.')
    interval = train_cfg.get('val_interval', 1)
    if kind is not None and not (is_int(interval) and interval >= 1):
        unit = _LOOP_LENGTH[kind][1]
        raise ValueError(
            f'MMCoopRunner: train_cfg.val_interval{_where(cfg)} must be an '
            f'int >= 1 (validate every val_interval {unit}), got '
            f'{interval!r}: MMEngine divides by it after the first '
            f'{unit[:-1]} was trained (0: ZeroDivisionError). Fix: e.g. '
            '--cfg-options train_cfg.val_interval=1, or --no-validate '
            '(val_cfg=None) not to validate.')


def _schedulers(cfg) -> list:
    """The ``param_scheduler`` entries of ``cfg`` (a dict or a list of
    them); [] for None or a per-optimizer dict of lists."""
    schedulers = cfg.get('param_scheduler', None)
    if isinstance(schedulers, dict):
        return [schedulers] if 'type' in schedulers else []
    return list(schedulers) if isinstance(schedulers, (list, tuple)) else []


def check_schedule(cfg, iters_per_epoch: Optional[int] = None) -> None:
    """Compare each ``param_scheduler`` entry with the length of the run
    (``train_cfg``).

    * ``by_epoch=True`` (MMEngine's default) in an iteration-based loop
      without ``convert_to_iter_based``: refused (the loop ends no epoch,
      so the scheduler never steps and the lr stays at its first value);
    * ``begin`` at or after the end of the run: a warning (the scheduler
      never takes effect, e.g. the cosine after a warm-up longer than the
      run); ``end`` after it: a warning (the scheduler is cut short, e.g. a
      cosine that never reaches ``eta_min``). Warnings, not errors: a
      recipe may set a scheduler for a longer run on purpose.

    Without ``iters_per_epoch`` (``MMCoopRunner.from_cfg``) only the
    entries whose ``begin`` / ``end`` have the unit of the loop's length
    are compared (epochs of ``max_epochs``, iterations of ``max_iters``);
    with it (``MMCoopRunner.build_train_loop``, once the train dataloader
    is built) only the others (iterations in an epoch-based loop, epochs
    converted to iterations in an iteration-based one). Loops of other
    types, and lengths that are not ints >= 1 (:func:`check_train_cfg`),
    are not compared.
    """
    from mmengine.optim.scheduler.param_scheduler import INF
    train_cfg = cfg.get('train_cfg', None)
    kind = train_loop_kind(train_cfg)
    if kind is None:
        return
    field, unit = _LOOP_LENGTH[kind]
    length = train_cfg.get(field, None)
    if not is_int(length) or length < 1:
        return
    run = f'train_cfg.{field}={length}'
    for i, entry in enumerate(_schedulers(cfg)):
        if not isinstance(entry, dict):
            continue
        name = entry.get('type', '?')
        name = f'param_scheduler[{i}] ({getattr(name, "__name__", name)})'
        by_epoch = entry.get('by_epoch', True)
        convert = entry.get('convert_to_iter_based', False)
        if kind == 'iter' and by_epoch and not convert:
            if iters_per_epoch is None:
                raise ValueError(
                    f'MMCoopRunner: {name}{_where(cfg)} has by_epoch=True '
                    "(MMEngine's default), but train_cfg builds an "
                    'iteration-based loop, which ends no epoch: the '
                    'scheduler would never step and the lr would stay at its '
                    'first value. Fix: by_epoch=False with begin / end in '
                    f'iterations (the run is {run}), or '
                    'convert_to_iter_based=True to keep them in epochs of '
                    'len(train_dataloader) iterations.')
            continue
        if kind == 'epoch' and by_epoch:
            needs, end_unit, total, what = False, 'epoch', length, run
        elif kind == 'iter' and not by_epoch:
            needs, end_unit, total, what = False, 'iteration', length, run
        elif iters_per_epoch is None or iters_per_epoch < 1:
            continue
        elif kind == 'epoch':  # by_epoch=False: iterations
            needs, end_unit = True, 'iteration'
            total = length * iters_per_epoch
            what = (f'{run} of {iters_per_epoch} iterations each: {total} '
                    'iterations')
        else:  # converted: epochs of iters_per_epoch iterations
            needs, end_unit = True, 'epoch'
            total = length / iters_per_epoch
            what = (f'{run} in epochs of {iters_per_epoch} iterations: '
                    f'{total:g} epochs')
        if needs != (iters_per_epoch is not None):
            continue
        begin, end = entry.get('begin', 0), entry.get('end', INF)
        if not is_real(begin) or not is_real(end):
            continue  # the scheduler refuses them itself
        span = f'begin={begin}, end={"INF" if end >= INF else end}'
        if begin >= total:
            warnings.warn(
                f'{name}{_where(cfg)} starts at {end_unit} {begin} ({span}), '
                f'but the run ends before ({what}): it never takes effect '
                '(the lr stays where the schedulers before it leave it, e.g. '
                'at the warm-up value). Fix: begin it (and end it) within '
                f'the run, or train longer ({field}). Ignore this if the '
                'recipe is meant for a longer run.')
        elif end < INF and end > total:
            warnings.warn(
                f'{name}{_where(cfg)} ends at {end_unit} {end} ({span}), '
                f'after the run ({what}): only its start runs (a cosine or '
                'a decay stops part-way, before its final value). Fix: end '
                f'it at {total:g} (the run\'s end), or train longer '
                f'({field}). Ignore this if that is meant.')


def check_train_dataloader_length(loop) -> None:
    """Refuse a train loop whose dataloader gives no batch (a training set
    smaller than ``batch_size`` with ``drop_last=True``, or an empty one):
    MMEngine would run zero iterations, save untrained checkpoints and
    exit 0 (an iteration-based loop would wait for a batch forever).
    Called by ``MMCoopRunner.build_train_loop``, once the dataset is built
    and before anything is trained."""
    loader = getattr(loop, 'dataloader', None)
    try:
        batches = len(loader)
    except TypeError:  # an iterable dataset: no length to tell
        return
    if batches:
        return
    dataset = getattr(loader, 'dataset', None)
    try:
        size = len(dataset)
    except TypeError:
        size = None
    try:
        per_rank = len(loader.sampler)
    except (TypeError, AttributeError):
        per_rank = size
    batch_size = getattr(loader, 'batch_size', None)
    drop_last = getattr(loader, 'drop_last', None)
    if not size:
        raise ValueError(
            'MMCoopRunner: the training set (train_dataloader.dataset) is '
            'empty, so no iteration would run. Fix: check the dataset '
            'fields (data_root, ann_file, split, classes).')
    shard = '' if per_rank == size else (
        f' ({per_rank} on this process of the distributed run)')
    raise ValueError(
        f'MMCoopRunner: train_dataloader gives no batch: the training set '
        f'has {size} samples{shard}, train_dataloader.batch_size='
        f'{batch_size!r} and drop_last={drop_last!r}, so every batch is '
        'incomplete and dropped: no iteration would run, and the run would '
        'save untrained checkpoints and exit 0. Fix: train_dataloader.'
        f'batch_size <= {per_rank}, or train_dataloader.drop_last=False.')


def amp_device_available() -> bool:
    """Whether MMEngine's ``AmpOptimWrapper`` can be built here."""
    from mmengine.device import (is_cuda_available, is_mlu_available,
                                 is_musa_available, is_npu_available)
    return (is_cuda_available() or is_npu_available() or is_mlu_available()
            or is_musa_available())


def check_amp_optim_wrapper(cfg) -> None:
    """Refuse an ``optim_wrapper`` of type ``AmpOptimWrapper`` (or a
    subclass) on a machine without an accelerator, naming the field
    (MMEngine: a bare ``AssertionError`` once the training data is built).
    Called when training starts (``MMCoopRunner.train``): ``tools/test.py``
    reads the config of a run trained with ``--amp`` on a CPU machine
    without building the optimizer."""
    from mmengine.optim import AmpOptimWrapper

    from mmcoop.registry import OPTIM_WRAPPERS
    from mmcoop.utils.config_types import registered_class
    wrapper = _optim_wrapper(cfg)
    cls = registered_class(OPTIM_WRAPPERS, wrapper) if wrapper else None
    if cls is None or not issubclass(cls, AmpOptimWrapper) or \
            amp_device_available():
        return
    raise ValueError(
        f'MMCoopRunner: optim_wrapper.type={wrapper["type"]!r}{_where(cfg)} '
        f'(mixed precision, what tools/train.py --amp sets) needs '
        f'{AMP_DEVICES}; none is available here. Fix: '
        "optim_wrapper.type='OptimWrapper' (and no loss_scale) to train in "
        'fp32 on the CPU.')


#: ``randomness`` keys (MMEngine's ``Runner.set_randomness``).
RANDOMNESS_KEYS = ('seed', 'deterministic', 'diff_rank_seed')


def check_randomness(cfg) -> None:
    """``randomness``: a dict of :data:`RANDOMNESS_KEYS`, ``seed`` None
    (drawn) or an int in [0, 2**32 - 1] (numpy's range: -1 or 1.5 was
    numpy's error, not naming the field), the flags bools."""
    randomness = cfg.get('randomness', None)
    if randomness is None:
        return
    if not isinstance(randomness, dict):
        raise ValueError(
            f'MMCoopRunner: randomness{_where(cfg)} must be a dict such as '
            f'dict(seed=0, deterministic=False), got {randomness!r}.')
    unknown = sorted(set(randomness) - set(RANDOMNESS_KEYS), key=str)
    if unknown:
        raise ValueError(
            f'MMCoopRunner: randomness{_where(cfg)} has {unknown}, which '
            f'MMEngine does not take; allowed: {list(RANDOMNESS_KEYS)}.' +
            renames_hint(unknown, RANDOMNESS_KEYS))
    seed = randomness.get('seed', None)
    if seed is not None and not (is_int(seed) and 0 <= seed < 2**32):
        raise ValueError(
            f'MMCoopRunner: randomness.seed{_where(cfg)} must be None (a '
            'seed drawn for the run) or an int in [0, 2**32 - 1] (numpy\'s '
            f'range), got {seed!r}. Fix: e.g. --cfg-options '
            'randomness.seed=0.')
    for flag in ('deterministic', 'diff_rank_seed'):
        if flag in randomness:
            check_flag('MMCoopRunner', f'randomness.{flag}', randomness[flag])


#: the dataloaders :func:`check_dataloaders` checks.
DATALOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def check_dataloaders(cfg) -> None:
    """The plain values of each dataloader dict (torch's ``DataLoader``
    refuses them only once the dataset is built, without the field's
    path): ``batch_size`` an int >= 1, ``num_workers`` an int >= 0,
    ``prefetch_factor`` None or an int >= 1, ``drop_last``, ``pin_memory``
    and ``persistent_workers`` bools (``'no'`` would read as True), and
    ``persistent_workers=True`` only with workers."""
    for name in DATALOADERS:
        loader = cfg.get(name, None)
        if not isinstance(loader, dict):
            continue
        for field, minimum, what in (
                ('batch_size', 1, 'samples per batch (per process)'),
                ('num_workers', 0, 'worker processes; 0: load in the main '
                 'process')):
            value = loader.get(field, 1)
            if not (is_int(value) and value >= minimum):
                raise ValueError(
                    f'MMCoopRunner: {name}.{field}{_where(cfg)} must be an '
                    f'int >= {minimum} ({what}), got {value!r}. Fix: e.g. '
                    f'--cfg-options {name}.{field}={max(minimum, 1)}.')
        prefetch = loader.get('prefetch_factor', None)
        if prefetch is not None and not (is_int(prefetch) and prefetch >= 1):
            raise ValueError(
                f'MMCoopRunner: {name}.prefetch_factor{_where(cfg)} must be '
                f'None or an int >= 1 (batches loaded ahead per worker), got '
                f'{prefetch!r}.')
        for flag in ('drop_last', 'pin_memory', 'persistent_workers'):
            if flag in loader:
                check_flag('MMCoopRunner', f'{name}.{flag}', loader[flag])
        if loader.get('persistent_workers', False) and \
                not loader.get('num_workers', 0):
            raise ValueError(
                f'MMCoopRunner: {name}.persistent_workers=True{_where(cfg)} '
                'needs workers, but num_workers is 0 (torch would refuse it '
                f'once the dataset is built). Fix: {name}.persistent_workers'
                f'=False, or {name}.num_workers >= 1.')


def check_accumulative_counts(cfg, total_iters: Optional[int] = None) -> None:
    """``optim_wrapper.accumulative_counts`` (gradient accumulation): an
    int >= 1 (MMEngine: a bare ``AssertionError`` once the data is built).
    With ``total_iters`` (the iterations of the whole run, known once the
    train dataloader is built): a warning when it is larger, so that the
    parameters are updated once, at the last iteration."""
    wrapper = _optim_wrapper(cfg)
    if wrapper is None or 'accumulative_counts' not in wrapper:
        return
    counts = wrapper['accumulative_counts']
    if total_iters is None:
        if not (is_int(counts) and counts >= 1):
            raise ValueError(
                f'MMCoopRunner: optim_wrapper.accumulative_counts'
                f'{_where(cfg)} must be an int >= 1 (the iterations whose '
                f'gradients are summed before each update; 1: none), got '
                f'{counts!r}. Fix: e.g. --cfg-options '
                'optim_wrapper.accumulative_counts=1.')
    elif is_int(counts) and counts > total_iters:
        warnings.warn(
            f'optim_wrapper.accumulative_counts={counts}{_where(cfg)} is '
            f'larger than the whole run ({total_iters} iterations): the '
            'parameters are updated once, at the last iteration. Fix: '
            f'accumulative_counts <= {total_iters} (the effective batch is '
            'accumulative_counts * batch_size), or train longer.')


def check_train_settings(cfg) -> None:
    """The checks of this module on ``cfg`` (``MMCoopRunner.from_cfg``)."""
    wrapper = _optim_wrapper(cfg)
    if wrapper is not None:
        check_clip_grad(wrapper.get('clip_grad', None), where=_where(cfg))
        check_accumulative_counts(cfg)
    check_train_cfg(cfg)
    check_schedule(cfg)
    check_randomness(cfg)
    check_dataloaders(cfg)

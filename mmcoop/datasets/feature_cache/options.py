# Copyright (c) mmcoop contributors. All rights reserved.
"""The options of a feature cache, checked in one place.

Both the config switch (``feature_cache = dict(...)``) and
:class:`~.dataset.CachedFeatureDataset` check their values here, so a
wrong type names the option and what it expects wherever it comes from.
"""
import numbers
from typing import Callable, Dict, Tuple

import torch

from .images import VERIFY_MODES
from .store import DTYPES

__all__ = ['OPTIONS', 'SWITCH_ONLY', 'check_option']


def _int(minimum: int) -> Callable:
    return lambda v: isinstance(v, numbers.Integral) and not isinstance(
        v, bool) and v >= minimum


def _choice(choices) -> Callable:
    return lambda v: isinstance(v, str) and v in choices


def _device(v) -> bool:
    """None, or a string ``torch.device`` accepts (``'cpu'``, ``'cuda'``,
    ``'cuda:1'``, ...): 'gpu' would fail only when the cache is built."""
    if v is None:
        return True
    if not isinstance(v, str):
        return False
    try:
        torch.device(v)
    except RuntimeError:
        return False
    return True


def _timeout(v) -> bool:
    return v is None or (isinstance(v, numbers.Real)
                         and not isinstance(v, bool) and v > 0)


#: option -> (check, what is expected). Options of CachedFeatureDataset.
OPTIONS: Dict[str, Tuple[Callable, str]] = {
    'num_views': (_int(1), 'a positive int (cached passes of the train '
                  'pipeline; val and test use 1)'),
    'seed': (_int(0), 'an int >= 0 (seed of the views; the random '
             'initialisation of a tower is its own `init_seed`)'),
    'batch_size': (_int(1), 'a positive int (extraction batch size)'),
    'num_workers': (_int(0), 'an int >= 0 (extraction dataloader workers)'),
    'dtype': (_choice(DTYPES), f'one of {sorted(DTYPES)}'),
    'device': (_device, "None (CUDA where available, else the CPU) or a "
               "torch device string such as 'cpu', 'cuda' or 'cuda:1'"),
    'shard_size': (_int(1), 'a positive int (samples per shard file)'),
    'on_mismatch': (_choice(('rebuild', 'error')), "'rebuild' or 'error'"),
    'verify': (_choice(VERIFY_MODES), "'fast' (size and modification time "
               "of every image) or 'full' (content hashes)"),
    'lock_timeout': (_timeout, 'None (wait for ever) or a number of seconds '
                     '> 0 to wait for another process building the cache'),
    'progress': (lambda v: isinstance(v, bool), 'True or False'),
}
#: Options of the config switch only.
SWITCH_ONLY: Dict[str, Tuple[Callable, str]] = {
    'enabled': (lambda v: isinstance(v, bool), 'True or False'),
    'cache_root': (lambda v: isinstance(v, str) and bool(v),
                   'a folder path (outside the dataset tree)'),
}


def check_option(name: str, value, where: str) -> None:
    """Raise ``ValueError`` naming ``where.name`` unless ``value`` fits."""
    check, expected = {**OPTIONS, **SWITCH_ONLY}[name]
    if not check(value):
        raise ValueError(f'{where}.{name} must be {expected}; got '
                         f'{value!r} ({type(value).__name__}).')

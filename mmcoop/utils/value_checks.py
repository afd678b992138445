# Copyright (c) mmcoop contributors. All rights reserved.
"""Checks of the plain values a config gives a constructor (flags, counts,
probabilities, colours, per-channel statistics), so that a wrong one stops
where it is given, naming the class and the field, instead of failing
later inside NumPy/torch or silently doing something else (``'no'`` is a
true flag; ``pad_val=300`` wraps to 44 in a uint8 image).

Each ``check_*`` returns the value (normalised where said) or raises
``ValueError`` naming ``owner.field``, what was given and what is expected.
"""
import difflib
import math
import numbers
from typing import Optional, Sequence, Tuple

__all__ = [
    'is_real', 'is_int', 'check_flag', 'check_int', 'check_number',
    'check_colour', 'check_channel_stats', 'check_device'
]


def _refuse(owner: str, field: str, value, expected: str):
    raise ValueError(f'{owner}: {field} must be {expected}, got {value!r}.')


def is_real(value) -> bool:
    """A real number (numpy scalars included), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_int(value) -> bool:
    """An integer (numpy integers included), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_flag(owner: str, field: str, value) -> bool:
    """``value`` if it is a bool (True/False only: a string such as
    ``'no'`` or a number would be read as its truth value)."""
    if not isinstance(value, bool):
        _refuse(owner, field, value, 'True or False')
    return value


def check_int(owner: str, field: str, value, minimum: int = 1,
              maximum: Optional[int] = None) -> int:
    """``value`` if it is an int (not a bool, not a float) >= ``minimum``
    (and <= ``maximum`` if given)."""
    if not is_int(value) or value < minimum or (maximum is not None
                                                and value > maximum):
        _refuse(owner, field, value,
                f'an int >= {minimum}' if maximum is None else
                f'an int in [{minimum}, {maximum}]')
    return int(value)


def check_number(owner: str,
                 field: str,
                 value,
                 low: Optional[float] = None,
                 high: Optional[float] = None,
                 what: str = '',
                 above: bool = False) -> float:
    """``value`` if it is a finite real number (not a bool) in
    ``[low, high]`` (a bound of None: none; ``above``: ``> low``)."""
    ok = is_real(value) and math.isfinite(value) and (
        low is None or value > low or (value == low and not above)) and (
            high is None or value <= high)
    if not ok:
        start = '(' if above else '['
        rng = ('a finite number' if low is None and high is None else
               f'a number in {start}{low}, {high}]' if high is not None
               and low is not None else
               f'a finite number {">" if above else ">="} {low}'
               if high is None else f'a finite number <= {high}')
        _refuse(owner, field, value, rng + (f' ({what})' if what else ''))
    return value


def check_colour(owner: str, field: str, value) -> Tuple[int, int, int]:
    """An int 0..255 (grey) or 3 ints 0..255 (one per channel, in the
    image's channel order) -> a 3-tuple."""
    values = (value, ) * 3 if is_real(value) else value
    if not (isinstance(values, (tuple, list)) and len(values) == 3 and all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool)
            and 0 <= v <= 255 for v in values)):
        _refuse(owner, field, value,
                'an int in 0..255 or 3 of them (one per channel)')
    return tuple(int(v) for v in values)


def check_channel_stats(owner: str, mean: Optional[Sequence[float]],
                        std: Optional[Sequence[float]],
                        optional: bool = False) -> None:
    """``mean`` and ``std`` of an RGB image: 3 finite numbers each, every
    ``std`` > 0 (a 0 divides by zero), on the 0-255 scale (a ``std`` below
    1 everywhere is the 0-1 scale's; 1 is no scaling). With ``optional``,
    both may be None (no normalisation), but not one of them."""
    if optional and (mean is None or std is None):
        if (mean is None) != (std is None):
            given, missing = ('mean', 'std') if std is None else (
                'std', 'mean')
            raise ValueError(
                f'{owner}: {given} is given without {missing}, so the images '
                'would not be normalised at all. Fix: give both mean and '
                'std, or set both to None.')
        return
    for field, values in (('mean', mean), ('std', std)):
        items = [] if isinstance(values, (str, bytes)) else list(
            values) if hasattr(values, '__len__') else []
        if not (len(items) == 3
                and all(is_real(v) and math.isfinite(v) for v in items)):
            _refuse(owner, field, values,
                    '3 finite numbers (one per RGB channel, 0-255 scale)')
    if min(std) <= 0:
        _refuse(owner, 'std', std, 'positive (each channel is divided by it)')
    if max(std) < 1:
        # no image varies by less than one grey level in 0..255: these are
        # the statistics of images in 0..1 (e.g. CLIP's published ones)
        raise ValueError(
            f'{owner}: std={list(std)} (mean={list(mean)}) is on the 0-1 '
            'scale, but the images here are 0..255, so the inputs would be '
            'about 255 times too large. Fix: multiply mean and std by 255 '
            "(or leave both out for CLIP's).")


def check_device(field: str, value):
    """A device a model can be put on here: a ``torch.device`` or a string
    torch reads (``'cpu'``, ``'cuda'``, ``'cuda:1'``), CUDA only where a
    CUDA device is available; else a ``ValueError`` naming ``field`` and
    the fix (before the model is built: torch's own errors come after,
    e.g. "Found no NVIDIA driver")."""
    import torch
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError):
        raise ValueError(
            f'{field} {value!r} is not a device. Fix: cpu, cuda or cuda:N.'
        ) from None
    if device.type == 'cuda':
        count = torch.cuda.device_count() if torch.cuda.is_available() \
            else 0
        if device.index is not None and device.index >= count or not count:
            raise ValueError(
                f'{field} {value!r}: ' + (
                    'no CUDA device is available here' if not count else
                    f'there are {count} CUDA device(s) (0..{count - 1})') +
                '. Fix: cpu, or a CUDA device of this machine.')
    return device


def renames_hint(unknown, known) -> str:
    """`` Did you mean 'lr_mul' -> 'lr_mult'?`` for the keys of ``unknown``
    close to one of ``known`` (``''`` if none is): the one hint of the
    refusals of unknown option keys."""
    hints = [
        f'{k!r} -> {close[0]!r}' for k in unknown
        for close in [difflib.get_close_matches(str(k), sorted(known), 1)]
        if close
    ]
    return f' Did you mean {", ".join(hints)}?' if hints else ''

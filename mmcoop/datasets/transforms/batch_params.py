# Copyright (c) mmcoop contributors. All rights reserved.
"""A batch's augmentation parameters, moved to the device in one copy.

The device path augments a batch with one call per op, each with a few
numbers per image (boxes, colours, factors, affine coefficients, the
images that drew the op). Made one at a time with ``torch.tensor(...,
device='cuda')``, each such tensor is a copy from the host that waits for
the device (PyTorch's blocking copy synchronises the stream): dozens of
waits per batch, in the training step's critical path. Here the host
gathers them all first (:class:`HostParams`) and sends one buffer
(pinned, ``non_blocking``); the ops then read their parameters as views of
it (:class:`DeviceParams`).
"""
from typing import Dict, List, Tuple

import numpy as np
import torch

__all__ = ['HostParams', 'DeviceParams']


class DeviceParams:
    """The parameters of a :class:`HostParams`, on one device: ``params[key]``
    is the tensor that ``add`` returned ``key`` for, in its shape and
    dtype."""

    def __init__(self, buffer: torch.Tensor,
                 fields: List[Tuple[int, tuple, torch.dtype]]):
        self._buffer = buffer
        self._fields = fields
        self._made: Dict[int, torch.Tensor] = {}

    def __getitem__(self, key: int) -> torch.Tensor:
        if key not in self._made:
            offset, shape, dtype = self._fields[key]
            flat = self._buffer[offset:offset + int(np.prod(shape))]
            if dtype.is_floating_point:
                flat = flat.view(torch.float64)
            self._made[key] = flat.to(dtype).reshape(shape)
        return self._made[key]


class HostParams:
    """Gathers a batch's parameters on the host; :meth:`to` moves them all
    in one copy.

    Values are kept exactly: integers as int64 (refused outside the
    range of their dtype; a NaN or a fraction for an integer dtype is
    refused, never truncated), floating-point values as float64 (a float32
    value, e.g. ``np.float32(x)``, is a float64 value, so it comes back as
    the same float32); a complex value only with no imaginary part."""

    def __init__(self):
        self._parts: List[np.ndarray] = []
        self._fields: List[Tuple[int, tuple, torch.dtype]] = []
        self._size = 0

    def add(self, values, dtype: torch.dtype) -> int:
        """Record ``values`` (array-like) as a tensor of ``dtype``; returns
        its key in the :class:`DeviceParams` of :meth:`to`."""
        array = np.asarray(values)
        if array.dtype.kind == 'c':  # a value, not its real part only
            real = array.imag == 0
            if not real.all():
                raise ValueError(f'HostParams.add: {array[~real].flat[0]} '
                                 f'is not a real number, for {dtype}.')
            array = array.real
        if dtype.is_floating_point:
            flat = np.ascontiguousarray(array, dtype=np.float64).reshape(
                -1).view(np.int64)
        else:
            if array.dtype.kind == 'f':  # never truncated: 1.7 is not 1
                whole = np.isfinite(array) & (array == np.trunc(array))
                if not whole.all():
                    raise ValueError(
                        f'HostParams.add: {array[~whole].flat[0]} is not an '
                        f'integer, for {dtype}.')
            flat = np.ascontiguousarray(array, dtype=np.int64).reshape(-1)
            info = torch.iinfo(dtype)
            if flat.size and (flat.min() < info.min or flat.max() > info.max):
                raise ValueError(
                    f'HostParams.add: values {flat.min()}..{flat.max()} do '
                    f'not fit {dtype}.')
        self._fields.append((self._size, array.shape, dtype))
        self._parts.append(flat)
        self._size += flat.size
        return len(self._fields) - 1

    def to(self, device) -> DeviceParams:
        """All the values on ``device``, in one copy (from pinned memory,
        without waiting, to a CUDA device)."""
        device = torch.device(device)
        buffer = torch.from_numpy(
            np.concatenate(self._parts) if self._parts else np.zeros(
                0, dtype=np.int64))
        if device.type == 'cuda':
            buffer = buffer.pin_memory()
        return DeviceParams(buffer.to(device, non_blocking=True),
                            self._fields)

# Copyright (c) mmcoop contributors. All rights reserved.
"""8-bit storage of cached features: symmetric per-token quantisation.

A cached feature is ``(D, N)``: ``N`` tokens (positions) of width ``D``.
The ``D`` values of a token share one scale, stored as float32 next to the
codes::

    s = max_d |x[d, n]| / 127          (per sample and token)
    q = round(x / s)                   int8 in [-127, 127]
    x' = q * s                         (read back as float32)

Error bound: ``|x| <= max|x| = 127 s`` puts ``x / s`` in ``[-127, 127]``,
so nothing is clipped, and rounding to the nearest integer moves ``x / s``
by at most 1/2; hence ``|x' - x| = s |q - x / s| <= s / 2``, i.e. at most
``max_d |x[d, n]| / 254`` for every element of token ``n`` (up to the
float32 rounding of the division and product, ~2^-23 |x|). A token of
zeros gets ``s = 0`` and reads back exactly. The code ``-128`` is never
used, so the grid is symmetric.
"""
from typing import Tuple

import numpy as np

__all__ = ['QMAX', 'quantize', 'dequantize']

#: largest code: the grid is {-127, ..., 127} x scale
QMAX = 127


def quantize(x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Quantise features per token.

    Args:
        x (np.ndarray): ``(..., D, N)`` finite features.

    Returns:
        tuple: ``(q, scale)``, ``q`` int8 ``(..., D, N)``, ``scale`` float32
        ``(..., N)``.
    """
    x = np.asarray(x, dtype=np.float32)
    scale = np.abs(x).max(axis=-2) / np.float32(QMAX)
    safe = np.where(scale > 0, scale, np.float32(1))
    q = np.clip(np.rint(x / safe[..., None, :]), -QMAX, QMAX)
    return q.astype(np.int8), scale.astype(np.float32)


def dequantize(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``(..., D, N)`` int8 codes and ``(..., N)`` scales -> float32."""
    return q.astype(np.float32) * np.asarray(
        scale, dtype=np.float32)[..., None, :]

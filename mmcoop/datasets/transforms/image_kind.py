# Copyright (c) mmcoop contributors. All rights reserved.
"""Which image a transform takes: mmcoop has two pipelines of the same
recipe, NumPy arrays (``LoadImageFromFileChecked`` -> ``(H, W, 3)`` BGR
array) and uint8 tensors (``LoadImageTensor`` -> ``(3, H, W)`` BGR tensor),
and their transforms do not mix."""
import numpy as np
import torch

__all__ = ['require_array', 'require_tensor']

_PIPELINES = {
    'array': ('a (H, W, 3) NumPy array', 'mmcoop.LoadImageFromFileChecked',
              'RandomCutout / DualCoOpRandAugment'),
    'tensor': ('a (3, H, W) uint8 tensor', 'mmcoop.LoadImageTensor',
               'TensorCutout / TensorRandAugment'),
}


def _refuse(owner: str, want: str, img) -> None:
    other = 'tensor' if want == 'array' else 'array'
    got = (f'{type(img).__name__} of shape {tuple(img.shape)}'
           if hasattr(img, 'shape') else type(img).__name__)
    what, loader, _ = _PIPELINES[want]
    _, other_loader, other_transforms = _PIPELINES[other]
    raise TypeError(
        f'{owner} takes {what} (from {loader}), got a {got}. Array and '
        f'tensor transforms do not mix in one pipeline. Fix: start the '
        f'pipeline with {loader}, or use {other_transforms} after '
        f'{other_loader}.')


def require_array(owner: str, results: dict) -> np.ndarray:
    """``results['img']`` if it is a NumPy array, else a ``TypeError``
    naming ``owner`` and the fix."""
    img = results['img']
    if not isinstance(img, np.ndarray):
        _refuse(owner, 'array', img)
    return img


def require_tensor(owner: str, results: dict) -> torch.Tensor:
    """``results['img']`` if it is a ``(3, H, W)`` uint8 tensor, else a
    ``TypeError`` naming ``owner`` and the fix."""
    img = results['img']
    if not (isinstance(img, torch.Tensor) and img.dim() == 3
            and img.shape[0] == 3 and img.dtype == torch.uint8):
        _refuse(owner, 'tensor', img)
    return img

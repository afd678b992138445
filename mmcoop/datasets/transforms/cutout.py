# Copyright (c) mmcoop contributors. All rights reserved.
from typing import Optional, Sequence, Union

import numpy as np
from mmcv.transforms import BaseTransform
from mmcv.transforms.utils import cache_randomness

from mmcoop.datasets.transforms.image_kind import require_array
from mmcoop.registry import TRANSFORMS
from mmcoop.utils.value_checks import check_colour, check_number


def check_cutout_factor(owner: str, factor) -> float:
    """``factor`` if it is a number in (0, 1] (CutoutPIL's side as a
    fraction of the image side), else a ``ValueError`` naming ``owner``."""
    return check_number(owner, 'cutout_factor', factor, 0, 1,
                        'the side as a fraction of the image side',
                        above=True)


@TRANSFORMS.register_module()
class RandomCutout(BaseTransform):
    """Paint one random rectangle of a fraction of the image size.

    The mmcoop equivalent of the official ``CutoutPIL(cutout_factor=0.5)``
    (``sunxm2357/DualCoOp dataloaders/helper.py``), which runs on every
    training image right after the square resize:

    - side ``s = int(cutout_factor * size + 0.5)`` per axis;
    - the centre is a uniformly random *pixel* ``(cy, cx)`` of the image
      (so the patch may be clipped at the border);
    - the painted rows are ``max(cy - s//2, 0) .. min(cy + s//2, H - 1)``
      inclusive (PIL's ``rectangle`` includes both end points, so an
      unclipped patch is ``2*(s//2) + 1`` pixels wide), the same for
      columns;
    - the fill is one random colour, each channel uniform in 0..255
      (``pad_val=None``), or a fixed ``pad_val``.

    The official code swaps width and height (``h, w = x.size``), which is
    harmless there because the image is already square; here rows use the
    height and columns the width. It draws with Python's ``random`` and
    NumPy's global RNG; this transform uses NumPy's global RNG only (seeded
    per worker by MMEngine).

    Required keys: ``img``. Modified keys: ``img``.

    Args:
        cutout_factor (float): Patch side as a fraction of the image side.
            Defaults to 0.5.
        prob (float): Probability of applying it. Defaults to 1.0
            (official: always).
        pad_val (int | Sequence[int], optional): Fixed fill: an int 0..255
            or 3 of them (BGR). Defaults to None (random colour per call).
    """

    def __init__(self,
                 cutout_factor: float = 0.5,
                 prob: float = 1.0,
                 pad_val: Optional[Union[int, Sequence[int]]] = None):
        check_cutout_factor('RandomCutout', cutout_factor)
        self.cutout_factor = cutout_factor
        self.prob = check_number('RandomCutout', 'prob', prob, 0, 1)
        self.pad_val = None if pad_val is None else check_colour(
            'RandomCutout', 'pad_val', pad_val)

    @cache_randomness
    def _sample(self, h: int, w: int, channels: int):
        apply = np.random.rand() < self.prob if self.prob < 1 else True
        cy = np.random.randint(h)
        cx = np.random.randint(w)
        if self.pad_val is None:
            color = np.random.randint(0, 256, size=channels)
        else:
            color = np.asarray(self.pad_val[:channels])
        return apply, cy, cx, color

    def transform(self, results: dict) -> dict:
        img = require_array('RandomCutout', results)
        h, w = img.shape[:2]
        channels = 1 if img.ndim == 2 else img.shape[2]
        apply, cy, cx, color = self._sample(h, w, channels)
        if not apply:
            return results
        half_h = int(self.cutout_factor * h + 0.5) // 2
        half_w = int(self.cutout_factor * w + 0.5) // 2
        y1, y2 = max(cy - half_h, 0), min(cy + half_h, h - 1)
        x1, x2 = max(cx - half_w, 0), min(cx + half_w, w - 1)
        img = img.copy()
        if img.ndim == 2:
            img[y1:y2 + 1, x1:x2 + 1] = color[0]
        else:
            img[y1:y2 + 1, x1:x2 + 1] = color.astype(img.dtype)
        results['img'] = img
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(cutout_factor='
                f'{self.cutout_factor}, prob={self.prob}, '
                f'pad_val={self.pad_val})')

# Copyright (c) mmcoop contributors. All rights reserved.
"""The official training transform, re-derived with PIL, as the reference
of the data-path benchmark and of the tensor augmentation's tests.

``Resize((S, S))`` (torchvision on a PIL image: PIL bilinear) ->
``CutoutPIL(cutout_factor=0.5)`` (github.com/sunxm2357/DualCoOp,
``dataloaders/helper.py``) -> ``RandAugment()`` of pip ``randaugment==1.0.2``
(``SubPolicy`` with two ops drawn from ``get_rand_policies()``) ->
``ToTensor`` -> ``Normalize`` (CLIP mean/std). Python's ``random`` and
NumPy's global RNG, as the official code.
"""
import random

import numpy as np
import torch
from PIL import Image

from mmcoop.datasets.transforms.tensor_augment import (RANDAUG_OPS,
                                                       official_cutout,
                                                       official_op)

__all__ = ['official_op', 'official_cutout', 'OfficialTrainTransform']

class OfficialTrainTransform:
    """The official train transform of one image file (see the module
    docstring), with its own random draws.

    Args:
        size (int): square side (448 in the paper).
        normalize (bool): end with ``ToTensor`` + ``Normalize`` as the
            official loader workers do; else return the uint8 PIL image.
    """

    def __init__(self, size: int = 448, normalize: bool = True):
        from mmcoop.models.data_preprocessors import CLIP_MEAN, CLIP_STD
        self.size = size
        self.normalize = normalize
        self.mean = [m / 255 for m in CLIP_MEAN]
        self.std = [s / 255 for s in CLIP_STD]

    def draw(self):
        """One ``RandAugment()`` call's draw: two (op, index) pairs uniform
        over 15 ops x 1..9 (``random.randint`` over the 135 x 135
        policies), each applied with p = 0.5, signs ``random.choice``."""
        pair = random.randint(0, 135 * 135 - 1)
        draws = []
        for k in divmod(pair, 135):
            op, index = RANDAUG_OPS[k // 9], k % 9 + 1
            draws.append(dict(op=op, index=index))
        for d in draws:
            d['applied'] = random.random() < 0.5
            d['sign'] = random.choice([-1, 1])
            d['centre'] = (np.random.rand(), np.random.rand())
        return draws

    def __call__(self, path: str):
        import torchvision.transforms.functional as TF
        img = Image.open(path).convert('RGB')
        img = img.resize((self.size, self.size), Image.BILINEAR)
        w, h = img.size
        colour = tuple(random.randint(0, 255) for _ in range(3))
        img = official_cutout(img, np.random.randint(h), np.random.randint(w),
                              colour)
        for d in self.draw():
            if d['applied']:
                img = official_op(img, d['op'], d['index'], d['sign'],
                                  d['centre'])
        if not self.normalize:
            return img
        return TF.normalize(TF.to_tensor(img), self.mean, self.std)

    @staticmethod
    def as_tensor(img: Image.Image) -> torch.Tensor:
        """``(1, 3, H, W)`` uint8 RGB tensor of a PIL image."""
        return torch.from_numpy(np.asarray(img).copy()).permute(2, 0,
                                                                1)[None]

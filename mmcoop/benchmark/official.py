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
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from mmcoop.datasets.transforms.tensor_augment import RANDAUG_OPS, magnitude

__all__ = ['official_op', 'official_cutout', 'OfficialTrainTransform']

_FILL = (128, 128, 128)


def official_op(img: Image.Image, op: str, index: int, sign: int = 1,
                centre=(0.5, 0.5)) -> Image.Image:
    """One ``SubPolicy`` operation of randaugment 1.0.2, with the sign (its
    ``random.choice([-1, 1])``) and the Cutout centre (as fractions of the
    size; its ``np.random.randint``) given."""
    m = magnitude(op, index)
    if op == 'ShearX':
        return img.transform(img.size, Image.AFFINE, (1, m * sign, 0, 0, 1, 0),
                             Image.BICUBIC, fillcolor=_FILL)
    if op == 'ShearY':
        return img.transform(img.size, Image.AFFINE, (1, 0, 0, m * sign, 1, 0),
                             Image.BICUBIC, fillcolor=_FILL)
    if op == 'TranslateX':
        return img.transform(img.size, Image.AFFINE,
                             (1, 0, m * img.size[0] * sign, 0, 1, 0),
                             fillcolor=_FILL)
    if op == 'TranslateY':
        return img.transform(img.size, Image.AFFINE,
                             (1, 0, 0, 0, 1, m * img.size[1] * sign),
                             fillcolor=_FILL)
    if op == 'Rotate':
        rot = img.convert('RGBA').rotate(m)
        return Image.composite(rot, Image.new('RGBA', rot.size, (128, ) * 4),
                               rot).convert(img.mode)
    if op == 'Color':
        return ImageEnhance.Color(img).enhance(1 + m * sign)
    if op == 'Posterize':
        return ImageOps.posterize(img, m)
    if op == 'Solarize':
        return ImageOps.solarize(img, m)
    if op == 'Contrast':
        return ImageEnhance.Contrast(img).enhance(1 + m * sign)
    if op == 'Sharpness':
        return ImageEnhance.Sharpness(img).enhance(1 + m * sign)
    if op == 'Brightness':
        return ImageEnhance.Brightness(img).enhance(1 + m * sign)
    if op == 'AutoContrast':
        return ImageOps.autocontrast(img)
    if op == 'Equalize':
        return ImageOps.equalize(img)
    if op == 'Invert':
        return ImageOps.invert(img)
    if op == 'Cutout':  # randaugment.Cutout: size x size, half-open
        img = img.copy()
        width, height = img.size
        x, y = int(centre[0] * width), int(centre[1] * height)
        x0, x1 = max(0, x - m // 2), min(width, x + m // 2)
        y0, y1 = max(0, y - m // 2), min(height, y + m // 2)
        if x1 > x0 and y1 > y0:
            img.paste((125, 122, 113), (x0, y0, x1, y1))
        return img
    raise ValueError(f'unknown op {op!r}')


def official_cutout(img: Image.Image, cy: int, cx: int, colour,
                    cutout_factor: float = 0.5) -> Image.Image:
    """``CutoutPIL``'s drawing for a given centre and colour."""
    img = img.copy()
    h, w = img.size[0], img.size[1]  # the official code swaps them
    hc, wc = int(cutout_factor * h + 0.5), int(cutout_factor * w + 0.5)
    y1, y2 = np.clip(cy - hc // 2, 0, h), np.clip(cy + hc // 2, 0, h)
    x1, x2 = np.clip(cx - wc // 2, 0, w), np.clip(cx + wc // 2, 0, w)
    ImageDraw.Draw(img).rectangle([x1, y1, x2, y2], fill=tuple(colour))
    return img


class OfficialTrainTransform:
    """The official train transform of one image file (see the module
    docstring), with its own random draws.

    Args:
        size (int): square side (448 in the paper).
        normalize (bool): end with ``ToTensor`` + ``Normalize`` as the
            official loader workers do; else return the uint8 PIL image.
    """

    def __init__(self, size: int = 448, normalize: bool = True):
        from mmcoop.datasets.feature_cache import CLIP_MEAN, CLIP_STD
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

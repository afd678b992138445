# Copyright (c) mmcoop contributors. All rights reserved.
"""How any decoded image becomes RGB: the one rule of every image path.

The official loader is ``Image.open(path).convert('RGB')``. Every mmcoop
path (``LoadImageFromFileChecked``, ``LoadImageTensor``, ``LoadImageBytes``
and the device decode, the feature cache, which runs those pipelines, and
the inference doors) turns a PIL image into RGB with :func:`to_rgb`, so
that one file gives the same pixels wherever it is read:

- ``RGB``: as it is;
- every other 8-bit mode: PIL's ``convert('RGB')``: grey and 1-bit
  replicated, palette expanded (its transparency ignored), CMYK by PIL's
  conversion, **alpha dropped** (``RGBA``, ``LA``, ``PA``: the stored
  colour of a transparent pixel is kept; nothing is composited on a
  background colour, unlike mmcv's pillow decoder for ``LA``);
- no EXIF rotation (the caller rotates first where a config asks for it).
"""
from PIL import Image

__all__ = ['to_rgb']


def to_rgb(img: Image.Image) -> Image.Image:
    """``img`` as an RGB PIL image by the rule of this module (the official
    loader's ``convert('RGB')``)."""
    return img if img.mode == 'RGB' else img.convert('RGB')

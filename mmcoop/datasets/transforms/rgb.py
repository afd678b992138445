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
- wider modes (16-bit grey ``I;16*``, 32-bit ``I``, float ``F``, read
  from 16-bit grey PNGs and TIFFs): integer values that all lie in 0..255
  are those grey levels; anything else is refused
  (:class:`ImageModeError`, with the fix), never clipped: PIL's
  ``convert('RGB')`` saturates every value above 255 to white, so a real
  16-bit image would train as an almost white picture. The inference
  doors refuse the same data as a PIL image or an array, and
  ``run_onnx.py`` as a file;
- no EXIF rotation (the caller rotates first where a config asks for it).
"""
import numpy as np
from PIL import Image

__all__ = ['ImageModeError', 'RULE_VERSION', 'is_wide_mode', 'to_rgb']

#: The version of this rule. Each loader that applies it declares it as its
#: ``PIXEL_VERSION``, which the feature-cache key records
#: (:func:`mmcoop.datasets.feature_cache.key.pipeline_key`), so that a cache
#: built under an earlier rule is rebuilt rather than reused with the old
#: rule's pixels. Raise it with any change that gives another pixel for some
#: file. 1 (never recorded): before; 2: alpha dropped for ``LA`` in every
#: loader, wide modes beyond 0..255 refused instead of saturated.
RULE_VERSION = 2


class ImageModeError(ValueError):
    """An image whose values no path can make 8-bit RGB unchanged (see
    :func:`to_rgb`); the message says why and gives the fix, the loaders
    add the file."""


def is_wide_mode(mode: str) -> bool:
    """PIL modes with more than 8 bits per value (``I;16*``, ``I``,
    ``F``), which ``convert('RGB')`` clips to 0..255."""
    return mode.startswith('I;16') or mode in ('I', 'F')


def _wide_to_rgb(img: Image.Image) -> Image.Image:
    """A wide-mode image whose values are integers in 0..255 as RGB (the
    same grey levels); else an :class:`ImageModeError`."""
    arr = np.asarray(img)
    if arr.dtype.kind in 'iu' and arr.size and 0 <= arr.min() and \
            arr.max() <= 255:
        return Image.fromarray(arr.astype(np.uint8)).convert('RGB')
    low, high = (arr.min(), arr.max()) if arr.size else (0, 0)
    if arr.dtype.kind != 'f':
        scale = '(img / 257).round() for 16-bit'
    elif 0 <= low and high <= 1:
        scale = '(img * 255).round() for values in [0, 1]'
    elif 0 <= low and high <= 255:
        scale = 'img.round() for values already in 0..255'
    else:
        scale = '(img * 255 / img.max()).round()'
    # PIL's convert('RGB') clips what lies beyond 0..255 (and truncates a
    # float); within 0..255 a float image is refused as not 8-bit
    beyond = ('; converting would saturate it to white/black (as PIL\'s '
              "convert('RGB') does)" if low < 0 or high > 255 else '')
    raise ImageModeError(
        f'PIL mode {img.mode!r} holds {arr.dtype} values in [{low}, '
        f'{high}]; the model takes 8-bit RGB values 0..255 (integers)'
        f'{beyond}. Fix: convert the file to 8-bit (scaled to 0..255, e.g. '
        f'{scale}), or remove it from the annotations.')


def to_rgb(img: Image.Image) -> Image.Image:
    """``img`` as an RGB PIL image by the rule of this module (the official
    loader's ``convert('RGB')``; a wide mode with values beyond 0..255 is
    an :class:`ImageModeError` instead of a saturated picture)."""
    if img.mode == 'RGB':
        return img
    if is_wide_mode(img.mode):
        return _wide_to_rgb(img)
    return img.convert('RGB')

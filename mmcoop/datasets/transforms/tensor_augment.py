# Copyright (c) mmcoop contributors. All rights reserved.
"""The official train augmentation as batched ``uint8`` tensor ops.

The official recipe (``sunxm2357/DualCoOp``, ``SamyakR99/PositiveCoOp``)
augments every training image with ``CutoutPIL(0.5)`` and ``RandAugment()``
of pip ``randaugment==1.0.2``, one PIL operation at a time. Here the same
operations work on ``(B, 3, H, W)`` ``uint8`` RGB tensors with one
parameter per image, on any device (CPU workers, or the GPU for a whole
batch):

- :func:`draw_randaugment` draws an op list with the official policy:
  two ops, each uniform over the 15 ops of ``RandAugment.get_trans_list()``
  with a magnitude index uniform in 1..9 (with replacement), each applied
  with probability 0.5, and a random sign where the official op draws one;
- :func:`apply_op` applies one op with PIL's arithmetic: the colour ops and
  the look-up-table ops (invert, posterize, solarize, autocontrast,
  equalize) follow PIL's integer formulas; the geometric ops use PIL's
  affine coefficients, pixel-centre convention and filters (nearest, and
  PIL's own bicubic in double precision) and, for Rotate, PIL's own
  rotation of the pixels' indices: the same pixels as PIL;
- :func:`cutout` is ``CutoutPIL``'s inclusive rectangle;
- :func:`official_op` / :func:`official_cutout` are the official PIL
  operations themselves (the reference of the tests);
- :data:`_CPU_TENSOR_OPS`: the 15 ops on one image on the CPU with PIL's
  pixels exactly, faster than PIL on one core: :func:`shear` (2-3
  times), :func:`sharpness` (about 2.5 times), look-up tables made by PIL
  or by its formulas (OpenCV's ``LUT``), the translations as one shift,
  Rotate through PIL's own rotation of the pixels' indices, Color by
  PIL's float32 blend;
- :func:`decode_rgb` / :func:`resize`: the official loader's pixels
  (TorchCodec's JPEG decoder where installed, :mod:`.jpeg`; else PIL's)
  and torchvision's uint8 antialiased resize (PIL's bilinear within one
  grey level, several times faster than PIL's on one core).

:class:`LoadImageTensor`, :class:`TensorCutout` and
:class:`TensorRandAugment` are the pipeline transforms (BGR ``(3, H, W)``
uint8 tensors at the pipeline boundary, as every mmcoop image; the
normalisation is left to the data preprocessor, batched).
"""
import functools
import math
import threading
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmcv.transforms import BaseTransform
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from mmcoop.datasets.transforms.batch_params import DeviceParams, HostParams
from mmcoop.datasets.transforms.cutout import check_cutout_factor
from mmcoop.datasets.transforms.image_kind import require_tensor
from mmcoop.datasets.transforms.jpeg import (DECODE_BACKENDS, JpegHeader,
                                             decode_jpeg_cpu, open_rgb,
                                             parse_header, rgb_tensor,
                                             torchcodec_or_error, without_exif)
from mmcoop.datasets.transforms.loading import (check_backend_args,
                                                decode_error, read_image_bytes)
from mmcoop.datasets.transforms.rgb import RULE_VERSION
from mmcoop.registry import TRANSFORMS
from mmcoop.utils.value_checks import check_flag

__all__ = [
    'RANDAUG_OPS', 'magnitude', 'draw_randaugment', 'official_op',
    'official_cutout', 'apply_op', 'shear', 'sharpness', 'cutout', 'resize',
    'decode_rgb', 'decode_resize', 'RESIZE_BACKENDS', 'augment_batch',
    'resize_augment_batch',
    'LoadImageTensor', 'LoadImageBytes',
    'TensorCutout',
    'TensorRandAugment'
]

#: ``randaugment.RandAugment.get_trans_list()`` of pip randaugment 1.0.2.
RANDAUG_OPS = ('Invert', 'Cutout', 'Sharpness', 'AutoContrast', 'Posterize',
               'ShearX', 'TranslateX', 'TranslateY', 'ShearY', 'Rotate',
               'Equalize', 'Contrast', 'Color', 'Solarize', 'Brightness')
#: ``np.linspace(lo, hi, 10)`` of each op (``SubPolicy.ranges``).
_RANGES = dict(
    ShearX=(0, 0.3), ShearY=(0, 0.3), TranslateX=(0, 150 / 331),
    TranslateY=(0, 150 / 331), Rotate=(0, 30), Color=(0., 0.9),
    Posterize=(8, 4), Solarize=(256, 0), Contrast=(0., 0.9),
    Sharpness=(0., 0.9), Brightness=(0., 0.9), Cutout=(0, 20))
#: Ops whose official lambda draws ``random.choice([-1, 1])``.
_SIGNED = ('ShearX', 'ShearY', 'TranslateX', 'TranslateY', 'Color',
           'Contrast', 'Sharpness', 'Brightness')
#: The axis along which a shear moves the sample points (the other
#: coordinate stays a pixel centre: :func:`_bicubic_pil`'s ``moves``).
_SHEAR_MOVES = dict(ShearX='x', ShearY='y')
_FILL = 128  # SubPolicy's fillcolor
_CUTOUT_FILL = (125, 122, 113)  # randaugment.Cutout's colour (RGB)


def magnitude(op: str, index: int) -> float:
    """The official magnitude of ``op`` at index 0..9."""
    if op not in _RANGES:
        return 0.
    lo, hi = _RANGES[op]
    value = np.linspace(lo, hi, 10)[index]
    if op in ('Posterize', 'Cutout'):  # np.round(...).astype(int)
        return int(np.round(value))
    return float(value)


def draw_randaugment(rng=np.random) -> List[dict]:
    """One image's RandAugment draw with the official policy.

    Args:
        rng: ``numpy.random`` (the global RNG, seeded per sample by
            :class:`~mmcoop.datasets.EpochSeededSampler`) or a
            ``RandomState``.

    Returns:
        list[dict]: the two ops in order, each ``op``, ``index`` (1..9),
        ``applied`` (p = 0.5), ``sign`` (+-1) and, for ``Cutout``, the
        centre ``centre=(u, v)`` as fractions in [0, 1) (drawn here so that
        the draw does not depend on the image size).
    """
    out = []
    for _ in range(2):
        op = RANDAUG_OPS[rng.randint(len(RANDAUG_OPS))]
        out.append(
            dict(
                op=op,
                index=int(rng.randint(1, 10)),
                applied=bool(rng.rand() < 0.5),
                sign=int(rng.choice([-1, 1])),
                centre=(float(rng.rand()), float(rng.rand()))))
    return out


# ------------------------------------------------------ the PIL reference


def official_op(img: Image.Image, op: str, index: int, sign: int = 1,
                centre=(0.5, 0.5)) -> Image.Image:
    """One ``SubPolicy`` operation of randaugment 1.0.2, with the sign (its
    ``random.choice([-1, 1])``) and the Cutout centre (as fractions of the
    size; its ``np.random.randint``) given."""
    m = magnitude(op, index)
    if op == 'ShearX':
        return img.transform(img.size, Image.AFFINE, (1, m * sign, 0, 0, 1, 0),
                             Image.BICUBIC, fillcolor=(_FILL, ) * 3)
    if op == 'ShearY':
        return img.transform(img.size, Image.AFFINE, (1, 0, 0, m * sign, 1, 0),
                             Image.BICUBIC, fillcolor=(_FILL, ) * 3)
    if op == 'TranslateX':
        return img.transform(img.size, Image.AFFINE,
                             (1, 0, m * img.size[0] * sign, 0, 1, 0),
                             fillcolor=(_FILL, ) * 3)
    if op == 'TranslateY':
        return img.transform(img.size, Image.AFFINE,
                             (1, 0, 0, 0, 1, m * img.size[1] * sign),
                             fillcolor=(_FILL, ) * 3)
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


# ---------------------------------------------------------------- helpers
def _on_host(img: torch.Tensor) -> bool:
    """Whether ``img`` is on the CPU, where reading its values costs no
    wait: the batched ops then take their faster host forms (a
    ``bincount`` per plane, a slice per box); on another device, forms
    that read nothing back (the tests also run those on the CPU)."""
    return img.device.type == 'cpu'


def _per_image(values, img: torch.Tensor, dtype=torch.float32):
    """``(B, 1, 1, 1)`` tensor of per-image parameters."""
    t = torch.as_tensor(values, dtype=dtype, device=img.device)
    return t.reshape(-1, 1, 1, 1).expand(img.shape[0], 1, 1, 1)


def _blend_(degenerate: torch.Tensor, img: torch.Tensor,
            factor) -> torch.Tensor:
    """PIL ``Image.blend(degenerate, img, factor)``'s float32 value
    ``degenerate + factor * (img - degenerate)``, clipped to [0, 255],
    computed in place in ``img`` (float32 tensors of one shape, ``factor``
    a float or a broadcast float32 tensor); PIL then truncates it."""
    return img.sub_(degenerate).mul_(factor).add_(degenerate).clamp_(0, 255)


def _blend(degenerate: torch.Tensor, img: torch.Tensor,
           factor: torch.Tensor) -> torch.Tensor:
    """PIL ``Image.blend(degenerate, img, factor)`` for uint8
    (:func:`_blend_`, truncated)."""
    return _blend_(degenerate.float(), img.float(), factor).to(torch.uint8)


def _luma_of(r: torch.Tensor, g: torch.Tensor, b: torch.Tensor,
             out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """PIL's ``convert('L')`` of int32 channel values: ``(R*19595 +
    G*38470 + B*7471 + 0x8000) >> 16``, int32 (in ``out`` if given)."""
    luma = torch.mul(r, 19595, out=out)
    luma.add_(g, alpha=38470).add_(b, alpha=7471).add_(0x8000)
    return luma.bitwise_right_shift_(16)


def _luma(img: torch.Tensor) -> torch.Tensor:
    """PIL's ``convert('L')`` (:func:`_luma_of`) of ``(B, 3, H, W)`` uint8
    RGB: ``(B, 1, H, W)`` uint8."""
    return _luma_of(*img.to(torch.int32).unbind(1)).to(
        torch.uint8).unsqueeze(1)


def _lut(img: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """Per image and channel look-up: ``lut`` is ``(B, 3, 256)``."""
    b, c, h, w = img.shape
    flat = img.reshape(b, c, h * w).long()
    return torch.gather(lut.to(torch.uint8), 2, flat).reshape(b, c, h, w)


def _histogram(img: torch.Tensor) -> torch.Tensor:
    """``(B, C, 256)`` per image and channel counts of uint8 images. On the
    CPU one ``bincount`` per plane (about 20 times faster there than a
    ``scatter_add`` of the pixels as longs); on another device one
    ``scatter_add`` for the batch (a CUDA ``bincount`` reads its input's
    maximum back on the host, waiting for the device)."""
    b, c, h, w = img.shape
    planes = img.reshape(b * c, h * w)
    if _on_host(img):
        return torch.stack([
            torch.bincount(plane, minlength=256) for plane in planes
        ]).reshape(b, c, 256)
    bins = planes.long() + torch.arange(
        0, b * c * 256, 256, device=img.device)[:, None]
    counts = torch.zeros(b * c * 256, dtype=torch.long, device=img.device)
    ones = torch.ones(1, dtype=torch.long, device=img.device)
    return counts.scatter_add_(0, bins.reshape(-1),
                               ones.expand(bins.numel())).reshape(b, c, 256)


def _autocontrast_lut(hist: torch.Tensor) -> torch.Tensor:
    """PIL ``ImageOps.autocontrast`` (cutoff 0) of ``(..., 256)`` counts:
    per channel ``scale = 255.0 / (hi - lo)``, ``offset = -lo * scale``,
    ``clip(int(i * scale + offset), 0, 255)``, in PIL's float64 operation
    order (so the same roundings; ``255.0 / tensor`` would multiply by a
    rounded reciprocal, a grey level off for some ``(lo, hi)``); the
    identity where ``hi <= lo``. Returns ``(..., 256)`` long."""
    idx = torch.arange(256, device=hist.device)
    present = hist > 0
    lo = torch.where(present, idx, 256).amin(-1, keepdim=True)
    hi = torch.where(present, idx, -1).amax(-1, keepdim=True)
    span = (hi - lo).clamp(min=1).double()
    scale = torch.full_like(span, 255.0) / span  # a true division
    offset = -lo.double() * scale
    lut = (idx.double() * scale + offset).trunc().clamp(0, 255)
    return torch.where(hi <= lo, idx.double(), lut).long()


def _equalize_lut(hist: torch.Tensor) -> torch.Tensor:
    """PIL ``ImageOps.equalize``: ``step = (n - count of the last used
    level) // 255``; ``lut[i] = (step // 2 + sum(h[:i])) // step``."""
    idx = torch.arange(256, device=hist.device)
    last = torch.where(hist > 0, idx, -1).amax(-1, keepdim=True)
    last_count = torch.gather(hist, -1, last.clamp(min=0))
    step = (hist.sum(-1, keepdim=True) - last_count) // 255
    before = torch.cumsum(hist, -1) - hist
    lut = ((step // 2 + before) // step.clamp(min=1)).clamp(max=255)
    used = (hist > 0).sum(-1, keepdim=True)
    return torch.where((step == 0) | (used <= 1), idx, lut)


def _smooth_interior(img: torch.Tensor,
                     buf=None) -> torch.Tensor:
    """PIL ``ImageFilter.SMOOTH``'s interior pixels (3x3 kernel 1 1 1 /
    1 5 1 / 1 1 1, /13, rounded) of ``(..., H, W)`` int16 pixel values,
    ``H, W >= 3``: ``(..., H - 2, W - 2)`` float32 whole numbers.

    The sum ``S`` (at most 13 * 255) is exact in int16 (shifted slices:
    the same on every device, no convolution, so no TF32); ``S / 13`` is
    never within 1/26 of a half, so ``floor(S * (1 / 13) + 0.5)`` in
    float32 is PIL's rounding (checked for every ``S``). ``buf(name,
    shape, dtype)`` gives the intermediate tensors (default: new ones)."""
    if buf is None:

        def buf(name, shape, dtype):
            return torch.empty(shape, dtype=dtype, device=img.device)

    *lead, h, w = img.shape
    rows = torch.add(img[..., :-2], img[..., 1:-1],
                     out=buf('smooth_rows', (*lead, h, w - 2), torch.int16))
    rows += img[..., 2:]
    total = torch.add(rows[..., :-2, :], rows[..., 1:-1, :],
                      out=buf('smooth_sum', (*lead, h - 2, w - 2),
                              torch.int16))
    total += rows[..., 2:, :]
    total.add_(img[..., 1:-1, 1:-1], alpha=4)
    out = buf('smooth', total.shape, torch.float32).copy_(total)
    return out.mul_(1 / 13).add_(0.5).floor_()


def _smooth(img: torch.Tensor) -> torch.Tensor:
    """PIL ``ImageFilter.SMOOTH`` of ``(B, 3, H, W)`` uint8
    (:func:`_smooth_interior`); the border rows and columns keep their
    values, so an image less than 3 pixels high or wide is all border:
    unchanged, as in PIL."""
    out = img.clone()
    if min(img.shape[-2:]) >= 3:
        out[..., 1:-1, 1:-1] = _smooth_interior(img.to(torch.int16))
    return out


def sharpness(img: torch.Tensor, factor: float) -> torch.Tensor:
    """PIL's ``ImageEnhance.Sharpness(img).enhance(factor)`` of one ``(C,
    H, W)`` uint8 image: PIL's pixels exactly, about 2.5 times faster
    than PIL on one CPU core (448 px: about 1 ms, PIL 2.5-3.3 ms). Returns
    a new contiguous ``(C, H, W)`` uint8 tensor.

    PIL blends :func:`_smooth` with the image (:func:`_blend_`): the
    border pixels, which SMOOTH keeps, stay; the interior is
    :func:`_smooth_interior` blended in float32 and truncated (this
    thread's :func:`_scratch` buffers: no page faults)."""
    out = img.clone(memory_format=torch.contiguous_format)
    ch, h, w = img.shape
    if min(h, w) < 3:
        return out
    x16 = _scratch('sharp_x', img.shape, torch.int16).copy_(img)
    degenerate = _smooth_interior(x16, _scratch)
    value = _scratch('sharp_value', degenerate.shape,
                     torch.float32).copy_(img[:, 1:-1, 1:-1])
    _blend_(degenerate, value, factor)
    # float -> int32 -> uint8: half the time of float -> uint8
    out[:, 1:-1, 1:-1] = _scratch('sharp_int', degenerate.shape,
                                  torch.int32).copy_(value)
    return out


def _pil_cubic(v1, v2, v3, v4, d):
    """PIL's cubic interpolation (``Geometry.c`` ``BICUBIC``: the
    cubic-convolution kernel with a = -1), in its operation order, so that
    float64 gives PIL's double results."""
    p2 = -v1 + v3
    p3 = 2 * (v1 - v2) + v3 - v4
    p4 = -v1 + v2 - v3 + v4
    return v2 + d * (p2 + d * (p3 + d * p4))


def _bicubic_pil(img: torch.Tensor, u: torch.Tensor, v: torch.Tensor,
                 moves: str = 'xy') -> torch.Tensor:
    """PIL's bicubic sample of ``(B, 3, H, W)`` uint8 images at the points
    ``(u, v)`` (``(B, H', W')`` float64, pixel centres at +0.5): the 4 x 4
    taps around the point, clamped to the image, interpolated in float64
    with :func:`_pil_cubic` (columns, then rows) and truncated to uint8 as
    PIL. ``moves`` names the axes (``'x'``: ``u``, ``'y'``: ``v``) where a
    point may fall between pixel centres; along another one (a shear moves
    along one axis only) the single tap is used: the same value exactly
    (the cubic at fraction 0 is that tap), decided by the caller, not by
    reading the coordinates back from the device."""
    b, c, h, w = img.shape
    xs, ys = u - 0.5, v - 0.5
    x0, y0 = xs.floor(), ys.floor()
    dx, dy = (xs - x0).unsqueeze(1), (ys - y0).unsqueeze(1)
    x0, y0 = x0.long() - 1, y0.long() - 1
    flat = img.reshape(b, c, h * w)
    cols = range(4) if 'x' in moves else [1]
    rows = range(4) if 'y' in moves else [1]

    def tap(j, k):
        yi = (y0 + j).clamp_(0, h - 1)
        xi = (x0 + k).clamp_(0, w - 1)
        index = (yi * w + xi).reshape(b, 1, -1).expand(b, c, -1)
        out = torch.gather(flat, 2, index)
        return out.reshape(b, c, *u.shape[1:]).double()

    def row(j):
        if len(cols) == 1:
            return tap(j, 1)
        return _pil_cubic(*(tap(j, k) for k in cols), dx)

    out = row(1) if len(rows) == 1 else _pil_cubic(*(row(j) for j in rows), dy)
    return out.clamp_(0, 255).trunc_().to(torch.uint8)


def _affine_coeffs(op: str, m: float, w: int, h: int) -> Tuple[float, ...]:
    """PIL's affine coefficients of a shear or translation at the signed
    magnitude ``m`` on a ``w`` x ``h`` image (Rotate:
    :func:`_rotation_source`)."""
    if op == 'ShearX':
        return (1, m, 0, 0, 1, 0)
    if op == 'ShearY':
        return (1, 0, 0, m, 1, 0)
    if op == 'TranslateX':
        return (1, 0, m * w, 0, 1, 0)
    if op == 'TranslateY':
        return (1, 0, 0, 0, 1, m * h)
    raise ValueError(f'unknown RandAugment op {op!r}; expected one of '
                     f'{RANDAUG_OPS}.')


def _affine_uv(coeffs: Sequence[Sequence[float]], xs: torch.Tensor,
               ys: torch.Tensor, b: int = 1) -> Tuple[torch.Tensor, ...]:
    """The input point ``(u, v) = (a xs + b ys + c, d xs + e ys + f)``
    that PIL's ``affine_transform`` samples for the output pixel centred
    at ``(xs, ys)`` (float64, in its operation order), for each of ``b``
    images (one coefficient row per image, or one for all): two ``(b,
    *S)`` float64 tensors."""
    m = torch.as_tensor(coeffs, dtype=torch.float64, device=xs.device)
    m = m.reshape(-1, 6, *[1] * xs.dim()).expand(b, 6, *[1] * xs.dim())
    return (m[:, 0] * xs + m[:, 1] * ys + m[:, 2],
            m[:, 3] * xs + m[:, 4] * ys + m[:, 5])


def _affine_points(img: torch.Tensor, coeffs: Sequence[Sequence[float]],
                   xs: torch.Tensor, ys: torch.Tensor, mode: str,
                   moves: str = 'xy') -> torch.Tensor:
    """PIL ``Image.transform(size, AFFINE, coeffs, mode, fillcolor=128)``
    of ``(B, 3, H, W)`` uint8 images at the output pixel centres ``(xs,
    ys)`` (float64, any one shape ``S``): ``(B, 3, *S)`` uint8.

    The pixel centred at ``(xs, ys)`` samples the input at ``(a xs + b ys
    + c, d xs + e ys + f)`` (PIL's ``affine_transform``, in its operation
    order); outside ``[0, W) x [0, H)`` it is 128. ``nearest`` takes the
    pixel containing that point, as PIL; ``bicubic`` is PIL's bicubic
    (:func:`_bicubic_pil`, with ``moves``): the same pixels as PIL.
    ``coeffs``: host values or a ``(B, 6)`` float64 tensor on the images'
    device.
    """
    b, _, h, w = img.shape
    u, v = _affine_uv(coeffs, xs, ys, b)
    inside = ((u >= 0) & (u < w) & (v >= 0) & (v < h)).unsqueeze(1)
    if mode == 'nearest':
        ui = u.floor().long().clamp(0, w - 1)
        vi = v.floor().long().clamp(0, h - 1)
        index = (vi * w + ui).reshape(b, 1, -1).expand(b, 3, -1)
        out = torch.gather(img.reshape(b, 3, h * w), 2, index)
        out = out.reshape(b, 3, *xs.shape)
    else:
        out = _bicubic_pil(img, u, v, moves)
    return torch.where(inside, out, torch.full_like(out, _FILL))


def _affine(img: torch.Tensor, coeffs: Sequence[Sequence[float]],
            mode: str, moves: str = 'xy') -> torch.Tensor:
    """PIL ``Image.transform(size, AFFINE, coeffs, mode, fillcolor=128)``
    of ``(B, 3, H, W)`` uint8 images, one coefficient row per image (or
    one for all): :func:`_affine_points` at every pixel centre."""
    _, _, h, w = img.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64, device=img.device) + 0.5,
        torch.arange(w, dtype=torch.float64, device=img.device) + 0.5,
        indexing='ij')
    return _affine_points(img, coeffs, xs, ys, mode, moves)


#: :func:`shear`'s float32 value is within 1e-4 of PIL's float64 one (the
#: roundings of the weights, of three products and sums of integer tap
#: differences and of the sum with the tap, |value| < 512; measured on the
#: cubic: 2.3e-5); a value this close to an integer may truncate to
#: another one, and is recomputed in float64.
_SHEAR_EPS = 5e-4
#: a line whose shift is this close to a multiple of 1/4 is a tie: PIL's
#: fraction is that multiple at (nearly) all its pixels, where the float32
#: cubic is exact (weights of a few bits).
_SHEAR_TIE = 1e-9

_SCRATCH = threading.local()


def _scratch(name: str, shape, dtype: torch.dtype) -> torch.Tensor:
    """This thread's reusable CPU buffer ``name`` (contents undefined,
    reallocated when the shape or dtype changes): a fresh tensor of a few
    MB costs a page fault per 4 KiB page when first written (glibc hands
    freed blocks back to the system), as much time as the arithmetic of
    :func:`shear`."""
    bufs = _SCRATCH.__dict__.setdefault('bufs', {})
    buf = bufs.get(name)
    if buf is None or buf.shape != shape or buf.dtype != dtype:
        buf = bufs[name] = torch.empty(shape, dtype=dtype)
    return buf


def _shear_coord(pos: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """PIL's input coordinate along a shear (``affine_transform``, float64)
    of the positions ``pos`` on lines shifted by ``shift = m (line +
    0.5)``: ``1 * (pos + 0.5) + shift + 0``, the same double for ShearY's
    ``shift + 1 * (pos + 0.5) + 0`` (broadcast)."""
    return (pos + 0.5) + shift


def _first_at_least(target: float, shift: torch.Tensor) -> torch.Tensor:
    """Per line, the first position whose :func:`_shear_coord` is ``>=
    target`` (it grows with the position; ``ceil(target - 0.5 - shift)``
    is within one of it): ``shift`` ``(L,)`` float64 -> ``(L,)`` long."""
    p = torch.ceil(target - 0.5 - shift)
    return (p - 1 + (_shear_coord(p - 1, shift) < target).double() +
            (_shear_coord(p, shift) < target).double()).long()


def _negatives(t: torch.Tensor, rows: int = 32) -> torch.Tensor:
    """Flat indices of the (few) negative entries of ``t``: the minimum
    over ``rows`` rows of its flat view first, then the columns that have
    one (a comparison over all of ``t`` costs more than the rest)."""
    flat = t.reshape(-1)
    view = flat.view(math.gcd(flat.numel(), rows), -1)
    hit = (view.amin(0) < 0).nonzero()[:, 0]
    sub = (view.index_select(1, hit) < 0).nonzero()
    return sub[:, 0] * view.shape[1] + hit[sub[:, 1]]


def _shear_axes(op: str, h: int, w: int) -> Tuple[int, int, int]:
    """``(dim, n, lines)`` of a shear of a ``(C, H, W)`` image: the pixels
    move along ``dim`` (2: ShearX's rows, 1: ShearY's columns), ``n``
    positions on each of the ``lines``."""
    return (2, w, h) if op == 'ShearX' else (1, h, w)


def _per_line(t: torch.Tensor, dim: int) -> torch.Tensor:
    """``(L,)`` per-line values, broadcast over the positions of a
    :func:`_shear_axes` ``dim``."""
    return t[:, None] if dim == 2 else t[None, :]


def _per_pos(t: torch.Tensor, dim: int) -> torch.Tensor:
    """``(n,)`` per-position values, broadcast over the lines."""
    return t[None, :] if dim == 2 else t[:, None]


@functools.lru_cache(maxsize=64)
def _shear_geometry(op: str, m: float, h: int, w: int) -> tuple:
    """What :func:`shear` needs of PIL's coordinates (the same for every
    image of a size: the official policy has 18 shears per op), in the
    ``(C, H, W)`` layout:

    - ``base``: ``(L,)`` long, each line's integer offset;
    - ``weights``: PIL's cubic weights of the taps 1, 3, 4 (tap 2 takes
      the rest), per line, float32, broadcast;
    - ``eps``: ``-_SHEAR_EPS`` per line, 0 on ties, broadcast;
    - ``inside``, ``fill``: ``(H, W)`` uint8, 1 where PIL samples the
      image (its coordinate in ``[0, n)``), 128 where it fills;
    - ``odd``: the flat pixel indices of the ties where PIL's fraction or
      floor differs from its line's.
    """
    dim, n, lines = _shear_axes(op, h, w)
    shift = (torch.arange(lines, dtype=torch.float64) + 0.5) * m
    base = shift.floor()
    frac = shift - base
    quarter = (frac * 4).round() / 4
    tie = (frac - quarter).abs() < _SHEAR_TIE
    frac = torch.where(tie, quarter, frac)
    base += frac == 1
    frac[frac == 1] = 0
    # _pil_cubic is linear in the taps, its weights sum to one
    weights = [
        _per_line(
            _pil_cubic(*(float(i == j) for i in range(4)), frac).float(),
            dim) for j in (0, 2, 3)
    ]
    eps = _per_line(torch.where(tie, 0., -_SHEAR_EPS).float(), dim)
    pos = _per_pos(torch.arange(n), dim)
    lo = _per_line(_first_at_least(0., shift), dim)
    hi = _per_line(_first_at_least(float(n), shift), dim)
    inside = ((pos >= lo) & (pos < hi)).to(torch.uint8)
    ties = tie.nonzero()[:, 0]
    coord = _shear_coord(pos.double(), _per_line(shift[ties], dim))
    floor = (coord - 0.5).floor()
    odd = ((coord - 0.5 - floor != _per_line(frac[ties], dim)) |
           (floor != pos + _per_line(base[ties], dim)))
    line = _per_line(ties, dim)
    pixels = line * w + pos if dim == 2 else pos * w + line
    return (base.long(), weights, eps, inside, (1 - inside) * _FILL,
            pixels[odd])


def shear(img: torch.Tensor, op: str, m: float) -> torch.Tensor:
    """PIL's ``ShearX`` / ``ShearY`` (``Image.transform`` with
    :func:`_affine_coeffs`, bicubic, fill 128) of one ``(C, H, W)`` uint8
    image at the signed magnitude ``m``: PIL's pixels exactly, 2-3 times
    faster than PIL on one CPU core (448 px: about 3 ms, PIL 8-9 ms).

    ShearX's output pixel ``(x, y)`` samples row ``y`` at
    :func:`_shear_coord` ``(x + 0.5) + m (y + 0.5)``: along a row (a
    *line*) the shift ``m (y + 0.5)`` is one float64, so all its pixels
    share the integer offset and, to the last bits, the fraction. So one
    gather builds each line's shifted window (taps clamped to the image),
    and PIL's cubic (:func:`_pil_cubic`) is a float32 sum of the integer
    tap differences with per-line weights (exact on flat windows). Where
    that value is within ``_SHEAR_EPS`` of an integer (PIL's truncation of
    its float64 value may differ) it is recomputed by PIL's float64 code
    (:func:`_affine_points`). A line whose fraction is a multiple of 1/4
    (a tie) is exact in float32 (only its pixels whose PIL fraction or
    floor differs are recomputed). ShearY: the same along columns.
    """
    ch, h, w = img.shape
    dim, n, lines = _shear_axes(op, h, w)
    base, weights, eps, inside, fill, odd = _shear_geometry(op, m, h, w)
    # window k of a line is its pixel clamp(k - 2 + base), k = 0..n+4;
    # position p's taps are the windows p + 1..p + 4
    win_shape = (ch, h + 5 * (dim == 1), w + 5 * (dim == 2))
    index = torch.add(_per_pos(torch.arange(-2, n + 3), dim),
                      _per_line(base, dim),
                      out=_scratch('index', win_shape[1:], torch.long))
    index.clamp_(0, n - 1)
    if dim == 2:
        index.add_(_per_line(torch.arange(lines) * w, dim))
    else:
        index.mul_(w).add_(_per_line(torch.arange(lines), dim))
    taps = torch.gather(
        img.reshape(ch, -1), 1, index.view(1, -1).expand(ch, -1),
        out=_scratch('taps', (ch, index.numel()), torch.uint8))
    win = _scratch('win', win_shape, torch.float32).copy_(
        taps.view(win_shape))
    v1, v2, v3, v4 = (win.narrow(dim, 1 + j, n) for j in range(4))
    value = torch.sub(v1, v2, out=_scratch('value', img.shape, torch.float32))
    # zero on flat windows only
    spread = torch.mul(value, value,
                       out=_scratch('spread', img.shape, torch.float32))
    value.mul_(weights[0])
    diff = torch.sub(v3, v2, out=_scratch('diff', img.shape, torch.float32))
    spread.addcmul_(diff, diff)
    value.addcmul_(diff, weights[1])
    torch.sub(v4, v2, out=diff)
    spread.addcmul_(diff, diff)
    value.addcmul_(diff, weights[2])
    # negative where the value is within _SHEAR_EPS of an integer, but on
    # flat windows (their value is the tap, exactly) and ties
    near = torch.round(value, out=diff).sub_(value).abs_()
    near.addcmul_(spread.clamp_(max=1), eps)
    out = _scratch('trunc', img.shape, torch.int32).copy_(
        value.add_(v2).clamp_(0, 255)).to(torch.uint8)
    out.mul_(inside).add_(fill)
    pixels = torch.cat([_negatives(near) % (h * w), odd])
    if len(pixels):
        exact = _affine_points(img[None], [_affine_coeffs(op, m, w, h)],
                               (pixels % w).double() + 0.5,
                               (pixels // w).double() + 0.5, 'bicubic',
                               _SHEAR_MOVES[op])
        out.view(ch, -1)[:, pixels] = exact[0]
    return out


def _cutout_box(size: int, centre, h: int, w: int) -> Tuple[int, ...]:
    """``randaugment.Cutout``'s square of side ``size`` around the centre
    ``(u, v)`` (fractions of the width and height): rows ``y0:y1``,
    columns ``x0:x1``, half-open, clipped."""
    x, y = int(centre[0] * w), int(centre[1] * h)
    return (max(0, y - size // 2), min(h, y + size // 2),
            max(0, x - size // 2), min(w, x + size // 2))


# ------------------------------------ the official ops of one CPU image
def _signed_magnitude(op: str, index: int, sign: int) -> float:
    """The magnitude the official op applies: signed where it draws a
    sign (:data:`_SIGNED`)."""
    return magnitude(op, index) * (sign if op in _SIGNED else 1)


@functools.lru_cache(maxsize=None)
def _value_lut(op: str, index: int, sign: int) -> np.ndarray:
    """The look-up table of an official op that maps each value alone,
    whatever the image (Invert, Posterize, Solarize: PIL's ``point``;
    Brightness: a blend with black): PIL's op (:func:`official_op`) on
    the 256 values, ``(256,)`` uint8."""
    ramp = np.repeat(np.arange(256, dtype=np.uint8), 3).reshape(1, 256, 3)
    out = np.asarray(official_op(Image.fromarray(ramp), op, index, sign))[0]
    if not (out == out[:, :1]).all():
        raise AssertionError(f'{op} maps the channels differently')
    return np.ascontiguousarray(out[:, 0])


def _look_up(img: torch.Tensor, lut: np.ndarray) -> torch.Tensor:
    """Each channel of a ``(C, H, W)`` uint8 image through a ``(256,)``
    uint8 table, or channel ``k`` through ``lut[k]`` of ``(C, 256)``
    (OpenCV's ``LUT``): a new contiguous tensor."""
    import cv2
    src = img.contiguous().numpy()
    ch, h, w = src.shape
    if lut.ndim == 1:
        return torch.from_numpy(
            cv2.LUT(src.reshape(ch * h, w), lut).reshape(ch, h, w))
    out = np.empty_like(src)
    for k in range(ch):
        out[k] = cv2.LUT(src[k], np.ascontiguousarray(lut[k]))
    return torch.from_numpy(out)


def _channel_luts(img: torch.Tensor, lut_of) -> np.ndarray:
    """``(C, 256)`` uint8 tables of :func:`_autocontrast_lut` or
    :func:`_equalize_lut` (``lut_of``) from the channels' histograms."""
    return lut_of(_histogram(img[None])[0]).to(torch.uint8).numpy()


def _bgr_luma(bgr: torch.Tensor) -> torch.Tensor:
    """PIL's ``convert('L')`` (:func:`_luma_of`) of a ``(3, H, W)`` uint8 BGR
    image: an ``(H, W)`` int32 tensor, in this thread's
    :func:`_scratch` buffers (valid until the next call)."""
    b, g, r = _scratch('luma_bgr', bgr.shape, torch.int32).copy_(bgr)
    return _luma_of(r, g, b, out=_scratch('luma', r.shape, torch.int32))


def _contrast(bgr: torch.Tensor, factor: float) -> torch.Tensor:
    """PIL's ``ImageEnhance.Contrast(img).enhance(factor)`` of a ``(3, H,
    W)`` BGR image: a blend with the grey of the mean of PIL's luma
    (:func:`_bgr_luma`; ``ImageStat``'s mean of the integer levels,
    rounded by ``int(mean + 0.5)``), one value at a time, so a table made
    by PIL's ``Image.blend``."""
    luma = _bgr_luma(bgr)
    mean = int(int(luma.sum(dtype=torch.int64)) / luma.numel() + 0.5)
    ramp = Image.frombytes('L', (256, 1), bytes(range(256)))
    lut = Image.blend(Image.new('L', (256, 1), mean), ramp, factor)
    return _look_up(bgr, np.frombuffer(lut.tobytes(), dtype=np.uint8))


def _color(bgr: torch.Tensor, factor: float) -> torch.Tensor:
    """PIL's ``ImageEnhance.Color(img).enhance(factor)`` of a ``(3, H, W)``
    BGR image: each value blended with its pixel's luma (:func:`_bgr_luma`)
    by PIL's float32 blend (:func:`_blend_`), truncated; a new contiguous
    tensor."""
    luma = _scratch('color_luma', bgr.shape[1:], torch.float32).copy_(
        _bgr_luma(bgr))
    value = _scratch('color_value', bgr.shape, torch.float32).copy_(bgr)
    _blend_(luma.expand_as(value), value, factor)
    # float -> int32 -> uint8: half the time of float -> uint8
    return _scratch('color_int', bgr.shape, torch.int32).copy_(value).to(
        torch.uint8)


def _translate(img: torch.Tensor, op: str, m: float) -> torch.Tensor:
    """PIL's ``TranslateX`` / ``TranslateY`` (``Image.transform`` with
    :func:`_affine_coeffs`, nearest, fill 128) of one ``(C, H, W)`` uint8
    image at an official magnitude ``m``: one shift of the columns (rows).

    Output column ``x`` samples PIL's point ``(x + 0.5) + c`` on one line
    (:func:`_affine_uv`), ``c = m W``. The official magnitudes are ``m =
    150 i / 2979`` (``i`` in -9..9, to float rounding), so ``c + 0.5 = (300
    i W + 2979) / 5958`` has an odd numerator and lies at least ``1 /
    5958`` from an integer, far beyond any rounding: the source column is
    ``x + floor(c + 0.5)`` for every ``x`` (tested for every magnitude and
    size up to 1024)."""
    ch, h, w = img.shape
    dim, n = (2, w) if op == 'TranslateX' else (1, h)
    centre = torch.tensor([0.5], dtype=torch.float64)  # of pixel (0, 0)
    u, v = _affine_uv([_affine_coeffs(op, m, w, h)], centre, centre)
    shift = int((u if dim == 2 else v).floor())
    first, last = max(0, -shift), min(n, n - shift)
    out = torch.full((ch, h, w), _FILL, dtype=torch.uint8)
    if last > first:
        out.narrow(dim, first, last - first).copy_(
            img.narrow(dim, first + shift, last - first))
    return out


@functools.lru_cache(maxsize=18)
def _rotation_source(m: float, h: int, w: int) -> np.ndarray:
    """PIL's ``Image.rotate(m)`` of an ``h`` x ``w`` image (nearest,
    about the centre) as the flat index of each output pixel's source,
    ``h * w`` where it falls outside: PIL's own rotation of an image of
    the pixels' indices (a 32-bit image: the same affine code as the
    official op's RGBA image), so PIL's geometry by construction."""
    index = Image.fromarray(
        np.arange(1, h * w + 1, dtype=np.int32).reshape(h, w)).rotate(m)
    source = np.asarray(index).astype(np.intp).reshape(-1) - 1
    source[source < 0] = h * w
    return source


@functools.lru_cache(maxsize=18)
def _rotation_index(m: float, h: int, w: int,
                    device: torch.device) -> torch.Tensor:
    """:func:`_rotation_source` as a long tensor on ``device`` (kept)."""
    return torch.from_numpy(_rotation_source(m, h, w)).to(device)


def _rotate_batch(img: torch.Tensor, angles: Sequence[float]) -> torch.Tensor:
    """The official ``Rotate`` (PIL's nearest rotation of the RGBA image
    by ``m`` degrees, composited on grey 128 where it is transparent) of
    ``(B, C, H, W)`` uint8 images, one angle per image: each pixel from
    its :func:`_rotation_source` (PIL's geometry), 128 outside; one
    gather on the images' device (the CPU path's and the device path's
    Rotate)."""
    b, c, h, w = img.shape
    index = torch.stack([_rotation_index(m, h, w, img.device)
                         for m in angles])
    flat = torch.cat([img.reshape(b, c, h * w),
                      img.new_full((b, c, 1), _FILL)], 2)
    return torch.gather(flat, 2, index[:, None].expand(b, c, h * w)).reshape(
        b, c, h, w)


def _randaug_cutout(bgr: torch.Tensor, size: int, centre) -> torch.Tensor:
    """``randaugment.Cutout`` (:func:`_cutout_box`) of a ``(3, H, W)`` BGR
    image: a new contiguous tensor."""
    y0, y1, x0, x1 = _cutout_box(size, centre, *bgr.shape[-2:])
    out = bgr.contiguous().clone()
    if y1 > y0 and x1 > x0:
        out[:, y0:y1, x0:x1] = torch.tensor(
            _CUTOUT_FILL[::-1], dtype=torch.uint8).reshape(3, 1, 1)
    return out


def _value_op(op: str):
    """The table entry of a value op (:func:`_value_lut`)."""
    return lambda bgr, index, sign, centre: _look_up(
        bgr, _value_lut(op, index, 1 if op not in _SIGNED else sign))


def _moving_op(fn, op: str):
    """The table entry of ``fn(bgr, op, m)`` (a shear or translation) at
    the draw's signed magnitude."""
    return lambda bgr, index, sign, centre: fn(
        bgr, op, _signed_magnitude(op, index, sign))


#: The official ops as :class:`TensorRandAugment` runs them on the CPU:
#: each a function of the ``(3, H, W)`` uint8 **BGR** image and the draw's
#: ``index``, ``sign`` and ``centre`` returning a new contiguous image
#: with PIL's pixels (tested against :func:`official_op` at every
#: magnitude), faster than PIL's op and the conversions it would need.
_CPU_TENSOR_OPS = {
    **{op: _value_op(op)
       for op in ('Invert', 'Posterize', 'Solarize', 'Brightness')},
    'AutoContrast': lambda bgr, index, sign, centre: _look_up(
        bgr, _channel_luts(bgr, _autocontrast_lut)),
    'Equalize': lambda bgr, index, sign, centre: _look_up(
        bgr, _channel_luts(bgr, _equalize_lut)),
    'Contrast': lambda bgr, index, sign, centre: _contrast(
        bgr, 1 + _signed_magnitude('Contrast', index, sign)),
    'Color': lambda bgr, index, sign, centre: _color(
        bgr, 1 + _signed_magnitude('Color', index, sign)),
    'Sharpness': lambda bgr, index, sign, centre: sharpness(
        bgr, 1 + _signed_magnitude('Sharpness', index, sign)),
    **{op: _moving_op(shear, op) for op in ('ShearX', 'ShearY')},
    **{op: _moving_op(_translate, op) for op in ('TranslateX', 'TranslateY')},
    'Cutout': lambda bgr, index, sign, centre: _randaug_cutout(
        bgr, magnitude('Cutout', index), centre),
    'Rotate': lambda bgr, index, sign, centre: _rotate_batch(
        bgr[None], [magnitude('Rotate', index)])[0],
}


# -------------------------------------------------------------------- ops
def apply_op(img: torch.Tensor, op: str, index, sign=1,
             centre=(0.5, 0.5)) -> torch.Tensor:
    """One official RandAugment op on ``(B, 3, H, W)`` uint8 RGB images.

    Args:
        img (Tensor): the images (not modified).
        op (str): one of :data:`RANDAUG_OPS`.
        index (int | Sequence[int]): magnitude index 1..9 (per image).
        sign (int | Sequence[int]): +-1 (per image), for the ops that draw
            one.
        centre (tuple | Sequence[tuple]): ``Cutout`` centre as fractions
            (per image).

    Returns:
        Tensor: the augmented images.
    """
    b, _, h, w = img.shape
    host = HostParams()
    run = _prepare_op(host, op, index, sign, centre, b, h, w)
    return run(img, host.to(img.device))


def _prepare_op(host: HostParams, op: str, index, sign, centre, b: int,
                h: int, w: int) -> Callable[[torch.Tensor, DeviceParams],
                                            torch.Tensor]:
    """:func:`apply_op` in two steps: its parameters for ``b`` images of
    ``h`` x ``w`` are added to ``host`` here; the returned function applies
    the op to the images with those parameters on their device. Nothing in
    it reads a value back from the device."""
    index = [index] * b if np.isscalar(index) else list(index)
    sign = [sign] * b if np.isscalar(sign) else list(sign)
    mag = [magnitude(op, i) for i in index]
    if op in _SIGNED:
        mag = [m * s for m, s in zip(mag, sign)]
    if op == 'Invert':
        return lambda img, p: 255 - img
    if op == 'Posterize':
        keep = host.add([(0xFF << (8 - int(bits))) & 0xFF for bits in mag],
                        torch.uint8)
        return lambda img, p: img & _per_image(p[keep], img, torch.uint8)
    if op == 'Solarize':
        thr = host.add(np.float32(mag), torch.float32)
        return lambda img, p: torch.where(
            img.float() < _per_image(p[thr], img), img, 255 - img)
    if op in ('AutoContrast', 'Equalize'):
        lut_of = _autocontrast_lut if op == 'AutoContrast' else _equalize_lut
        return lambda img, p: _lut(img, lut_of(_histogram(img)))
    if op == 'Cutout':
        centres = [centre] * b if np.isscalar(centre[0]) else list(centre)
        boxes = host.add(
            [_cutout_box(size, c, h, w) for size, c in zip(mag, centres)],
            torch.long)
        colours = host.add([_CUTOUT_FILL] * b, torch.uint8)
        return lambda img, p: _fill_boxes(img, p[boxes], p[colours])
    if op == 'Rotate':  # gathers from indices kept on the device
        return lambda img, p: _rotate_batch(img, mag)
    if op in _AFFINE_OPS:
        coeffs = host.add([_affine_coeffs(op, m, w, h) for m in mag],
                          torch.float64)
        mode = 'bicubic' if op in _SHEAR_MOVES else 'nearest'
        moves = _SHEAR_MOVES.get(op, 'xy')
        return lambda img, p: _affine(img, p[coeffs], mode, moves)
    factor = host.add(np.float32([1 + m for m in mag]), torch.float32)
    blend_with = {
        'Brightness': torch.zeros_like,
        'Color': lambda img: _luma(img).expand_as(img),
        'Contrast': _mean_luma,
        'Sharpness': _smooth,
    }[op]
    return lambda img, p: _blend(
        blend_with(img), img, _per_image(p[factor], img))


#: the ops :func:`_affine` runs (Rotate: :func:`_rotate_batch`)
_AFFINE_OPS = ('ShearX', 'ShearY', 'TranslateX', 'TranslateY')


def _mean_luma(img: torch.Tensor) -> torch.Tensor:
    """Contrast's degenerate image: each image's grey of the mean of PIL's
    integer luma, rounded as ``int(mean + 0.5)``, ``(B, 3, H, W)``."""
    mean = (_luma(img).double().mean((1, 2, 3)) + 0.5).floor()
    return mean.reshape(-1, 1, 1, 1).expand_as(img)


def augment_batch(img: torch.Tensor, draws: Sequence[dict]) -> torch.Tensor:
    """Cutout + RandAugment of a ``(B, 3, H, W)`` uint8 RGB batch, one
    draw per image (what :class:`LoadImageBytes` records): ``cutout``
    with ``cutout_centre``, ``cutout_colour`` and ``cutout_factor``, then
    the ``randaugment`` ops in order, each op applied at once to the images
    that drew it (one batched call per op).

    Every parameter of the batch (boxes, colours, factors, coefficients,
    the images of each op) goes to the device in one copy
    (:class:`~.batch_params.HostParams`), and no op reads a value back, so
    the host queues the whole augmentation without waiting for the
    device."""
    b, _, h, w = img.shape
    host = HostParams()
    boxes = host.add(
        _cutout_boxes([d['cutout_centre'] for d in draws],
                      draws[0]['cutout_factor'], h, w), torch.long)
    colours = host.add([d['cutout_colour'] for d in draws], torch.uint8)
    steps = []
    for k in range(2):
        groups = {}
        for i, d in enumerate(draws):
            op = d['randaugment'][k]
            if op['applied']:
                groups.setdefault(op['op'], []).append(i)
        for name, idx in groups.items():
            ops = [draws[i]['randaugment'][k] for i in idx]
            steps.append((host.add(idx, torch.long),
                          _prepare_op(host, name, [o['index'] for o in ops],
                                      [o['sign'] for o in ops],
                                      [o['centre'] for o in ops], len(idx),
                                      h, w)))
    params = host.to(img.device)
    img = _fill_boxes(img, params[boxes], params[colours])
    for sel, run in steps:
        img[params[sel]] = run(img[params[sel]], params)
    return img


def resize_augment_batch(imgs: Sequence[torch.Tensor], draws: Sequence[dict],
                         augment: bool = True) -> torch.Tensor:
    """The device path after decoding: each ``(3, H, W)`` uint8 RGB image
    resized to its draw's ``size`` (what :class:`LoadImageBytes` records),
    stacked, then, with ``augment`` and a drawn RandAugment, Cutout +
    RandAugment (:func:`augment_batch`): ``(B, 3, h, w)`` uint8 RGB. The
    draws of one batch come from one pipeline: all augmented or none."""
    batch = torch.stack(
        [resize(img, tuple(d['size'])) for img, d in zip(imgs, draws)])
    drawn = ['randaugment' in d for d in draws]
    if any(drawn) and not all(drawn):
        raise ValueError(
            f'resize_augment_batch: {sum(drawn)} of {len(drawn)} samples of '
            'the batch carry an augmentation draw: a batch mixes samples of '
            'LoadImageBytes(augment=True) and (augment=False). Give each '
            'dataloader one pipeline.')
    if augment and all(drawn):
        batch = augment_batch(batch, draws)
    return batch


def _fill_boxes(img: torch.Tensor, boxes, colours) -> torch.Tensor:
    """Paint ``boxes`` (``(B, 4)``: rows ``y0:y1``, columns ``x0:x1``,
    half-open; empty where ``y1 <= y0`` or ``x1 <= x0``) with one RGB
    colour per image (``(B, 3)``) on a copy of ``(B, 3, H, W)`` uint8
    images. On the CPU as slices (``boxes`` and ``colours`` host values or
    CPU tensors); elsewhere as one masked ``where`` of long ``boxes`` and
    uint8 ``colours`` on the images' device (a slice per image would need
    each box's values on the host)."""
    if _on_host(img):
        out = img.clone()
        for i, ((y0, y1, x0, x1), colour) in enumerate(
                zip(_host_values(boxes), _host_values(colours))):
            if y1 > y0 and x1 > x0:
                out[i, :, y0:y1, x0:x1] = torch.as_tensor(
                    colour, dtype=torch.uint8).reshape(3, 1, 1)
        return out
    _, _, h, w = img.shape
    y0, y1, x0, x1 = boxes[:, :, None].unbind(1)
    rows = torch.arange(h, device=img.device)
    cols = torch.arange(w, device=img.device)
    inside = (((rows >= y0) & (rows < y1))[:, None, :, None]
              & ((cols >= x0) & (cols < x1))[:, None, None, :])
    return torch.where(inside, colours[:, :, None, None], img)


def _cutout_boxes(centres, cutout_factor: float, h: int,
                  w: int) -> List[Tuple[int, int, int, int]]:
    """Official ``CutoutPIL``'s boxes: PIL's inclusive rectangle of side
    ``int(factor * size + 0.5)`` around each ``(cy, cx)`` pixel, clipped,
    as half-open ``(y0, y1, x0, x1)``."""
    half_h = int(cutout_factor * h + 0.5) // 2
    half_w = int(cutout_factor * w + 0.5) // 2
    return [(max(cy - half_h, 0), min(cy + half_h, h - 1) + 1,
             max(cx - half_w, 0), min(cx + half_w, w - 1) + 1)
            for cy, cx in centres]


def cutout(img: torch.Tensor, centres, colours,
           cutout_factor: float = 0.5) -> torch.Tensor:
    """Official ``CutoutPIL``: PIL's inclusive rectangle of side
    ``int(factor * size + 0.5)`` around pixel ``(cy, cx)``, clipped.

    Args:
        img (Tensor): ``(B, 3, H, W)`` uint8 RGB.
        centres: per image ``(cy, cx)`` pixel.
        colours: per image RGB fill.
        cutout_factor (float): side as a fraction of the image side.
    """
    _, _, h, w = img.shape
    boxes = _cutout_boxes(centres, cutout_factor, h, w)
    if not _on_host(img):  # the values to the device in one copy
        host = HostParams()
        keys = host.add(boxes, torch.long), host.add(colours, torch.uint8)
        params = host.to(img.device)
        boxes, colours = (params[key] for key in keys)
    return _fill_boxes(img, boxes, colours)


def _host_values(values) -> list:
    """Host values of a CPU tensor (``tolist``), or ``values`` as given."""
    return values.tolist() if isinstance(values, torch.Tensor) else values


def resize(img: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Bilinear resize with antialiasing (PIL's ``BILINEAR``), ``(..., 3,
    H, W)`` uint8 -> ``size = (h, w)``: torchvision's uint8 kernel on the
    CPU (PIL's pixels within one grey level: under 0.1 % of them differ
    when shrinking 640x480 to 448 or 224), float on other devices."""
    if tuple(img.shape[-2:]) == tuple(size):
        return img
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2.functional import resize as tv_resize
    return tv_resize(
        img, list(size), InterpolationMode.BILINEAR, antialias=True)


#: How :func:`decode_resize` resizes: torchvision's uint8 kernel (fast,
#: within one grey level of PIL's) or PIL's own bilinear (the official
#: ``Resize((S, S))`` on a PIL image, bit-identical).
RESIZE_BACKENDS = ('torchvision', 'pillow')


def _draft_reduces(header: Optional[JpegHeader],
                   draft_size: Optional[Tuple[int, int]]) -> bool:
    """Whether PIL's ``draft`` would decode this JPEG at a reduced DCT
    scale for ``draft_size = (h, w)`` (the output at most half the
    image)."""
    return (draft_size is not None and header is not None
            and header.size[0] // draft_size[0] >= 2
            and header.size[1] // draft_size[1] >= 2)


def decode_rgb(data: bytes,
               draft_size: Optional[Tuple[int, int]] = None,
               backend: str = 'auto') -> torch.Tensor:
    """Decode an image file's bytes as the official loader does
    (``Image.open(...).convert('RGB')``, no EXIF rotation) into a ``(3, H,
    W)`` uint8 RGB tensor (channels-last memory). ``backend``
    (:data:`~mmcoop.datasets.transforms.jpeg.DECODE_BACKENDS`): JPEGs go
    through TorchCodec where it is installed (``'auto'``; the same pixels,
    faster: :mod:`mmcoop.datasets.transforms.jpeg`), everything else
    through PIL. ``draft_size = (h, w)`` decodes a JPEG at the smallest
    DCT scale that still covers that size (PIL's ``draft``)."""
    header = parse_header(data)
    if not _draft_reduces(header, draft_size):
        rgb = decode_jpeg_cpu(data, backend, header=header)
        if rgb is not None:
            return rgb
    return rgb_tensor(open_rgb(data, draft_size))


def decode_resize(data: bytes, size: Tuple[int, int],
                  draft: bool = False,
                  backend: str = 'torchvision',
                  decode_backend: str = 'auto') -> torch.Tensor:
    """:func:`decode_rgb` then a bilinear resize to ``size = (h, w)``: the
    official ``Resize((S, S))``, within one grey level with
    ``backend='torchvision'`` (:func:`resize`), bit-identical with
    ``'pillow'`` (PIL's own resize, slower, on PIL's decode). With
    ``draft=True``, JPEGs are decoded at a reduced DCT scale when the
    output is at most half the image (within interpolation tolerance).
    Returns a ``(3, h, w)`` uint8 RGB tensor (channels-last memory)."""
    draft_size = size if draft else None
    if backend == 'pillow':
        img = open_rgb(data, draft_size)
        if img.size != (size[1], size[0]):
            img = img.resize((size[1], size[0]), Image.BILINEAR)
        return rgb_tensor(img)
    return resize(decode_rgb(data, draft_size, decode_backend), size)


def _chw_bgr(rgb_hwc: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` RGB array -> contiguous ``(3, H, W)`` BGR tensor
    (OpenCV's channel split: one pass)."""
    import cv2
    return torch.from_numpy(np.stack(cv2.split(rgb_hwc)[::-1]))


# ------------------------------------------------------------- transforms
def _img_path(owner: str, results: dict) -> str:
    """``results['img_path']``; results without one (an image decoded by
    the caller, e.g. inference on arrays) are refused naming the fix."""
    if results.get('img_path') is None:
        raise ValueError(
            f'{owner} reads the image file at results["img_path"], got '
            f'results with keys {sorted(results)}. Fix: for images decoded '
            'by the caller (inference on arrays), start the pipeline with '
            'mmcoop.LoadImageFromFileChecked + Resize, as the test '
            'pipelines of the configs do.')
    return results['img_path']


def check_scale(owner: str, scale) -> Tuple[int, int]:
    """``scale`` (an int or ``(w, h)``, as mmcv's ``Resize``) -> ``(w, h)``
    positive ints; anything else is refused naming ``owner``."""
    pair = (scale, scale) if isinstance(scale, int) else scale
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0
            for v in pair)):
        raise ValueError(
            f'{owner}: scale must be a positive int or a (w, h) pair of '
            f'positive ints, got {scale!r}. Fix: e.g. scale=(448, 448).')
    return tuple(pair)


def _as_rgb_batch(bgr: torch.Tensor) -> torch.Tensor:
    return bgr.flip(0)[None]


@TRANSFORMS.register_module()
class LoadImageTensor(BaseTransform):
    """Read, decode and resize an image to a ``(3, H, W)`` uint8 **BGR**
    tensor (the channel order of every mmcoop image; the data preprocessor
    converts to RGB).

    The pixels of ``LoadImageFromFileChecked`` + ``Resize(scale,
    keep_ratio=False, backend='pillow', interpolation='bilinear')`` (and
    of the official ``Resize((S, S))``): the official loader's decode
    (TorchCodec for JPEGs where installed, PIL's pixels; else PIL), then
    (:func:`decode_resize`) torchvision's uint8 resize kernel (within one
    grey level) or PIL's own resize (bit-identical); ``draft=True`` adds
    JPEG DCT scaling.

    Args:
        scale (tuple[int, int]): output ``(w, h)``, as mmcv's ``Resize``.
        draft (bool): decode JPEGs at a reduced DCT scale when the output
            is at most half the image.
        resize_backend (str): ``'torchvision'`` (default; within one grey
            level of PIL) or ``'pillow'`` (PIL's resize: bit-identical,
            several times slower; docs/benchmarks.md section 7).
        decode_backend (str): ``'auto'`` (default: TorchCodec for JPEGs
            where it is installed and loads, else PIL), ``'pillow'`` or
            ``'torchcodec'`` (required); the same pixels either way
            (:mod:`mmcoop.datasets.transforms.jpeg`). With
            ``resize_backend='pillow'`` PIL decodes.
        ignore_empty (bool): return None for a missing or undecodable file
            (the dataset then draws another sample, training only), as
            ``LoadImageFromFileChecked``; else an ``OSError`` naming the
            file and the fix. A file backend failing otherwise (a wrong
            ``backend_args``) raises whatever this flag.
        backend_args (dict, optional): mmengine file backend arguments
            (None: local files), checked when built.
    """

    #: arguments that do not change the pixels (every decoder gives the
    #: official loader's), left out of the feature-cache key
    PIXEL_NEUTRAL = ('decode_backend', )
    #: the version of the RGB rule it decodes by (feature-cache key)
    PIXEL_VERSION = RULE_VERSION

    def __init__(self, scale: Tuple[int, int], draft: bool = False,
                 resize_backend: str = 'torchvision',
                 decode_backend: str = 'auto',
                 ignore_empty: bool = False,
                 backend_args: Optional[dict] = None):
        for name, value, choices in (
                ('resize_backend', resize_backend, RESIZE_BACKENDS),
                ('decode_backend', decode_backend, DECODE_BACKENDS)):
            if value not in choices:
                raise ValueError(
                    f'LoadImageTensor: {name} must be one of {choices}, got '
                    f'{value!r}.')
        if decode_backend == 'torchcodec':
            torchcodec_or_error('LoadImageTensor')
        self.scale = check_scale('LoadImageTensor', scale)
        self.draft = check_flag('LoadImageTensor', 'draft', draft)
        self.resize_backend = resize_backend
        self.decode_backend = decode_backend
        self.ignore_empty = check_flag('LoadImageTensor', 'ignore_empty',
                                       ignore_empty)
        self.backend_args = check_backend_args('LoadImageTensor',
                                               backend_args)

    def transform(self, results: dict) -> Optional[dict]:
        path = _img_path('LoadImageTensor', results)
        try:
            data = read_image_bytes('LoadImageTensor', path, self.backend_args)
        except OSError:
            if self.ignore_empty:
                return None
            raise
        size = (self.scale[1], self.scale[0])
        try:
            rgb = decode_resize(data, size, self.draft, self.resize_backend,
                                self.decode_backend)
        except Exception as e:  # noqa: BLE001
            if self.ignore_empty:
                return None
            raise decode_error(path, data, e) from e
        results['img'] = _chw_bgr(rgb.permute(1, 2, 0).numpy())
        results['img_shape'] = size
        results['ori_shape'] = size
        return results

    def __repr__(self) -> str:
        # no decode_backend: it does not change the pixels (nor, so, the
        # feature-cache key, which reads this repr; see PIXEL_NEUTRAL)
        return (f'{self.__class__.__name__}(scale={self.scale}, '
                f'draft={self.draft}, resize_backend={self.resize_backend!r})')


@TRANSFORMS.register_module()
class LoadImageBytes(BaseTransform):
    """The loader-worker side of the device path
    (:class:`~mmcoop.models.DeviceAugmentPreprocessor`): read an image
    file, and draw its augmentation there: ``results['device_aug']`` holds
    the output size, and with ``augment=True`` the ``CutoutPIL`` centre and
    colour and the RandAugment draw, in the order and with the RNG of
    :class:`TensorCutout` + :class:`TensorRandAugment` (so a seeded sample
    gets the same draw on either path). Keep ``'device_aug'`` in
    ``PackInputs(meta_keys=...)``.

    ``decode='cpu'`` (the default, what ``data_path='device'`` writes):
    the image is decoded and resized here, as :class:`LoadImageTensor`
    does (:func:`decode_resize`: the official loader's pixels, then
    ``resize_backend``'s resize), into a ``(3, h, w)`` uint8 RGB tensor,
    and only Cutout + RandAugment run on the device: the CPU path's pixels
    exactly (the device's augmentation is the CPU's bit for bit, tested on
    CUDA).

    ``decode='device'`` (``data_path='device-decode'``): only the file's
    bytes (a 1-D uint8 tensor) go on, and the preprocessor decodes (nvJPEG
    on CUDA) and resizes them on the device. That frees the loader's cores
    but not the device's time, and the pixels differ: on an H200 the batch
    decode took about 1 ms per 640x480 image, and its pixels differed from
    libjpeg-turbo's (PIL's) by 1.9 grey levels on average, by more than one
    at half of them (docs/benchmarks.md section 5). The bytes lose their
    EXIF segments (:func:`~mmcoop.datasets.transforms.jpeg.without_exif`),
    so that no decoder rotates the image: the official loader does not. A
    file the device decoders do not take (not a JPEG, a CMYK JPEG, or one
    over PIL's pixel limit ``PIL.Image.MAX_IMAGE_PIXELS``, where PIL warns
    or refuses) is decoded here by PIL, as the official loader, into a
    ``(3, H, W)`` uint8 RGB tensor that the preprocessor resizes and
    augments with the rest.

    Args:
        scale (tuple[int, int]): output ``(w, h)``.
        augment (bool): draw Cutout + RandAugment (training).
        cutout_factor (float): as :class:`TensorCutout`.
        decode (str): where the image is decoded and resized: ``'cpu'``
            (default: here, in the loader worker) or ``'device'`` (by the
            preprocessor, on the model's device).
        resize_backend (str): with ``decode='cpu'``, as
            :class:`LoadImageTensor`'s (``'pillow'``: PIL's resize,
            bit-identical to ``Resize(backend='pillow')``); the device
            resizes with torchvision's kernel, so ``decode='device'``
            takes ``'torchvision'`` only.
        draft (bool): with ``decode='cpu'``, as :class:`LoadImageTensor`'s
            (JPEG DCT scaling); the device decodes whole JPEGs.
        backend_args (dict, optional): mmengine file backend arguments
            (None: local files), checked when built.
    """

    #: values of ``decode``: where the image is decoded and resized
    DECODE_ON = ('cpu', 'device')

    #: the version of the RGB rule it decodes by (feature-cache key)
    PIXEL_VERSION = RULE_VERSION

    def __init__(self, scale: Tuple[int, int], augment: bool = True,
                 cutout_factor: float = 0.5,
                 decode: str = 'cpu',
                 resize_backend: str = 'torchvision',
                 draft: bool = False,
                 backend_args: Optional[dict] = None):
        for name, value, choices in (
                ('decode', decode, self.DECODE_ON),
                ('resize_backend', resize_backend, RESIZE_BACKENDS)):
            if value not in choices:
                raise ValueError(
                    f'LoadImageBytes: {name} must be one of {choices}, got '
                    f'{value!r}.')
        self.draft = check_flag('LoadImageBytes', 'draft', draft)
        for name, value, default, why in (
                ('resize_backend', resize_backend, 'torchvision',
                 "resizes with torchvision's kernel"),
                ('draft', draft, False, 'decodes whole JPEGs')):
            if decode == 'device' and value != default:
                raise ValueError(
                    f"LoadImageBytes: {name}={value!r} needs decode='cpu': "
                    f"the device {why}. Fix: set decode='cpu' or "
                    f'{name}={default!r}.')
        self.decode = decode
        self.resize_backend = resize_backend
        self.scale = check_scale('LoadImageBytes', scale)
        self.augment = check_flag('LoadImageBytes', 'augment', augment)
        self.cutout_factor = check_cutout_factor('LoadImageBytes',
                                                 cutout_factor)
        self.backend_args = check_backend_args('LoadImageBytes',
                                               backend_args)

    def transform(self, results: dict) -> dict:
        path = _img_path('LoadImageBytes', results)
        data = read_image_bytes('LoadImageBytes', path, self.backend_args)
        w, h = self.scale
        header = parse_header(data) if self.decode == 'device' else None
        if self.decode == 'cpu':  # LoadImageTensor's pixels, RGB
            try:
                results['img'] = decode_resize(
                    data, (h, w), self.draft, self.resize_backend)
            except Exception as e:  # noqa: BLE001
                raise decode_error(path, data, e) from e
        elif header is not None and header.device_decodable:
            # no EXIF: the device decoders must not rotate (the official
            # loader does not)
            results['img'] = torch.frombuffer(
                bytearray(without_exif(data, header)), dtype=torch.uint8)
        else:  # PNG, CMYK, over the pixel limit: the official loader (PIL)
            try:
                results['img'] = decode_rgb(data, backend='pillow')
            except Exception as e:  # noqa: BLE001
                raise decode_error(path, data, e) from e
        aug = dict(size=(h, w))
        if self.augment:
            aug.update(
                cutout_centre=(int(np.random.randint(h)),
                               int(np.random.randint(w))),
                cutout_colour=tuple(
                    int(c) for c in np.random.randint(0, 256, size=3)),
                cutout_factor=self.cutout_factor,
                randaugment=draw_randaugment(np.random))
        results['device_aug'] = aug
        results['img_shape'] = (h, w)
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(scale={self.scale}, '
                f'augment={self.augment}, '
                f'cutout_factor={self.cutout_factor}, '
                f'decode={self.decode!r}, '
                f'resize_backend={self.resize_backend!r}, '
                f'draft={self.draft})')


@TRANSFORMS.register_module()
class TensorCutout(BaseTransform):
    """Official ``CutoutPIL(cutout_factor)`` on a ``(3, H, W)`` BGR tensor
    (:func:`cutout`): the centre is a uniformly random pixel, the colour
    uniformly random, always applied; NumPy's global RNG.

    Args:
        cutout_factor (float): side as a fraction of the image side.
    """

    def __init__(self, cutout_factor: float = 0.5):
        self.cutout_factor = check_cutout_factor('TensorCutout',
                                                 cutout_factor)

    def transform(self, results: dict) -> dict:
        img = require_tensor('TensorCutout', results)
        h, w = img.shape[-2:]
        centre = (int(np.random.randint(h)), int(np.random.randint(w)))
        colour = tuple(int(c) for c in np.random.randint(0, 256, size=3))
        # paint the BGR image with the reversed colour: no channel flips
        results['img'] = cutout(img[None], [centre], [colour[::-1]],
                                self.cutout_factor)[0]
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(cutout_factor={self.cutout_factor})'


@TRANSFORMS.register_module()
class TensorRandAugment(BaseTransform):
    """Official ``RandAugment()`` (pip randaugment 1.0.2) on a ``(3, H,
    W)`` BGR tensor: :func:`draw_randaugment`, then each applied op. On the
    CPU the ops give the official code's pixels exactly, on the tensor
    (:data:`_CPU_TENSOR_OPS`: PIL's arithmetic, faster than PIL); on
    another device as batched tensor ops (:func:`apply_op`). NumPy's
    global RNG.
    The draw is stored in ``results['randaugment']``."""

    def transform(self, results: dict) -> dict:
        bgr = require_tensor('TensorRandAugment', results)
        draws = draw_randaugment(np.random)
        results['randaugment'] = draws
        applied = [d for d in draws if d['applied']]
        if not applied:
            return results
        if bgr.device.type == 'cpu':
            img = bgr
            for d in applied:
                img = _CPU_TENSOR_OPS[d['op']](img, d['index'], d['sign'],
                                               d['centre'])
            results['img'] = img
            return results
        img = _as_rgb_batch(bgr)
        for d in applied:
            img = apply_op(img, d['op'], d['index'], d['sign'], d['centre'])
        results['img'] = img[0].flip(0)
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}()'

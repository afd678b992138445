# Copyright (c) mmcoop contributors. All rights reserved.
"""JPEG files: the header facts the image paths need, and the decoders.

The official loader is ``Image.open(path).convert('RGB')``: PIL's
libjpeg-turbo decode, **no** EXIF rotation. TorchCodec's ``decode_jpeg``
(``torchcodec>=0.16``, the successor of ``torchvision.io.decode_jpeg``,
which torchvision 0.29 deprecates) is faster on the CPU (libjpeg-turbo
too) and decodes batches on CUDA (nvJPEG), but it applies the EXIF
orientation. So the bytes given to a decoder here lose their EXIF
segments first (:func:`without_exif`; the file is never touched), and
then TorchCodec gives PIL's pixels: tested on baseline and progressive,
4:2:0 / 4:2:2 / 4:4:4, greyscale, odd sizes and EXIF-oriented files
(tests/test_datasets/test_jpeg.py).

PIL refuses an image of more than ``2 * PIL.Image.MAX_IMAGE_PIXELS``
pixels (a decompression bomb, or a corrupt header claiming a huge size)
and warns above ``MAX_IMAGE_PIXELS``; TorchCodec has no such limit (a
1.8 KB file whose header claims 32767 x 32767 decodes into 3 GB). So a
JPEG above the limit is never given to TorchCodec or nvJPEG: it is not
:attr:`JpegHeader.device_decodable` (the one place that reads the limit,
at call time), and PIL decodes it, with its own warning or error.

- :func:`parse_header`: a JPEG's size, colour components and EXIF
  segments, from its markers (no decoding);
- :func:`without_exif`: the bytes without their EXIF segments;
- :func:`open_rgb` / :func:`rgb_tensor`: the official loader (PIL) on a
  file's bytes, and its image as a tensor;
- :func:`torchcodec_decode_jpeg`: TorchCodec's decoder, or None where it
  is not installed or does not load (built for another torch);
- :func:`decode_jpeg_cpu`: one file's bytes -> ``(3, H, W)`` uint8 RGB
  with TorchCodec, or None where PIL must decode it (not a JPEG, CMYK,
  over PIL's pixel limit, TorchCodec missing, or a file it refuses: PIL
  then decides);
- :func:`decode_jpegs`: a batch on any device (the device path), with
  TorchCodec or else (missing, or failing) torchvision's deprecated
  decoder; PIL for a JPEG they must not take (over the pixel limit) or
  both refuse.
"""
import functools
import io
import warnings
from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
from PIL import Image, ImageOps

from mmcoop.datasets.transforms.rgb import to_rgb

__all__ = [
    'JpegHeader', 'DECODE_BACKENDS', 'PIXEL_LIMIT_FIX', 'parse_header',
    'without_exif', 'open_rgb', 'rgb_tensor', 'torchcodec_decode_jpeg',
    'torchcodec_or_error', 'decode_jpeg_cpu', 'decode_jpegs'
]

#: How ``LoadImageTensor`` decodes: ``'auto'`` (TorchCodec for JPEGs where
#: it is installed, else PIL), ``'pillow'`` (always PIL, the official
#: loader's decoder) or ``'torchcodec'`` (TorchCodec for JPEGs, required).
DECODE_BACKENDS = ('auto', 'pillow', 'torchcodec')

#: The fix for PIL's ``DecompressionBombError`` (an image over twice
#: ``PIL.Image.MAX_IMAGE_PIXELS``), for the errors that report it.
PIXEL_LIMIT_FIX = (
    'A corrupt header may claim this size: re-download the file or remove '
    'it from the annotations; if the image really is this large, raise '
    'PIL.Image.MAX_IMAGE_PIXELS (None: no limit) in the processes that '
    'decode: set before the data loader workers start, with the configs\' '
    "mp_start_method='fork'.")

_SOI = b'\xff\xd8\xff'
#: start-of-frame markers (baseline, extended, progressive, lossless, ...);
#: not DHT (C4), JPG (C8) or DAC (CC)
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset([0x01, *range(0xD0, 0xD9)])  # TEM, RSTn, SOI
_SOS, _APP1 = 0xDA, 0xE1
_EXIF_ID = b'Exif\x00\x00'


class JpegHeader(NamedTuple):
    """What :func:`parse_header` reads: ``size = (h, w)``, the number of
    colour ``components`` (1 grey, 3 YCbCr/RGB, 4 CMYK/YCCK), the sample
    ``precision`` (8 or 12 bits) and the ``(start, end)`` byte spans of the
    EXIF (APP1 ``Exif``) segments."""
    size: Tuple[int, int]
    components: int
    precision: int
    exif: Tuple[Tuple[int, int], ...]

    @property
    def within_pixel_limit(self) -> bool:
        """Whether PIL opens it without a word: at most
        ``PIL.Image.MAX_IMAGE_PIXELS`` pixels (read now: users raise it, or
        set None for no limit), counted as PIL counts them. Above it PIL
        warns, and above twice it refuses (``DecompressionBombError``)."""
        limit = Image.MAX_IMAGE_PIXELS
        h, w = self.size
        return limit is None or max(1, h) * max(1, w) <= limit

    @property
    def device_decodable(self) -> bool:
        """Whether TorchCodec / nvJPEG take it as PIL does: 8-bit grey or
        colour (not CMYK, whose conversion is PIL's own), within PIL's
        pixel limit (:attr:`within_pixel_limit`; above it PIL must decide:
        its warning, or its error for a decompression bomb)."""
        return (self.precision == 8 and self.components in (1, 3)
                and self.within_pixel_limit)


def parse_header(data: bytes) -> Optional[JpegHeader]:
    """The header of a JPEG file's bytes (or a ``memoryview`` of them),
    read from its markers up to the first scan; None for bytes that are not
    a JPEG or whose header is malformed (a decoder then reports it)."""
    if data[:3] != _SOI:
        return None
    pos, n = 2, len(data)
    exif, frame = [], None
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        end = pos + 2 + int.from_bytes(data[pos + 2:pos + 4], 'big')
        if end > n:
            return None
        if marker == _APP1 and data[pos + 4:pos + 10] == _EXIF_ID:
            exif.append((pos, end))
        elif marker in _SOF and end - pos >= 12:
            frame = (int.from_bytes(data[pos + 5:pos + 7], 'big'),
                     int.from_bytes(data[pos + 7:pos + 9], 'big'),
                     data[pos + 9], data[pos + 4])
        elif marker == _SOS:
            break
        pos = end
    if frame is None:
        return None
    return JpegHeader(frame[:2], frame[2], frame[3], tuple(exif))


def without_exif(data: bytes, header: Optional[JpegHeader] = None) -> bytes:
    """``data`` without its EXIF segments (the same object where it has
    none), so that no decoder applies an EXIF orientation: the official
    loader does not. ``header``: :func:`parse_header`'s, if already read."""
    header = header or parse_header(data)
    if header is None or not header.exif:
        return data
    pieces, pos = [], 0
    for start, end in header.exif:
        pieces.append(data[pos:start])
        pos = end
    pieces.append(data[pos:])
    return b''.join(pieces)


def open_rgb(data: bytes,
             draft_size: Optional[Tuple[int, int]] = None,
             exif_transpose: bool = False) -> Image.Image:
    """The official loader (``Image.open(...).convert('RGB')``, PIL's
    decoder, its pixel limit, no EXIF rotation) on an image file's bytes,
    made RGB by :func:`~mmcoop.datasets.transforms.rgb.to_rgb` (the rule
    of every path); ``draft_size = (h, w)`` decodes a JPEG at the smallest
    DCT scale that still covers it; ``exif_transpose=True`` applies the
    EXIF orientation first (mmcv's ``color_type='color'``)."""
    img = Image.open(io.BytesIO(data))
    if draft_size is not None and img.format == 'JPEG':
        img.draft('RGB', (draft_size[1], draft_size[0]))
    if exif_transpose:
        img = ImageOps.exif_transpose(img)
    return to_rgb(img)


def rgb_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> ``(3, H, W)`` uint8 tensor (channels-last memory,
    one copy out of PIL)."""
    w, h = img.size
    return torch.frombuffer(
        bytearray(img.tobytes()), dtype=torch.uint8).view(h, w,
                                                          3).permute(2, 0, 1)


@functools.lru_cache(maxsize=None)
def torchcodec_decode_jpeg():
    """``torchcodec.decoders.decode_jpeg``, or None where TorchCodec is not
    installed or does not load (a wheel built for another torch)."""
    try:
        from torchcodec.decoders import decode_jpeg
    except Exception:  # noqa: BLE001 (ImportError, OSError, RuntimeError)
        return None
    return decode_jpeg


def torchcodec_or_error(owner: str):
    """:func:`torchcodec_decode_jpeg`, or an ``ImportError`` naming
    ``owner`` and the fix."""
    decode = torchcodec_decode_jpeg()
    if decode is None:
        raise ImportError(
            f"{owner}: decode_backend='torchcodec' needs TorchCodec (>= "
            '0.16, the release matching your torch), which is not '
            'installed or does not load. Fix: pip install torchcodec, or '
            "use decode_backend='auto' (PIL where TorchCodec is missing).")
    return decode


def _as_uint8_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def decode_jpeg_cpu(data: bytes, backend: str = 'auto',
                    owner: str = 'LoadImageTensor',
                    header: Optional[JpegHeader] = None
                    ) -> Optional[torch.Tensor]:
    """Decode a JPEG file's bytes with TorchCodec on the CPU into a ``(3,
    H, W)`` uint8 RGB tensor (channels-last memory), the official loader's
    pixels; None where PIL must decode: ``backend='pillow'``, not a JPEG,
    not :attr:`JpegHeader.device_decodable` (CMYK/YCCK: PIL's conversion;
    12-bit; over PIL's pixel limit: PIL warns or refuses), TorchCodec
    missing under ``'auto'``, or a file TorchCodec refuses (PIL then
    accepts it or raises its own error, as for the official loader)."""
    if backend == 'pillow':
        return None
    decode = (torchcodec_or_error(owner)
              if backend == 'torchcodec' else torchcodec_decode_jpeg())
    header = header or parse_header(data)
    if decode is None or header is None or not header.device_decodable:
        return None
    try:
        return decode(_as_uint8_tensor(without_exif(data, header)),
                      mode='RGB')
    except Exception:  # noqa: BLE001 (PIL decides: the official loader)
        return None


def _torchvision_decode_jpeg(inputs, mode='RGB', device='cpu'):
    """``torchvision.io.decode_jpeg`` (deprecated since torchvision 0.29;
    its warning is silenced here, where it is the fallback)."""
    from torchvision.io import ImageReadMode
    from torchvision.io import decode_jpeg as tv_decode_jpeg
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)
        return tv_decode_jpeg(
            inputs, mode=getattr(ImageReadMode, mode), device=device)


def _pil_decode(data: torch.Tensor, device: torch.device) -> torch.Tensor:
    """:func:`open_rgb` on a 1-D uint8 tensor of file bytes -> ``(3, H,
    W)`` uint8 RGB on ``device``; PIL's error as a ``RuntimeError`` (what
    :func:`decode_jpegs` raises), with the fix for a decompression bomb."""
    try:
        img = rgb_tensor(open_rgb(data.cpu().numpy().tobytes()))
    except Exception as e:  # noqa: BLE001 (PIL's error, reported)
        fix = (' ' + PIXEL_LIMIT_FIX
               if isinstance(e, Image.DecompressionBombError) else '')
        raise RuntimeError(f'PIL: {type(e).__name__}: {e}{fix}') from e
    return img.to(device)


def _decode_batch(inputs: List[torch.Tensor],
                  device: torch.device) -> List[torch.Tensor]:
    """TorchCodec, else (missing, or failing) torchvision, on a batch."""
    decoders = [d for d in (torchcodec_decode_jpeg(), _torchvision_decode_jpeg)
                if d is not None]
    for decode in decoders[:-1]:
        try:
            return decode(inputs, mode='RGB', device=device)
        except RuntimeError:
            pass
    return decoders[-1](inputs, mode='RGB', device=device)


def _decode_alone(data: torch.Tensor, device: torch.device) -> torch.Tensor:
    """One file with the device decoders (:func:`_decode_batch`), and PIL
    where they refuse it (:func:`_pil_decode`)."""
    try:
        return _decode_batch([data], device)[0]
    except torch.cuda.OutOfMemoryError:
        raise  # the device's state, not the file's: not PIL's to judge
    except RuntimeError:
        return _pil_decode(data, device)


def _decode_or_pil(inputs: List[torch.Tensor],
                   device: torch.device) -> List[torch.Tensor]:
    """The device decoders on a batch; where they refuse it, each file
    alone, and PIL (the official loader) decides on a file they refuse:
    its pixels, or its error as a ``RuntimeError``. A device out of memory
    (a ``RuntimeError`` too) is raised as it is: no file is refused."""
    try:
        return _decode_batch(inputs, device)
    except torch.cuda.OutOfMemoryError:
        raise
    except RuntimeError:
        if len(inputs) == 1:
            return [_pil_decode(inputs[0], device)]
        return [_decode_alone(data, device) for data in inputs]


def decode_jpegs(inputs: Sequence[torch.Tensor],
                 device: torch.device) -> List[torch.Tensor]:
    """Decode a batch of JPEG bytes (1-D uint8 CPU tensors, EXIF already
    removed by ``LoadImageBytes``) into ``(3, H, W)`` uint8 RGB tensors on
    ``device``: TorchCodec where it loads (on CUDA one nvJPEG call for the
    batch), else, or where it fails (e.g. a build without CUDA decoding),
    torchvision's ``decode_jpeg``. A JPEG that is not
    :attr:`JpegHeader.device_decodable` (over PIL's pixel limit, CMYK,
    12-bit), or that both device decoders refuse (e.g. one without its
    end-of-image marker, which PIL decodes), is decoded by PIL instead,
    with PIL's warning or error: the official loader decides, as on the
    CPU paths (:func:`decode_jpeg_cpu`). Raises a ``RuntimeError`` for a
    file PIL refuses too (PIL's error as one)."""
    inputs = list(inputs)
    out: List[Optional[torch.Tensor]] = [None] * len(inputs)
    batch = []
    for i, data in enumerate(inputs):
        header = parse_header(memoryview(data.cpu().numpy()))
        if header is not None and not header.device_decodable:
            out[i] = _pil_decode(data, device)
        else:  # a JPEG for the device decoders (or malformed: they report)
            batch.append(i)
    if batch:
        decoded = _decode_or_pil([inputs[i] for i in batch], device)
        for i, img in zip(batch, decoded):
            out[i] = img
    return out

# Copyright (c) mmcoop contributors. All rights reserved.
"""Reading image files with errors that name the file and the fix (the
loaders of every pipeline: :class:`LoadImageFromFileChecked` here,
``LoadImageTensor`` and ``LoadImageBytes`` in :mod:`.tensor_augment`)."""
import io
import warnings
from typing import Optional

import mmcv
import numpy as np
from mmcv.transforms import LoadImageFromFile
from mmengine import fileio
from PIL import Image

from mmcoop.datasets.transforms.jpeg import PIXEL_LIMIT_FIX, open_rgb
from mmcoop.datasets.transforms.rgb import RULE_VERSION, ImageModeError
from mmcoop.registry import TRANSFORMS
from mmcoop.utils.value_checks import check_flag

__all__ = ['LoadImageFromFileChecked', 'check_backend_args',
           'read_image_bytes', 'unreadable_image', 'decode_error',
           'decode_array', 'file_mode']


def check_backend_args(owner: str, backend_args) -> Optional[dict]:
    """``backend_args``: None (local files) or a dict of mmengine file
    backend arguments; anything else is refused naming ``owner``, the
    field and the fix (else every read would fail, blaming the path)."""
    if backend_args is not None and not isinstance(backend_args, dict):
        raise ValueError(
            f'{owner}: backend_args must be None or a dict of mmengine file '
            f'backend arguments, got {backend_args!r}. Fix: leave it out for '
            "local files, or e.g. backend_args=dict(backend='local').")
    return backend_args


def unreadable_image(path: str, error: OSError,
                     needed_for: str = '') -> OSError:
    """The error of an image file that cannot be read (``error``: not
    found, a directory, no permission, ...): it names the file and the
    fix; ``needed_for`` says what needed it (e.g. ``'to build the feature
    cache'``)."""
    why = f' needed {needed_for}' if needed_for else ''
    return OSError(f'Cannot read image file {path!r} ({type(error).__name__}: '
                   f'{error}){why}. Fix: check data_root / data_prefix and '
                   'that the file exists.')


def read_image_bytes(owner: str, path: str,
                     backend_args: Optional[dict]) -> bytes:
    """The bytes of an image file. A missing or unreadable file (an
    ``OSError``: not found, a directory, no permission, ...) is an
    ``OSError`` naming the file and the fix; any other failure of the file
    backend a ``RuntimeError`` naming ``backend_args`` (a configuration
    error, which ``ignore_empty`` must not hide)."""
    try:
        return fileio.get(path, backend_args=backend_args)
    except OSError as e:
        raise unreadable_image(path, e) from e
    except Exception as e:  # noqa: BLE001 (the backend's own error)
        raise RuntimeError(
            f'{owner}: the file backend of backend_args={backend_args!r} '
            f'failed to read {path!r} ({type(e).__name__}: {e}). Fix: check '
            'backend_args (the backend name and its arguments; leave it out '
            "for local files, or backend_args=dict(backend='local')).") from e


def decode_error(path: str, data: bytes, error: Exception) -> OSError:
    """The error of a file the official loader cannot decode: it names the
    file and the fix (for PIL's decompression-bomb refusal: the pixel
    limit, :data:`~mmcoop.datasets.transforms.jpeg.PIXEL_LIMIT_FIX`; for
    values beyond 8 bits, the fix of
    :class:`~mmcoop.datasets.transforms.rgb.ImageModeError`)."""
    if isinstance(error, ImageModeError):
        return OSError(f'Cannot use image file {path!r} ({len(data)} '
                       f'bytes): {error}')
    fix = (PIXEL_LIMIT_FIX
           if isinstance(error, Image.DecompressionBombError) else
           'The file is corrupt, truncated or not an image. Fix: re-download '
           'it, or remove it from the annotations.')
    return OSError(f'Cannot decode image file {path!r} ({len(data)} bytes; '
                   f'{type(error).__name__}: {error}). {fix}')


def _check_decoder(imdecode_backend, color_type) -> None:
    """Refuse a decoder or colour type mmcv does not have (or that is not
    installed) here, instead of on every image as a 'corrupt file'."""
    from mmcv.image import io
    usable = [
        b for b in io.supported_backends
        if not (b == 'turbojpeg' and io.TurboJPEG is None) and not (
            b == 'tifffile' and getattr(io, 'tifffile', None) is None)
    ]
    if imdecode_backend not in usable:
        raise ValueError(
            f'LoadImageFromFileChecked: imdecode_backend must be one of '
            f'{usable} (installed), got {imdecode_backend!r}. Fix: use '
            "'pillow' (the official loader's decoder).")
    if color_type not in _RGB_COLOR_TYPES:
        raise ValueError(
            f'LoadImageFromFileChecked: color_type must be one of '
            f'{list(_RGB_COLOR_TYPES)} (the models take 3-channel colour '
            f'images), got {color_type!r}. Fix: use '
            "'color_ignore_orientation' (the official loader: RGB, no EXIF "
            "rotation) or 'color' (EXIF rotation applied).")


#: the colour types whose pillow decode follows the RGB rule of every path
#: (:func:`~mmcoop.datasets.transforms.rgb.to_rgb`), with and without the
#: EXIF rotation
_RGB_COLOR_TYPES = ('color_ignore_orientation', 'color')


def file_mode(data: bytes) -> Optional[str]:
    """The PIL mode of an image file's bytes (its header only), or None
    for bytes PIL does not identify (or refuses as over its pixel
    limit)."""
    try:
        with warnings.catch_warnings():  # the decoder's to warn, not this
            warnings.simplefilter('ignore', Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                return img.mode
    except Exception:  # noqa: BLE001 (not PIL's to judge: the decoder's)
        return None


#: 8-bit modes whose decode every backend agrees on; the others (wider
#: modes, which OpenCV scales down to 8 bits; CMYK, whose OpenCV conversion
#: is a grey level off PIL's; ...) follow the RGB rule
_PLAIN_MODES = ('RGB', 'L')


def decode_array(data: bytes, backend: str, color_type: str) -> np.ndarray:
    """An image file's bytes -> ``(H, W, 3)`` BGR ``uint8`` array. PIL's
    colour decodes, and every colour decode of an image of another mode
    than RGB and grey (:func:`file_mode`; more than 8 bits: OpenCV would
    scale 16 bits down to 8, where every other path refuses values beyond
    0..255; CMYK: OpenCV's conversion is a grey level off PIL's), go through
    :func:`~mmcoop.datasets.transforms.jpeg.open_rgb`, the RGB rule of the
    tensor, device and inference paths (for ``LA`` mmcv's own pillow
    decoder would paint the transparent pixels a fixed colour, which no
    other path does); other backends and colour types through
    ``mmcv.imfrombytes``."""
    if color_type in _RGB_COLOR_TYPES and (
            backend == 'pillow'
            or file_mode(data) not in (None, *_PLAIN_MODES)):
        rgb = open_rgb(data, exif_transpose=color_type == 'color')
        return np.array(rgb)[..., ::-1]  # writable, as mmcv's decoder
    return mmcv.imfrombytes(data, flag=color_type, backend=backend)


#: The version of the decode of :class:`LoadImageFromFileChecked` with a
#: decoder other than pillow (``imdecode_backend='cv2'``, ``'turbojpeg'``,
#: ``'tifffile'``: mmcv's), recorded in the feature-cache key beside the RGB
#: rule's: raise it with any change that gives another pixel for some
#: file. 1 (never recorded): before; 2: images of every mode but RGB and
#: grey (CMYK JPEGs) decoded by the RGB rule, as the other loaders (they
#: were a grey level off).
CV2_DECODE_VERSION = 2


@TRANSFORMS.register_module()
class LoadImageFromFileChecked(LoadImageFromFile):
    """Load an image as a 3-channel BGR ``uint8`` array, with clear errors.

    Differences from mmcv's ``LoadImageFromFile``:

    - Defaults mirror the official loader ``Image.open(path).convert('RGB')``:
      ``imdecode_backend='pillow'`` and
      ``color_type='color_ignore_orientation'`` (no EXIF rotation, which
      the official code does not apply either; mmcv's default ``'color'``
      would rotate). Grayscale, palette, CMYK and images with alpha (RGBA,
      LA) become 3-channel by the rule of every mmcoop path
      (:func:`~mmcoop.datasets.transforms.rgb.to_rgb`: PIL's
      ``convert('RGB')``, alpha dropped; mmcv's decoder would put an LA
      image on a grey-brown background).
    - Every failure (missing file, unreadable/truncated/corrupt data, an
      empty decode) raises an ``OSError`` naming the file and a fix. mmcv's
      pillow path raises ``cannot identify image file <_io.BytesIO ...>``
      without the path. With ``ignore_empty=True`` failures return ``None``
      (the dataset then draws another sample, training only).
    - Results that already hold a decoded image (``img`` and no
      ``img_path``) pass through unchanged: mmpretrain's
      ``ImageClassificationInferencer`` decodes its inputs itself and
      removes only transforms named ``LoadImageFromFile`` from the config
      pipeline, so the configs' test pipelines run there as they are.

    The configs name it ``mmcoop.LoadImageFromFileChecked``: with the scope
    prefix it is found from any default scope (mmpretrain's inferencer
    builds the test pipeline in its own).

    Args:
        imdecode_backend (str): ``'pillow'`` (default) or ``'cv2'``...
        color_type (str): Defaults to ``'color_ignore_orientation'``.
        **kwargs: Other arguments of :class:`mmcv.transforms.
            LoadImageFromFile`.
    """

    @property
    def PIXEL_VERSION(self):  # noqa: N802 - the name the cache key reads
        """The version of the rules that make its pixels (feature-cache
        key): :data:`~mmcoop.datasets.transforms.rgb.RULE_VERSION`, and
        with a decoder other than pillow (``'cv2'``, ``'turbojpeg'``,
        ``'tifffile'``) also :data:`CV2_DECODE_VERSION`."""
        if self.imdecode_backend != 'pillow':
            return f'{RULE_VERSION}+cv2.{CV2_DECODE_VERSION}'
        return RULE_VERSION

    def __init__(self,
                 imdecode_backend: str = 'pillow',
                 color_type: str = 'color_ignore_orientation',
                 **kwargs):
        _check_decoder(imdecode_backend, color_type)
        check_backend_args('LoadImageFromFileChecked',
                           kwargs.get('backend_args'))
        for flag in ('to_float32', 'ignore_empty'):
            if flag in kwargs:
                check_flag('LoadImageFromFileChecked', flag, kwargs[flag])
        super().__init__(
            imdecode_backend=imdecode_backend, color_type=color_type, **kwargs)

    def transform(self, results: dict) -> Optional[dict]:
        if results.get('img_path') is None and 'img' in results:
            return results  # decoded by the caller (mmpretrain inferencer)
        filename = results['img_path']
        try:
            if self.file_client_args is not None:  # mmcv's deprecated way
                file_client = fileio.FileClient.infer_client(
                    self.file_client_args, filename)
                img_bytes = file_client.get(filename)
            else:
                img_bytes = read_image_bytes('LoadImageFromFileChecked',
                                             filename, self.backend_args)
        except OSError:
            if self.ignore_empty:
                return None
            raise
        try:
            img = decode_array(img_bytes, self.imdecode_backend,
                               self.color_type)
            if img is None or img.size == 0:
                raise ValueError('the decoder returned no pixels')
        except Exception as e:  # noqa: BLE001
            if self.ignore_empty:
                return None
            raise decode_error(filename, img_bytes, e) from e
        if self.to_float32:
            img = img.astype(np.float32)
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = img.shape[:2]
        return results

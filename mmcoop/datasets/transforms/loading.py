# Copyright (c) mmcoop contributors. All rights reserved.
from typing import Optional

import mmcv
import numpy as np
from mmcv.transforms import LoadImageFromFile
from mmengine import fileio

from mmcoop.registry import TRANSFORMS


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
    if color_type not in io.imread_flags:
        raise ValueError(
            f'LoadImageFromFileChecked: color_type must be one of '
            f'{list(io.imread_flags)}, got {color_type!r}. Fix: use '
            "'color_ignore_orientation' (the official loader: RGB, no EXIF "
            'rotation).')


@TRANSFORMS.register_module()
class LoadImageFromFileChecked(LoadImageFromFile):
    """Load an image as a 3-channel BGR ``uint8`` array, with clear errors.

    Differences from mmcv's ``LoadImageFromFile``:

    - Defaults mirror the official loader ``Image.open(path).convert('RGB')``:
      ``imdecode_backend='pillow'`` and
      ``color_type='color_ignore_orientation'`` (no EXIF rotation, which
      the official code does not apply either; mmcv's default ``'color'``
      would rotate). Grayscale, palette, CMYK and RGBA/PNG-with-alpha images
      become 3-channel (alpha dropped, as PIL's ``convert('RGB')``).
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

    def __init__(self,
                 imdecode_backend: str = 'pillow',
                 color_type: str = 'color_ignore_orientation',
                 **kwargs):
        _check_decoder(imdecode_backend, color_type)
        super().__init__(
            imdecode_backend=imdecode_backend, color_type=color_type, **kwargs)

    def transform(self, results: dict) -> Optional[dict]:
        if results.get('img_path') is None and 'img' in results:
            return results  # decoded by the caller (mmpretrain inferencer)
        filename = results['img_path']
        try:
            if self.file_client_args is not None:
                file_client = fileio.FileClient.infer_client(
                    self.file_client_args, filename)
                img_bytes = file_client.get(filename)
            else:
                img_bytes = fileio.get(
                    filename, backend_args=self.backend_args)
        except Exception as e:  # noqa: BLE001
            if self.ignore_empty:
                return None
            raise OSError(f'Cannot read image file {filename!r} '
                          f'({type(e).__name__}: {e}). Fix: check data_root / '
                          'data_prefix and that the file exists.') from e
        try:
            img = mmcv.imfrombytes(
                img_bytes, flag=self.color_type, backend=self.imdecode_backend)
            if img is None or img.size == 0:
                raise ValueError('the decoder returned no pixels')
        except Exception as e:  # noqa: BLE001
            if self.ignore_empty:
                return None
            raise OSError(
                f'Cannot decode image file {filename!r} ({len(img_bytes)} '
                f'bytes; {type(e).__name__}: {e}). The file is corrupt, '
                'truncated or not an image. Fix: re-download it, or remove '
                'it from the annotations.') from e
        if img.ndim == 2:  # 'grayscale' color_type
            pass
        elif img.shape[2] == 4:  # 'unchanged' with alpha
            img = np.ascontiguousarray(img[..., :3])
        if self.to_float32:
            img = img.astype(np.float32)
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = img.shape[:2]
        return results

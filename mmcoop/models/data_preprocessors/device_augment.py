# Copyright (c) mmcoop contributors. All rights reserved.
"""Decode, resize, augment and normalise the batch on the model's device."""
from typing import Optional, Sequence

import torch
from mmengine.model import BaseDataPreprocessor

from mmcoop.datasets.transforms.jpeg import decode_jpegs
from mmcoop.datasets.transforms.tensor_augment import resize_augment_batch
from mmcoop.registry import MODELS
from mmcoop.utils.value_checks import check_channel_stats, check_flag
from .clip_preprocessor import (CLIP_MEAN, CLIP_STD, channel_stats,
                                refuse_bad_targets, refuse_empty_batch)

__all__ = ['DeviceAugmentPreprocessor']


def _decode_error(inputs, samples, device, error: Exception) -> str:
    """The message of a failed batch decode: the files that fail alone
    (:func:`~mmcoop.datasets.transforms.jpeg.decode_jpegs` already gave PIL
    a file the device decoders refuse, so these are refused by PIL too)."""
    bad = []
    for data, sample in zip(inputs, samples):
        try:
            decode_jpegs([data], device)
        except RuntimeError as e:
            bad.append(f'{sample.get("img_path", "?")!r} ({e})')
    where = '; '.join(bad) or f'a file of the batch ({error})'
    return (f'DeviceAugmentPreprocessor cannot decode {where}. The file is '
            'corrupt or truncated: neither the device decoders nor PIL (the '
            'official loader) read it. Fix: re-download or re-encode it, or '
            'remove it from the annotations.')


@MODELS.register_module()
class DeviceAugmentPreprocessor(BaseDataPreprocessor):
    """The image data path on the device: the loader workers run
    :class:`~mmcoop.datasets.transforms.LoadImageBytes`, and here the
    batch is moved to the device, augmented with the official ``CutoutPIL``
    + ``RandAugment`` as batched tensor ops
    (:func:`~mmcoop.datasets.transforms.tensor_augment.augment_batch`, with
    the draws the workers made) and normalised with the CLIP mean/std.

    Where ``LoadImageBytes`` decoded and resized the images
    (``decode='cpu'``, ``data_path='device'``) the batch is the CPU tensor
    pipeline's, pixel for pixel: the augmentation on CUDA is the CPU's bit
    for bit (tests/test_performance/test_cuda.py). Where it passed the
    JPEG bytes on (``decode='device'``, ``data_path='device-decode'``), the
    batch is first decoded here
    (:func:`~mmcoop.datasets.transforms.jpeg.decode_jpegs`: TorchCodec's
    ``decode_jpeg``, one nvJPEG call per batch on CUDA, or torchvision's
    where TorchCodec is not installed; images ``LoadImageBytes`` decoded
    on the CPU, the files the device decoders do not take, are moved) and
    resized (antialiased bilinear). On a GPU that decode is nvJPEG's: its
    pixels differed from PIL's by about two grey levels on average (H200,
    docs/benchmarks.md section 5), and it cost the device about 1 ms per
    640x480 image.

    Which samples are augmented is the pipeline's choice, as on the CPU
    path: those whose ``LoadImageBytes`` drew an augmentation
    (``augment=True``, the train pipeline), whether or not the model is
    training; so a feature cache of a device-path config stores the
    augmented views, as with the CPU pipeline.

    Args:
        mean (Sequence[float]): RGB mean on the 0-255 scale (CLIP's).
        std (Sequence[float]): RGB std on the 0-255 scale (CLIP's).
        non_blocking (bool): asynchronous host-to-device copies.
    """

    #: The version of the pixels its augmentation gives, which the feature
    #: cache's key records (:func:`mmcoop.datasets.feature_cache.key.
    #: preprocessor_key`), so that a cache of augmented views made by an
    #: earlier version is rebuilt. Raise it with any change that gives
    #: another pixel for some draw. 1 (never recorded): Rotate recomputed
    #: PIL's coordinates, and under 0.2 % of a rotated image's pixels, on
    #: its border, differed from PIL's; 2: Rotate by PIL's own geometry,
    #: every op PIL's pixels.
    PIXEL_VERSION = 2

    def __init__(self,
                 mean: Sequence[float] = CLIP_MEAN,
                 std: Sequence[float] = CLIP_STD,
                 non_blocking: bool = True,
                 batch_augments: Optional[dict] = None):
        mean, std = channel_stats(mean), channel_stats(std)
        check_channel_stats('DeviceAugmentPreprocessor', mean, std)
        super().__init__(non_blocking=check_flag(
            'DeviceAugmentPreprocessor', 'non_blocking', non_blocking))
        if batch_augments:
            raise ValueError('DeviceAugmentPreprocessor: batch_augments are '
                             'not supported; remove train_cfg.augments.')
        for name, values in (('mean', mean), ('std', std)):
            self.register_buffer(
                name,
                torch.tensor(values, dtype=torch.float32).view(1, 3, 1, 1),
                False)

    def forward(self, data: dict, training: bool = False) -> dict:
        samples = data.get('data_samples')
        refuse_empty_batch('DeviceAugmentPreprocessor', data.get('inputs'))
        refuse_bad_targets('DeviceAugmentPreprocessor', samples)
        inputs = list(data['inputs'])
        lacking = [s for s in samples or () if 'device_aug' not in s]
        if not samples or lacking:
            path = lacking[0].get('img_path', '?') if lacking else '?'
            raise ValueError(
                'DeviceAugmentPreprocessor needs every pipeline it serves to '
                "load with LoadImageBytes and keep 'device_aug' in "
                f'PackInputs(meta_keys=...); the sample of {path!r} has no '
                "device_aug. Fix: set data_path='device' on the CPU "
                'pipelines (it writes both), or model.data_preprocessor='
                "dict(type='CLIPDataPreprocessor').")
        sizes = [tuple(s.device_aug['size']) for s in samples]
        if len(set(sizes)) > 1:
            odd = next(i for i, size in enumerate(sizes) if size != sizes[0])
            raise ValueError(
                'DeviceAugmentPreprocessor: the samples of one batch have '
                'other output sizes (h, w): '
                f"{samples[0].get('img_path', '?')!r} {sizes[0]}, "
                f"{samples[odd].get('img_path', '?')!r} {sizes[odd]}: "
                'the LoadImageBytes of their pipelines have other scales. '
                'Fix: give the pipelines of one dataloader (the datasets of '
                'a ConcatDataset) the same scale.')
        device = self.mean.device
        # JPEG bytes (1-D) are decoded here; images LoadImageBytes decoded
        # on the CPU (PNG, CMYK: PIL, as the official loader) are moved
        imgs = [self.cast_data(x) if x.dim() == 3 else None for x in inputs]
        encoded = [i for i, x in enumerate(inputs) if x.dim() == 1]
        if encoded:
            files = [inputs[i] for i in encoded]
            try:
                decoded = decode_jpegs(files, device)
            except torch.cuda.OutOfMemoryError:
                raise  # the device's, not a file's: no file to name
            except RuntimeError as e:
                raise OSError(_decode_error(
                    files, [samples[i] for i in encoded], device, e)) from e
            for i, img in zip(encoded, decoded):
                imgs[i] = img
        # the pipeline decides, as on the CPU path: the samples drawn by
        # LoadImageBytes(augment=True) are augmented whatever `training`
        batch = resize_augment_batch(imgs, [s.device_aug for s in samples])
        batch = (batch.float() - self.mean) / self.std
        samples = self.cast_data(samples)
        return dict(inputs=batch, data_samples=samples)

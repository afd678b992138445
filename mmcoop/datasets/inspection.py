# Copyright (c) mmcoop contributors. All rights reserved.
"""A config's samples as the model gets them (``tools/analysis/
browse_dataset.py``): the image after the pipeline, the labels the loss
sees and, for partial-label training sets, the complete labels."""
import copy
import os.path as osp

import numpy as np
from mmengine.registry import DefaultScope

PHASES = ('train', 'val', 'test')


def build_dataset_of(cfg, phase: str = 'train'):
    """Build ``cfg.<phase>_dataloader.dataset`` in the config's scope."""
    if phase not in PHASES:
        raise ValueError(f'phase must be one of {PHASES}, not {phase!r}.')
    loader = cfg.get(f'{phase}_dataloader')
    if not loader or 'dataset' not in loader:
        raise KeyError(f'The config has no `{phase}_dataloader.dataset`.')
    import mmcoop.datasets  # noqa: F401 (registers the dataset types)
    from mmcoop.registry import DATASETS
    with DefaultScope.overwrite_default_scope(
            cfg.get('default_scope', None) or 'mmcoop'):
        dataset = DATASETS.build(
            _no_new_mask_files(copy.deepcopy(loader['dataset'])))
    if hasattr(dataset, 'full_init'):
        dataset.full_init()
    return dataset


def _no_new_mask_files(cfg):
    """``cfg`` (a dataset config, wrappers at any depth) without the
    ``mask_file`` of a ``PartialLabelDataset`` whose file does not exist
    yet: the dataset draws the same mask (from its seed) without saving
    it. Looking at a config writes nothing: a mask file saved here would
    be what a later run with another seed loads (the file wins)."""
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(_no_new_mask_files(c) for c in cfg)
    if not isinstance(cfg, dict):
        return cfg
    kind = cfg.get('type')
    name = kind if isinstance(kind, str) else getattr(kind, '__name__', '')
    path = cfg.get('mask_file')
    if name.split('.')[-1] == 'PartialLabelDataset' and isinstance(
            path, str) and not osp.exists(osp.expanduser(path)):
        cfg = {k: v for k, v in cfg.items() if k != 'mask_file'}
    return {k: _no_new_mask_files(v) for k, v in cfg.items()}


def _device_path_view(data, aug: dict) -> np.ndarray:
    """The image ``DeviceAugmentPreprocessor`` makes of a
    ``LoadImageBytes`` sample (JPEG bytes, or an image it decoded itself,
    + its draw), made here on the CPU: ``HWC`` uint8 RGB."""
    from mmcoop.datasets.transforms.tensor_augment import (
        decode_rgb, resize_augment_batch)
    img = decode_rgb(data.numpy().tobytes()) if data.dim() == 1 else data
    rgb = resize_augment_batch([img], [aug])
    return rgb[0].permute(1, 2, 0).numpy()


def sample_view(dataset, idx: int) -> dict:
    """Sample ``idx`` after the pipeline.

    Returns:
        dict: ``image`` (``HWC`` uint8 RGB: the packed input, which mmcv
        loaders give in BGR, flipped; for ``LoadImageBytes`` samples the
        device path's image, made on the CPU), ``targets`` (``(C,)`` tri-state
        labels of the data sample: ``gt_score``, or the one-hot of
        ``gt_label``), ``complete`` (``(C,)`` labels before the partial
        mask, None if the dataset has no mask) and ``img_path``.
    """
    from mmcoop.engine.hooks.partial_label_mask_hook import \
        find_partial_label_datasets
    data = dataset[idx]
    inputs = data['inputs']
    sample = data['data_samples']
    if 'device_aug' in sample:  # RGB, or bytes: the device path's view
        image = _device_path_view(inputs, sample.device_aug)
    else:
        image = inputs.permute(1, 2, 0).numpy()
        if image.shape[2] == 3:
            image = image[..., ::-1]
    image = np.ascontiguousarray(image.clip(0, 255).astype(np.uint8))
    num_classes = len(dataset.metainfo['classes'])
    if 'gt_score' in sample:
        targets = sample.gt_score.numpy().astype(np.float32)
    else:
        targets = np.zeros(num_classes, np.float32)
        targets[sample.gt_label.numpy().astype(int)] = 1
    complete = None
    partial = next(iter(find_partial_label_datasets(dataset)), None)
    if partial is not None and partial is dataset:
        complete = partial.complete_targets[idx].astype(np.float32)
    return dict(
        image=image,
        targets=targets,
        complete=complete,
        img_path=sample.get('img_path', ''))

# Copyright (c) mmcoop contributors. All rights reserved.
"""``data_path = 'device'``: a config's image pipelines moved onto the
model's device, by one top-level key.

The shipped pipelines (``configs/_base_/datasets/pipelines/
official_recipe_448.py``) decode, resize and augment in the loader
workers (``data_path = 'cpu'``, the default). With ``data_path =
'device'`` (e.g. ``--cfg-options data_path=device``, for one run or a
whole sweep) :class:`~mmcoop.engine.MMCoopRunner` rewrites, before anything
is built:

- the train pipeline ``LoadImageTensor`` [+ ``TensorCutout`` +
  ``TensorRandAugment``] + ``PackInputs`` into ``LoadImageBytes(augment=
  ...)`` + ``PackInputs`` with ``'device_aug'`` among its meta keys (the
  workers read the file and make the same draws, with the same RNG);
- the test pipeline ``LoadImageFromFileChecked`` + ``Resize(keep_ratio=
  False, backend='pillow', interpolation='bilinear')`` + ``PackInputs`` into
  ``LoadImageBytes(augment=False)`` + ``PackInputs`` (the same size; the
  device resize is PIL's bilinear within about one grey level, where the
  CPU test pipeline is bit-identical);
- ``model.data_preprocessor`` ``CLIPDataPreprocessor`` into
  ``DeviceAugmentPreprocessor`` with the same mean and std: it decodes the
  batch on the device, resizes, augments the drawn samples and normalises.

Pipelines already on the device path are kept. Anything this cannot
translate exactly (another transform, PIL's own resize, ``ignore_empty``,
a preprocessor with other options) is refused naming the pipeline, the
transform and the fix: write the device pipeline by hand
(docs/benchmarks.md section 7).
"""
import copy
import warnings
from typing import List, Optional

from mmcoop.utils.config_types import type_name

__all__ = ['DATA_PATHS', 'apply_data_path', 'device_pipeline']

#: values of the ``data_path`` config key
DATA_PATHS = ('cpu', 'device')

_FIX = ('Fix: remove data_path=device, or write the device pipeline by '
        'hand (LoadImageBytes + PackInputs with DeviceAugmentPreprocessor, '
        'docs/benchmarks.md section 7).')
# arguments of the CPU loaders the device path can honour (the rest are
# refused): the device decodes whole JPEGs, so draft / decode_backend do not
# apply
_TENSOR_LOADER_ARGS = {'scale', 'draft', 'decode_backend', 'backend_args',
                       'resize_backend', 'ignore_empty'}
_FILE_LOADER_ARGS = {'backend_args', 'imdecode_backend', 'color_type',
                     'ignore_empty', 'to_float32'}


def _refuse(where: str, what: str) -> ValueError:
    return ValueError(f'data_path=device: {where}: {what}. {_FIX}')


def _check_args(where, transform, allowed, values):
    """Refuse arguments outside ``allowed`` and ``values`` the device path
    cannot give (``{arg: (accepted values, why)}``)."""
    name = type_name(transform)
    for key, value in transform.items():
        if key == 'type':
            continue
        if key not in allowed:
            raise _refuse(where, f'{name}({key}={value!r}) has no device '
                          'path equivalent')
        if key in values and value not in values[key][0]:
            raise _refuse(where, f'{name}({key}={value!r}): {values[key][1]}')


def _pack(transform: dict) -> dict:
    pack = dict(transform)
    keys = list(pack.get('meta_keys', None) or ())
    if not keys:  # mmpretrain's PackInputs default, plus the device draws
        from mmpretrain.datasets.transforms import PackInputs
        keys = list(PackInputs.DEFAULT_META_KEYS)
    for key in ('img_path', 'device_aug'):
        if key not in keys:
            keys.append(key)
    pack['meta_keys'] = tuple(keys)
    return pack


def device_pipeline(pipeline: List[dict], where: str) -> List[dict]:
    """The device-path version of one of the configs' image pipelines
    (see the module docstring); ``where`` names it in errors."""
    names = [type_name(t) for t in pipeline]
    if names and names[0] == 'LoadImageBytes':
        return pipeline
    if not names or names[-1] != 'PackInputs':
        raise _refuse(where, f'the pipeline {names} does not end with '
                      'PackInputs')
    load, middle, pack = pipeline[0], names[1:-1], _pack(pipeline[-1])
    if names[0] == 'LoadImageTensor':
        _check_args(where, load, _TENSOR_LOADER_ARGS, dict(
            resize_backend=(('torchvision', ),
                            "PIL's own resize exists on the CPU path only"),
            ignore_empty=((False, ), 'the device path reads every file')))
        if middle == ['TensorCutout', 'TensorRandAugment']:
            cutout = pipeline[1]
            _check_args(where, cutout, {'cutout_factor'}, {})
            _check_args(where, pipeline[2], set(), {})
            extra = dict(augment=True, cutout_factor=cutout.get(
                'cutout_factor', 0.5))
        elif not middle:
            extra = dict(augment=False)
        else:
            raise _refuse(where, f'the transforms {middle} after '
                          'LoadImageTensor: the device path augments with '
                          'TensorCutout + TensorRandAugment, both or neither')
        args = {k: load[k] for k in ('scale', 'backend_args') if k in load}
    elif names[0] == 'LoadImageFromFileChecked' and middle == ['Resize']:
        _check_args(where, load, _FILE_LOADER_ARGS, dict(
            ignore_empty=((False, ), 'the device path reads every file'),
            color_type=(('color_ignore_orientation', ),
                        'the device path decodes colour, never rotated'),
            imdecode_backend=(('pillow', ),
                              "the official loader is PIL's (pillow)"),
            to_float32=((False, ), 'the device path gives uint8 images')))
        resize = pipeline[1]
        _check_args(where, resize, {'scale', 'keep_ratio', 'backend',
                                    'interpolation'}, dict(
            keep_ratio=((False, ), 'the device path squashes to scale'),
            backend=(('pillow', ), 'the device resize is PIL-style '
                     'antialiased bilinear'),
            interpolation=(('bilinear', ), 'the device resize is bilinear')))
        if 'scale' not in resize:
            raise _refuse(where, 'Resize has no scale')
        args = dict(scale=resize['scale'])
        if 'backend_args' in load:
            args['backend_args'] = load['backend_args']
        extra = dict(augment=False)
    else:
        raise _refuse(where, f'the pipeline {names} is not one of the '
                      "configs' pipelines (LoadImageTensor [+ TensorCutout + "
                      'TensorRandAugment] + PackInputs, or '
                      'LoadImageFromFileChecked + Resize + PackInputs)')
    return [dict(type='mmcoop.LoadImageBytes', **args, **extra), pack]


def _device_preprocessor(pre: Optional[dict], where: str) -> dict:
    pre = dict(pre or dict(type='CLIPDataPreprocessor'))
    name = type_name(pre)
    if name == 'DeviceAugmentPreprocessor':
        return pre
    if name != 'CLIPDataPreprocessor':
        raise _refuse(where, f'{name} is not CLIPDataPreprocessor, whose '
                      'mean and std DeviceAugmentPreprocessor takes over')
    _check_args(where, pre, {'mean', 'std', 'to_rgb', 'non_blocking'}, dict(
        to_rgb=((True, ), 'the device path decodes RGB')))
    out = dict(type='mmcoop.DeviceAugmentPreprocessor')
    out.update({k: pre[k] for k in ('mean', 'std', 'non_blocking')
                if k in pre})
    return out


def _datasets(loader):
    dataset = loader.get('dataset') if loader else None
    path = 'dataset'
    while isinstance(dataset, dict):
        yield path, dataset
        dataset, path = dataset.get('dataset'), path + '.dataset'


def apply_data_path(cfg):
    """Interpret the top-level ``data_path`` key of ``cfg`` (a
    ``Config``, changed in place and returned): ``'cpu'`` (default) keeps
    the pipelines, ``'device'`` moves decode, resize and augmentation onto
    the model's device (module docstring)."""
    value = cfg.get('data_path', 'cpu')
    if value not in DATA_PATHS:
        raise ValueError(
            f'data_path must be one of {DATA_PATHS}, got {value!r}. Fix: '
            "data_path='device' decodes and augments on the model's device; "
            "'cpu' (the default) in the loader workers.")
    if value == 'cpu':
        return cfg
    import torch
    if not torch.cuda.is_available():
        warnings.warn(
            "data_path='device' without a CUDA device: the decode, resize "
            'and augmentation run in the main process on the CPU, between '
            "the steps, where data_path='cpu' runs them in the loader "
            'workers (slower here: docs/benchmarks.md section 7).')
    done = {}
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(name, None)
        for path, dataset in _datasets(loader):
            pipeline = dataset.get('pipeline', None)
            if pipeline is None:
                continue
            if id(pipeline) not in done:  # test_dataloader = val_dataloader
                done[id(pipeline)] = device_pipeline(
                    [copy.deepcopy(dict(t)) for t in pipeline],
                    f'{name}.{path}.pipeline')
            dataset['pipeline'] = done[id(pipeline)]
    model = cfg.get('model', None)
    if model is not None:
        model['data_preprocessor'] = _device_preprocessor(
            model.get('data_preprocessor', None), 'model.data_preprocessor')
    if cfg.get('data_preprocessor', None) is not None:
        cfg['data_preprocessor'] = _device_preprocessor(
            cfg['data_preprocessor'], 'data_preprocessor')
    return cfg

# Copyright (c) mmcoop contributors. All rights reserved.
"""``data_path = 'device'``: the augmentation of a config's image
pipelines moved onto the model's device, by one top-level key.

The shipped pipelines (``configs/_base_/datasets/pipelines/
official_recipe_448.py``) decode, resize and augment in the loader
workers (``data_path = 'cpu'``, the default). With ``data_path =
'device'`` (e.g. ``--cfg-options data_path=device``, for one run or a
whole sweep) :class:`~mmcoop.engine.MMCoopRunner` rewrites, before anything
is built:

- the train pipeline ``LoadImageTensor`` [+ ``TensorCutout`` +
  ``TensorRandAugment``] + ``PackInputs`` into ``LoadImageBytes(augment=
  ..., decode='cpu')`` + ``PackInputs`` with ``'device_aug'`` among its
  meta keys (its ``resize_backend`` and ``draft`` carried over): the
  workers decode and resize as ``LoadImageTensor`` and make
  the same draws, with the same RNG, and the device augments: the CPU
  path's pixels exactly;
- the test pipeline ``LoadImageFromFileChecked`` + ``Resize(keep_ratio=
  False, backend='pillow', interpolation='bilinear')`` + ``PackInputs`` into
  ``LoadImageBytes(augment=False, decode='cpu', resize_backend='pillow')``
  + ``PackInputs`` (PIL's decode and resize: bit-identical);
- ``model.data_preprocessor`` ``CLIPDataPreprocessor`` into
  ``DeviceAugmentPreprocessor`` with the same mean and std: it moves the
  batch to the device, augments the drawn samples and normalises.

``data_path = 'device-decode'`` writes ``LoadImageBytes(decode='device')``
instead: the workers only read the files, and the device also decodes
(nvJPEG on CUDA, whose pixels differ from PIL's by about two grey levels)
and resizes (torchvision's kernel, within a grey level of PIL's), so the
train pipeline's ``resize_backend='pillow'`` is refused there, and
``draft`` does not apply (whole JPEGs are decoded).

The pipelines of dataset wrappers are found at any depth (``dataset=``,
``datasets=[...]`` as in ``ConcatDataset``). Pipelines already on the device
path are kept. Anything this cannot translate exactly (another transform, a
callable, ``ignore_empty``, a ``Resize`` whose backend, written or mmcv's
default ``'cv2'``, is not ``'pillow'``, a value ``LoadImageBytes`` would
refuse, a preprocessor with other options) is refused naming the pipeline,
the transform and the fix: write the device pipeline by hand
(docs/benchmarks.md section 7). Arguments left out are checked with the
transform's own default (its signature).
"""
import copy
import inspect
import warnings
from typing import Callable, Iterator, List, Optional, Tuple

from mmcoop.datasets.transforms.cutout import check_cutout_factor
from mmcoop.datasets.transforms.tensor_augment import check_scale
from mmcoop.registry import MODELS, TRANSFORMS
from mmcoop.utils.config_types import type_name

__all__ = [
    'DATA_PATHS', 'apply_data_path', 'check_device_path', 'device_pipeline',
    'restore_cpu_data_path'
]

#: values of the ``data_path`` config key
DATA_PATHS = ('cpu', 'device', 'device-decode')
#: where each device data path decodes and resizes (``LoadImageBytes``'s
#: ``decode``)
_DECODE = {'device': 'cpu', 'device-decode': 'device'}

_FIX = ('Fix: remove data_path=device, or write the device pipeline by '
        'hand (LoadImageBytes + PackInputs with DeviceAugmentPreprocessor, '
        'docs/benchmarks.md section 7).')
# arguments of the CPU loaders the device path can honour (the rest are
# refused): decode_backend does not change the pixels; draft is carried where
# the workers decode (data_path='device'), and does not apply where the
# device decodes whole JPEGs ('device-decode')
_TENSOR_LOADER_ARGS = {'scale', 'draft', 'decode_backend', 'backend_args',
                       'resize_backend', 'ignore_empty'}
_FILE_LOADER_ARGS = {'backend_args', 'imdecode_backend', 'color_type',
                     'ignore_empty', 'to_float32'}


def _refuse(where: str, what: str) -> ValueError:
    """The refusal of ``where`` (a config path): ``what`` (which may hold a
    fix of its own), then the general fix."""
    fix = _FIX.replace('Fix:', 'Or:', 1) if 'Fix:' in what else _FIX
    return ValueError(f"data_path=device: {where}: {what.rstrip('.')}. {fix}")


def _defaults(cls) -> dict:
    """The keyword defaults of ``cls(...)``, from the signature of its
    ``__init__`` and, past a ``**kwargs``, of its bases' (the first one
    found wins), so that a default is read where it is written."""
    out = {}
    for klass in cls.__mro__:
        if '__init__' not in vars(klass):
            continue
        params = inspect.signature(vars(klass)['__init__']).parameters
        for p in params.values():
            if p.default is not p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD,
                                                       p.KEYWORD_ONLY):
                out.setdefault(p.name, p.default)
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            break
    return out


def _filled(where: str, cfg: dict, registry=TRANSFORMS) -> dict:
    """``cfg`` with the arguments it leaves out set to the defaults of the
    class its ``type`` names in ``registry`` (what the CPU path builds)."""
    cls = cfg['type'] if isinstance(cfg['type'], type) else registry.get(
        cfg['type'])
    if cls is None:
        raise _refuse(where, f'{cfg["type"]!r} is not a registered '
                      f'{registry.name}, so its defaults are unknown')
    return {**_defaults(cls), **cfg}


def _check_args(where, transform, allowed, values, registry=TRANSFORMS):
    """Refuse arguments outside ``allowed`` and values, written or the
    class's default, that the device path cannot give (``values``: ``{arg:
    (accepted values, why)}``); the arguments with the defaults filled
    in."""
    name = type_name(transform)
    for key, value in transform.items():
        if key != 'type' and key not in allowed:
            raise _refuse(where, f'{name}({key}={value!r}) has no device '
                          'path equivalent')
    filled = _filled(where, transform, registry)
    for key, (accepted, why) in values.items():
        if key in filled and filled[key] not in accepted:
            default = '' if key in transform else ', its default'
            raise _refuse(where, f'{name}({key}={filled[key]!r}{default}): '
                          f'{why}')
    return filled


def _copied(where: str, owner: str, check: Callable, value):
    """``value`` of the user's transform ``owner``, checked as
    ``LoadImageBytes`` checks it when it is copied there
    (``check(owner, value)``), so that a refusal names ``owner`` and the
    pipeline, not a transform the user never wrote."""
    try:
        check(owner, value)
    except ValueError as e:
        raise _refuse(where, str(e)) from e
    return value


def _config_transforms(pipeline, where: str) -> List[dict]:
    """Deep copies of ``pipeline``'s transforms as dicts; a callable or a
    built transform (legal in mmengine's ``Compose``) is refused: only
    config dicts can be translated."""
    out = []
    for i, transform in enumerate(pipeline):
        if not isinstance(transform, dict) or 'type' not in transform:
            raise _refuse(where, f'transform [{i}] {transform!r} is not a '
                          'config dict with a type, which the device path '
                          'cannot translate')
        out.append(copy.deepcopy(dict(transform)))
    return out


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


def device_pipeline(pipeline: List[dict], where: str,
                    decode: str = 'cpu') -> List[dict]:
    """The device-path version of one of the configs' image pipelines
    (see the module docstring); ``where`` names it in errors; ``decode``
    is ``LoadImageBytes``'s (``'cpu'``: decoded and resized in the loader
    workers, only the augmentation on the device; ``'device'``: all of
    it on the device)."""
    resize_backends = ('torchvision', 'pillow') if decode == 'cpu' else (
        'torchvision', )
    if pipeline and type_name(pipeline[0]) == 'LoadImageBytes':
        have = _filled(where, pipeline[0])['decode']  # its default if left out
        if have != decode:  # e.g. the dump of a run of the other one
            path_of = {v: k for k, v in _DECODE.items()}
            raise _refuse(where, f'LoadImageBytes(decode={have!r}) is the '
                          f'pipeline data_path={path_of.get(have)!r} writes, '
                          f'not data_path={path_of[decode]!r} (a pipeline '
                          'already on the device path is kept as it is). '
                          f'Fix: set data_path={path_of.get(have)!r}, or '
                          'start from the CPU config')
        return pipeline
    pipeline = _config_transforms(pipeline, where)
    names = [type_name(t) for t in pipeline]
    if not names or names[-1] != 'PackInputs':
        raise _refuse(where, f'the pipeline {names} does not end with '
                      'PackInputs')
    load, middle, pack = pipeline[0], names[1:-1], _pack(pipeline[-1])
    if names[0] == 'LoadImageTensor':
        filled = _check_args(where, load, _TENSOR_LOADER_ARGS, dict(
            resize_backend=(resize_backends,
                            "PIL's own resize runs in the loader workers "
                            "only: use data_path='device'"),
            ignore_empty=((False, ), 'the device path reads every file')))
        scale = _copied(where, names[0], check_scale, filled.get('scale'))
        if middle == ['TensorCutout', 'TensorRandAugment']:
            cutout = _check_args(where, pipeline[1], {'cutout_factor'}, {})
            _check_args(where, pipeline[2], set(), {})
            extra = dict(augment=True, cutout_factor=_copied(
                where, names[1], check_cutout_factor,
                cutout['cutout_factor']))
        elif not middle:
            extra = dict(augment=False)
        else:
            raise _refuse(where, f'the transforms {middle} after '
                          'LoadImageTensor: the device path augments with '
                          'TensorCutout + TensorRandAugment, both or neither')
        args = dict(scale=scale, resize_backend=filled['resize_backend'])
        if decode == 'cpu' and filled.get('draft'):  # the device: whole
            args['draft'] = True
    elif names[0] == 'LoadImageFromFileChecked' and middle == ['Resize']:
        _check_args(where, load, _FILE_LOADER_ARGS, dict(
            ignore_empty=((False, ), 'the device path reads every file'),
            color_type=(('color_ignore_orientation', ),
                        'the device path decodes colour, never rotated'),
            imdecode_backend=(('pillow', ),
                              "the official loader is PIL's (pillow)"),
            to_float32=((False, ), 'the device path gives uint8 images')))
        resize = _check_args(where, pipeline[1], {
            'scale', 'keep_ratio', 'backend', 'interpolation'}, dict(
            keep_ratio=((False, ), 'the device path squashes to scale'),
            backend=(('pillow', ), 'the device resize is PIL-style '
                     "antialiased bilinear: set backend='pillow', "
                     "interpolation='bilinear' (the official resize) or "
                     'keep data_path=cpu'),
            interpolation=(('bilinear', ), 'the device resize is bilinear: '
                           "set interpolation='bilinear'")))
        # PIL's resize where the workers resize (bit-identical), else
        # the device's torchvision kernel (within a grey level)
        args = dict(scale=_copied(where, names[1], check_scale,
                                  resize['scale']),
                    resize_backend='pillow' if decode == 'cpu' else
                    'torchvision')
        extra = dict(augment=False)
    else:
        raise _refuse(where, f'the pipeline {names} is not one of the '
                      "configs' pipelines (LoadImageTensor [+ TensorCutout + "
                      'TensorRandAugment] + PackInputs, or '
                      'LoadImageFromFileChecked + Resize + PackInputs)')
    if 'backend_args' in load:
        args['backend_args'] = load['backend_args']
    return [dict(type='mmcoop.LoadImageBytes', decode=decode, **args,
                 **extra), pack]


def _device_preprocessor(pre: Optional[dict], where: str) -> dict:
    pre = dict(pre or dict(type='CLIPDataPreprocessor'))
    name = type_name(pre)
    if name in ('DeviceAugmentPreprocessor', 'FeatureDataPreprocessor'):
        # the device path already, or a feature cache's model, which reads
        # cached features: its datasets hold the image preprocessor
        return pre
    if name != 'CLIPDataPreprocessor':
        raise _refuse(where, f'{name} is not CLIPDataPreprocessor, whose '
                      'mean and std DeviceAugmentPreprocessor takes over')
    _check_args(where, pre, {'mean', 'std', 'to_rgb', 'non_blocking'}, dict(
        to_rgb=((True, ), 'the device path decodes RGB')), registry=MODELS)
    out = dict(type='mmcoop.DeviceAugmentPreprocessor')
    out.update({k: pre[k] for k in ('mean', 'std', 'non_blocking')
                if k in pre})
    return out


def _datasets(dataset, path: str) -> Iterator[Tuple[str, dict]]:
    """``(config path, dataset config)`` of ``dataset`` and of every
    dataset it wraps, at any depth: ``dataset=`` (``RepeatDataset``,
    ``PartialLabelDataset``, ...) and ``datasets=[...]``
    (``ConcatDataset``)."""
    if not isinstance(dataset, dict):
        return
    yield path, dataset
    yield from _datasets(dataset.get('dataset'), f'{path}.dataset')
    inner = dataset.get('datasets')
    for i, d in enumerate(inner if isinstance(inner, (list, tuple)) else ()):
        yield from _datasets(d, f'{path}.datasets[{i}]')


def _held_preprocessor(dataset: dict) -> Optional[dict]:
    """The image preprocessor config a dataset config holds for the
    pipelines it wraps (a feature cache's ``CachedFeatureDataset``: its
    ``data_preprocessor``, by default ``CLIPDataPreprocessor``, as the
    class defaults it), or None when it holds none (the model's serves
    them)."""
    if 'data_preprocessor' not in dataset and type_name(
            dataset) != 'CachedFeatureDataset':
        return None
    return dataset.get('data_preprocessor', None) or dict(
        type='CLIPDataPreprocessor')


def _served_pipelines(dataset, path: str, preprocessor,
                      where: str) -> Iterator[Tuple[str, list, dict, str]]:
    """``(config path, pipeline, preprocessor config, its config path)``
    of every pipeline of ``dataset`` and of the datasets it wraps
    (:func:`_datasets`), with the preprocessor its images reach:
    ``preprocessor`` (at ``where``), or the one an enclosing dataset holds
    (:func:`_held_preprocessor`)."""
    if not isinstance(dataset, dict):
        return
    held = _held_preprocessor(dataset)
    if held is not None:
        preprocessor, where = held, f'{path}.data_preprocessor'
    pipeline = dataset.get('pipeline', None)
    if isinstance(pipeline, (list, tuple)) and pipeline:
        yield f'{path}.pipeline', pipeline, preprocessor, where
    yield from _served_pipelines(dataset.get('dataset'), f'{path}.dataset',
                                 preprocessor, where)
    inner = dataset.get('datasets')
    for i, d in enumerate(inner if isinstance(inner, (list, tuple)) else ()):
        yield from _served_pipelines(d, f'{path}.datasets[{i}]',
                                     preprocessor, where)


def _model_preprocessor(cfg) -> Tuple[Optional[dict], str]:
    """The data preprocessor (a config, or the module of a built model)
    the model of ``cfg`` has, and its config path:
    ``model.data_preprocessor``, else the top-level ``data_preprocessor``
    that MMEngine (and ``init_model``) give a model without its own;
    ``(None, 'model.data_preprocessor')`` for neither."""
    model = cfg.get('model', None)
    # a config dict, or a built model (MMEngine's Runner takes either)
    own = model.get('data_preprocessor', None) if isinstance(
        model, dict) else getattr(model, 'data_preprocessor', None)
    if own is None and cfg.get('data_preprocessor', None) is not None:
        return cfg['data_preprocessor'], 'data_preprocessor'
    return own, 'model.data_preprocessor'


def check_device_path(cfg) -> None:
    """Refuse a config whose image pipelines and data preprocessor belong
    to two data paths (checked for every ``data_path``, after its
    rewrite: a pipeline written by hand is as the user wrote it), naming
    the pipeline and the fix:

    * a pipeline that loads with ``LoadImageBytes`` needs
      ``DeviceAugmentPreprocessor``: any other preprocessor would take its
      RGB images for BGR (``CLIPDataPreprocessor`` swaps the channels)
      and never augment them, without a word (or fail on its file
      bytes), and a ``PackInputs`` that keeps ``'device_aug'`` (the draws
      and output size the device reads);
    * ``DeviceAugmentPreprocessor`` needs every pipeline it serves to load
      with ``LoadImageBytes`` (it stopped at the first batch before).
    """
    pre, where = _model_preprocessor(cfg)
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(name, None)
        if not isinstance(loader, dict):
            continue
        for path, pipeline, served, owner in _served_pipelines(
                loader.get('dataset'), f'{name}.dataset', pre, where):
            device = type_name(pipeline[0]) == 'LoadImageBytes'
            pre_name = type(served).__name__ if served is not None and \
                not isinstance(served, dict) else type_name(served) or (
                    "none (the model's default, ClsDataPreprocessor)")
            if device and pre_name != 'DeviceAugmentPreprocessor':
                bgr = 'take the RGB images for BGR and ' if \
                    pre_name == 'CLIPDataPreprocessor' else ''
                raise ValueError(
                    f'{path} loads with LoadImageBytes (the device data '
                    f'path: RGB images, or file bytes, whose augmentation '
                    f'the data preprocessor applies), but {owner} is '
                    f'{pre_name}, which would {bgr}never augment them. '
                    f"Fix: set {owner}=dict(type='DeviceAugment"
                    "Preprocessor'), or load with the CPU pipeline "
                    '(LoadImageTensor / LoadImageFromFileChecked) and set '
                    "data_path='device' to move it to the device "
                    '(docs/benchmarks.md section 7).')
            if not device and pre_name == 'DeviceAugmentPreprocessor':
                loader_name = type_name(pipeline[0]) or repr(pipeline[0])
                raise ValueError(
                    f'{path} loads with {loader_name}, but {owner} is '
                    'DeviceAugmentPreprocessor, which '
                    'takes the images and draws of LoadImageBytes only. '
                    "Fix: keep the CPU pipeline and set data_path='device' "
                    f'(it writes both), or set {owner}='
                    "dict(type='CLIPDataPreprocessor') for this pipeline.")
            packs = [t for t in pipeline if type_name(t) == 'PackInputs']
            if device and packs and 'device_aug' not in tuple(
                    packs[-1].get('meta_keys', None) or ()):
                raise ValueError(
                    f"{path}: its PackInputs drops 'device_aug' (the "
                    'output size and augmentation LoadImageBytes drew for '
                    'DeviceAugmentPreprocessor): it is not among its '
                    "meta_keys. Fix: PackInputs(meta_keys=('img_path', "
                    "'device_aug', ...)), or write the CPU pipeline with "
                    "data_path='device', which adds it.")


def _check_built_model(model, value: str) -> None:
    """A built model (MMEngine's ``Runner`` takes one as ``model``) cannot
    be given the device's data preprocessor by a rewrite of its config: it
    must have one already."""
    pre = getattr(model, 'data_preprocessor', None)
    if type(pre).__name__ == 'DeviceAugmentPreprocessor':
        return
    raise ValueError(
        f'data_path={value!r} gives the model a DeviceAugmentPreprocessor '
        'through its config, but model is a built '
        f'{type(model).__name__} (its data preprocessor: '
        f'{type(pre).__name__}). Fix: pass model as a config dict, or '
        "build it with data_preprocessor=dict(type='DeviceAugment"
        "Preprocessor') (the same mean and std), or leave data_path unset.")


def apply_data_path(cfg):
    """Interpret the top-level ``data_path`` key of ``cfg`` (a
    ``Config``, changed in place and returned): ``'cpu'`` (default) keeps
    the pipelines, ``'device'`` moves decode, resize and augmentation onto
    the model's device (module docstring)."""
    value = cfg.get('data_path', 'cpu')
    if value not in DATA_PATHS:
        raise ValueError(
            f'data_path must be one of {DATA_PATHS}, got {value!r}. Fix: '
            "data_path='device' augments on the model's device (the loader "
            "workers decode and resize), 'device-decode' also decodes and "
            "resizes there; 'cpu' (the default) does all of it in the "
            'loader workers.')
    if value == 'cpu':
        check_device_path(cfg)
        return cfg
    import torch
    if not torch.cuda.is_available():
        warnings.warn(
            f'data_path={value!r} without a CUDA device: the augmentation '
            'runs in the main process on the CPU, between the steps, where '
            "data_path='cpu' runs it in the loader workers (slower here: "
            'docs/benchmarks.md section 7).')
    done = {}
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(name, None)
        for path, dataset in _datasets(
                loader.get('dataset') if loader else None, f'{name}.dataset'):
            if _held_preprocessor(dataset) is not None:  # a feature cache's
                dataset['data_preprocessor'] = _device_preprocessor(
                    dataset.get('data_preprocessor', None),
                    f'{path}.data_preprocessor')
            pipeline = dataset.get('pipeline', None)
            if pipeline is None:
                continue
            if id(pipeline) not in done:  # test_dataloader = val_dataloader
                done[id(pipeline)] = device_pipeline(
                    pipeline, f'{path}.pipeline', _DECODE[value])
            dataset['pipeline'] = done[id(pipeline)]
    model = cfg.get('model', None)
    top = cfg.get('data_preprocessor', None)
    if model is not None and not isinstance(model, dict):
        _check_built_model(model, value)
        model = None  # its preprocessor is checked below, not rewritten
    # a model without its own gets the top-level one (MMEngine): only a
    # model that has one, or has none to get, is given the device's
    if model is not None and (model.get('data_preprocessor', None)
                              is not None or top is None):
        model['data_preprocessor'] = _device_preprocessor(
            model.get('data_preprocessor', None), 'model.data_preprocessor')
    if top is not None:
        cfg['data_preprocessor'] = _device_preprocessor(
            top, 'data_preprocessor')
    check_device_path(cfg)
    return cfg


def restore_cpu_data_path(cfg):
    """The CPU test path of a device-path config (the config a run with
    ``data_path='device'`` dumps in its work dir), for inference and export,
    which read images one at a time (arrays too) on any device: the
    inverse of the test-pipeline rewrite above.

    * a test / val pipeline ``LoadImageBytes(augment=False, ...)`` +
      ``PackInputs`` becomes ``LoadImageFromFileChecked`` +
      ``Resize(scale, keep_ratio=False, backend='pillow',
      interpolation='bilinear')`` + ``PackInputs`` (without the
      ``'device_aug'`` meta key): the pipeline it was made from, the only
      one it is made from;
    * ``DeviceAugmentPreprocessor`` becomes ``CLIPDataPreprocessor`` with
      the same mean and std; ``data_path`` becomes ``'cpu'``.

    With ``decode='device'`` (``'device-decode'``) the restored path is
    PIL's, which the device decode approximates (about two grey levels).
    Other configs are returned unchanged.

    Args:
        cfg (mmengine.Config): modified in place and returned.
    """
    pre, where = _model_preprocessor(cfg)
    if type_name(pre) != 'DeviceAugmentPreprocessor':
        return cfg
    owner = cfg if where == 'data_preprocessor' else cfg['model']
    owner['data_preprocessor'] = dict(
        type='mmcoop.CLIPDataPreprocessor',
        **{k: pre[k] for k in ('mean', 'std', 'non_blocking') if k in pre})
    for name in ('val_dataloader', 'test_dataloader'):
        loader = cfg.get(name, None)
        for _, dataset in _datasets(
                loader.get('dataset') if loader else None, name):
            pipeline = dataset.get('pipeline', None)
            if not pipeline or type_name(pipeline[0]) != 'LoadImageBytes' \
                    or pipeline[0].get('augment', True):
                continue
            load = pipeline[0]
            loading = dict(type='mmcoop.LoadImageFromFileChecked')
            if 'backend_args' in load:
                loading['backend_args'] = load['backend_args']
            pack = dict(pipeline[-1])
            pack['meta_keys'] = tuple(
                k for k in pack.get('meta_keys', ()) if k != 'device_aug')
            dataset['pipeline'] = [
                loading,
                dict(type='Resize', scale=tuple(load['scale']),
                     keep_ratio=False, backend='pillow',
                     interpolation='bilinear'), pack
            ]
    cfg['data_path'] = 'cpu'
    return cfg

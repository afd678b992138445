# Copyright (c) mmcoop contributors. All rights reserved.
"""The cache key: what determines the cached features.

A key is a JSON value; a cache is reused only if its manifest holds the
same key. It covers the image tower, the image preprocessor, the images
(never the labels), the image pipeline, the number of views, the view seed
and the storage dtype. Whether the image *files* are still the ones that
were encoded is checked separately (:mod:`.images`).
"""
import hashlib
import json
import math
import re
from typing import List, Union

import numpy as np
import torch
from mmpretrain.datasets.transforms import PackInputs

from mmcoop.models.backbones.tower_compile import compile_desc
from ..wrapper import DatasetWrapper, image_source

__all__ = [
    'sha256', 'jsonable', 'hash_module_tensors', 'pipeline_key', 'dataset_key',
    'backbone_key', 'preprocessor_key', 'diff_keys', 'image_paths'
]


def sha256(data: Union[bytes, str]) -> str:
    """Hex SHA-256 of ``data`` (``str`` is UTF-8 encoded)."""
    if isinstance(data, str):
        data = data.encode('utf-8')
    return hashlib.sha256(data).hexdigest()


def hash_module_tensors(module: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer of ``module`` (names, dtypes,
    shapes and values, in name order), independent of device and memory
    format. Frozen towers drop their tensors from ``state_dict()``, so the
    tensors are read directly."""
    h = hashlib.sha256()
    tensors = dict(module.named_parameters())
    tensors.update(module.named_buffers())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f'{name}|{t.dtype}|{tuple(t.shape)}|'.encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def clean_repr(obj) -> str:
    """``repr`` without memory addresses (stable across processes)."""
    return re.sub(r' at 0x[0-9a-fA-F]+', '', repr(obj))


def jsonable(obj, depth: int = 0):
    """A JSON-serialisable, deterministic image of ``obj``."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else repr(obj)
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return jsonable(obj.item(), depth)
    if depth > 8:
        return clean_repr(obj)
    if isinstance(obj, dict):
        return {
            str(k): jsonable(v, depth + 1)
            for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))
        }
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, depth + 1) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(clean_repr(v) for v in obj)
    if isinstance(obj, np.ndarray) and obj.size <= 4096:
        return obj.tolist()
    if isinstance(obj, torch.Tensor) and obj.numel() <= 4096:
        return obj.detach().cpu().tolist()
    return clean_repr(obj)


def _transform_key(t) -> dict:
    """A transform's type, parameters and repr; a transform's
    ``PIXEL_NEUTRAL`` parameters (which do not change its output, e.g.
    ``LoadImageTensor.decode_backend``) are left out, and its
    ``PIXEL_VERSION`` (the version of the rules that make its pixels, e.g.
    :data:`mmcoop.datasets.transforms.rgb.RULE_VERSION` of the loaders), if
    it declares one, is recorded."""
    neutral = set(getattr(t, 'PIXEL_NEUTRAL', ()))
    params = {
        k: v
        for k, v in vars(t).items()
        if not k.startswith('__') and k not in neutral
    } if hasattr(t, '__dict__') else {}
    key = dict(
        type=f'{type(t).__module__}.{type(t).__qualname__}',
        params=jsonable(params),
        repr=clean_repr(t))
    version = getattr(t, 'PIXEL_VERSION', None)
    if version is not None:
        key['pixel_version'] = jsonable(version)
    return key


def pipeline_key(pipeline) -> list:
    """Every transform of the image pipeline with its parameters (the final
    ``PackInputs`` is left out: it does not change the pixels)."""
    transforms = getattr(pipeline, 'transforms', None)
    if transforms is None:
        return [_transform_key(pipeline)]
    return [
        _transform_key(t) for t in transforms if not isinstance(t, PackInputs)
    ]


def image_paths(dataset) -> List[str]:
    """The image path of every sample of ``dataset``, in order."""
    source = image_source(dataset)
    paths = []
    for i in range(len(source)):
        info = source.get_data_info(i)
        paths.append(str(info.get('img_path', info.get('filename', ''))))
    return paths


def dataset_key(dataset, paths: List[str]) -> dict:
    """What identifies the images of ``dataset`` (never its labels);
    ``paths`` are its :func:`image_paths`."""
    source = image_source(dataset)
    chain, obj = [], source
    while True:
        if not (isinstance(obj, DatasetWrapper) and obj.labels_only):
            chain.append(type(obj).__name__)
        inner = getattr(obj, 'dataset', None)
        if inner is None or not hasattr(inner, '__len__'):
            break
        obj = inner
    metainfo = getattr(dataset, 'metainfo', None) or {}
    classes = metainfo.get('classes') or ()
    return dict(
        type=chain,
        data_root=jsonable(getattr(obj, 'data_root', None)),
        split=jsonable(getattr(obj, 'split', None)),
        ann_file=jsonable(getattr(obj, 'ann_file', None)),
        num_samples=len(paths),
        classes=[str(c) for c in classes],
        img_paths_sha256=sha256('\n'.join(paths)))


def backbone_key(backbone: torch.nn.Module) -> dict:
    """What determines the image tower's function (its weights included:
    for a random tower, its ``init_seed`` decides them)."""
    autocast = getattr(backbone, 'autocast_dtype', None)
    if autocast is not None:
        # '+cpu': CPU inputs autocast too (a CPU-encoded cache is bf16 there)
        autocast = str(autocast) + (
            '+cpu' if getattr(backbone, 'autocast_cpu', False) else '')
    key = dict(
        type=type(backbone).__name__,
        model_name=getattr(backbone, 'model_name', None),
        input_resolution=getattr(backbone, 'input_resolution', None),
        autocast_dtype=autocast,
        channels_last=bool(getattr(backbone, 'channels_last', False)),
        arch_sha256=sha256(clean_repr(backbone)),
        weights_sha256=hash_module_tensors(backbone))
    # other kernels, other last bits; absent when eager (earlier keys hold)
    compiled = compile_desc(getattr(backbone, 'compile_options', None))
    if compiled is not None:
        key['compile'] = compiled
    return key


def preprocessor_key(preprocessor: torch.nn.Module) -> dict:
    """Normalisation, colour order and padding of the image preprocessor,
    and its ``PIXEL_VERSION`` (the version of the pixels of the
    augmentation it runs, e.g. :class:`~mmcoop.models.
    DeviceAugmentPreprocessor`'s), if it declares one."""
    mean = getattr(preprocessor, 'mean', None)
    std = getattr(preprocessor, 'std', None)
    key = dict(
        type=type(preprocessor).__name__,
        normalize=bool(getattr(preprocessor, '_enable_normalize', False)),
        mean=None if mean is None else [float(v) for v in mean.flatten()],
        std=None if std is None else [float(v) for v in std.flatten()],
        to_rgb=bool(
            getattr(preprocessor, 'to_rgb',
                    getattr(preprocessor, '_channel_conversion', False))),
        pad_size_divisor=getattr(preprocessor, 'pad_size_divisor', None),
        pad_value=jsonable(getattr(preprocessor, 'pad_value', None)))
    version = getattr(preprocessor, 'PIXEL_VERSION', None)
    if version is not None:
        key['pixel_version'] = jsonable(version)
    return key


def diff_keys(old, new, prefix: str = '') -> List[str]:
    """Human-readable differences between two JSON-like values."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            name = f'{prefix}.{k}' if prefix else k
            if k not in old:
                out.append(f'{name}: (absent) -> {_short(new[k])}')
            elif k not in new:
                out.append(f'{name}: {_short(old[k])} -> (absent)')
            else:
                out.extend(diff_keys(old[k], new[k], name))
        return out
    if isinstance(old, list) and isinstance(new, list) and \
            len(old) == len(new):  # e.g. one transform of the pipeline
        return [
            line for i, (a, b) in enumerate(zip(old, new))
            for line in diff_keys(a, b, f'{prefix}[{i}]')
        ]
    if old != new:
        return [f'{prefix}: {_short(old)} -> {_short(new)}']
    return []


def _short(v, limit: int = 80) -> str:
    s = json.dumps(v) if not isinstance(v, str) else repr(v)
    return s if len(s) <= limit else s[:limit - 3] + '...'

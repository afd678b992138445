# Copyright (c) mmcoop contributors. All rights reserved.
"""Frozen-feature cache: encode every image once, train the heads from disk.

The image tower of every mmcoop model is frozen, so its dense output is a
fixed function of the (pre-processed) image. :class:`CachedFeatureDataset`
runs the tower once over a dataset, stores the ``(D, N)`` features as
memory-mapped ``.npy`` shards, and then serves ``dict(inputs=<(D, N)
features>, data_samples=<DataSample>)``; with the
:class:`~mmcoop.models.PrecomputedFeatures` backbone and the
:class:`~mmcoop.models.FeatureDataPreprocessor` every head trains and
validates without running the image encoder. See ``docs/benchmarks.md``.

Layout of a cache directory::

    <cache_dir>/
        manifest.json           written last; the cache is complete iff it
                                exists (the directory is renamed into place)
        v0_s00000.npy ...       view 0, shards of ``shard_size`` samples,
                                (n, D, N) float16/float32 (np.lib.format)

Safety rules:

* The manifest records a *key*: the image tower (type, model name, input
  resolution, autocast dtype, memory format, a hash of its architecture and
  a SHA-256 of all its tensors), the image preprocessor (mean, std,
  ``to_rgb``, padding), the dataset (wrapper types, ``data_root``, split,
  annotation file, number of samples, class list, a hash of the image
  paths), the image pipeline (every transform's class and parameters), the
  number of views, the seed and the storage dtype. An existing cache is
  reused only if the key is equal; otherwise it is rebuilt
  (``on_mismatch='rebuild'``, a warning names the differences) or refused
  (``on_mismatch='error'``). A directory that is not a feature cache is
  never deleted.
* Extraction writes into a sibling temporary directory, writes the
  manifest last and renames the directory into place, so an interrupted
  extraction never leaves a cache that looks complete. Leftovers of killed
  extractions are removed by the next build.
* Labels are never stored: features depend only on the images, targets are
  read from the wrapped dataset at every access. Wrap a
  :class:`~mmcoop.datasets.PartialLabelDataset` *inside* the cache (the
  recommended order; another mask then reuses the same cache) or outside it
  (``num_views=1`` only).
"""
import copy
import hashlib
import json
import math
import os
import os.path as osp
import re
import shutil
import socket
import time
from typing import List, Optional, Tuple, Union

import numpy as np
import torch
from mmengine.dataset import DefaultSampler
from mmengine.dist import barrier, get_dist_info
from mmengine.logging import MMLogger
from mmengine.registry import DefaultScope
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from mmcoop.registry import DATA_SAMPLERS, DATASETS, MODELS
from .samplers import RNGGuard, sample_seed, seed_global_rngs

__all__ = [
    'CachedFeatureDataset', 'CachedViewSampler', 'FeatureCacheError',
    'FeatureCacheMismatchError', 'apply_feature_cache', 'hash_module_tensors',
    'CLIP_MEAN', 'CLIP_STD'
]

CACHE_FORMAT = 'mmcoop-feature-cache'
CACHE_VERSION = 1
MANIFEST = 'manifest.json'
#: CLIP's normalisation on the 0..255 scale (OpenAI preprocessing).
CLIP_MEAN = (122.7709383, 116.7460125, 104.09373615)
CLIP_STD = (68.5005327, 66.6321579, 70.32316305)
#: Dataset wrappers that change labels only (same images, same order).
LABEL_ONLY_WRAPPERS = ('PartialLabelDataset', )
_DTYPES = {'float16': np.float16, 'float32': np.float32}


class FeatureCacheError(RuntimeError):
    """A feature cache cannot be used or built."""


class FeatureCacheMismatchError(FeatureCacheError):
    """An existing cache was built for something else and was refused."""


# --------------------------------------------------------------------------
# keys
# --------------------------------------------------------------------------
def _sha256(data: Union[bytes, str]) -> str:
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


def _clean_repr(obj) -> str:
    """``repr`` without memory addresses (stable across processes)."""
    return re.sub(r' at 0x[0-9a-fA-F]+', '', repr(obj))


def _jsonable(obj, depth: int = 0):
    """A JSON-serialisable, deterministic image of ``obj``."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else repr(obj)
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return _jsonable(obj.item(), depth)
    if depth > 8:
        return _clean_repr(obj)
    if isinstance(obj, dict):
        return {
            str(k): _jsonable(v, depth + 1)
            for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))
        }
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, depth + 1) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(_clean_repr(v) for v in obj)
    if isinstance(obj, np.ndarray) and obj.size <= 4096:
        return obj.tolist()
    if isinstance(obj, torch.Tensor) and obj.numel() <= 4096:
        return obj.detach().cpu().tolist()
    return _clean_repr(obj)


def _transform_key(t) -> dict:
    params = {
        k: v
        for k, v in vars(t).items() if not k.startswith('__')
    } if hasattr(t, '__dict__') else {}
    return dict(
        type=f'{type(t).__module__}.{type(t).__qualname__}',
        params=_jsonable(params),
        repr=_clean_repr(t))


def _is_pack(t) -> bool:
    return type(t).__name__ == 'PackInputs'


def pipeline_key(pipeline) -> list:
    """Every transform of the image pipeline with its parameters (the final
    ``PackInputs`` is left out: it does not change the pixels)."""
    transforms = getattr(pipeline, 'transforms', None)
    if transforms is None:
        return [_transform_key(pipeline)]
    return [_transform_key(t) for t in transforms if not _is_pack(t)]


def _image_source(dataset):
    """Skip label-only wrappers (same images in the same order)."""
    while type(dataset).__name__ in LABEL_ONLY_WRAPPERS and hasattr(
            dataset, 'dataset'):
        dataset = dataset.dataset
    return dataset


def dataset_key(dataset) -> dict:
    """What identifies the images of ``dataset`` (never its labels)."""
    source = _image_source(dataset)
    chain, obj = [], source
    while True:
        chain.append(type(obj).__name__)
        inner = getattr(obj, 'dataset', None)
        if inner is None or not hasattr(inner, '__len__'):
            break
        obj = inner
    innermost = obj
    n = len(source)
    paths = []
    for i in range(n):
        info = source.get_data_info(i)
        paths.append(str(info.get('img_path', info.get('filename', ''))))
    metainfo = getattr(dataset, 'metainfo', None) or {}
    classes = metainfo.get('classes') or ()
    return dict(
        type=[t for t in chain if t not in LABEL_ONLY_WRAPPERS],
        data_root=_jsonable(getattr(innermost, 'data_root', None)),
        split=_jsonable(getattr(innermost, 'split', None)),
        ann_file=_jsonable(getattr(innermost, 'ann_file', None)),
        num_samples=n,
        classes=[str(c) for c in classes],
        img_paths_sha256=_sha256('\n'.join(paths)))


def backbone_key(backbone: torch.nn.Module) -> dict:
    """What determines the image tower's function."""
    autocast = getattr(backbone, 'autocast_dtype', None)
    return dict(
        type=type(backbone).__name__,
        model_name=getattr(backbone, 'model_name', None),
        input_resolution=getattr(backbone, 'input_resolution', None),
        autocast_dtype=None if autocast is None else str(autocast),
        channels_last=bool(getattr(backbone, 'channels_last', False)),
        arch_sha256=_sha256(_clean_repr(backbone)),
        weights_sha256=hash_module_tensors(backbone))


def preprocessor_key(preprocessor: torch.nn.Module) -> dict:
    """Normalisation, colour order and padding of the image preprocessor."""
    mean = getattr(preprocessor, 'mean', None)
    std = getattr(preprocessor, 'std', None)
    return dict(
        type=type(preprocessor).__name__,
        normalize=bool(getattr(preprocessor, '_enable_normalize', False)),
        mean=None if mean is None else [float(v) for v in mean.flatten()],
        std=None if std is None else [float(v) for v in std.flatten()],
        to_rgb=bool(
            getattr(preprocessor, 'to_rgb',
                    getattr(preprocessor, '_channel_conversion', False))),
        pad_size_divisor=getattr(preprocessor, 'pad_size_divisor', None),
        pad_value=_jsonable(getattr(preprocessor, 'pad_value', None)))


def _diff(old, new, prefix: str = '') -> List[str]:
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
                out.extend(_diff(old[k], new[k], name))
        return out
    if old != new:
        return [f'{prefix}: {_short(old)} -> {_short(new)}']
    return []


def _short(v, limit: int = 80) -> str:
    s = json.dumps(v) if not isinstance(v, str) else repr(v)
    return s if len(s) <= limit else s[:limit - 3] + '...'


# --------------------------------------------------------------------------
# extraction
# --------------------------------------------------------------------------
class _SeededView(TorchDataset):
    """View ``k`` of a dataset's image pipeline: sample ``i`` is produced
    with the global RNGs seeded from ``(seed, k, i)``, so the view is the
    same for any batch size, worker count or order."""

    def __init__(self, dataset, view: int, seed: int):
        self.dataset = dataset
        self.view = view
        self.seed = seed

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i: int):
        seed_global_rngs(sample_seed(self.seed, self.view, i))
        info = self.dataset.get_data_info(i)
        path = info.get('img_path', f'sample {i}')
        data = self.dataset.pipeline(info)
        if data is None:
            # BaseDataset would silently substitute another image here.
            raise FeatureCacheError(
                f'The image pipeline returned None for {path!r} (index '
                f'{i}); a feature cache needs every image. Fix or remove '
                'the file, or set ignore_empty=False in the loader.')
        inputs = data['inputs']
        if not isinstance(inputs, torch.Tensor):
            raise FeatureCacheError(
                f'The image pipeline of {path!r} gave inputs of type '
                f'{type(inputs).__name__}; it must end with PackInputs '
                'producing an image tensor.')
        return i, inputs


def _collate(batch):
    return [b[0] for b in batch], [b[1] for b in batch]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _path_is_inside(path: str, folder: str) -> bool:
    path = osp.realpath(osp.abspath(osp.expanduser(path)))
    folder = osp.realpath(osp.abspath(osp.expanduser(folder)))
    try:
        return osp.commonpath([path, folder]) == folder
    except ValueError:
        return False


# --------------------------------------------------------------------------
# the dataset
# --------------------------------------------------------------------------
class _FeatureLoader:
    """The "pipeline" of a :class:`CachedFeatureDataset`: reads the cached
    features of a ``data_info`` and packs its targets/meta like the image
    pipeline's ``PackInputs`` would. Used directly when a label wrapper
    (``PartialLabelDataset``) wraps the cache."""

    def __init__(self, owner: 'CachedFeatureDataset'):
        self.owner = owner

    def __call__(self, info: dict) -> dict:
        if '_feature_index' not in info:
            raise KeyError(
                'CachedFeatureDataset: data_info has no `_feature_index`; '
                'it must come from CachedFeatureDataset.get_data_info.')
        view, index = info.pop('_feature_index')
        packed = self.owner._packer.transform(info)
        packed['inputs'] = self.owner.read(index, view)
        return packed

    def __repr__(self) -> str:
        return f'{type(self).__name__}({self.owner.cache_dir!r})'


@DATASETS.register_module()
class CachedFeatureDataset:
    """Serve a frozen image tower's dense features from a disk cache.

    Wraps a dataset (whose pipeline loads, augments and packs images) and an
    image tower (e.g. :class:`~mmcoop.models.FrozenCLIP`). On first use the
    tower runs once over ``num_views`` passes of the pipeline and the
    features are stored under ``cache_dir`` (see the module docstring for
    the layout and the safety rules); afterwards each sample is
    ``dict(inputs=<(D, N) tensor, dtype>, data_samples=<DataSample>)`` with
    the targets and meta information of the wrapped dataset. Use it with
    ``backbone=dict(type='PrecomputedFeatures')`` and
    ``data_preprocessor=dict(type='FeatureDataPreprocessor')`` in the model.

    **Views.** View ``k`` is the ``k``-th pass of the (random) train
    pipeline, with the RNGs seeded per sample from ``(seed, k, index)``
    (reproducible for any batch size or worker count). With
    :class:`CachedViewSampler`, epoch ``e`` reads view ``e % num_views``.
    Index ``k * len(self) + i`` addresses view ``k`` of sample ``i``;
    ``len(self)`` is the number of images. ``num_views=1`` with a random
    pipeline freezes one augmentation per image for the whole schedule;
    the official recipe draws a fresh Cutout + RandAugment every epoch
    (``docs/benchmarks.md`` discusses the trade-off). Each view of COCO
    train at 448 px costs 16.6 GB in fp16.

    **Labels.** Never cached. Targets come from ``dataset.get_data_info``
    at every access, so a :class:`PartialLabelDataset` inside the cache
    (recommended) can change its mask or seed and reuse the same features.

    Args:
        dataset (dict | Dataset): the dataset (images + pipeline).
        backbone (dict | nn.Module): the frozen image tower, built exactly
            as the uncached model's ``backbone`` (same weights: its tensors
            are hashed into the cache key).
        cache_dir (str): the directory of this cache (outside the dataset
            tree), e.g. ``'work_dirs/feature_cache/coco_train'``.
        data_preprocessor (dict | nn.Module, optional): the image
            preprocessor of the uncached model. Defaults to
            ``ClsDataPreprocessor`` with CLIP's mean/std and ``to_rgb=True``.
        num_views (int): cached passes of the pipeline. Defaults to 1.
        seed (int): seed of the views; also seeds the initialisation of a
            tower built from a config with random weights
            (``pretrained=None``), so that the train, val and test caches
            of such a config share one tower. Defaults to 0.
        batch_size (int): extraction batch size. Defaults to 32.
        num_workers (int): extraction dataloader workers (decoding and
            augmentation). Defaults to 0.
        dtype (str): ``'float16'`` (default; ~1e-3 relative error, half the
            disk) or ``'float32'`` (exact).
        device (str, optional): extraction device. Defaults to CUDA when
            available, else CPU.
        shard_size (int): samples per shard file. Defaults to 4096.
        on_mismatch (str): ``'rebuild'`` (default) or ``'error'`` when an
            existing cache has another key or is damaged.
        progress (bool): show a tqdm progress bar. Defaults to True.
        lazy_init (bool): defer building/validating until first use.
    """

    def __init__(self,
                 dataset: Union[dict, object],
                 backbone: Union[dict, torch.nn.Module],
                 cache_dir: str,
                 data_preprocessor: Union[dict, torch.nn.Module, None] = None,
                 num_views: int = 1,
                 seed: int = 0,
                 batch_size: int = 32,
                 num_workers: int = 0,
                 dtype: str = 'float16',
                 device: Optional[str] = None,
                 shard_size: int = 4096,
                 on_mismatch: str = 'rebuild',
                 progress: bool = True,
                 lazy_init: bool = False):
        if dtype not in _DTYPES:
            raise ValueError(f"CachedFeatureDataset: dtype must be one of "
                             f"{sorted(_DTYPES)}, got {dtype!r}.")
        if on_mismatch not in ('rebuild', 'error'):
            raise ValueError("CachedFeatureDataset: on_mismatch must be "
                             f"'rebuild' or 'error', got {on_mismatch!r}.")
        for name, value in (('num_views', num_views),
                            ('batch_size', batch_size), ('shard_size',
                                                         shard_size)):
            if not isinstance(value, int) or isinstance(value, bool) \
                    or value < 1:
                raise ValueError(f'CachedFeatureDataset: {name} must be a '
                                 f'positive int, got {value!r}.')
        if not cache_dir:
            raise ValueError('CachedFeatureDataset: cache_dir is required, '
                             "e.g. 'work_dirs/feature_cache/coco_train'.")
        if isinstance(dataset, dict):
            with DefaultScope.overwrite_default_scope('mmcoop'):
                dataset = DATASETS.build(dataset)
        if not (hasattr(dataset, 'get_data_info')
                and hasattr(dataset, 'pipeline')):
            raise TypeError(
                'CachedFeatureDataset: `dataset` must be a dataset config or '
                'a dataset with get_data_info() and a pipeline, got '
                f'{type(dataset).__name__}.')
        self.dataset = dataset
        self._backbone_cfg = backbone
        if data_preprocessor is None:
            data_preprocessor = dict(
                type='ClsDataPreprocessor',
                mean=CLIP_MEAN,
                std=CLIP_STD,
                to_rgb=True)
        self._preprocessor_cfg = data_preprocessor
        self.cache_dir = osp.abspath(osp.expanduser(str(cache_dir)))
        self.num_views = num_views
        self.seed = int(seed)
        self.batch_size = batch_size
        self.num_workers = int(num_workers)
        self.dtype = dtype
        self.device = device
        self.shard_size = shard_size
        self.on_mismatch = on_mismatch
        self.progress = progress
        self.manifest: Optional[dict] = None
        self._arrays = None
        self._packer = self._find_packer()
        self.pipeline = _FeatureLoader(self)
        self._fully_initialized = False
        if getattr(dataset, 'test_mode', False) and num_views > 1:
            MMLogger.get_current_instance().warning(
                f'CachedFeatureDataset: num_views={num_views} for a test-mode '
                'dataset; evaluation reads view 0 only.')
        if not lazy_init:
            self.full_init()

    # ------------------------------------------------------------------
    # dataset protocol
    # ------------------------------------------------------------------
    @property
    def metainfo(self) -> dict:
        return copy.deepcopy(getattr(self.dataset, 'metainfo', {}) or {})

    @property
    def CLASSES(self):
        return self.metainfo.get('classes')

    @property
    def test_mode(self) -> bool:
        return bool(getattr(self.dataset, 'test_mode', False))

    @property
    def data_root(self):
        return getattr(_image_source(self.dataset), 'data_root', None)

    @property
    def split(self):
        return getattr(_image_source(self.dataset), 'split', None)

    @property
    def feature_shape(self) -> Tuple[int, int]:
        """``(D, N)`` of the cached features."""
        self.full_init()
        return tuple(self.manifest['feature_shape'])

    def __len__(self) -> int:
        return len(self.dataset)

    def _split_index(self, idx: int) -> Tuple[int, int]:
        n = len(self.dataset)
        idx = int(idx)
        if idx < 0:
            idx += n
        if not 0 <= idx < n * self.num_views:
            raise IndexError(
                f'CachedFeatureDataset index {idx} out of range for {n} '
                f'samples x {self.num_views} views.')
        view, index = divmod(idx, n)
        return index, view

    def get_data_info(self, idx: int) -> dict:
        """The wrapped dataset's ``data_info`` (targets included) plus the
        location of the features (``_feature_index``)."""
        self.full_init()
        index, view = self._split_index(idx)
        info = self.dataset.get_data_info(index)
        info['_feature_index'] = (view, index)
        return info

    def get_cat_ids(self, idx: int) -> List[int]:
        index, _ = self._split_index(idx)
        return self.dataset.get_cat_ids(index)

    def __getitem__(self, idx: int) -> dict:
        return self.pipeline(self.get_data_info(idx))

    def read(self, index: int, view: int = 0) -> torch.Tensor:
        """The cached ``(D, N)`` features of sample ``index`` in ``view``."""
        self.full_init()
        if self._arrays is None:
            self._open()
        shard, row = divmod(index, self.manifest['shard_size'])
        return torch.from_numpy(np.array(self._arrays[view][shard][row]))

    def __getstate__(self):
        state = self.__dict__.copy()
        state['_arrays'] = None  # memmaps are reopened in each process
        return state

    def __repr__(self) -> str:
        lines = [
            f'Dataset {type(self).__name__}',
            f'    Cache dir: \t{self.cache_dir}',
            f'    Views: \t{self.num_views}', f'    Dtype: \t{self.dtype}',
            f'    Wrapped: \t{type(self.dataset).__name__}'
        ]
        if self._fully_initialized:
            lines.append(f'    Number of samples: \t{len(self)}')
            lines.append(f'    Feature shape: \t{self.feature_shape}')
        return '\n'.join(lines)

    # ------------------------------------------------------------------
    # building / validating
    # ------------------------------------------------------------------
    def _find_packer(self):
        from mmpretrain.datasets.transforms import PackInputs
        transforms = getattr(self.dataset.pipeline, 'transforms', ())
        for t in reversed(list(transforms)):
            if _is_pack(t):
                return t
        return PackInputs()

    def _build_module(self, cfg):
        if isinstance(cfg, torch.nn.Module):
            return cfg
        # Seeded: a tower with random weights (pretrained=None, tests and
        # the demo) is then the same for the train/val/test caches and for
        # every run; loaded weights overwrite the initialisation anyway.
        with torch.random.fork_rng(devices=[]), \
                DefaultScope.overwrite_default_scope('mmcoop'):
            torch.manual_seed(self.seed)
            return MODELS.build(copy.deepcopy(cfg))

    def _check_location(self) -> None:
        source = _image_source(self.dataset)
        dirs = [getattr(source, 'data_root', None)]
        prefix = getattr(source, 'data_prefix', None)
        if isinstance(prefix, dict):
            dirs += [v for v in prefix.values() if isinstance(v, str)]
        for folder in dirs:
            if folder and '://' not in str(folder) and _path_is_inside(
                    self.cache_dir, folder):
                raise FeatureCacheError(
                    f'cache_dir {self.cache_dir!r} lies inside the dataset '
                    f'folder {osp.realpath(folder)!r}; mmcoop never writes '
                    'into a dataset tree. Fix: use e.g. '
                    "'work_dirs/feature_cache/<name>'.")

    def make_key(self, backbone, preprocessor) -> dict:
        """The cache key for this dataset with this tower (see module doc)."""
        return dict(
            backbone=backbone_key(backbone),
            data_preprocessor=preprocessor_key(preprocessor),
            dataset=dataset_key(self.dataset),
            pipeline=pipeline_key(self.dataset.pipeline),
            num_views=self.num_views,
            seed=self.seed,
            dtype=self.dtype)

    def full_init(self) -> None:
        """Validate the cache, building it first if needed."""
        if self._fully_initialized:
            return
        if hasattr(self.dataset, 'full_init'):
            self.dataset.full_init()
        self._check_location()
        logger = MMLogger.get_current_instance()
        backbone = self._build_module(self._backbone_cfg)
        preprocessor = self._build_module(self._preprocessor_cfg)
        key = _jsonable(self.make_key(backbone, preprocessor))
        rank, world_size = get_dist_info()
        if rank == 0:
            status, detail = self._inspect(key)
            if status == 'ok':
                logger.info(f'Feature cache {self.cache_dir}: reusing '
                            f'{len(self)} samples x {self.num_views} view(s)'
                            ' (key matches).')
            else:
                if status == 'foreign':
                    raise FeatureCacheError(detail)
                if status in ('mismatch', 'damaged'):
                    what = ('was built for something else'
                            if status == 'mismatch' else 'is damaged')
                    msg = (f'Feature cache {self.cache_dir} {what}: '
                           f'{detail}.')
                    if self.on_mismatch == 'error':
                        raise FeatureCacheMismatchError(
                            f'{msg} Refusing to use it (on_mismatch='
                            "'error'). Fix: delete the directory, point "
                            "cache_dir elsewhere, or set on_mismatch="
                            "'rebuild'.")
                    logger.warning(f'{msg} Rebuilding it.')
                    shutil.rmtree(self.cache_dir)
                self._build(key, backbone, preprocessor)
        if world_size > 1:
            barrier()
        status, detail = self._inspect(key)
        if status != 'ok':
            raise FeatureCacheError(
                f'Feature cache {self.cache_dir} is not usable after the '
                f'build ({status}: {detail}).')
        del backbone, preprocessor
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self._fully_initialized = True

    def _inspect(self, key: dict) -> Tuple[str, str]:
        """``('ok' | 'missing' | 'mismatch' | 'damaged' | 'foreign', why)``
        and load the manifest when it is ok."""
        path = osp.join(self.cache_dir, MANIFEST)
        if not osp.exists(self.cache_dir):
            return 'missing', 'no cache directory'
        if not osp.isdir(self.cache_dir):
            return 'foreign', (f'cache_dir {self.cache_dir!r} exists and is '
                               'not a directory. Fix: choose another path.')
        if not osp.exists(path):
            if not os.listdir(self.cache_dir):
                return 'missing', 'empty directory'
            return 'foreign', (
                f'cache_dir {self.cache_dir!r} exists, is not empty and has '
                f'no {MANIFEST}: it is not an mmcoop feature cache (or one '
                'whose manifest was removed), and it is never deleted '
                'automatically. Fix: choose another cache_dir or delete the '
                'directory yourself.')
        try:
            with open(path) as f:
                manifest = json.load(f)
        except (OSError, ValueError) as e:
            return 'foreign', (
                f'{path} is unreadable ({type(e).__name__}: {e}). Fix: '
                'delete the directory (it is rebuilt) or choose another '
                'cache_dir.')
        if not isinstance(manifest,
                          dict) or manifest.get('format') != CACHE_FORMAT:
            return 'foreign', (f'{path} is not an mmcoop feature-cache '
                               'manifest. Fix: choose another cache_dir.')
        if manifest.get('version') != CACHE_VERSION:
            return 'mismatch', (f'format version {manifest.get("version")} '
                                f'!= {CACHE_VERSION}')
        diffs = _diff(manifest.get('key'), key)
        if diffs:
            shown = '; '.join(diffs[:6])
            more = f' (+{len(diffs) - 6} more)' if len(diffs) > 6 else ''
            return 'mismatch', f'{shown}{more}'
        d, npos = manifest['feature_shape']
        np_dtype = np.dtype(_DTYPES[manifest['dtype']])
        for view, fname, start, count in manifest['shards']:
            fpath = osp.join(self.cache_dir, fname)
            try:
                arr = np.load(fpath, mmap_mode='r')
            except (OSError, ValueError) as e:
                return 'damaged', f'shard {fname}: {type(e).__name__}: {e}'
            if arr.shape != (count, d, npos) or arr.dtype != np_dtype:
                return 'damaged', (f'shard {fname} has shape {arr.shape} '
                                   f'{arr.dtype}, expected '
                                   f'{(count, d, npos)} {np_dtype}')
            del arr
        self.manifest = manifest
        return 'ok', ''

    def _open(self) -> None:
        arrays = [[] for _ in range(self.manifest['num_views'])]
        for view, fname, start, count in self.manifest['shards']:
            arrays[view].append(
                np.load(osp.join(self.cache_dir, fname), mmap_mode='r'))
        self._arrays = arrays

    def _cleanup_stale(self) -> None:
        parent = osp.dirname(self.cache_dir)
        prefix = (f'{osp.basename(self.cache_dir)}.partial-'
                  f'{socket.gethostname()}-')
        if not osp.isdir(parent):
            return
        for name in os.listdir(parent):
            if not name.startswith(prefix):
                continue
            try:
                pid = int(name[len(prefix):])
            except ValueError:
                continue
            if pid != os.getpid() and not _pid_alive(pid):
                MMLogger.get_current_instance().info(
                    f'Removing the leftover of an interrupted feature '
                    f'extraction: {osp.join(parent, name)}')
                shutil.rmtree(osp.join(parent, name), ignore_errors=True)

    def _build(self, key: dict, backbone, preprocessor) -> None:
        logger = MMLogger.get_current_instance()
        parent = osp.dirname(self.cache_dir)
        os.makedirs(parent, exist_ok=True)
        self._cleanup_stale()
        tmp = (f'{self.cache_dir}.partial-{socket.gethostname()}-'
               f'{os.getpid()}')
        if osp.exists(tmp):
            shutil.rmtree(tmp)
        os.makedirs(tmp)
        device = torch.device(
            self.device or (f'cuda:{torch.cuda.current_device()}'
                            if torch.cuda.is_available() else 'cpu'))
        n = len(self.dataset)
        logger.info(
            f'Feature cache {self.cache_dir}: extracting {n} samples x '
            f'{self.num_views} view(s) with {type(backbone).__name__} on '
            f'{device} ({self.dtype}).')
        t0 = time.time()
        try:
            backbone = backbone.to(device).eval()
            preprocessor = preprocessor.to(device)
            shape, shards = self._extract(tmp, backbone, preprocessor, device)
            manifest = dict(
                format=CACHE_FORMAT,
                version=CACHE_VERSION,
                key=key,
                num_samples=n,
                num_views=self.num_views,
                feature_shape=list(shape),
                dtype=self.dtype,
                shard_size=self.shard_size,
                shards=shards,
                info=dict(
                    created=time.strftime('%Y-%m-%d %H:%M:%S'),
                    extraction_seconds=round(time.time() - t0, 3),
                    device=str(device),
                    torch=torch.__version__,
                    backbone_cfg=_jsonable(self._backbone_cfg) if isinstance(
                        self._backbone_cfg, dict) else None))
            mtmp = osp.join(tmp, MANIFEST + '.tmp')
            with open(mtmp, 'w') as f:
                json.dump(manifest, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(mtmp, osp.join(tmp, MANIFEST))
            _fsync_dir(tmp)
            if osp.isdir(self.cache_dir):
                os.rmdir(self.cache_dir)  # empty (checked by _inspect)
            os.rename(tmp, self.cache_dir)
            _fsync_dir(parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            backbone.to('cpu')
        logger.info(f'Feature cache {self.cache_dir}: done in '
                    f'{time.time() - t0:.1f} s.')

    @torch.no_grad()
    def _extract(self, tmp: str, backbone, preprocessor,
                 device) -> Tuple[tuple, list]:
        from tqdm import tqdm
        n = len(self.dataset)
        np_dtype = _DTYPES[self.dtype]
        expected = getattr(backbone, 'input_resolution', None)
        shards, arrays, shape = [], {}, None
        bar = tqdm(
            total=n * self.num_views,
            desc='Extracting frozen features',
            unit='img',
            disable=not self.progress,
            dynamic_ncols=True)
        try:
            with RNGGuard():
                for view in range(self.num_views):
                    loader = DataLoader(
                        _SeededView(self.dataset, view, self.seed),
                        batch_size=self.batch_size,
                        shuffle=False,
                        num_workers=self.num_workers,
                        collate_fn=_collate,
                        pin_memory=device.type == 'cuda')
                    for indices, images in loader:
                        data = preprocessor(
                            dict(inputs=images, data_samples=None), False)
                        x = data['inputs']
                        if expected and tuple(
                                x.shape[-2:]) != (expected, expected):
                            raise FeatureCacheError(
                                f'The image pipeline gives {x.shape[-2]}x'
                                f'{x.shape[-1]} inputs but the image tower '
                                f'expects {expected}x{expected} '
                                '(input_resolution). Fix the Resize of the '
                                'pipeline or the backbone.')
                        feats = backbone(x)[-1]
                        feats = feats.to('cpu', torch.float32).numpy()
                        feats = feats.astype(np_dtype)
                        if not np.isfinite(feats).all():
                            raise FeatureCacheError(
                                'Non-finite features (the tower output '
                                f'overflows {self.dtype} or is NaN). Use '
                                "dtype='float32' or check the weights.")
                        if shape is None:
                            shape = feats.shape[1:]
                            for v in range(self.num_views):
                                for start in range(0, n, self.shard_size):
                                    count = min(self.shard_size, n - start)
                                    fname = (
                                        f'v{v}_s{start // self.shard_size:05d}'
                                        '.npy')
                                    arrays[v, start] = \
                                        np.lib.format.open_memmap(
                                            osp.join(tmp, fname), mode='w+',
                                            dtype=np_dtype,
                                            shape=(count, ) + shape)
                                    shards.append([v, fname, start, count])
                        elif feats.shape[1:] != shape:
                            raise FeatureCacheError(
                                f'Feature shape changed from {shape} to '
                                f'{feats.shape[1:]} within one extraction.')
                        for j, i in enumerate(indices):
                            start = i - i % self.shard_size
                            arrays[view, start][i - start] = feats[j]
                        bar.update(len(indices))
                    for (v, start), arr in arrays.items():
                        if v == view:
                            arr.flush()
        finally:
            bar.close()
        for arr in arrays.values():
            del arr
        return shape, shards


@DATA_SAMPLERS.register_module()
class CachedViewSampler(DefaultSampler):
    """``DefaultSampler`` that reads view ``epoch % num_views`` of a
    :class:`CachedFeatureDataset` (index ``view * len(dataset) + i``).

    The train loop's ``DistSamplerSeedHook`` (a default hook) calls
    ``set_epoch`` before every epoch, also after a resume. With one view, or
    with a dataset that has no views, it is exactly ``DefaultSampler``.
    """

    def __iter__(self):
        indices = super().__iter__()
        views = int(getattr(self.dataset, 'num_views', 1) or 1)
        offset = (self.epoch % views) * len(self.dataset)
        if not offset:
            return indices
        return iter([i + offset for i in indices])


# --------------------------------------------------------------------------
# config switch
# --------------------------------------------------------------------------
def _type_name(cfg) -> str:
    t = cfg.get('type', '') if isinstance(cfg, dict) else type(cfg).__name__
    t = t if isinstance(t, str) else getattr(t, '__name__', str(t))
    return t.split('.')[-1]


def _slug(text: str) -> str:
    return re.sub(r'[^A-Za-z0-9_.+-]+', '-', str(text)).strip('-') or 'x'


def _cache_name(dataset_cfg: dict, backbone_cfg: dict, preproc_cfg: dict,
                options: dict) -> str:
    source = dataset_cfg
    while _type_name(source) in LABEL_ONLY_WRAPPERS and isinstance(
            source.get('dataset'), dict):
        source = source['dataset']
    split = source.get('split') or osp.splitext(
        osp.basename(str(source.get('ann_file') or '')))[0] or 'data'
    # only what changes the features (not batch size, workers, device...)
    options = {
        k: options[k]
        for k in ('dtype', 'num_views', 'seed') if k in options
    }
    ident = json.dumps(
        _jsonable(
            dict(
                dataset=source,
                backbone=backbone_cfg,
                preprocessor=preproc_cfg,
                options=options)),
        sort_keys=True)
    return '_'.join([
        _slug(_type_name(source)),
        _slug(split),
        _slug(backbone_cfg.get('model_name', _type_name(backbone_cfg))),
        f'{backbone_cfg.get("input_resolution", "na")}px',
        options.get('dtype', 'float16'), f'k{options.get("num_views", 1)}',
        _sha256(ident)[:8]
    ])


def apply_feature_cache(cfg):
    """Turn a config with an image tower into a feature-cache config.

    No-op unless the config has ``feature_cache = dict(...)`` (with
    ``enabled=True``, the default). Then

    * ``model.backbone`` (the frozen tower) and ``model.data_preprocessor``
      move into a :class:`CachedFeatureDataset` around each of
      ``train/val/test_dataloader.dataset``, with
      ``cache_dir = <cache_root>/<dataset>_<split>_<model>_<res>px_<dtype>
      _k<views>_<hash>`` (``cache_root`` defaults to
      ``<work_dir>/feature_cache``);
    * the model gets ``PrecomputedFeatures`` and ``FeatureDataPreprocessor``;
    * the train sampler becomes :class:`CachedViewSampler`.

    ``feature_cache`` keys: ``cache_root``, ``num_views`` (train only; val
    and test use 1), ``dtype``, ``seed``, ``batch_size``, ``num_workers``,
    ``device``, ``shard_size``, ``on_mismatch``, ``progress``.

    Args:
        cfg (mmengine.Config): modified in place and returned.
    """
    fc = cfg.get('feature_cache', None)
    if not fc or not fc.get('enabled', True):
        return cfg
    fc = dict(fc)
    fc.pop('enabled', None)
    cache_root = fc.pop('cache_root', None) or osp.join(
        cfg.get('work_dir', None) or 'work_dirs', 'feature_cache')
    num_views = int(fc.pop('num_views', 1))
    allowed = {
        'dtype', 'seed', 'batch_size', 'num_workers', 'device', 'shard_size',
        'on_mismatch', 'progress'
    }
    unknown = set(fc) - allowed
    if unknown:
        raise ValueError(f'feature_cache: unknown keys {sorted(unknown)}; '
                         f'allowed: cache_root, num_views, enabled, '
                         f'{sorted(allowed)}.')
    model = cfg.model
    if _type_name(model.backbone) == 'PrecomputedFeatures':
        return cfg  # already converted
    train_cfg = model.get('train_cfg') or {}
    if train_cfg.get('augments'):
        raise ValueError(
            'feature_cache: model.train_cfg.augments (Mixup/CutMix) mix '
            'images and cannot be applied to cached features.')
    backbone = copy.deepcopy(model.backbone.to_dict(
    ) if hasattr(model.backbone, 'to_dict') else dict(model.backbone))
    preproc = model.get('data_preprocessor', None) or {}
    preproc = copy.deepcopy(
        preproc.to_dict() if hasattr(preproc, 'to_dict') else dict(preproc))
    preproc.setdefault('type', 'ClsDataPreprocessor')
    preproc.pop('batch_augments', None)
    options = dict(fc)
    model.backbone = dict(type='mmcoop.PrecomputedFeatures')
    model.data_preprocessor = dict(type='mmcoop.FeatureDataPreprocessor')
    for loader_name in ('train_dataloader', 'val_dataloader',
                        'test_dataloader'):
        loader = cfg.get(loader_name, None)
        if not loader or not loader.get('dataset'):
            continue
        dataset = loader.dataset
        if _type_name(dataset) == 'CachedFeatureDataset':
            continue
        dataset = copy.deepcopy(dataset.to_dict(
        ) if hasattr(dataset, 'to_dict') else dict(dataset))
        views = num_views if loader_name == 'train_dataloader' else 1
        opts = dict(options, num_views=views)
        # extraction decodes and augments every image once per view: use
        # the loader's workers and batch size unless told otherwise
        opts.setdefault('num_workers', loader.get('num_workers', 0))
        opts.setdefault('batch_size', loader.get('batch_size', 32))
        name = _cache_name(dataset, backbone, preproc, opts)
        loader.dataset = dict(
            type='mmcoop.CachedFeatureDataset',
            dataset=dataset,
            backbone=copy.deepcopy(backbone),
            data_preprocessor=copy.deepcopy(preproc),
            cache_dir=osp.join(cache_root, name),
            **opts)
        if loader_name == 'train_dataloader':
            sampler = loader.get('sampler', None) or dict(
                type='DefaultSampler', shuffle=True)
            if _type_name(sampler) == 'DefaultSampler':
                sampler = dict(sampler)
                sampler['type'] = 'mmcoop.CachedViewSampler'
                loader.sampler = sampler
            elif views > 1:
                raise ValueError(
                    f'feature_cache: num_views={views} needs the train '
                    'sampler CachedViewSampler (a DefaultSampler); the '
                    f'config uses {_type_name(sampler)}.')
    return cfg

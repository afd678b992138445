# Copyright (c) mmcoop contributors. All rights reserved.
"""The dataset that serves cached features: build once, validate, read."""
import contextlib
import copy
import errno
import os
import os.path as osp
import shutil
import time
from typing import List, Optional, Tuple, Union

import numpy as np
import torch
from mmengine.dist import barrier, broadcast_object_list, get_dist_info
from mmengine.logging import MMLogger
from mmengine.registry import DefaultScope
from mmpretrain.datasets.transforms import PackInputs

from mmcoop.registry import DATASETS, MODELS
from ..partial_label import padding_targets
from ..samplers import EpochIndex
from ..utils import check_outside_dataset, path_is_inside
from ..wrapper import DatasetWrapper
from .errors import FeatureCacheError, FeatureCacheMismatchError
from .extract import extract_views, views_differ
from .images import fingerprint_images
from .key import (backbone_key, dataset_key, image_paths, jsonable,
                  pipeline_key, preprocessor_key)
from .lock import BuildLock
from .options import check_option
from .quantize import dequantize
from .store import (CACHE_FORMAT, CACHE_VERSION, MANIFEST, QUANTISED,
                    check_cache, commit, partial_dir, ready_marker,
                    remove_cache, remove_leftovers, run_token, write_manifest)

__all__ = ['CachedFeatureDataset']


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


def _extraction_device(name: Optional[str]) -> torch.device:
    """The device of option ``device`` (None: CUDA where available, else
    the CPU); one this machine does not have is refused naming the option,
    before anything is written."""
    if name is None:
        return torch.device(f'cuda:{torch.cuda.current_device()}'
                            if torch.cuda.is_available() else 'cpu')
    device = torch.device(name)
    backend = getattr(torch, device.type, None)
    count = getattr(backend, 'device_count', lambda: 0)
    available = device.type == 'cpu' or (
        getattr(backend, 'is_available', lambda: False)()
        and (device.index is None or device.index < count()))
    if not available:
        raise ValueError(
            f'feature_cache.device={name!r}: this machine has no such device. '
            "Fix: leave it out (CUDA where available, else the CPU) or set "
            "it to 'cpu'.")
    return device


@DATASETS.register_module()
class CachedFeatureDataset(DatasetWrapper):
    """Serve a frozen image tower's dense features from a disk cache.

    Wraps a dataset (whose pipeline loads, augments and packs images) and an
    image tower (e.g. :class:`~mmcoop.models.FrozenCLIP`). On first use the
    tower runs once over ``num_views`` passes of the pipeline and the
    features are stored under ``cache_dir`` (layout: :mod:`.store`);
    afterwards each sample is ``dict(inputs=<(D, N) tensor, dtype; float32
    for int8>,
    data_samples=<DataSample>)`` with the targets and meta information of
    the wrapped dataset. Use it with ``backbone=dict(type=
    'PrecomputedFeatures')`` and ``data_preprocessor=dict(type=
    'FeatureDataPreprocessor')`` in the model.

    **Reuse.** An existing cache is used only if it still describes the
    data: the same key (:mod:`.key`: tower weights, preprocessor, images,
    pipeline, views, seed, dtype), the same image files (:mod:`.images`,
    ``verify``) and intact shards (size, time and SHA-256 per shard;
    NaN/Inf are refused at every read). Otherwise it is rebuilt
    (``on_mismatch='rebuild'``; a warning names what differs) or refused
    (``'error'``). A directory that is not a feature cache is never deleted.
    Processes that need the same cache at once take turns (:mod:`.lock`):
    one builds, the others wait and reuse it.

    **Views.** View ``k`` is the ``k``-th pass of the (random) train
    pipeline, with the RNGs seeded per sample from ``(seed, k, index)``
    (reproducible for any batch size or worker count). Indexed by the
    :class:`~mmcoop.datasets.EpochIndex` of an
    :class:`~mmcoop.datasets.EpochSeededSampler`, epoch ``e`` reads view
    ``e % num_views``; a plain index ``k * len(self) + i`` addresses view
    ``k`` of sample ``i``. ``len(self)`` is the number of images.
    ``num_views=1`` with a random pipeline freezes one augmentation per
    image for the whole schedule; the official recipe draws a fresh Cutout
    + RandAugment every epoch (``docs/benchmarks.md`` discusses the
    trade-off). Each view of COCO train at 448 px costs 16.6 GB in fp16.

    **Labels.** Never cached. Targets come from ``dataset.get_data_info``
    at every access, so a :class:`PartialLabelDataset` inside the cache
    (recommended) can change its mask or seed and reuse the same features.
    Outside the cache it works with ``num_views=1`` only.

    **Seeds.** ``seed`` seeds the views only. A tower with random weights
    (``pretrained=None``) is a function of its own ``init_seed``
    (:class:`~mmcoop.models.FrozenCLIP`), which is the one owner of that
    seed: the cache builds the tower from its config unchanged, so the
    train, val and test caches and the uncached model share one tower.

    Args:
        dataset (dict | Dataset): the dataset (images + pipeline).
        backbone (dict | nn.Module): the frozen image tower, built exactly
            as the uncached model's ``backbone`` (same weights: its tensors
            are hashed into the cache key).
        cache_dir (str): the directory of this cache (outside the dataset
            tree), e.g. ``'work_dirs/feature_cache/coco_train'``.
        data_preprocessor (dict | nn.Module, optional): the image
            preprocessor of the uncached model. Defaults to
            :class:`~mmcoop.models.CLIPDataPreprocessor`.
        num_views (int): cached passes of the pipeline. Defaults to 1.
        seed (int): seed of the views. Defaults to 0.
        batch_size (int): extraction batch size. Defaults to 32.
        num_workers (int): extraction dataloader workers (decoding and
            augmentation). Defaults to 0.
        dtype (str): ``'float16'`` (default; ~1e-3 relative error, half the
            disk), ``'float32'`` (exact) or ``'int8'`` (a quarter of the
            disk plus 4 bytes per token: symmetric per-token quantisation,
            error <= scale / 2 per element, served as float32; see
            :mod:`.quantize` and ``docs/benchmarks.md``).
        device (str, optional): extraction device. Defaults to CUDA when
            available, else CPU.
        shard_size (int): samples per shard file. Defaults to 4096.
        on_mismatch (str): ``'rebuild'`` (default) or ``'error'`` when an
            existing cache has another key, changed images or a damaged
            shard.
        verify (str): ``'fast'`` (default: size and modification time of
            every image and shard, contents hashed only when those changed)
            or ``'full'`` (SHA-256 of every image and shard, NaN/Inf scan).
        lock_timeout (float, optional): seconds to wait for another process
            building the same cache (and, with N processes, for rank 0 to
            build it); None waits for ever. Defaults to 3600.
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
                 verify: str = 'fast',
                 lock_timeout: Optional[float] = 3600.0,
                 progress: bool = True,
                 lazy_init: bool = False):
        options = dict(
            num_views=num_views,
            seed=seed,
            batch_size=batch_size,
            num_workers=num_workers,
            dtype=dtype,
            device=device,
            shard_size=shard_size,
            on_mismatch=on_mismatch,
            verify=verify,
            lock_timeout=lock_timeout,
            progress=progress)
        for name, value in options.items():
            check_option(name, value, 'CachedFeatureDataset')
        if not cache_dir:
            raise ValueError('CachedFeatureDataset: cache_dir is required, '
                             "e.g. 'work_dirs/feature_cache/coco_train'.")
        self._wrap(dataset)
        self.__dict__.update(options)
        self.seed, self.num_workers = int(seed), int(num_workers)
        self._backbone_cfg = backbone
        self._preprocessor_cfg = data_preprocessor or dict(
            type='mmcoop.CLIPDataPreprocessor')
        self.cache_dir = osp.abspath(osp.expanduser(str(cache_dir)))
        self.manifest: Optional[dict] = None
        self._arrays = self._scales = None
        self._packer = self._find_packer()
        self.pipeline = _FeatureLoader(self)
        if self.test_mode and num_views > 1:
            MMLogger.get_current_instance().warning(
                f'CachedFeatureDataset: num_views={num_views} for a test-mode '
                'dataset; evaluation reads view 0 only.')
        if not lazy_init:
            self.full_init()

    # ------------------------------------------------------------------
    # dataset protocol
    # ------------------------------------------------------------------
    @property
    def test_mode(self) -> bool:
        return bool(getattr(self.dataset, 'test_mode', False))

    @property
    def data_root(self):
        return getattr(self.image_source, 'data_root', None)

    @property
    def split(self):
        return getattr(self.image_source, 'split', None)

    @property
    def feature_shape(self) -> Tuple[int, int]:
        """``(D, N)`` of the cached features."""
        self.full_init()
        return tuple(self.manifest['feature_shape'])

    def _split_index(self, idx: int) -> Tuple[int, int]:
        n = len(self.dataset)
        if isinstance(idx, EpochIndex):  # from EpochSeededSampler
            return int(idx), idx.epoch % self.num_views
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
        if getattr(idx, 'padding', False):  # a distributed repeat
            padding_targets(info)
        info['_feature_index'] = (view, index)
        return info

    def get_cat_ids(self, idx: int) -> List[int]:
        index, _ = self._split_index(idx)
        return self.dataset.get_cat_ids(index)

    def __getitem__(self, idx: int) -> dict:
        return self.pipeline(self.get_data_info(idx))

    def read(self, index: int, view: int = 0) -> torch.Tensor:
        """The cached ``(D, N)`` features of sample ``index`` in ``view``.

        Raises :class:`FeatureCacheError` if they are not finite (a shard
        altered after the build): such values are never served."""
        self.full_init()
        if self._arrays is None:
            self._open()
        shard, row = divmod(index, self.manifest['shard_size'])
        values = np.array(self._arrays[view][shard][row])
        if self._scales is not None:
            values = dequantize(values, self._scales[view][shard][row])
        if not np.isfinite(values).all():
            fname = self._files[view][shard]
            raise FeatureCacheError(
                f'Feature cache {self.cache_dir}: sample {index} of view '
                f'{view} (shard {fname}) holds NaN or Inf values; the shard '
                'was altered after the build. Fix: delete the cache '
                'directory (the next run rebuilds it).')
        return torch.from_numpy(values)

    @property
    def clip_identity(self) -> Optional[dict]:
        """The identity of the frozen image tower whose features this
        cache holds (``FrozenCLIP.clip_identity``, from its config); the
        runner records it in the checkpoints of a cached run, whose model
        has no tower of its own."""
        from mmcoop.models.backbones.frozen_clip import config_clip_identity
        built = getattr(self._backbone_cfg, 'clip_identity', None)
        return dict(built) if isinstance(built, dict) else \
            config_clip_identity(self._backbone_cfg)

    def _open(self) -> None:
        stamp = getattr(self, '_build_stamp', None)
        if stamp is not None and _manifest_stamp(self.cache_dir) != stamp:
            raise FeatureCacheError(
                f'Feature cache {self.cache_dir} was replaced while this run '
                'read it: another run sharing the folder rebuilt it for '
                'another tower, pipeline or dataset (on_mismatch='
                "'rebuild'), so its shards are no longer the features this "
                'run checked. Fix: give the runs that use other towers or '
                "pipelines their own feature_cache.cache_root (or set "
                "on_mismatch='error' in the shared one), then resume this "
                'run.')
        views = range(self.manifest['num_views'])
        arrays, files = [[] for _ in views], [[] for _ in views]
        scales = ([[] for _ in views]
                  if self.manifest['dtype'] in QUANTISED else None)
        for rec in self.manifest['shards']:
            path = osp.join(self.cache_dir, rec['file'])
            arrays[rec['view']].append(np.load(path, mmap_mode='r'))
            files[rec['view']].append(rec['file'])
            if scales is not None:
                scales[rec['view']].append(
                    np.load(
                        osp.join(self.cache_dir, rec['scales']['file']),
                        mmap_mode='r'))
        self._arrays, self._files, self._scales = arrays, files, scales

    def __getstate__(self):
        state = self.__dict__.copy()
        state['_arrays'] = None  # memmaps are reopened in each process
        state['_scales'] = None
        return state

    def _repr_fields(self, initialized: bool) -> list:
        fields = [('Cache dir', self.cache_dir), ('Views', self.num_views),
                  ('Dtype', self.dtype)]
        if initialized:
            fields += [('Number of samples', len(self)),
                       ('Feature shape', self.feature_shape)]
        return fields

    # ------------------------------------------------------------------
    # building / validating
    # ------------------------------------------------------------------
    def _find_packer(self):
        transforms = getattr(self.dataset.pipeline, 'transforms', ())
        for t in reversed(list(transforms)):
            if isinstance(t, PackInputs):
                return t
        return PackInputs()

    @staticmethod
    def _build_module(cfg):
        if isinstance(cfg, torch.nn.Module):
            return cfg
        # Built from its config unchanged, in a forked RNG: the run's global
        # RNG is not consumed, and a random tower (pretrained=None) is
        # decided by its own `init_seed`, as in the uncached model.
        with torch.random.fork_rng(devices=[]), \
                DefaultScope.overwrite_default_scope('mmcoop'):
            return MODELS.build(copy.deepcopy(cfg))

    def make_key(self, backbone, preprocessor, paths=None) -> dict:
        """The cache key for this dataset with this tower (:mod:`.key`)."""
        paths = image_paths(self.dataset) if paths is None else paths
        return jsonable(
            dict(
                backbone=backbone_key(backbone),
                data_preprocessor=preprocessor_key(preprocessor),
                dataset=dataset_key(self.dataset, paths),
                pipeline=pipeline_key(self.dataset.pipeline),
                num_views=self.num_views,
                seed=self.seed,
                dtype=self.dtype))

    def _init_wrapper(self) -> None:
        """Validate the cache, building it first if needed."""
        check_outside_dataset(
            self.cache_dir,
            self.dataset_dirs(),
            'feature cache',
            example="'work_dirs/feature_cache/<name>'")
        backbone = self._build_module(self._backbone_cfg)
        preprocessor = self._build_module(self._preprocessor_cfg)
        paths = image_paths(self.dataset)
        key = self.make_key(backbone, preprocessor, paths)
        rank, world_size = get_dist_info()
        manifest, marker = None, None
        if world_size > 1:
            # rank 0 names the file by which it says the cache is ready
            token = [run_token()]
            broadcast_object_list(token)
            marker = ready_marker(self.cache_dir, token[0])
        if rank == 0:
            try:
                manifest = self._ensure(key, paths, backbone, preprocessor)
            except BaseException as e:
                if marker:  # the other ranks stop with rank 0's reason
                    with contextlib.suppress(OSError):
                        _write_marker(marker, f'{type(e).__name__}: {e}')
                raise
            if marker:
                _write_marker(marker, '')
        else:
            self._wait_for_rank0(marker)
        if world_size > 1:
            barrier()
            if rank == 0:
                os.remove(marker)
        if manifest is None:
            manifest = self._built_manifest(key, paths)
        self.manifest = manifest
        # the build this dataset checked: a process that reopens the shards
        # (a loader worker, each epoch) must read that build, not one that
        # another run put in its place (see _open)
        self._build_stamp = _manifest_stamp(self.cache_dir)
        del backbone, preprocessor
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _wait_for_rank0(self, marker: str, poll: float = 2.0) -> None:
        """Ranks > 0 while rank 0 checks or builds the cache: wait for its
        ``marker`` (:func:`~.store.ready_marker`), written once rank 0's
        check (with ``verify``, which may hash everything) or build is
        done, *outside* any collective op, for up to ``lock_timeout``
        seconds like any other process waiting for a builder. In a barrier
        the wait would end at the process group's timeout (torch's
        default: 10 min with NCCL), and an extraction of COCO with several
        views, or a ``verify='full'`` check, can take longer."""
        logger = MMLogger.get_current_instance()
        start, announced = time.monotonic(), False
        while True:
            try:
                with open(marker) as f:
                    failure = f.read()
            except OSError:
                failure = None
            if failure == '':
                return
            if failure:
                raise FeatureCacheError(
                    f'Rank 0 could not check or build the feature cache '
                    f'{self.cache_dir}: {failure}')
            if not announced:
                logger.info(f'Feature cache {self.cache_dir}: waiting for '
                            'rank 0 to check or build it (up to '
                            f'{self.lock_timeout} s).')
                announced = True
            if self.lock_timeout is not None and \
                    time.monotonic() - start > self.lock_timeout:
                raise FeatureCacheError(
                    f'Timed out after {self.lock_timeout:g} s waiting for '
                    f'rank 0 to build the feature cache {self.cache_dir}. '
                    'Fix: raise feature_cache.lock_timeout (seconds, or None '
                    'to wait for ever), or build the cache first with a '
                    'one-process run of the same config.')
            time.sleep(poll)

    def _ensure(self, key, paths, backbone, preprocessor) -> dict:
        """The manifest of a valid cache, built if needed (rank 0)."""
        status, why, manifest = check_cache(self.cache_dir, key, paths,
                                            self.verify)
        if status != 'ok':
            with self._writable_root(status, why):
                return self._build_locked(key, paths, backbone, preprocessor)
        return self._reused(manifest, paths)

    def _reused(self, manifest: dict, paths) -> dict:
        """``manifest``, of a valid cache read as it is, said in the log."""
        MMLogger.get_current_instance().info(
            f'Feature cache {self.cache_dir}: reusing {len(paths)} samples '
            f'x {self.num_views} view(s) (key matches).')
        return manifest

    def _built_manifest(self, key, paths) -> dict:
        """The manifest of the cache just built (a fast check), or a
        :class:`FeatureCacheError` saying it is not usable."""
        status, why, manifest = check_cache(self.cache_dir, key, paths,
                                            'fast')
        if status != 'ok':
            raise FeatureCacheError(
                f'Feature cache {self.cache_dir} is not usable after the '
                f'build ({status}: {why}).')
        return manifest

    @contextlib.contextmanager
    def _writable_root(self, status: str, why: str):
        """Name a cache folder that cannot be written (read-only storage,
        no permission) with the option and the fix, where the cache has to
        be built or rebuilt (a valid cache there is only read)."""
        from mmcoop.utils.checkpoint import is_not_writable
        root = osp.dirname(self.cache_dir)
        try:
            yield
        except OSError as e:
            name = os.fsdecode(e.filename) if e.filename else ''
            # the cache's own files, or a folder above it to be created
            if not is_not_writable(e) or not name or not (
                    path_is_inside(name, root) or path_is_inside(root, name)):
                raise
            where = 'is on read-only storage' if e.errno == errno.EROFS \
                else 'is not writable by this user'
            raise FeatureCacheError(
                f'Feature cache {self.cache_dir} has to be built ({status}: '
                f'{why}), but feature_cache.cache_root {root!r} {where} '
                f'({e.strerror}: {name}). Nothing was written there. Fix: '
                'point feature_cache.cache_root to a writable folder (the '
                'cache is built there once, then only read), or make the '
                'folder writable.') from e

    def _build_locked(self, key, paths, backbone, preprocessor) -> dict:
        """Build the cache under its lock (unless another process built
        it while this one waited); its manifest."""
        logger = MMLogger.get_current_instance()
        os.makedirs(osp.dirname(self.cache_dir), exist_ok=True)
        lock = BuildLock(
            self.cache_dir,
            self.lock_timeout,
            on_wait=lambda holder: logger.info(
                f'Feature cache {self.cache_dir}: {holder} is building '
                f'it; waiting (up to {self.lock_timeout} s).'))
        with lock:
            # another process may have built it while we waited
            status, why, manifest = check_cache(self.cache_dir, key, paths,
                                                self.verify)
            if status == 'ok':
                return self._reused(manifest, paths)
            self._replace(status, why, key, paths, backbone, preprocessor)
            return self._built_manifest(key, paths)

    def _replace(self, status, why, key, paths, backbone,
                 preprocessor) -> None:
        """Build the cache, after removing an outdated one (under the
        lock)."""
        if status == 'foreign':
            raise FeatureCacheError(why)
        if status in ('mismatch', 'stale', 'damaged'):
            what = {
                'mismatch': 'was built for something else',
                'stale': 'no longer describes the images',
                'damaged': 'is damaged'
            }[status]
            msg = f'Feature cache {self.cache_dir} {what}: {why}.'
            if self.on_mismatch == 'error':
                raise FeatureCacheMismatchError(
                    f"{msg} Refusing to use it (on_mismatch='error'). Fix: "
                    'delete the directory, point cache_dir elsewhere, or '
                    "set on_mismatch='rebuild'.")
            MMLogger.get_current_instance().warning(f'{msg} Rebuilding it.')
            remove_cache(self.cache_dir)
        self._build(key, paths, backbone, preprocessor)

    def _build(self, key, paths, backbone, preprocessor) -> None:
        logger = MMLogger.get_current_instance()
        device = _extraction_device(self.device)
        remove_leftovers(self.cache_dir)
        tmp = partial_dir(self.cache_dir)
        if osp.exists(tmp):
            shutil.rmtree(tmp)
        os.makedirs(tmp)
        logger.info(f'Feature cache {self.cache_dir}: extracting {len(paths)} '
                    f'samples x {self.num_views} view(s) with '
                    f'{type(backbone).__name__} on {device} ({self.dtype}).')
        t0 = time.time()
        try:
            images = fingerprint_images(paths)
            backbone = backbone.to(device).eval()
            if self.num_views > 1 and not views_differ(
                    self.dataset, preprocessor.to(device), device,
                    self.seed, self.num_views):
                logger.warning(
                    f'Feature cache {self.cache_dir}: num_views='
                    f'{self.num_views}, but the views of the first 16 '
                    'images are identical: the pipeline seems to draw no '
                    f'random augmentation, so the {self.num_views} views '
                    f'would be one view stored {self.num_views} times '
                    f'({self.num_views}x the extraction time and disk). '
                    'Fix: num_views=1, or a train pipeline with random '
                    "augmentation (the shipped configs' Cutout + "
                    'RandAugment).')
            shape, shards = extract_views(
                tmp,
                self.dataset,
                backbone,
                preprocessor.to(device),
                device,
                num_views=self.num_views,
                seed=self.seed,
                dtype=self.dtype,
                shard_size=self.shard_size,
                batch_size=self.batch_size,
                num_workers=self.num_workers,
                progress=self.progress)
            write_manifest(
                tmp,
                dict(
                    format=CACHE_FORMAT,
                    version=CACHE_VERSION,
                    key=key,
                    num_samples=len(paths),
                    num_views=self.num_views,
                    feature_shape=list(shape),
                    dtype=self.dtype,
                    shard_size=self.shard_size,
                    shards=shards,
                    images=images,
                    info=dict(
                        created=time.strftime('%Y-%m-%d %H:%M:%S'),
                        extraction_seconds=round(time.time() - t0, 3),
                        device=str(device),
                        torch=torch.__version__,
                        backbone_cfg=jsonable(self._backbone_cfg)
                        if isinstance(self._backbone_cfg, dict) else None)))
            commit(tmp, self.cache_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            backbone.to('cpu')
        logger.info(f'Feature cache {self.cache_dir}: done in '
                    f'{time.time() - t0:.1f} s.')


def _write_marker(path: str, failure: str) -> None:
    """Write rank 0's ready marker: empty when the cache is ready, else
    the reason it is not (atomically: the others never read half of
    it)."""
    from mmcoop.utils.checkpoint import atomic_open
    os.makedirs(osp.dirname(path), exist_ok=True)
    with atomic_open(path, 'w') as f:
        f.write(failure)


def _manifest_stamp(cache_dir: str) -> Optional[tuple]:
    """``(inode, size, mtime)`` of a cache's manifest (written last, and
    anew by every build, in a new folder): which build the folder holds;
    None without one."""
    try:
        st = os.stat(osp.join(cache_dir, MANIFEST))
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns

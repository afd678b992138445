# Copyright (c) mmcoop contributors. All rights reserved.
"""The config switch: ``feature_cache = dict(...)`` -> a cached config."""
import copy
import json
import os.path as osp
import re
from typing import Optional

from mmengine.dataset import DefaultSampler
from mmengine.logging import MMLogger

from mmcoop.registry import DATA_SAMPLERS, DATASETS, MODELS
from mmcoop.utils.config_types import registered_class
from mmcoop.utils.paths import check_output_folder
from ..samplers import EpochSeededSampler
from ..wrapper import DatasetWrapper
from .dataset import CachedFeatureDataset
from .key import jsonable, sha256
from .options import OPTIONS, SWITCH_ONLY, check_option

__all__ = ['apply_feature_cache', 'restore_image_model']

_EXAMPLE = ("feature_cache=dict(cache_root='work_dirs/feature_cache', "
            'num_views=1), or on the command line --cfg-options '
            'feature_cache.cache_root=work_dirs/feature_cache')


def _registered(registry, cfg):
    """The class of config ``cfg`` (:func:`~mmcoop.utils.config_types.
    registered_class`), or of a built object."""
    if isinstance(cfg, dict):
        return registered_class(registry, cfg)
    return type(cfg)


def _name(registry, cfg) -> str:
    cls = _registered(registry, cfg)
    if cls is not None:
        return cls.__name__
    return str(cfg.get('type', 'x')).split('.')[-1]


def _is_labels_only(cfg) -> bool:
    cls = _registered(DATASETS, cfg)
    return bool(
        cls and issubclass(cls, DatasetWrapper) and cls.labels_only
        and isinstance(cfg.get('dataset'), dict))


def _slug(text: str) -> str:
    return re.sub(r'[^A-Za-z0-9_.+-]+', '-', str(text)).strip('-') or 'x'


def _cache_name(dataset_cfg: dict, backbone_cfg: dict, preproc_cfg: dict,
                options: dict) -> str:
    source = dataset_cfg
    while _is_labels_only(source):
        source = source['dataset']
    split = source.get('split') or osp.splitext(
        osp.basename(str(source.get('ann_file') or '')))[0] or 'data'
    # only what changes the features (not batch size, workers, device...)
    options = {
        k: options[k]
        for k in ('dtype', 'num_views', 'seed') if k in options
    }
    ident = json.dumps(
        jsonable(
            dict(
                dataset=source,
                backbone=backbone_cfg,
                preprocessor=preproc_cfg,
                options=options)),
        sort_keys=True)
    return '_'.join([
        _slug(_name(DATASETS, source)),
        _slug(split),
        _slug(backbone_cfg.get('model_name', _name(MODELS, backbone_cfg))),
        f'{backbone_cfg.get("input_resolution", "na")}px',
        options.get('dtype', 'float16'), f'k{options.get("num_views", 1)}',
        sha256(ident)[:8]
    ])


def _check(fc) -> Optional[dict]:
    """The options of ``feature_cache``, checked; None if it is off."""
    if fc is None or fc is False:
        return None
    if not isinstance(fc, dict):
        raise ValueError(
            'feature_cache must be a dict of options (or None to turn the '
            f'cache off), e.g. {_EXAMPLE}; got {fc!r} '
            f'({type(fc).__name__}).')
    allowed = {**OPTIONS, **SWITCH_ONLY}
    unknown = sorted(set(fc) - set(allowed))
    if unknown:
        raise ValueError(f'feature_cache: unknown keys {unknown}; allowed: '
                         f'{sorted(allowed)}.')
    for name, value in fc.items():
        check_option(name, value, 'feature_cache')
    fc = dict(fc)
    return fc if fc.pop('enabled', True) else None


def _to_dict(cfg) -> dict:
    return copy.deepcopy(
        cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg or {}))


def apply_feature_cache(cfg):
    """Turn a config with an image tower into a feature-cache config.

    No-op unless the config has ``feature_cache = dict(...)`` (with
    ``enabled=True``, the default; ``dict()`` turns the cache on with the
    defaults). Then

    * ``model.backbone`` (the frozen tower) and ``model.data_preprocessor``
      move into a :class:`CachedFeatureDataset` around each of
      ``train/val/test_dataloader.dataset``, with
      ``cache_dir = <cache_root>/<dataset>_<split>_<model>_<res>px_<dtype>
      _k<views>_<hash>`` (``cache_root`` defaults to
      ``<work_dir>/feature_cache``);
    * the model gets ``PrecomputedFeatures`` and ``FeatureDataPreprocessor``;
    * with ``num_views > 1``, the train sampler must be an
      :class:`~mmcoop.datasets.EpochSeededSampler` (its epoch selects the
      view); a plain ``DefaultSampler`` is turned into one (same order).

    ``feature_cache`` keys: ``enabled``, ``cache_root``, and the options of
    :class:`CachedFeatureDataset`: ``num_views`` (train only; val and test
    use 1), ``dtype``, ``seed`` (of the views), ``batch_size``,
    ``num_workers``, ``device``, ``shard_size``, ``on_mismatch``,
    ``verify``, ``lock_timeout``, ``progress``. A wrong type or an unknown
    key is a ``ValueError`` naming it.

    Args:
        cfg (mmengine.Config): modified in place and returned.
    """
    from mmcoop.models.backbones.precomputed import PrecomputedFeatures
    options = _check(cfg.get('feature_cache', None))
    if options is None:
        return cfg
    cache_root = options.pop('cache_root', None) or osp.join(
        cfg.get('work_dir', None) or 'work_dirs', 'feature_cache')
    # a file there: named now, not as os.makedirs' FileExistsError after
    # the image tower is built
    check_output_folder(cache_root, f'feature_cache.cache_root {cache_root!r}')
    num_views = options.pop('num_views', 1)
    model = cfg.model
    backbone_cls = _registered(MODELS, model.backbone)
    if backbone_cls and issubclass(backbone_cls, PrecomputedFeatures):
        return _rename_converted_caches(cfg)  # already converted
    train_cfg = model.get('train_cfg') or {}
    if train_cfg.get('augments'):
        raise ValueError(
            'feature_cache: model.train_cfg.augments (Mixup/CutMix) mix '
            'images and cannot be applied to cached features.')
    backbone = _to_dict(model.backbone)
    preproc = _to_dict(model.get('data_preprocessor', None))
    preproc.setdefault('type', 'ClsDataPreprocessor')
    preproc.pop('batch_augments', None)
    model.backbone = dict(type='mmcoop.PrecomputedFeatures')
    model.data_preprocessor = dict(type='mmcoop.FeatureDataPreprocessor')
    for loader_name in ('train_dataloader', 'val_dataloader',
                        'test_dataloader'):
        loader = cfg.get(loader_name, None)
        if not loader or not loader.get('dataset'):
            continue
        dataset_cls = _registered(DATASETS, loader.dataset)
        if dataset_cls and issubclass(dataset_cls, CachedFeatureDataset):
            continue
        dataset = _to_dict(loader.dataset)
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
        if views > 1:
            loader.sampler = _view_sampler(
                loader.get('sampler', None)
                or dict(type='DefaultSampler', shuffle=True), views)
    return cfg


# the names _cache_name gives: ..._<res>px_<dtype>_k<views>_<8 hex digits>
_CACHE_NAME = re.compile(r'.+_[^_]+px_[a-z0-9]+_k[0-9]+_[0-9a-f]{8}$')


def _rename_converted_caches(cfg):
    """A converted config (the one a cached run dumps): each cache folder
    that :func:`_cache_name` named is named again from the fields the
    config now has. A tower, pipeline or dataset changed in it (e.g.
    ``--cfg-options test_dataloader.dataset.backbone.model_name=...``)
    thus gets a folder of its own instead of rebuilding, in place, the
    one the original run reads; the unchanged config keeps its folder.
    A ``cache_dir`` the user named is kept."""
    logger = MMLogger.get_current_instance()
    for loader_name in ('train_dataloader', 'val_dataloader',
                        'test_dataloader'):
        dataset = (cfg.get(loader_name, None) or {}).get('dataset')
        dataset_cls = _registered(DATASETS, dataset)
        if not (isinstance(dataset, dict) and dataset_cls
                and issubclass(dataset_cls, CachedFeatureDataset)):
            continue
        folder, old = osp.split(str(dataset.get('cache_dir') or ''))
        if not _CACHE_NAME.match(old) or not isinstance(
                dataset.get('dataset'), dict):
            continue
        preproc = _to_dict(dataset.get('data_preprocessor', None))
        preproc.setdefault('type', 'ClsDataPreprocessor')
        # the dataset's options: _cache_name keeps those of the features
        new = _cache_name(
            _to_dict(dataset.dataset), _to_dict(dataset.get('backbone')),
            preproc, _to_dict(dataset))
        if new != old:
            dataset.cache_dir = osp.join(folder, new)
            logger.info(
                f'{loader_name}: the feature cache folder {old} was named '
                'for other image features than this config gives (its '
                'tower, pipeline or dataset changed since the conversion); '
                f'this run uses {new} beside it.')
    return cfg


def restore_image_model(cfg):
    """The image model of a feature-cache config (the config a run with
    ``feature_cache`` dumps in its work dir): the frozen tower and the
    data preprocessor that :func:`apply_feature_cache` moved into a
    :class:`CachedFeatureDataset` go back into ``model``, replacing
    ``PrecomputedFeatures`` / ``FeatureDataPreprocessor``, so the run's
    checkpoints score images (they hold no tower weights either way).
    A ``PrecomputedFeatures`` model without such a dataset is kept (a
    features-only model). Other configs are returned unchanged.

    Args:
        cfg (mmengine.Config): modified in place and returned.
    """
    from mmcoop.models.backbones.precomputed import PrecomputedFeatures
    backbone_cls = _registered(MODELS, cfg.model.get('backbone'))
    if not (backbone_cls and issubclass(backbone_cls, PrecomputedFeatures)):
        return cfg
    for loader_name in ('test_dataloader', 'val_dataloader',
                        'train_dataloader'):
        dataset = (cfg.get(loader_name, None) or {}).get('dataset')
        dataset_cls = _registered(DATASETS, dataset)
        if (dataset_cls and issubclass(dataset_cls, CachedFeatureDataset)
                and dataset.get('backbone')):
            cfg.model.backbone = _to_dict(dataset.backbone)
            cfg.model.data_preprocessor = _to_dict(
                dataset.get('data_preprocessor', None)
                or dict(type='ClsDataPreprocessor'))
            break
    return cfg


def _view_sampler(sampler, views: int) -> dict:
    """The train sampler for ``views`` cached views: an EpochSeededSampler
    (a plain DefaultSampler is converted: same arguments, same order)."""
    cls = _registered(DATA_SAMPLERS, sampler)
    if cls is not None and issubclass(cls, EpochSeededSampler):
        return sampler
    if cls is DefaultSampler:
        return dict(_to_dict(sampler), type='mmcoop.EpochSeededSampler')
    raise ValueError(
        f'feature_cache: num_views={views} needs a train sampler that tells '
        'the dataset the epoch (mmcoop.EpochSeededSampler: epoch e reads '
        f'view e % {views}); the config uses '
        f'{_name(DATA_SAMPLERS, sampler)}. Fix: '
        "train_dataloader.sampler=dict(type='EpochSeededSampler', "
        'shuffle=True), or num_views=1.')

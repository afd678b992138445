# Copyright (c) mmcoop contributors. All rights reserved.
"""What every mmcoop dataset wrapper shares: one inner dataset, its meta
information, the two-stage initialisation and the ``repr``."""
import copy
import os.path as osp
from typing import List, Tuple, Union

from mmengine.dataset import BaseDataset, force_full_init
from mmengine.registry import DefaultScope

from mmcoop.registry import DATASETS
from .utils import check_not_empty

__all__ = ['DatasetWrapper', 'image_source', 'dataset_dirs']


def image_source(dataset):
    """``dataset`` with label-only wrappers (:attr:`DatasetWrapper.
    labels_only`: the same images in the same order) looked through."""
    while isinstance(dataset, DatasetWrapper) and dataset.labels_only:
        dataset = dataset.dataset
    return dataset


def dataset_dirs(dataset) -> List[str]:
    """The folders of the innermost dataset of ``dataset`` (wrappers looked
    through): ``data_root``, the annotation file's folder and the
    ``data_prefix`` folders, as absolute paths (URLs kept as they are).
    Nothing is ever written there.

    Relative paths are resolved against the working directory, as the
    dataset reads them: ``ann_file='train.csv'`` makes the working
    directory a dataset folder (``osp.dirname`` alone would give ``''``,
    and no folder would be protected).
    """
    while isinstance(dataset, DatasetWrapper):
        dataset = dataset.dataset
    dirs = [getattr(dataset, 'data_root', None)]
    ann_file = getattr(dataset, 'ann_file', None)
    if isinstance(ann_file, str) and ann_file:
        dirs.append(ann_file.rsplit('/', 1)[0] if '://' in ann_file else
                    osp.dirname(osp.abspath(osp.expanduser(ann_file))))
    prefix = getattr(dataset, 'data_prefix', None)
    if isinstance(prefix, dict):
        dirs.extend(v for v in prefix.values() if isinstance(v, str))
    return [
        d if '://' in d else osp.abspath(osp.expanduser(d)) for d in dirs
        if isinstance(d, str) and d
    ]


class DatasetWrapper(BaseDataset):
    """Base of the datasets that wrap one inner dataset
    (:class:`~mmcoop.datasets.PartialLabelDataset`,
    :class:`~mmcoop.datasets.feature_cache.CachedFeatureDataset`).

    It subclasses :class:`mmengine.dataset.BaseDataset` only so that
    MMEngine's wrappers (``RepeatDataset``, ``ConcatDataset``...) accept the
    wrappers; it does not call ``BaseDataset.__init__`` and has no
    ``ann_file``, serialisation or ``get_subset`` of its own. Subclasses
    call :meth:`_wrap` in their constructor, implement :meth:`_init_wrapper`
    (the work of :meth:`full_init` after the inner dataset is loaded) and
    :meth:`_repr_fields`.
    """

    #: True when the wrapper changes labels only: the same images in the same
    #: order as the inner dataset (what a feature cache may look through).
    labels_only = False

    def _wrap(self, dataset: Union[BaseDataset, dict]) -> None:
        """Build (from a config) or check the inner dataset."""
        name = type(self).__name__
        if isinstance(dataset, dict):
            # without a default scope, mmpretrain datasets would build their
            # pipelines from mmpretrain's registry only (no mmcoop types)
            scope = None if DefaultScope.get_current_instance() else 'mmcoop'
            with DefaultScope.overwrite_default_scope(scope):
                dataset = DATASETS.build(dataset)
        elif not (hasattr(dataset, 'get_data_info')
                  and hasattr(dataset, 'pipeline')):
            raise TypeError(
                f'{name}: `dataset` must be a dataset config or a dataset '
                'with get_data_info() and a pipeline, got '
                f'{type(dataset).__name__}.')
        self.dataset = dataset
        self._fully_initialized = False

    # ------------------------------------------------------------------
    @property
    def metainfo(self) -> dict:
        """Meta information of the inner dataset (a copy)."""
        return copy.deepcopy(getattr(self.dataset, 'metainfo', {}) or {})

    @property
    def CLASSES(self):
        """Class names of the inner dataset."""
        return self.metainfo.get('classes', None)

    @property
    def class_to_idx(self) -> dict:
        """Map from class name to class index."""
        return {c: i for i, c in enumerate(self.CLASSES or ())}

    @property
    def image_source(self):
        """The dataset that supplies the images: the inner dataset, with
        label-only wrappers (:attr:`labels_only`) looked through."""
        return image_source(self.dataset)

    def dataset_dirs(self) -> List[str]:
        """The folders of the innermost dataset (``data_root``, the
        annotation file's folder, ``data_prefix``): nothing is ever written
        there (:func:`dataset_dirs`)."""
        return dataset_dirs(self.dataset)

    # ------------------------------------------------------------------
    def full_init(self) -> None:
        """Load the inner dataset, check it has a sample (an empty one,
        e.g. a plain mmpretrain dataset with ``serialize_data=False``, is
        named by :func:`~mmcoop.datasets.utils.check_not_empty`), then do
        the wrapper's own work once."""
        if self._fully_initialized:
            return
        if hasattr(self.dataset, 'full_init'):
            self.dataset.full_init()
        check_not_empty(self.dataset, len(self.dataset))
        self._init_wrapper()
        self._fully_initialized = True

    def _init_wrapper(self) -> None:
        """The wrapper's part of :meth:`full_init`."""

    @force_full_init
    def __len__(self) -> int:
        return len(self.dataset)

    def get_subset(self, indices):
        """Not supported: subset the inner dataset instead."""
        raise NotImplementedError(
            f'{type(self).__name__}.get_subset is not supported; use '
            '`indices=` on the inner dataset.')

    get_subset_ = get_subset

    def _repr_fields(self, initialized: bool) -> List[Tuple[str, object]]:
        """``(name, value)`` lines of the ``repr``."""
        return []

    def __repr__(self) -> str:
        initialized = self._fully_initialized
        lines = [f'Dataset {type(self).__name__}']
        lines += [
            f'    {name}: \t{value}'
            for name, value in self._repr_fields(initialized)
        ]
        if not initialized:
            lines.append("    Haven't been initialized")
        lines.append(f'    Inner dataset: \t{type(self.dataset).__name__}')
        return '\n'.join(lines)

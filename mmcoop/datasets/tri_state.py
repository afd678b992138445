# Copyright (c) mmcoop contributors. All rights reserved.
"""Base of the datasets whose labels are stored sparsely and may be unknown.

A ``data_info`` of these datasets keeps only the class indices it knows
about -- ``gt_label`` (positives) and ``gt_negative`` (verified negatives)
-- and :meth:`TriStateMultiLabelDataset.get_data_info` expands them into the
dense ``gt_score`` (``np.float32`` ``(C,)`` in {1, 0, -1}) that mmcoop's
losses, metric and :class:`PartialLabelDataset` read. Every other class gets
the dataset's ``unlabelled_value``: 0 when the labels are complete (COCO
style), -1 (unknown) when the annotation lists verified negatives (Open
Images style). Sparse storage keeps thousands of classes x millions of
images in memory proportional to the annotations, not to ``N x C``.
"""
import os
import os.path as osp
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np
from mmpretrain.datasets import MultiLabelDataset

from mmcoop.utils.tri_state_targets import ABSENT, PRESENT
from .utils import (AnnotationError, NotEmptyMixin, build_pipeline,
                    read_class_list)

__all__ = [
    'TriStateMultiLabelDataset', 'check_images_exist', 'missing_images',
    'dense_score', 'resolve_class_args'
]


def resolve_class_args(owner: str, classes=None, metainfo=None):
    """``classes`` and ``metainfo`` of a dataset with the class list read
    and checked once by :func:`read_class_list` (a file: BOM, outer spaces
    and blank lines dropped; names equal up to case/``_``/spaces refused; a
    missing file names ``<owner>.classes``).

    mmpretrain's ``_compat_classes`` (and mmengine's ``_load_metainfo``)
    would read a file with ``list_from_file``: blank lines and trailing
    spaces become classes and shift every index after them. Any other kind
    of class list (a dict, a set, a number) is refused naming the field:
    mmpretrain says only ``Unsupported type``, and a dict in ``metainfo``
    would become its keys.
    """
    if classes is not None:
        classes = _read_classes(classes, f'{owner}.classes')
    if metainfo is not None and metainfo.get('classes') is not None:
        metainfo = dict(metainfo)
        metainfo['classes'] = _read_classes(metainfo['classes'],
                                            f'{owner}.metainfo.classes')
    return classes, metainfo


def _read_classes(value, field: str) -> tuple:
    """The names of a class argument: a list or tuple of names, or the
    path of a class file (:func:`read_class_list`); any other kind is
    refused naming ``field`` and the kinds accepted."""
    if not isinstance(value, (str, list, tuple)):
        raise ValueError(
            f'{field} is {value!r:.80} ({type(value).__name__}); a class '
            'list is a list or tuple of names in class-index order, or the '
            'path of a text file with one name a line. Fix: give e.g. '
            "['dog', 'cat'] or 'classes.txt'.")
    return tuple(read_class_list(value, field))


def dense_score(num_classes: int, positives: Sequence[int],
                negatives: Optional[Sequence[int]],
                unlabelled_value: float) -> np.ndarray:
    """``(C,)`` float32 targets (:mod:`mmcoop.utils.tri_state_targets`):
    present at ``positives``, absent at ``negatives``,
    ``unlabelled_value`` (absent or unknown) everywhere else."""
    score = np.full(num_classes, unlabelled_value, dtype=np.float32)
    if negatives is not None and len(negatives):
        score[np.asarray(negatives, dtype=np.int64)] = ABSENT
    if len(positives):
        score[np.asarray(positives, dtype=np.int64)] = PRESENT
    return score


def missing_images(paths: Iterable[str]) -> Tuple[List[str], int]:
    """The local ``paths`` that do not exist, and how many were checked.

    One ``os.listdir`` per folder (not one ``stat`` per image), so a check of
    millions of images costs seconds. Remote paths (``'://'``) are skipped.
    """
    listings = {}
    missing = []
    total = 0
    for path in paths:
        if '://' in path:
            continue
        total += 1
        folder, name = osp.split(path)
        names = listings.get(folder)
        if names is None:
            try:
                names = set(os.listdir(folder or '.'))
            except (FileNotFoundError, NotADirectoryError):
                names = set()
            listings[folder] = names
        if name not in names:
            missing.append(path)
    return missing, total


def check_images_exist(paths: Iterable[str], source: str, fix: str) -> None:
    """Raise ``FileNotFoundError`` naming the missing images (see
    :func:`missing_images`)."""
    missing, total = missing_images(paths)
    if missing:
        raise FileNotFoundError(
            f'{source}: {len(missing)} of {total} listed images are missing '
            f'on disk, e.g. {missing[:3]}. Fix: {fix}, or pass '
            'check_images=False to find out only when an image is loaded.')


def _check_data_prefix(owner: str, data_prefix) -> None:
    """A ``data_prefix`` dict must have the ``img_path`` key, the image
    folder mmpretrain's datasets read (mmdet's ``img`` key is a common
    slip: mmpretrain fails with a bare ``KeyError: 'img_path'``)."""
    if isinstance(data_prefix, dict) and 'img_path' not in data_prefix:
        raise ValueError(
            f'{owner}: data_prefix={data_prefix!r} has no key \'img_path\', '
            'the image folder (relative to data_root) the dataset reads. '
            "Fix: data_prefix='images' or data_prefix=dict(img_path="
            "'images').")


class TriStateMultiLabelDataset(NotEmptyMixin, MultiLabelDataset):
    """Multi-label dataset with sparse positive / verified-negative labels.

    Subclasses implement :meth:`load_data_list` returning dicts with
    ``img_path``, ``img_id``, ``gt_label`` (sorted positive class indices)
    and, when the annotation has verified negatives, ``gt_negative``
    (sorted indices). ``get_data_info`` adds ``gt_score``.

    Args:
        check_images (bool): Check after loading that every image exists
            (one directory listing per folder). Defaults to True.
        **kwargs: Arguments of :class:`mmpretrain.datasets.BaseDataset`.
    """

    #: value of the classes an image's annotation does not mention
    unlabelled_value: float = float(ABSENT)

    def __init__(self, *args, check_images: bool = True, **kwargs):
        self.check_images = check_images
        _check_data_prefix(type(self).__name__, kwargs.get('data_prefix'))
        kwargs['pipeline'] = build_pipeline(kwargs.get('pipeline', ()))
        classes, metainfo = resolve_class_args(type(self).__name__,
                                               kwargs.get('classes'),
                                               kwargs.get('metainfo'))
        for key, value in (('classes', classes), ('metainfo', metainfo)):
            if key in kwargs:
                kwargs[key] = value
        super().__init__(*args, **kwargs)

    def _image_fix(self) -> str:
        return (f'check data_root / data_prefix (images are read from '
                f'{self.img_prefix!r})')

    def full_init(self):
        if self._fully_initialized:
            return
        super().full_init()
        if self.check_images:
            check_images_exist((self.get_data_info_raw(i)['img_path']
                                for i in range(len(self))),
                               f'{type(self).__name__} ({self.ann_file})',
                               self._image_fix())

    def get_data_info_raw(self, idx: int) -> dict:
        """The stored (sparse) ``data_info``."""
        return super().get_data_info(idx)

    def get_data_info(self, idx: int) -> dict:
        """``data_info`` with the dense tri-state ``gt_score``."""
        info = super().get_data_info(idx)
        info['gt_score'] = dense_score(
            len(self.CLASSES), info['gt_label'], info.pop('gt_negative', None),
            self.unlabelled_value)
        return info

    def _unknown_classes_error(self, where: str, names: List[str]):
        return AnnotationError(
            f'{where}: label(s) {names[:5]} not in the {len(self.CLASSES)} '
            f'dataset classes (e.g. {list(self.CLASSES)[:5]}). Fix: correct '
            'the label, or give a class list that includes it (`classes=` '
            'list or file), or omit `classes` to take them from the data.')

# Copyright (c) mmcoop contributors. All rights reserved.
"""PASCAL VOC 2007 as a multi-label classification dataset."""
import os.path as osp
import xml.etree.ElementTree as ET
from typing import List, Tuple

import numpy as np
from mmpretrain.datasets import VOC

from mmcoop.registry import DATASETS
from mmcoop.utils.paths import expand_user
from mmcoop.utils.tri_state_targets import ABSENT, PRESENT, UNKNOWN
from .categories import VOC2007_CATEGORIES
from .tri_state import resolve_class_args
from .utils import (AnnotationError, NotEmptyMixin, build_pipeline,
                    read_annotation_text)

__all__ = ['VOC2007MultiLabel']

_DIFFICULT_VALUE = {
    'negative': float(ABSENT),
    'ignore': float(UNKNOWN),
    'positive': float(PRESENT)
}


@DATASETS.register_module()
class VOC2007MultiLabel(NotEmptyMixin, VOC):
    """PASCAL VOC 2007 with an explicit protocol for ``difficult`` objects.

    A thin subclass of :class:`mmpretrain.datasets.VOC` (same layout: one
    ``data_root`` holding ``Annotations/*.xml``, ``ImageSets/Main/
    {trainval,test}.txt`` and ``JPEGImages/``). On top of mmpretrain's
    ``gt_label`` / ``gt_label_difficult`` each ``data_info`` carries a dense
    ``gt_score`` (``np.float32`` ``(C,)``) and the parsing is strict: an
    unknown object name, a missing or malformed XML file, or an empty image
    set raise an error naming the file (mmpretrain silently skips unknown
    names).

    A class whose only instances in an image are ``difficult`` gets the
    score given by ``difficult_as``:

    - ``'negative'`` (default): 0. This is the official DualCoOp /
      PositiveCoOp protocol (``pascal_voc.py`` skips difficult objects) for
      both training and testing.
    - ``'ignore'``: -1, i.e. unknown (ignored by the losses and the metric;
      mmpretrain's ``VOCAveragePrecision`` default).
    - ``'positive'``: 1.

    ``gt_label`` is always the list of classes with score 1. A missing
    ``<difficult>`` tag counts as 0 (not difficult).

    Args:
        data_root (str): The VOC2007 folder.
        split (str): ``'train'``, ``'val'``, ``'trainval'`` or ``'test'``.
            Defaults to ``'trainval'``.
        difficult_as (str): ``'negative'``, ``'ignore'`` or ``'positive'``.
            Defaults to ``'negative'``.
        **kwargs: Other arguments of :class:`mmpretrain.datasets.VOC`.
    """

    METAINFO = {'classes': VOC2007_CATEGORIES}

    def __init__(self,
                 data_root: str,
                 split: str = 'trainval',
                 difficult_as: str = 'negative',
                 **kwargs):
        if difficult_as not in _DIFFICULT_VALUE:
            raise ValueError(
                f'VOC2007MultiLabel: difficult_as must be one of '
                f'{sorted(_DIFFICULT_VALUE)}, got {difficult_as!r}.')
        self.difficult_as = difficult_as
        data_root = expand_user(data_root, 'VOC2007MultiLabel.data_root')
        kwargs['pipeline'] = build_pipeline(kwargs.get('pipeline', ()))
        # a class file read and checked as for the other datasets (BOM,
        # blank lines, names equal up to case, a missing file named)
        classes, metainfo = resolve_class_args('VOC2007MultiLabel',
                                               kwargs.get('classes'),
                                               kwargs.get('metainfo'))
        for key, value in (('classes', classes), ('metainfo', metainfo)):
            if key in kwargs:
                kwargs[key] = value
        super().__init__(data_root=data_root, split=split, **kwargs)

    def _get_labels_from_xml(self, img_id: str) -> Tuple[List[int], List[int]]:
        """Parse one XML file strictly.

        Returns:
            tuple: (classes with a non-difficult instance, classes with a
            difficult instance), both sorted.
        """
        xml_path = self.backend.join_path(self.ann_prefix, f'{img_id}.xml')
        if osp.isdir(xml_path):
            raise AnnotationError(
                f'{xml_path}: is a folder, not a VOC annotation (image id '
                f'{img_id!r} of {self.image_set_path!r}). Fix: put the XML '
                'file of the image there, from the VOC2007 archive.')
        try:
            content = self.backend.get(xml_path)
        except FileNotFoundError:
            raise FileNotFoundError(
                f'VOC annotation {xml_path!r} not found (image id {img_id!r} '
                f'is listed in {self.image_set_path!r}). Fix: restore the '
                'file or remove the id from the image set.') from None
        try:
            root = ET.fromstring(content)
        except ET.ParseError as e:
            raise AnnotationError(
                f'{xml_path}: malformed XML ({e}). Fix: restore the file '
                'from the VOC2007 archive.') from None

        class_to_idx = self.class_to_idx
        lower_to_idx = {c.lower(): i for c, i in class_to_idx.items()}
        labels, labels_difficult = set(), set()
        for k, obj in enumerate(root.findall('object')):
            name_node = obj.find('name')
            if name_node is None or not (name_node.text or '').strip():
                raise AnnotationError(
                    f'{xml_path}: <object> #{k} has no <name>. Fix: restore '
                    'the file from the VOC2007 archive.')
            name = name_node.text.strip()
            label = class_to_idx.get(name, lower_to_idx.get(name.lower()))
            if label is None:
                raise AnnotationError(
                    f'{xml_path}: <object> #{k} has the class name {name!r}, '
                    f'which is not one of the {len(class_to_idx)} dataset '
                    f'classes {list(class_to_idx)}. Fix: correct the XML, '
                    'or pass `classes=[...]` that includes it.')
            diff_node = obj.find('difficult')
            text = None if diff_node is None else diff_node.text
            if text is None:
                difficult = 0  # no tag (or an empty one): not difficult
            elif text.strip() in ('0', '1'):
                difficult = int(text)
            else:
                raise AnnotationError(
                    f'{xml_path}: <object> #{k} ({name}) has '
                    f'<difficult>{text}</difficult>; expected 0 or 1. Fix: '
                    'correct the XML.')
            (labels_difficult if difficult else labels).add(label)
        return sorted(labels), sorted(labels_difficult)

    def load_data_list(self) -> List[dict]:
        """Load images, complete labels and ``gt_score``."""
        if self.ann_prefix is None:
            raise ValueError(
                'VOC2007MultiLabel needs the XML annotations (also for the '
                "test split); set data_prefix=dict(img_path='JPEGImages', "
                "ann_path='Annotations').")
        try:
            # a folder or a file that is not UTF-8: AnnotationError
            text = read_annotation_text(self.image_set_path)
            img_ids = [
                line.strip() for line in text.splitlines() if line.strip()
            ]
        except FileNotFoundError:
            raise FileNotFoundError(
                f'VOC image set {self.image_set_path!r} not found. Expected '
                '<data_root>/ImageSets/Main/{trainval,test}.txt; fix '
                'data_root/split (trainval and test must be merged under '
                'the same VOC2007 folder).') from None
        if not img_ids:
            raise AnnotationError(
                f'{self.image_set_path}: the {self.split!r} image set is '
                'empty. Fix: restore the file from the VOC2007 archive.')
        dup = len(img_ids) - len(set(img_ids))
        if dup:
            raise AnnotationError(
                f'{self.image_set_path}: {dup} duplicate image ids. Fix: '
                'remove the duplicates.')

        num_classes = len(self.CLASSES)
        fill = _DIFFICULT_VALUE[self.difficult_as]
        data_list = []
        for img_id in img_ids:
            img_path = self.backend.join_path(self.img_prefix, f'{img_id}.jpg')
            labels, labels_difficult = self._get_labels_from_xml(img_id)
            score = np.zeros(num_classes, dtype=np.float32)
            score[labels_difficult] = fill
            score[labels] = 1.
            data_list.append(
                dict(
                    img_path=img_path,
                    gt_label=np.flatnonzero(score == 1).tolist(),
                    gt_label_difficult=labels_difficult,
                    gt_score=score))
        return data_list

    def extra_repr(self) -> List[str]:
        """The extra repr information of the dataset."""
        return super().extra_repr() + [f'Difficult as: \t{self.difficult_as}']

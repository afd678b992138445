# Copyright (c) mmcoop contributors. All rights reserved.
"""MS-COCO 2014 as a multi-label classification dataset."""
import json
import os.path as osp
from collections import namedtuple
from typing import List, Optional, Sequence, Union

import numpy as np
from mmengine.fileio import join_path
from mmengine.logging import MMLogger
from mmpretrain.datasets import MultiLabelDataset

from mmcoop.registry import DATASETS
from mmcoop.utils.paths import expand_user
from .categories import COCO2014_CATEGORIES
from .tri_state import resolve_class_args
from .utils import (AnnotationError, NotEmptyMixin, build_pipeline,
                    check_class_names, check_given_classes, class_columns,
                    read_annotation_text, read_class_list, relative_path_note,
                    same_class_names)

__all__ = ['COCO2014MultiLabel', 'CocoLabels', 'load_coco_multilabel']

#: What :func:`load_coco_multilabel` returns.
#:
#: - ``categories``: list of ``(id, name)`` sorted by category id.
#: - ``images``: list of ``(image_id, file_name, label_indices)`` where the
#:   label indices refer to ``categories`` (sorted, unique).
#: - ``num_images_total``: number of entries of the ``images`` list.
CocoLabels = namedtuple('CocoLabels',
                        ['categories', 'images', 'num_images_total'])

_FIX_FILE = ('Fix: use the unmodified instances_{train,val}2014.json from '
             'cocodataset.org, or regenerate the file.')


def _compact(obj: dict):
    """``json`` object hook: keep only what multi-label training needs.

    The hook runs bottom-up while the file is parsed, so the large fields
    (polygons, RLE counts, bboxes, urls...) are dropped as soon as their
    annotation closes instead of living until the whole file is parsed.
    Annotations become ``(id, image_id, category_id)`` tuples; JSON never
    produces tuples, so they cannot be confused with anything else.
    """
    if 'category_id' in obj and 'image_id' in obj:
        return (obj.get('id'), obj['image_id'], obj['category_id'])
    if 'file_name' in obj:
        kept = {'id': obj.get('id'), 'file_name': obj['file_name']}
        if 'name' in obj:  # a category with a file_name (an icon...)
            kept['name'] = obj['name']
        return kept
    if 'counts' in obj and 'size' in obj and len(obj) == 2:
        return None  # RLE segmentation of a crowd annotation
    return obj


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def load_coco_multilabel(ann_file: str,
                         backend_args: Optional[dict] = None,
                         filter_empty: bool = True,
                         fix: str = _FIX_FILE,
                         img_prefix: str = '') -> CocoLabels:
    """Parse a COCO ``instances_*.json`` into per-image label sets.

    Only ``images[].id/file_name``, ``annotations[].image_id/category_id``
    and ``categories[].id/name`` are kept; everything is validated and every
    problem raises :class:`AnnotationError` naming the file and the field.

    Args:
        ann_file (str): Path (or backend URI) of the annotation file.
        backend_args (dict, optional): mmengine file backend arguments.
        filter_empty (bool): Keep only images with at least one annotation,
            as the official code (``coco.imgToAnns.keys()``). The images are
            then ordered by their first annotation, which is the official
            order (and the row order of its label masks). If False, all
            images in the order of the ``images`` list. Defaults to True.
        fix (str): The fix the errors about the content suggest. Defaults
            to restoring the official COCO-2014 file.
        img_prefix (str): The folder ``file_name`` is relative to: two
            entries naming one file (``a.jpg`` and ``<img_prefix>/a.jpg``)
            are refused as the same image. Defaults to ''.

    Returns:
        CocoLabels: categories, images with their label indices, count.
    """
    try:
        text = read_annotation_text(ann_file, backend_args)
    except FileNotFoundError:
        raise FileNotFoundError(
            f'COCO annotation file not found: {ann_file!r}'
            f'{relative_path_note(ann_file)}. Expected the '
            'layout <data_root>/annotations/instances_{train,val}2014.json; '
            'fix data_root/split or pass ann_file=...') from None
    try:
        data = json.loads(text, object_hook=_compact)
    except json.JSONDecodeError as e:
        raise AnnotationError(
            f'{ann_file}: not valid JSON (line {e.lineno}, column {e.colno}: '
            f'{e.msg}). The file is probably truncated or corrupted. '
            f'{fix}') from None
    del text

    # one entry of a file instead of the file (_compact made an annotation
    # a tuple and kept only id/file_name of an image): "missing 'images'"
    # would send the user looking for a key, not for the right file
    record = None
    if isinstance(data, tuple):
        record = 'one annotation (an object with "image_id" and ' \
            '"category_id")'
    elif isinstance(data, dict) and 'file_name' in data:
        record = f'one image record ({data})'
    if record is not None:
        raise AnnotationError(
            f'{ann_file}: the top level is {record}, not a COCO instances '
            'file, whose top level is an object with the lists "images", '
            '"annotations" and "categories" (as instances_train2014.json). '
            'Fix: give the whole annotation file as ann_file, not one of '
            'its entries.')
    if not isinstance(data, dict):
        raise AnnotationError(
            f'{ann_file}: the top level must be a JSON object with keys '
            f"'images', 'annotations', 'categories', got "
            f'{type(data).__name__}. {fix}')
    for key in ('images', 'annotations', 'categories'):
        if key not in data:
            raise AnnotationError(
                f'{ann_file}: missing top-level key {key!r} (found '
                f'{sorted(data)}). Is this a COCO instances file (not '
                f'captions/person_keypoints)? {fix}')
        if not isinstance(data[key], list):
            raise AnnotationError(f'{ann_file}: {key!r} must be a list, got '
                                  f'{type(data[key]).__name__}. {fix}')

    # ---- categories ----
    cats = []
    seen_cat = set()
    for i, c in enumerate(data['categories']):
        if not isinstance(c, dict):
            got = ('an annotation (it has "image_id" and "category_id")'
                   if type(c) is tuple else type(c).__name__)
            raise AnnotationError(
                f'{ann_file}: categories[{i}] must be an object with "id" '
                f'and "name", got {got}. {fix}')
        for key, ok, tname in (('id', _is_int, 'an integer'),
                               ('name', lambda v: isinstance(v, str),
                                'a string')):
            if key not in c:
                raise AnnotationError(
                    f'{ann_file}: categories[{i}] has no {key!r} field. '
                    f'{fix}')
            if not ok(c[key]):
                raise AnnotationError(
                    f'{ann_file}: categories[{i}].{key} must be {tname}, '
                    f'got {c[key]!r}. {fix}')
        if c['id'] in seen_cat:
            raise AnnotationError(
                f'{ann_file}: duplicate category id {c["id"]} '
                f'(categories[{i}]). {fix}')
        seen_cat.add(c['id'])
        cats.append((c['id'], c['name']))
    if not cats:
        raise AnnotationError(f'{ann_file}: "categories" is empty. '
                              f'{fix}')
    try:  # in file order, so that categories[i] is the file's entry
        check_class_names([n for _, n in cats], f'{ann_file}: categories')
    except ValueError as e:
        raise AnnotationError(
            f'{e} Category names enter the prompts; names equal up to case, '
            f"'_' and spaces are one class. {fix}") from None
    cats.sort()
    cat2idx = {cid: k for k, (cid, _) in enumerate(cats)}

    # ---- images ----
    images = {}
    image_order = []
    by_name = {}  # normalised file_name -> (index, id)
    for i, img in enumerate(data['images']):
        if not isinstance(img, dict) or 'file_name' not in img:
            raise AnnotationError(
                f'{ann_file}: images[{i}] must be an object with "id" and '
                f'"file_name" (got {img!r:.120}). {fix}')
        iid, fname = img['id'], img['file_name']
        if not _is_int(iid):
            raise AnnotationError(
                f'{ann_file}: images[{i}].id must be an integer, got '
                f'{iid!r} (file_name={fname!r}). {fix}')
        if not isinstance(fname, str) or not fname:
            raise AnnotationError(
                f'{ann_file}: images[{i}].file_name must be a non-empty '
                f'string, got {fname!r} (id={iid}). {fix}')
        if iid in images:
            raise AnnotationError(
                f'{ann_file}: duplicate image id {iid} (images[{i}] '
                f'{fname!r} and {images[iid]!r}). {fix}')
        key = osp.normpath(join_path(img_prefix, fname))
        if key in by_name:
            j, jid = by_name[key]
            raise AnnotationError(
                f'{ann_file}: images[{i}] (id={iid}, {fname!r}) and '
                f'images[{j}] (id={jid}, {images[jid]!r}) are the same '
                'file; its annotations would be split between two '
                'contradictory samples. Fix: list each image once and point '
                'its annotations to that id.')
        by_name[key] = (i, iid)
        images[iid] = fname
        image_order.append(iid)

    # ---- annotations ----
    labels = {}  # image id -> set of class indices, in first-seen order
    for i, ann in enumerate(data['annotations']):
        if type(ann) is not tuple:
            missing = [
                k for k in ('image_id', 'category_id')
                if not isinstance(ann, dict) or k not in ann
            ]
            raise AnnotationError(
                f'{ann_file}: annotations[{i}] lacks {missing} (got '
                f'{ann!r:.120}). {fix}')
        ann_id, iid, cid = ann
        if not _is_int(iid):
            raise AnnotationError(
                f'{ann_file}: annotations[{i}] (id={ann_id}).image_id must '
                f'be an integer, got {iid!r}. {fix}')
        if not _is_int(cid):
            raise AnnotationError(
                f'{ann_file}: annotations[{i}] (id={ann_id}).category_id '
                f'must be an integer, got {cid!r}. {fix}')
        k = cat2idx.get(cid)
        if k is None:
            raise AnnotationError(
                f'{ann_file}: annotations[{i}] (id={ann_id}) has '
                f'category_id={cid}, which is not in "categories" (ids '
                f'{cats[0][0]}..{cats[-1][0]}, {len(cats)} entries). '
                f'{fix}')
        if iid not in images:
            raise AnnotationError(
                f'{ann_file}: annotations[{i}] (id={ann_id}) refers to '
                f'image_id={iid}, which is not in "images". {fix}')
        s = labels.get(iid)
        if s is None:
            labels[iid] = {k}
        else:
            s.add(k)

    if filter_empty:
        order = labels.keys()  # official: coco.imgToAnns.keys()
    else:
        order = image_order
    out = [(iid, images[iid], sorted(labels.get(iid, ()))) for iid in order]
    return CocoLabels(cats, out, len(image_order))


@DATASETS.register_module()
class COCO2014MultiLabel(NotEmptyMixin, MultiLabelDataset):
    """MS-COCO 2014 for multi-label recognition (80 classes).

    Layout (the official one)::

        data_root
        ├── annotations
        │   ├── instances_train2014.json
        │   └── instances_val2014.json
        ├── train2014
        │   └── COCO_train2014_000000000009.jpg ...
        └── val2014
            └── COCO_val2014_000000000042.jpg ...

    Protocol (as ``sunxm2357/DualCoOp dataloaders/coco_detection.py``):
    classes ordered by sorted category id; only images with at least one
    annotation (crowd annotations included), in the order of their first
    annotation; a class is positive if any instance is present. Each
    ``data_info`` has ``img_path``, ``img_id``, ``gt_label`` (list of
    positive class indices) and ``gt_score`` (``np.float32`` array ``(C,)``
    of 1/0 -- complete labels).

    The annotation JSON is parsed once with a field-dropping object hook
    (no pycocotools), see :func:`load_coco_multilabel`.

    Class names: the default ``METAINFO['classes']`` is the official list
    (identical to the file's category names). If ``classes`` (or
    ``metainfo['classes']``) is given it must have one name per category
    and, with ``strict_class_names=True``, match the file's names up to
    case/underscores/spaces; use ``strict_class_names=False`` to give other
    prompt wordings. If no class list is given and the file's categories
    are not COCO's (e.g. the demo tree), the file's names are used.

    Args:
        data_root (str): Dataset root. Defaults to ''.
        split (str): ``'train'`` or ``'val'``. Defaults to ``'train'``.
        ann_file (str): Annotation file relative to ``data_root``. Defaults
            to ``annotations/instances_{split}2014.json``.
        data_prefix (str | dict): Image folder relative to ``data_root``.
            Defaults to ``{split}2014``.
        filter_empty (bool): Drop images without annotations (official).
            Defaults to True.
        image_classes (str | Sequence[str], optional): keep only the
            images with at least one annotation of these classes (names of
            ``classes``, or a text file, one name a line), in the file's
            order: the image sets of DualCoOp's zero-shot files, which
            hold the annotations of one class subset (e.g.
            :data:`mmcoop.datasets.unseen_splits.COCO_48_17_SEEN` for
            training). Defaults to None (every image).
        strict_class_names (bool): See above. Defaults to True.
        backend_args (dict, optional): mmengine file backend arguments.
        metainfo (dict, optional): Meta information. Defaults to None.
        classes (str | Sequence[str], optional): Class names. Defaults to
            None.
        **kwargs: Other arguments of :class:`mmpretrain.datasets.BaseDataset`
            (``pipeline``, ``test_mode``, ``lazy_init``, ``indices``...).

    Examples:
        >>> ds = COCO2014MultiLabel('data/coco', split='train')
        >>> len(ds), len(ds.CLASSES)
        (82081, 80)
    """

    METAINFO = {'classes': COCO2014_CATEGORIES}
    SPLITS = ('train', 'val')

    def __init__(self,
                 data_root: str = '',
                 split: str = 'train',
                 ann_file: str = '',
                 data_prefix: Union[str, dict] = '',
                 filter_empty: bool = True,
                 strict_class_names: bool = True,
                 backend_args: Optional[dict] = None,
                 metainfo: Optional[dict] = None,
                 classes: Union[str, Sequence[str], None] = None,
                 image_classes: Union[str, Sequence[str], None] = None,
                 **kwargs):
        if split not in self.SPLITS:
            raise ValueError(f'COCO2014MultiLabel: split must be one of '
                             f'{self.SPLITS}, got {split!r}.')
        self.split = split
        self.filter_empty = filter_empty
        self.image_classes = None if image_classes is None else \
            read_class_list(image_classes, 'COCO2014MultiLabel.image_classes')
        self.strict_class_names = strict_class_names
        self.backend_args = backend_args
        self._explicit_classes = classes is not None or (
            metainfo is not None and 'classes' in metainfo)
        classes, metainfo = resolve_class_args('COCO2014MultiLabel', classes,
                                               metainfo)
        data_root = expand_user(data_root, 'COCO2014MultiLabel.data_root')
        ann_file = expand_user(ann_file, 'COCO2014MultiLabel.ann_file')
        if isinstance(data_prefix, dict):
            data_prefix = {
                k: expand_user(v, f'COCO2014MultiLabel.data_prefix.{k}')
                for k, v in data_prefix.items()
            }
        data_prefix = expand_user(data_prefix,
                                  'COCO2014MultiLabel.data_prefix')
        if not ann_file:
            ann_file = osp.join('annotations', f'instances_{split}2014.json')
        if not data_prefix:
            data_prefix = f'{split}2014'
        self.num_images_total = None
        kwargs['pipeline'] = build_pipeline(kwargs.get('pipeline', ()))
        super().__init__(
            ann_file=ann_file,
            data_root=data_root,
            data_prefix=data_prefix,
            metainfo=metainfo,
            classes=classes,
            **kwargs)

    def _check_classes(self, file_names: List[str]) -> None:
        """Check / set the class list against the file's categories."""
        classes = self.CLASSES
        if self._explicit_classes:
            check_given_classes(self.ann_file, classes or (), file_names,
                                self.strict_class_names)
            return
        if classes is not None and same_class_names(classes, file_names):
            return  # the default (official) list
        MMLogger.get_current_instance().info(
            f'{self.ann_file}: categories are not the COCO-2014 ones; using '
            f'the {len(file_names)} category names of the file as classes.')
        self._metainfo['classes'] = tuple(file_names)

    def load_data_list(self) -> List[dict]:
        """Load the image list and the complete labels."""
        coco = load_coco_multilabel(
            self.ann_file,
            backend_args=self.backend_args,
            filter_empty=self.filter_empty,
            img_prefix=self.img_prefix)
        self._check_classes([name for _, name in coco.categories])
        self.num_images_total = coco.num_images_total
        if not coco.images:
            raise AnnotationError(
                f'{self.ann_file}: no image has an annotation, so the '
                f'{self.split!r} split is empty. Fix: check that the file is '
                'the instances file of this split.')
        num_classes = len(self.CLASSES)
        img_prefix = self.img_prefix
        images = coco.images
        if self.image_classes is not None:
            wanted = set(class_columns(
                self.CLASSES, self.image_classes, 'COCO2014MultiLabel',
                'image_classes').tolist())
            images = [im for im in images if wanted & set(im[2])]
            MMLogger.get_current_instance().info(
                f'{self.ann_file}: {len(images)} of {len(coco.images)} '
                f'images have an annotation of the {len(wanted)} '
                'image_classes; the others are left out.')
            if not images:
                raise AnnotationError(
                    f'{self.ann_file}: no image has an annotation of '
                    'image_classes, so the split is empty. Fix: check '
                    'image_classes against the file\'s categories.')
        data_list = []
        for img_id, file_name, labels in images:
            score = np.zeros(num_classes, dtype=np.float32)
            score[labels] = 1.
            data_list.append(
                dict(
                    img_path=join_path(img_prefix, file_name),
                    img_id=img_id,
                    gt_label=labels,
                    gt_score=score))
        return data_list

    def extra_repr(self) -> List[str]:
        """The extra repr information of the dataset."""
        return [
            f'Split: \t{self.split}',
            f'Annotation file: \t{self.ann_file}',
            f'Prefix of images: \t{self.img_prefix}',
        ]

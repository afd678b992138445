# Copyright (c) mmcoop contributors. All rights reserved.
"""NUS-WIDE (81 concepts, optionally the 925 seen tags of the zero-shot
split) from the official image lists, label files and tag files."""
import os.path as osp
from typing import List, Optional, Sequence, Tuple

import numpy as np
from mmengine.fileio import get, join_path
from mmengine.logging import MMLogger

from mmcoop.registry import DATASETS
from mmcoop.utils.paths import expand_user
from .categories import NUSWIDE_CONCEPTS
from .tri_state import TriStateMultiLabelDataset
from .unseen_splits import nuswide_925_seen
from .utils import (AnnotationError, check_class_names, check_given_classes,
                    read_annotation_text, same_class_names)

__all__ = ['NUSWIDEMultiLabel']

_SPLIT_NAME = {'train': 'Train', 'test': 'Test'}
_CONCEPT_FILES = ('Concepts81.txt', osp.join('ConceptsList', 'Concepts81.txt'))
_EMPTY = ('drop', 'keep')
_TAGS = (None, '925')
_TAG_LIST = osp.join('NUS_WID_Tags', 'TagList1k.txt')
_TAG_LABELS = osp.join('NUS_WID_Tags', '{}_Tags1k.dat')
#: tags of TagList1k.txt = values a line of the .dat files
_TAG_WIDTH = 1000


def _concepts_path(data_root: str, concepts_file: Optional[str]) -> str:
    if concepts_file is None:
        concepts_file = next((c for c in _CONCEPT_FILES
                              if osp.isfile(osp.join(data_root, c))),
                             _CONCEPT_FILES[0])
    return join_path(data_root, concepts_file)


def _read_lines(path: str, what: str, backend_args=None) -> List[str]:
    try:
        # a folder or a file that is not UTF-8: AnnotationError naming it
        text = read_annotation_text(path, backend_args)
    except FileNotFoundError:
        raise FileNotFoundError(
            f'NUSWIDEMultiLabel: {what} {path!r} not found. Fix: unpack '
            'the official NUS-WIDE files into data_root as in '
            'docs/data.md.') from None
    lines = [s.strip() for s in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _vocabulary(concepts: Sequence[str], seen: Sequence[str]) -> tuple:
    """The classes: the concepts (spelt as ``NUSWIDE_CONCEPTS`` when they
    are the official ones), then the seen tags."""
    if same_class_names(NUSWIDE_CONCEPTS, concepts):
        concepts = NUSWIDE_CONCEPTS
    return tuple(concepts) + tuple(seen)


@DATASETS.register_module()
class NUSWIDEMultiLabel(TriStateMultiLabelDataset):
    """NUS-WIDE with its 81 ground-truth concepts.

    Layout (the files of the official NUS-WIDE release)::

        data_root
        ├── Concepts81.txt        (or ConceptsList/Concepts81.txt)
        ├── ImageList
        │   ├── TrainImagelist.txt   lines like actor\\0001_2124494179.jpg
        │   └── TestImagelist.txt
        ├── Groundtruth/TrainTestLabels
        │   ├── Labels_airport_Train.txt   one 0/1 per line, aligned with
        │   ├── Labels_airport_Test.txt    the image list of the split
        │   └── ... (81 x 2 files)
        ├── NUS_WID_Tags               (only read with tags='925')
        │   ├── TagList1k.txt          the 1,000 tags, one a line
        │   ├── Train_Tags1k.dat       line i: 1,000 tab-separated 0/1
        │   └── Test_Tags1k.dat        of image i of the split's list
        └── Flickr/actor/0001_2124494179.jpg ...

    The classes are the 81 concepts in the order of ``Concepts81.txt``
    (``METAINFO['classes']`` is that list; a file with other concepts
    gives its own names, logged; ``classes=`` may reword them, one per
    concept in file order);
    an image's target is 1 for the concepts whose label file has 1 on its
    line, 0 otherwise (complete labels; the image lists' ``\\`` separators
    become ``/``).

    **Tags** (``tags='925'``): the classes go on, after the 81 concepts,
    with the 925 seen labels of the zero-shot split
    (:func:`~mmcoop.datasets.unseen_splits.nuswide_925_seen` of
    ``TagList1k.txt``), 1006 in all; a tag's target is its 0/1 column of
    ``{Train,Test}_Tags1k.dat`` (the user tags of the image, complete
    and noisy). :meth:`class_names` gives the list without reading the
    labels (for ``model.head.classnames``).

    **Images without any label** (a large part of NUS-WIDE): ``empty``
    decides. ``'drop'`` (default) leaves them out, as DualCoOp, which
    trains and tests on NUS-WIDE lists filtered to labelled images (its
    ``formatted_*_filtered.npy`` files); ``'keep'`` keeps them with an
    all-zero target (such an image adds negatives only). With tags, an
    image is labelled when it has a concept or a seen tag. The number
    dropped is logged.

    Args:
        data_root (str): The NUS-WIDE folder.
        split (str): ``'train'`` or ``'test'``. Defaults to ``'train'``.
        empty (str): ``'drop'`` or ``'keep'``. Defaults to ``'drop'``.
        concepts_file (str, optional): Relative to ``data_root``. Defaults
            to the first of ``Concepts81.txt``, ``ConceptsList/Concepts81.txt``
            that exists.
        data_prefix (str): Image folder. Defaults to ``'Flickr'``.
        check_images (bool): Check that every image exists. Defaults to
            True.
        tags (str, optional): ``'925'`` adds the 925 seen tags of the
            zero-shot split as classes. Defaults to None (the concepts
            only).
        **kwargs: Other arguments of :class:`mmpretrain.datasets.BaseDataset`.
    """

    METAINFO = {'classes': NUSWIDE_CONCEPTS}

    def __init__(self,
                 data_root: str,
                 split: str = 'train',
                 empty: str = 'drop',
                 concepts_file: Optional[str] = None,
                 data_prefix: str = 'Flickr',
                 check_images: bool = True,
                 tags: Optional[str] = None,
                 backend_args: Optional[dict] = None,
                 **kwargs):
        if split not in _SPLIT_NAME:
            raise ValueError(f'NUSWIDEMultiLabel: split must be one of '
                             f'{tuple(_SPLIT_NAME)}, got {split!r}.')
        if empty not in _EMPTY:
            raise ValueError(f'NUSWIDEMultiLabel: empty must be one of '
                             f'{_EMPTY}, got {empty!r}.')
        if tags not in _TAGS:
            raise ValueError(f'NUSWIDEMultiLabel: tags must be one of '
                             f'{_TAGS}, got {tags!r}.')
        data_root = expand_user(data_root, 'NUSWIDEMultiLabel.data_root')
        self.split = split
        self.empty = empty
        self.tags = tags
        self.backend_args = backend_args
        self.concepts_file = _concepts_path(data_root, concepts_file)
        self.num_dropped = 0
        self._explicit_classes = kwargs.get('classes') is not None or (
            kwargs.get('metainfo') or {}).get('classes') is not None
        super().__init__(
            ann_file=osp.join('ImageList',
                              f'{_SPLIT_NAME[split]}Imagelist.txt'),
            data_root=data_root,
            data_prefix=data_prefix,
            check_images=check_images,
            **kwargs)

    @classmethod
    def class_names(cls,
                    data_root: str,
                    tags: Optional[str] = None,
                    concepts_file: Optional[str] = None) -> Tuple[str, ...]:
        """The classes a dataset of these arguments has (without
        ``classes=``), read from the concept list and, with ``tags``, the
        tag list only: ``model.head.classnames=dict(type=
        'NUSWIDEMultiLabel', data_root=..., tags='925')`` resolves to it."""
        if tags not in _TAGS:
            raise ValueError(f'NUSWIDEMultiLabel: tags must be one of '
                             f'{_TAGS}, got {tags!r}.')
        data_root = expand_user(data_root, 'NUSWIDEMultiLabel.data_root')
        concepts, seen, _ = cls._concepts_and_tags(
            _concepts_path(data_root, concepts_file), data_root, tags)
        return _vocabulary(concepts, seen)

    @staticmethod
    def _concepts_and_tags(concepts_file: str,
                           data_root: str,
                           tags: Optional[str],
                           backend_args=None):
        """The concept names, the seen tags and their columns in the
        1,000-tag files."""
        concepts = [
            c for c in _read_lines(concepts_file, 'concept list',
                                   backend_args) if c
        ]
        if not concepts:
            raise AnnotationError(
                f'{concepts_file}: the concept list is empty (expected one '
                'concept name a line, e.g. the 81 of Concepts81.txt). Fix: '
                'restore the official file or point `concepts_file` to one.')
        try:
            check_class_names(concepts, f'{concepts_file}: the concept list')
        except ValueError as e:
            raise AnnotationError(
                f'{e} Fix: restore the official file (each concept once; '
                'a concept has one label file per split).') from None
        if tags is None:
            return concepts, (), np.zeros(0, dtype=np.int64)
        tag_list = osp.join(data_root, _TAG_LIST)
        # first: a missing tag list is named with the fix for tags='925'
        seen = nuswide_925_seen(tag_list, concepts=concepts)
        lines = _read_lines(tag_list, 'tag list', backend_args)
        blank = [i + 1 for i, t in enumerate(lines) if not t]
        if blank or len(lines) != _TAG_WIDTH:
            where = f', blank line(s) {blank[:5]}' if blank else ''
            raise AnnotationError(
                f'{tag_list}: {len(lines)} lines{where}; line i names '
                f'column i of the {{Train,Test}}_Tags1k.dat files, so the '
                f'list must be {_TAG_WIDTH} tags, one a line, with no blank '
                'line. Fix: restore TagList1k.txt of the official release, '
                'unedited.')
        column = {t: i for i, t in enumerate(lines)}
        return concepts, seen, np.array([column[t] for t in seen])

    def _read(self, path: str, what: str) -> List[str]:
        return _read_lines(path, what, self.backend_args)

    def _check_image_list(self, images: List[str]) -> None:
        """Refuse an empty entry or an image listed twice: line i of every
        label file is image i, so a repeat would be two samples of one
        image, perhaps with different labels."""
        first = {}
        for i, entry in enumerate(images):
            if not entry:
                raise AnnotationError(
                    f'{self.ann_file}: line {i + 1} is empty (line i names '
                    'image i of the label files). Fix: restore the official '
                    'file.')
            key = entry.replace('\\', '/')
            if key in first:
                raise AnnotationError(
                    f'{self.ann_file}: lines {first[key] + 1} and {i + 1} '
                    f'both list the image {entry!r} (each line is one image '
                    'of the label files, so it would be two samples, '
                    'perhaps with different labels). Fix: restore the '
                    'official file.')
            first[key] = i

    def _read_tag_labels(self, n: int) -> np.ndarray:
        """``{Train,Test}_Tags1k.dat`` as an ``(n, 1000)`` bool array.

        The file is read as bytes and its digits taken at once (no Python
        object per value: the train file holds 161,789 x 1,000 of them);
        only a malformed file is read line by line, to name the line.
        """
        path = join_path(self.data_root,
                         _TAG_LABELS.format(_SPLIT_NAME[self.split]))
        try:
            raw = get(path, backend_args=self.backend_args)
        except FileNotFoundError:
            raise FileNotFoundError(
                f'NUSWIDEMultiLabel: tag file {path!r} not found (needed for '
                "tags='925'). Fix: unpack NUS_WID_Tags.zip of the official "
                'release into data_root as in docs/data.md.') from None
        width = _TAG_WIDTH
        digits = np.frombuffer(raw.translate(None, b' \t\r\n'), np.uint8)
        end = len(raw)
        while end and raw[end - 1] in b' \t\r\n':
            end -= 1
        if (raw.count(b'\n', 0, end) + 1 == n and len(digits) == n * width
                and digits.min() >= 48 and digits.max() <= 49  # 0/1 only
                and _line_widths_are(raw, end, width)):
            del raw
            return (digits == 49).reshape(n, width)
        lines = raw.decode('latin-1').rstrip().splitlines()
        if len(lines) != n:
            raise AnnotationError(
                f'{path}: {len(lines)} lines, but {self.ann_file} lists {n} '
                'images (line i holds the tags of image i). Fix: use the '
                'tag files of the same release.')
        for i, line in enumerate(lines):
            values = line.split()
            if len(values) != width or set(values) - {'0', '1'}:
                raise AnnotationError(
                    f'{path}: line {i + 1} is not {width} values 0/1 (one '
                    'per tag of TagList1k.txt, tab-separated). Fix: restore '
                    'the official file.')
        # other line ends than \n (e.g. a lone \r): valid line by line
        digits = ''.join(''.join(v.split()) for v in lines).encode()
        return np.frombuffer(digits, np.uint8).reshape(n, width) == 49

    def load_data_list(self) -> List[dict]:
        """Read the image list and the 81 label files of the split (and,
        with ``tags``, its tag file)."""
        concepts, seen, tag_columns = self._concepts_and_tags(
            self.concepts_file, self.data_root, self.tags, self.backend_args)
        names = _vocabulary(concepts, seen)
        if self._explicit_classes:
            if len(self.CLASSES) != len(names):
                extra = f' and {len(seen)} seen tags' if self.tags else ''
                raise AnnotationError(
                    f'{self.concepts_file}: {len(concepts)} concepts{extra}, '
                    f'but {len(self.CLASSES)} classes were given. Fix: one '
                    'class name per concept, in the order of the file'
                    f'{", then one per seen tag" if self.tags else ""} (or '
                    'omit `classes`).')
            # own wording, but not the file's names at other positions
            check_given_classes(self.concepts_file, self.CLASSES, names,
                                strict=False)
        else:
            if not same_class_names(NUSWIDE_CONCEPTS, concepts):
                MMLogger.get_current_instance().info(
                    f'{self.concepts_file}: not the 81 official concepts; '
                    f'using its {len(concepts)} names as classes.')
            self._metainfo['classes'] = names
        images = self._read(self.ann_file, 'image list')
        if not images:
            raise AnnotationError(f'{self.ann_file}: the image list is '
                                  'empty. Fix: restore the official file.')
        self._check_image_list(images)
        n = len(images)
        targets = np.zeros((n, len(names)), dtype=bool)
        if self.tags:
            targets[:, len(concepts):] = self._read_tag_labels(n)[:,
                                                                  tag_columns]
        folder = osp.join(self.data_root, 'Groundtruth', 'TrainTestLabels')
        for k, concept in enumerate(concepts):
            path = osp.join(folder,
                            f'Labels_{concept}_{_SPLIT_NAME[self.split]}.txt')
            values = self._read(path, f'label file of {concept!r}')
            if len(values) != n:
                raise AnnotationError(
                    f'{path}: {len(values)} lines, but {self.ann_file} '
                    f'lists {n} images (line i is the label of image i). '
                    'Fix: use the label files of the same release.')
            col = np.array(values)
            bad = np.flatnonzero((col != '0') & (col != '1'))
            if len(bad):
                raise AnnotationError(
                    f'{path}: line {bad[0] + 1} is {values[bad[0]]!r}; '
                    'expected 0 or 1. Fix: restore the official file.')
            targets[:, k] = col == '1'
        labelled = targets.any(1)
        self.num_dropped = 0 if self.empty == 'keep' else int(
            (~labelled).sum())
        MMLogger.get_current_instance().info(
            f'NUSWIDEMultiLabel ({self.split}): {n} images, '
            f'{int((~labelled).sum())} without a label '
            f'({"dropped" if self.empty == "drop" else "kept, all 0"}).')
        return [
            dict(
                img_path=join_path(self.img_prefix,
                                   images[i].replace('\\', '/')),
                img_id=images[i].replace('\\', '/'),
                gt_label=np.flatnonzero(targets[i]).tolist()) for i in range(n)
            if self.empty == 'keep' or labelled[i]
        ]


def _line_widths_are(raw: bytes, end: int, width: int) -> bool:
    """Whether every line of ``raw[:end]`` holds ``width`` digits: the
    right line count and total can hide a value moved from one line to
    the next, which would shift every tag of both images."""
    arr = np.frombuffer(raw, np.uint8, count=end)
    starts = np.concatenate([[0], np.flatnonzero(arr == 10) + 1])
    per_line = np.add.reduceat((arr == 48) | (arr == 49), starts,
                               dtype=np.int64)
    return bool((per_line == width).all())

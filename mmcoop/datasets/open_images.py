# Copyright (c) mmcoop contributors. All rights reserved.
"""Open Images (V6/V7) human-verified image-level labels: real partial
labels (verified positives, verified negatives, everything else unknown)."""
import csv
import io
import os.path as osp
import re
from array import array
from collections import namedtuple
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from mmengine.fileio import get_local_path, join_path
from mmengine.logging import MMLogger
from mmpretrain.datasets import MultiLabelDataset

from mmcoop.registry import DATASETS
from mmcoop.utils.paths import expand_user
from mmcoop.utils.tri_state_targets import UNKNOWN
from .tri_state import check_images_exist, dense_score
from .utils import (AnnotationError, build_pipeline, check_indices,
                    check_not_empty, normalize_class_name,
                    read_annotation_text)

__all__ = [
    'OpenImagesMultiLabel', 'OpenImagesLabels', 'load_open_images_labels',
    'read_class_descriptions', 'read_label_ids'
]

#: What :func:`load_open_images_labels` returns (compact arrays).
#:
#: - ``image_keys``: ``(N,)`` uint64, the 16-hex-digit ImageIDs as integers,
#:   sorted (``format(k, '016x')`` gives the ImageID back);
#: - ``offsets``: ``(N + 1,)`` int64, image ``i``'s labels are
#:   ``classes[offsets[i]:offsets[i + 1]]``;
#: - ``classes``: ``(M,)`` int32 class indices (sorted within an image);
#: - ``values``: ``(M,)`` int8, 1 (verified present) or 0 (verified absent);
#: - ``num_rows``: rows read; ``num_skipped``: rows of classes outside the
#:   vocabulary.
OpenImagesLabels = namedtuple(
    'OpenImagesLabels',
    ['image_keys', 'offsets', 'classes', 'values', 'num_rows', 'num_skipped'])

_LABEL_COLUMNS = ('ImageID', 'LabelName', 'Confidence')
_FIX_LABELS = ('Fix: use the unmodified *-annotations-human-imagelabels*.csv '
               'from storage.googleapis.com/openimages, or regenerate it.')
#: An official ImageID: 16 lowercase hex digits (e.g. ``000002b66c9c498e``,
#: the image file ``<ImageID>.jpg``). ``int(s, 16)`` alone would also take
#: ``0x...``, ``_`` separators, spaces, a sign and upper case (another id,
#: or a file name that does not exist).
_IMAGE_ID = re.compile(r'[0-9a-f]{16}')


def _is_label_id(s: str) -> bool:
    """Open Images label ids are Freebase/Knowledge-Graph ids (/m/, /g/)."""
    return s.startswith('/m/') or s.startswith('/g/')


def read_class_descriptions(path: str) -> Dict[str, str]:
    """``{LabelName: DisplayName}`` from a class-descriptions CSV.

    The official files come with and without a header row
    (``oidv6-class-descriptions.csv`` has ``LabelName,DisplayName``;
    ``class-descriptions-boxable.csv`` of V4/V5 has none): the first
    non-blank row is taken as the header when its first field is not a
    label id (``/m/...`` or ``/g/...``); every later row must be one.
    """
    out = {}
    reader = csv.reader(io.StringIO(read_annotation_text(path), newline=''))
    first = True
    for row in reader:
        if not row or not row[0].strip():
            continue
        mid = row[0].strip()
        if first and not _is_label_id(mid):
            first = False
            continue  # header row
        first = False
        if len(row) < 2 or not _is_label_id(mid):
            raise AnnotationError(
                f'{path}: line {reader.line_num}: expected '
                f'"LabelName,DisplayName" (e.g. "/m/011k07,Tortoise"), '
                f'got {row!r:.120}. Fix: use the official '
                '*class-descriptions*.csv.')
        if mid in out:
            raise AnnotationError(
                f'{path}: line {reader.line_num}: label id {mid!r} is listed '
                'twice. Fix: use the official *class-descriptions*.csv.')
        out[mid] = ','.join(row[1:]).strip()
    if not out:
        raise AnnotationError(
            f'{path}: no class descriptions. Fix: use the official '
            '*class-descriptions*.csv ("LabelName,DisplayName" rows).')
    return out


def read_label_ids(path: str) -> List[str]:
    """Label ids of a vocabulary file, in file order: either one id per line
    (``oidv7-classes-trainable.txt``) or a descriptions CSV (the ids of
    ``oidv7-class-descriptions-boxable.csv``)."""
    if path.endswith('.csv'):
        return list(read_class_descriptions(path))
    text = read_annotation_text(path)
    ids = [s.strip() for s in text.splitlines() if s.strip()]
    bad = [s for s in ids if not _is_label_id(s)]
    if bad or not ids:
        raise AnnotationError(
            f'{path}: expected one label id (/m/... or /g/...) per line, '
            f'got {bad[:3] if bad else "an empty file"}. Fix: use the '
            'official oidv7-classes-trainable.txt or a descriptions CSV.')
    return ids


def unique_display_names(ids: Sequence[str],
                         names: Sequence[str]) -> List[str]:
    """Class names for the prompts, one per id, all different.

    Some DisplayNames are shared by several label ids in the full
    vocabulary (up to :func:`~.utils.normalize_class_name`); class names
    must be unique (they name the prompts and the
    checkpoint's classes), so every repeat after the first gets its id in
    brackets: ``'Boot'``, ``'Boot (/m/0xyz)'``. The number renamed is
    logged.
    """
    seen = set()
    out = []
    for mid, name in zip(ids, names):
        key = normalize_class_name(name)
        out.append(f'{name} ({mid})' if key in seen else name)
        seen.add(key)
    renamed = sum(a != b for a, b in zip(out, names))
    if renamed:
        MMLogger.get_current_instance().info(
            f'Open Images: {renamed} DisplayNames repeat an earlier class '
            'of the vocabulary; their label id is appended.')
    return out


def load_open_images_labels(path: str,
                            class_index: Dict[str, int],
                            known_ids=None) -> OpenImagesLabels:
    """Stream a human-verified image-level labels CSV into compact arrays.

    Reads row by row (``ImageID,Source,LabelName,Confidence``); memory is
    13 bytes per kept row plus the sort at the end, never a Python object
    per row. Confidence ``1`` -> 1, ``0`` -> 0 (verified negative). A label
    verified by several sources counts as present if any source says 1.

    Args:
        path (str): The labels CSV.
        class_index (dict): ``{LabelName: class index}`` of the vocabulary;
            rows of other label ids are skipped (counted).
        known_ids (Container, optional): All valid label ids (the class
            descriptions). A row whose id is in neither raises.
    """
    keys, cls, vals = array('Q'), array('i'), array('b')
    if osp.isdir(path):
        raise AnnotationError(
            f'{path}: is a folder, not a labels CSV. Fix: give the path of '
            'the *-annotations-human-imagelabels*.csv file itself.')
    with get_local_path(path) as local:
        try:
            # utf-8-sig: without a byte-order mark, as read_annotation_text
            with open(local, newline='', encoding='utf-8-sig') as f:
                rows, skipped = _read_label_rows(f, path, class_index,
                                                 known_ids, keys, cls, vals)
        except UnicodeDecodeError as e:
            line = _first_bad_utf8_line(local)
            raise AnnotationError(
                f'{path}: line {line}: not UTF-8 text ({e.reason}). Fix: '
                'save the file as UTF-8 (the official files are).') from None
    if not len(keys):
        # nothing of the vocabulary: the caller names the problem
        return OpenImagesLabels(
            np.zeros(0, np.uint64), np.zeros(1, np.int64),
            np.zeros(0, np.int32), np.zeros(0, np.int8), rows, skipped)
    keys = np.frombuffer(keys, dtype=np.uint64)
    cls = np.frombuffer(cls, dtype=np.int32)
    vals = np.frombuffer(vals, dtype=np.int8)
    image_keys, inverse = np.unique(keys, return_inverse=True)
    del keys
    num_classes = max(class_index.values()) + 1 if class_index else 0
    pair = inverse.astype(np.int64) * num_classes + cls
    del inverse
    order = np.argsort(pair, kind='stable')
    pair = pair[order]
    vals = vals[order]
    del order
    # one entry per (image, class): present if any source says 1
    first = np.flatnonzero(np.r_[True, pair[1:] != pair[:-1]])
    values = np.maximum.reduceat(vals, first)
    pair = pair[first]
    image_of = pair // num_classes
    offsets = np.searchsorted(image_of, np.arange(len(image_keys) + 1))
    return OpenImagesLabels(image_keys, offsets.astype(np.int64),
                            (pair % num_classes).astype(np.int32),
                            values.astype(np.int8), rows, skipped)


def _first_bad_utf8_line(local: str) -> int:
    """The 1-based line of the first byte that is not UTF-8 (read line by
    line in binary: a UTF-8 character never spans a newline)."""
    with open(local, 'rb') as f:
        for num, line in enumerate(f, 1):
            try:
                line.decode('utf-8')
            except UnicodeDecodeError:
                return num
    return 1


def _read_label_rows(f, path: str, class_index: Dict[str, int], known_ids,
                     keys: array, cls: array, vals: array) -> Tuple[int, int]:
    """Stream the rows of an open labels CSV into ``keys``, ``cls`` and
    ``vals``; returns (rows read, rows of other classes skipped)."""
    skipped = 0
    rows = 0
    reader = csv.reader(f)
    header = next(reader, None)
    if header is None:
        raise AnnotationError(f'{path}: the file is empty. {_FIX_LABELS}')
    header = [h.strip() for h in header]
    missing = [c for c in _LABEL_COLUMNS if c not in header]
    if missing:
        raise AnnotationError(
            f'{path}: line 1 (header) lacks the column(s) {missing} '
            f'(found {header}); expected ImageID,Source,LabelName,'
            f'Confidence. {_FIX_LABELS}')
    repeated = [c for c in _LABEL_COLUMNS if header.count(c) > 1]
    if repeated:
        raise AnnotationError(
            f'{path}: line 1 (header) has the column(s) {repeated} more '
            f'than once (found {header}); only one of each can be read. '
            f'{_FIX_LABELS}')
    ii, li, ci = (header.index(c) for c in _LABEL_COLUMNS)
    width = max(ii, li, ci) + 1
    num_fields = len(header)
    is_image_id = _IMAGE_ID.fullmatch
    for row in reader:
        rows += 1
        if len(row) < width or (len(row) > num_fields
                                and any(row[num_fields:])):
            if not any(row):
                continue
            raise AnnotationError(
                f'{path}: line {reader.line_num} has {len(row)} fields, '
                f'expected {num_fields} ({row!r:.120}). {_FIX_LABELS}')
        k = class_index.get(row[li])
        if k is None:
            if known_ids is not None and row[li] not in known_ids:
                raise AnnotationError(
                    f'{path}: line {reader.line_num}: LabelName '
                    f'{row[li]!r} is not in the class descriptions. Fix: '
                    'use the descriptions file of the same Open Images '
                    'version (class_descriptions=...).')
            skipped += 1
            continue
        c = row[ci]
        if c == '1':
            v = 1
        elif c == '0':
            v = 0
        else:
            try:
                v = {1.0: 1, 0.0: 0}[float(c)]
            except (ValueError, KeyError):
                raise AnnotationError(
                    f'{path}: line {reader.line_num}: Confidence must be '
                    f'1 (verified present) or 0 (verified absent), got '
                    f'{c!r}. {_FIX_LABELS}') from None
        iid = row[ii]
        if not is_image_id(iid):
            raise AnnotationError(
                f'{path}: line {reader.line_num}: ImageID {iid!r} is not '
                'an Open Images id (16 lowercase hex digits, e.g. '
                "'000002b66c9c498e', the image <ImageID>.jpg). Fix: use the "
                'official file; for other ids use MultiLabelCSVDataset.')
        keys.append(int(iid, 16))
        cls.append(k)
        vals.append(v)
    return rows, skipped


VOCABULARIES = {
    # name -> default vocabulary file (relative to data_root)
    'boxable': 'annotations/oidv7-class-descriptions-boxable.csv',
    'trainable': 'annotations/oidv7-classes-trainable.txt',
    'all': None,  # every id of the class descriptions
}
_SPLIT_FILE = {'train': 'train', 'validation': 'val', 'test': 'test'}


@DATASETS.register_module()
class OpenImagesMultiLabel(MultiLabelDataset):
    """Open Images V6/V7 with its human-verified image-level labels.

    Layout (official file names of V7; V6's work through the arguments)::

        data_root
        ├── annotations
        │   ├── oidv7-class-descriptions.csv          (LabelName,DisplayName)
        │   ├── oidv7-class-descriptions-boxable.csv  (the 600 boxable)
        │   ├── oidv7-classes-trainable.txt           (one LabelName a line)
        │   ├── oidv7-train-annotations-human-imagelabels.csv
        │   ├── oidv7-val-annotations-human-imagelabels.csv
        │   └── oidv7-test-annotations-human-imagelabels.csv
        ├── train/<ImageID>.jpg
        ├── validation/<ImageID>.jpg
        └── test/<ImageID>.jpg

    **Targets** (no simulation): a row with ``Confidence`` 1 -> 1 (verified
    present), 0 -> 0 (verified absent); every class an image has no row
    for -> -1 (unknown; ignored by the loss and the metric). The images are
    those with at least one row of the vocabulary, sorted by ImageID.

    **Vocabulary** (classes and their order): ``'boxable'`` -- the 600
    classes of the boxable descriptions file, in its order; ``'trainable'``
    -- the ids of ``oidv7-classes-trainable.txt`` (the classes with enough
    training data), in its order; ``'all'`` -- every id of the
    descriptions file. Rows of other ids are skipped; an id that is not in
    the descriptions at all is an error. Class names (the prompts) are the
    DisplayNames (a repeated one gets its id appended, see
    :func:`unique_display_names`); ``metainfo['label_ids']`` keeps the ids.

    Loading streams the CSV into compact arrays (13 bytes a row, see
    :func:`load_open_images_labels`); samples are built on access, so the
    memory held is proportional to the labels, not to images x classes.

    Args:
        data_root (str): Dataset root.
        split (str): ``'train'``, ``'validation'`` or ``'test'``.
        ann_file (str): Labels CSV relative to ``data_root``. Defaults to
            ``annotations/oidv7-{train,val,test}-annotations-human-imagelabels.csv``.
        class_descriptions (str): Descriptions CSV relative to
            ``data_root``. Defaults to
            ``annotations/oidv7-class-descriptions.csv``.
        vocabulary (str): ``'boxable'``, ``'trainable'`` or ``'all'``.
            Defaults to ``'boxable'``.
        vocabulary_file (str, optional): Overrides the vocabulary's file
            (ids one a line, or a descriptions CSV), relative to
            ``data_root``.
        data_prefix (str): Image folder. Defaults to ``split``.
        check_images (bool): Check that every image exists (one directory
            listing). Defaults to True.
        **kwargs: ``pipeline``, ``test_mode``, ``indices``, ``lazy_init``...
    """

    SPLITS = tuple(_SPLIT_FILE)

    def __init__(self,
                 data_root: str,
                 split: str = 'train',
                 ann_file: str = '',
                 class_descriptions: str = (
                     'annotations/oidv7-class-descriptions.csv'),
                 vocabulary: str = 'boxable',
                 vocabulary_file: Optional[str] = None,
                 data_prefix: str = '',
                 check_images: bool = True,
                 **kwargs):
        if split not in self.SPLITS:
            raise ValueError(f'OpenImagesMultiLabel: split must be one of '
                             f'{self.SPLITS}, got {split!r}.')
        if vocabulary not in VOCABULARIES:
            raise ValueError(
                f'OpenImagesMultiLabel: vocabulary must be one of '
                f'{sorted(VOCABULARIES)}, got {vocabulary!r}.')
        for key in ('classes', 'metainfo'):
            if kwargs.get(key) is not None:
                raise ValueError(
                    f'OpenImagesMultiLabel takes its classes from the '
                    f'descriptions and the vocabulary; drop `{key}` and use '
                    '`vocabulary` / `vocabulary_file`.')
        data_root = expand_user(data_root, 'OpenImagesMultiLabel.data_root')
        self.split = split
        self.vocabulary = vocabulary
        self.check_images = check_images
        self.class_descriptions = join_path(data_root, class_descriptions)
        vfile = vocabulary_file or VOCABULARIES[vocabulary]
        self.vocabulary_file = join_path(data_root, vfile) if vfile else None
        self.labels = None
        if not ann_file:
            ann_file = osp.join(
                'annotations', f'oidv7-{_SPLIT_FILE[split]}-annotations-'
                'human-imagelabels.csv')
        kwargs['pipeline'] = build_pipeline(kwargs.get('pipeline', ()))
        kwargs.setdefault('serialize_data', False)
        super().__init__(
            ann_file=ann_file,
            data_root=data_root,
            data_prefix=data_prefix or split,
            **kwargs)

    def _load_vocabulary(self) -> Tuple[List[str], List[str], Dict]:
        for f in (self.class_descriptions, self.vocabulary_file):
            if f and '://' not in f and not osp.exists(f):
                raise FileNotFoundError(
                    f'OpenImagesMultiLabel: {f!r} not found. Fix: download '
                    'it from storage.googleapis.com/openimages (see '
                    'docs/data.md) or set class_descriptions= / '
                    'vocabulary_file=.')
        names = read_class_descriptions(self.class_descriptions)
        if self.vocabulary_file is None:
            ids = list(names)
        else:
            ids = read_label_ids(self.vocabulary_file)
            unknown = [i for i in ids if i not in names]
            if unknown:
                raise AnnotationError(
                    f'{self.vocabulary_file}: label ids {unknown[:5]} are not '
                    f'in {self.class_descriptions}. Fix: use files of the '
                    'same Open Images version.')
            if len(set(ids)) != len(ids):
                raise AnnotationError(
                    f'{self.vocabulary_file}: repeated label ids. Fix: use '
                    'the official file.')
        empty = [i for i in ids if not names[i].strip()]
        if empty:
            raise AnnotationError(
                f'{self.class_descriptions}: the label id(s) {empty[:5]} of '
                f'the {self.vocabulary!r} vocabulary have an empty '
                'DisplayName; the DisplayName is the class name of the '
                'prompts. Fix: give each a name ("LabelName,DisplayName") '
                'or use the official descriptions file.')
        return ids, [names[i] for i in ids], names

    def full_init(self):
        """Stream the labels CSV into compact arrays."""
        if self._fully_initialized:
            return
        if not osp.exists(self.ann_file) and '://' not in self.ann_file:
            raise FileNotFoundError(
                f'OpenImagesMultiLabel: labels file {self.ann_file!r} not '
                'found. Fix: download the human-verified image-level labels '
                'of the split (see docs/data.md) or set ann_file=.')
        ids, names, all_ids = self._load_vocabulary()
        names = unique_display_names(ids, names)
        self._metainfo['classes'] = tuple(names)
        self._metainfo['label_ids'] = tuple(ids)
        labels = load_open_images_labels(self.ann_file, {
            m: k
            for k, m in enumerate(ids)
        }, all_ids)
        if not len(labels.image_keys):
            raise AnnotationError(
                f'{self.ann_file}: no row of the {len(ids)} '
                f'{self.vocabulary!r} classes ({labels.num_rows} rows read). '
                'Fix: check the split, the vocabulary and the file.')
        self.labels = labels
        self._index = np.arange(len(labels.image_keys))
        if self._indices is not None:
            sel = self._indices
            check_indices(sel, len(self._index),
                          f'OpenImagesMultiLabel ({self.ann_file})')
            if isinstance(sel, (int, np.integer)):  # MMEngine's meaning
                sel = int(sel)
                self._index = self._index[:sel] if sel >= 0 else \
                    self._index[sel:]
            else:
                self._index = self._index[np.asarray(sel, dtype=np.int64)]
        check_not_empty(self, len(self._index))
        self._fully_initialized = True
        MMLogger.get_current_instance().info(
            f'OpenImagesMultiLabel ({self.split}, {self.vocabulary}): '
            f'{len(self)} images x {len(ids)} classes, '
            f'{len(labels.classes)} verified labels '
            f'({int(labels.values.sum())} present), {labels.num_skipped} '
            'rows of other classes skipped.')
        if self.check_images:
            check_images_exist(
                (self._img_path(i) for i in self._index),
                f'OpenImagesMultiLabel ({self.ann_file})',
                f'put the images of the split in {self.img_prefix!r} as '
                '<ImageID>.jpg')

    def _img_path(self, image: int) -> str:
        key = int(self.labels.image_keys[image])
        return join_path(self.img_prefix, f'{key:016x}.jpg')

    def __len__(self) -> int:
        self.full_init()
        return len(self._index)

    def get_data_info(self, idx: int) -> dict:
        """Build the sample: ``img_path``, ``img_id`` (ImageID),
        ``gt_label`` (verified positives) and ``gt_score`` (1/0/-1)."""
        self.full_init()
        image = int(self._index[idx])
        lab = self.labels
        lo, hi = lab.offsets[image], lab.offsets[image + 1]
        cls, val = lab.classes[lo:hi], lab.values[lo:hi]
        pos = cls[val == 1].tolist()
        return dict(
            img_path=self._img_path(image),
            img_id=f'{int(lab.image_keys[image]):016x}',
            sample_idx=idx,
            gt_label=pos,
            gt_score=dense_score(len(self.CLASSES), pos, cls[val == 0],
                                 UNKNOWN))

    def get_subset_(self, indices):
        raise NotImplementedError(
            'OpenImagesMultiLabel: use `indices=` at construction.')

    get_subset = get_subset_

    def extra_repr(self) -> List[str]:
        return [
            f'Split: \t{self.split}', f'Vocabulary: \t{self.vocabulary}',
            f'Annotation file: \t{self.ann_file}',
            f'Prefix of images: \t{self.img_prefix}'
        ]

# Copyright (c) mmcoop contributors. All rights reserved.
"""Any multi-label set given as a CSV table ``image,labels[,negatives]``."""
import csv
import io
import os.path as osp
from typing import List, Optional, Sequence, Union

from mmengine.fileio import join_path
from mmengine.logging import MMLogger

from mmcoop.registry import DATASETS
from mmcoop.utils.paths import expand_user
from mmcoop.utils.tri_state_targets import ABSENT, UNKNOWN
from .tri_state import TriStateMultiLabelDataset
from .utils import (AnnotationError, check_class_names, nfc,
                    normalize_class_name, read_annotation_text,
                    relative_path_note)

__all__ = ['MultiLabelCSVDataset']


class _DefaultColumn(str):
    """The default ``negative_column``: used if the header has it (an
    explicitly set column must be in the header)."""


_NEGATIVES = _DefaultColumn('negatives')


@DATASETS.register_module()
class MultiLabelCSVDataset(TriStateMultiLabelDataset):
    """A user's multi-label set as a CSV table -- no code needed.

    Format (header row required; column names configurable)::

        image,labels,negatives
        img/0001.jpg,dog;person,cat
        img/0002.jpg,car,
        img/0003.jpg,,dog;car

    ``image`` is relative to ``data_root/data_prefix``; ``labels`` lists the
    image's positive classes separated by ``label_separator`` (``;``); an
    empty cell means no positive. Other columns are ignored.

    **Target policy** (``gt_score``):

    - without a negatives column (the file has no ``negative_column``, or it
      is None): listed labels are 1, every other class is 0 -- the table is
      a *complete* labelling, as COCO/VOC;
    - with a negatives column: listed labels are 1, listed negatives
      (verified absent) are 0 and every other class is -1 (unknown, ignored
      by the loss and the metric), as Open Images. Such a set trains as
      is; :class:`PartialLabelDataset` may still hide a part of its *known*
      labels (the unknown ones stay unknown).

    **Classes**: ``classes`` (list, or a text file with one name per line,
    path relative to the working directory) fixes the class list and its
    order; a label not in it is an error. Without it the classes are the
    sorted set of names found in the file (labels and negatives) -- give an
    explicit list when train and test are separate files, so both have the
    same classes in the same order.

    Errors name the file, the line and the fix: missing columns (an
    explicitly set ``negative_column`` included), unknown label names, a
    class both positive and negative, duplicate images (also spelt
    differently, ``a.jpg`` / ``./a.jpg``), an unclosed quote, a label with a
    line break, label names equal up to case/``_``/spaces, an empty file, a
    file that is not UTF-8, images missing on disk (``check_images``).

    Args:
        ann_file (str): The CSV file (relative to ``data_root``).
        data_root (str): Dataset root. Defaults to ''.
        data_prefix (str | dict): Image folder relative to ``data_root``.
            Defaults to ''.
        image_column (str): Column with the image path. Defaults to
            ``'image'``.
        label_column (str): Column with the positive labels. Defaults to
            ``'labels'``.
        negative_column (str, optional): Column with the verified negatives.
            The default ``'negatives'`` is used if the header has it; a
            column set explicitly must be in the header (else an error,
            not a silent switch to complete labels). None: never. Defaults
            to ``'negatives'``.
        label_separator (str): Separator inside a label cell. Defaults to
            ``';'``.
        delimiter (str): CSV field delimiter. Defaults to ``','``.
        check_images (bool): Check that every image exists. Defaults to
            True.
        backend_args (dict, optional): mmengine file backend arguments.
        classes (str | Sequence[str], optional): Class names or a file.
        **kwargs: Other arguments of :class:`mmpretrain.datasets.BaseDataset`.

    Examples:
        >>> ds = MultiLabelCSVDataset('train.csv', data_root='data/mine',
        ...                           classes='data/mine/classes.txt')
    """

    def __init__(self,
                 ann_file: str,
                 data_root: str = '',
                 data_prefix: Union[str, dict] = '',
                 image_column: str = 'image',
                 label_column: str = 'labels',
                 negative_column: Optional[str] = _NEGATIVES,
                 label_separator: str = ';',
                 delimiter: str = ',',
                 check_images: bool = True,
                 backend_args: Optional[dict] = None,
                 metainfo: Optional[dict] = None,
                 classes: Union[str, Sequence[str], None] = None,
                 **kwargs):
        if not isinstance(delimiter, str) or len(delimiter) != 1:
            raise ValueError(
                f'MultiLabelCSVDataset: delimiter must be one character '
                f"(e.g. ',' or '\\t'), got {delimiter!r}.")
        if not isinstance(label_separator, str) or not label_separator \
                or label_separator == delimiter:
            raise ValueError(
                f'MultiLabelCSVDataset: label_separator must be a non-empty '
                f'string different from the delimiter {delimiter!r}, got '
                f'{label_separator!r}.')
        self.image_column = image_column
        self.label_column = label_column
        self.negative_column = negative_column
        self.label_separator = label_separator
        self.delimiter = delimiter
        self.backend_args = backend_args
        self.has_negatives = False
        super().__init__(
            ann_file=expand_user(ann_file, 'MultiLabelCSVDataset.ann_file'),
            data_root=expand_user(data_root, 'MultiLabelCSVDataset.data_root'),
            data_prefix=data_prefix,
            metainfo=metainfo,
            classes=classes,
            check_images=check_images,
            **kwargs)

    def _read_rows(self):
        """``[(line, image, positive names, negative names)]`` and whether
        the file has the negatives column."""
        f = self.ann_file
        try:
            text = read_annotation_text(f, self.backend_args)
        except FileNotFoundError:
            raise FileNotFoundError(
                f'MultiLabelCSVDataset: annotation file {f!r} not found'
                f'{relative_path_note(f)}. '
                'Fix: check data_root / ann_file.') from None
        reader = csv.reader(
            io.StringIO(text), delimiter=self.delimiter, strict=True)
        start = [1]  # the line the row being read starts on
        try:
            return self._parse(reader, start)
        except csv.Error as e:
            raise AnnotationError(
                f'{f}: line {start[0]}: not valid CSV ({e} at line '
                f'{reader.line_num}); probably a quote (") opened on line '
                f'{start[0]} is never closed, which takes the rest of the '
                'file into one cell. Fix: close the quote, or remove '
                'it.') from None

    def _parse(self, reader, start):
        f = self.ann_file
        header = next(reader, None)
        if header is None or not any(h.strip() for h in header):
            raise AnnotationError(
                f'{f}: the file is empty. Fix: write a header row '
                f'"{self.image_column}{self.delimiter}{self.label_column}" '
                'and one row per image.')
        header = [h.strip() for h in header]
        start[0] = reader.line_num + 1
        col = {}
        for key in (self.image_column, self.label_column):
            if key not in header:
                raise AnnotationError(
                    f'{f}: line 1 (header) has no column {key!r} (found '
                    f'{header}). Fix: rename the column, or set '
                    'image_column= / label_column= to your column names '
                    f'(delimiter is {self.delimiter!r}).')
            col[key] = header.index(key)
        neg = self.negative_column
        has_neg = neg is not None and neg in header
        if (neg is not None and not has_neg
                and not isinstance(neg, _DefaultColumn)):
            raise AnnotationError(
                f'{f}: line 1 (header) has no column {neg!r}, which was set '
                f'as negative_column (found {header}). Without it every '
                'unlisted class would count as verified absent (0) instead '
                'of unknown (-1). Fix: add the column, correct '
                'negative_column=, or set negative_column=None for a '
                'complete labelling.')
        if neg is not None and not has_neg:
            self._refuse_near_miss(header)
        width = max(col.values()) + 1
        if has_neg:
            col[neg] = header.index(neg)
            width = max(width, col[neg] + 1)
        for key in col:
            places = [i + 1 for i, h in enumerate(header) if h == key]
            if len(places) > 1:
                raise AnnotationError(
                    f'{f}: line 1 (header) has the column {key!r} '
                    f'{len(places)} times (columns {places}); only the '
                    'first would be read and the others silently '
                    'ignored. Fix: keep one column of that name (merge '
                    'repeated label columns into one, labels separated by '
                    f'{self.label_separator!r}) or rename the others.')
        num_fields = len(header)
        sep = self.label_separator

        def names(cell, line, column):
            out = [nfc(n.strip()) for n in cell.split(sep) if n.strip()]
            for n in out:
                if '\n' in n or '\r' in n:
                    raise AnnotationError(
                        f'{f}: line {line}: a label in column {column!r} '
                        f'contains a line break ({n!r:.80}); probably a '
                        'quote (") opened on that line closes on a later '
                        'one. Fix: remove the quote or the line break.')
            return out

        rows = []
        seen = {}
        for row in reader:
            first = start[0]
            start[0] = reader.line_num + 1
            if not any(c.strip() for c in row):
                continue
            extra = [c for c in row[num_fields:] if c.strip()]
            if extra:
                raise AnnotationError(
                    f'{f}: line {first} has {len(row)} fields but the '
                    f'header has {num_fields} ({row!r:.120}); {extra[:3]} '
                    'belong to no column and would be silently dropped. '
                    'Fix: separate the labels of a cell with '
                    f'{self.label_separator!r} (label_separator), not '
                    f'with the delimiter {self.delimiter!r}, or quote a '
                    'field that contains the delimiter.')
            row = row + [''] * (width - len(row))
            image = row[col[self.image_column]].strip()
            if not image:
                raise AnnotationError(
                    f'{f}: line {first} has an empty {self.image_column!r} '
                    'field. Fix: give the image path or remove the line.')
            if '\n' in image or '\r' in image:
                raise AnnotationError(
                    f'{f}: line {first}: the {self.image_column!r} field '
                    f'contains a line break ({image!r:.80}). Fix: remove '
                    'the quote (") or the line break.')
            # the file it names: 'a.jpg' and '<img_prefix>/a.jpg' are one
            key = osp.normpath(join_path(self.img_prefix, image))
            if key in seen:
                first_line, first_image = seen[key]
                spelt = ('' if first_image == image else
                         f', spelt {first_image!r} there')
                raise AnnotationError(
                    f'{f}: line {first} repeats image {image!r} (first on '
                    f'line {first_line}{spelt}). Fix: merge the two rows '
                    'into one row with all the labels of the image.')
            seen[key] = (first, image)
            pos = names(row[col[self.label_column]], first,
                        self.label_column)
            negs = names(row[col[neg]], first, neg) if has_neg else []
            both = sorted(set(pos) & set(negs))
            if both:
                raise AnnotationError(
                    f'{f}: line {first} ({image}) lists {both} both in '
                    f'{self.label_column!r} and in {neg!r}. Fix: keep each '
                    'class in one of the two columns.')
            rows.append((first, image, pos, negs))
        if not rows:
            raise AnnotationError(
                f'{f}: the header has no data rows below it. Fix: add one '
                'row per image.')
        if has_neg and not any(r[3] for r in rows):
            MMLogger.get_current_instance().warning(
                f'{f}: no row fills the {neg!r} column, so no negative is '
                'known: every class a row does not list is unknown (-1), '
                'ignored by the loss and the metric (a test split then '
                'scores AP 100 on every class whatever the model). Fix: '
                'for a complete labelling (every unlisted class absent) '
                'drop the column or set negative_column=None; for positive '
                'labels only, as intended, nothing.')
        return rows, has_neg

    def _refuse_near_miss(self, header: List[str]) -> None:
        """Without the negatives column the file is read as a complete
        labelling: a column named like it (``Negatives``, ``negative``,
        ``neg_labels``) is refused rather than silently ignored."""
        near = [
            h for h in header
            if h not in (self.image_column, self.label_column)
            and h.strip().lower().startswith('neg')
        ]
        if not near:
            return
        neg = self.negative_column
        raise AnnotationError(
            f'{self.ann_file}: line 1 (header) has the column {near[0]!r} '
            f'but no column {neg!r}, the negative_column read for the '
            'verified negatives (matched exactly). The file would be read '
            f'as a complete labelling: {near[0]!r} ignored, every unlisted '
            'class a verified negative (0) instead of unknown (-1). Fix: '
            f'rename the column to {neg!r}, set '
            f'negative_column={near[0]!r}, or negative_column=None to read '
            'a complete labelling.')

    def load_data_list(self) -> List[dict]:
        """Read the table (see the class docstring for the policy)."""
        rows, self.has_negatives = self._read_rows()
        self.unlabelled_value = float(
            UNKNOWN if self.has_negatives else ABSENT)
        if self.CLASSES is None:
            found = sorted({n for r in rows for n in r[2] + r[3]})
            if not found:
                raise AnnotationError(
                    f'{self.ann_file}: no row has a label, so no class list '
                    'can be taken from the data. Fix: add labels or pass '
                    '`classes=`.')
            self._check_found_classes(found, rows)
            MMLogger.get_current_instance().info(
                f'{self.ann_file}: {len(found)} classes taken from the data '
                '(sorted names); pass `classes=` to fix their order when '
                'train and test are separate files.')
            self._metainfo['classes'] = tuple(found)
        # labels are NFC (see `names`); a class list may be NFD (macOS)
        index = {nfc(c): i for i, c in enumerate(self.CLASSES)}
        data_list = []
        for line, image, pos, negs in rows:
            unknown = [n for n in pos + negs if n not in index]
            if unknown:
                raise self._unknown_classes_error(
                    f'{self.ann_file}: line {line} ({image})', unknown)
            info = dict(
                img_path=join_path(self.img_prefix, image),
                img_id=image,
                gt_label=sorted({index[n]
                                 for n in pos}))
            if self.has_negatives:
                info['gt_negative'] = sorted({index[n] for n in negs})
            data_list.append(info)
        return data_list

    def _check_found_classes(self, found, rows) -> None:
        """The names taken from the data must be distinct classes (not
        ``'Dog'`` and ``'dog'``: one prompt, one class for every check)."""
        try:
            check_class_names(found, f'{self.ann_file}: labels')
        except ValueError as e:
            groups = {}
            for n in found:
                groups.setdefault(normalize_class_name(n), []).append(n)
            bad = {
                n
                for key, same in groups.items()
                if not key or len(same) > 1 for n in same
            }
            where = {}
            for line, _, pos, negs in rows:
                for n in pos + negs:
                    if n in bad:
                        where.setdefault(n, line)
            lines = ', '.join(f'{n!r} on line {where[n]}' for n in found
                              if n in where)
            raise AnnotationError(
                f'{e} First seen: {lines}. Fix: spell each class the same '
                'way on every line (one name per class).') from None

    def _image_fix(self) -> str:
        return (f'check the {self.image_column!r} column and data_root / '
                f'data_prefix (images are read from {self.img_prefix!r})')

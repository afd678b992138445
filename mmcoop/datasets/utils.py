# Copyright (c) mmcoop contributors. All rights reserved.
"""Small helpers shared by the mmcoop datasets."""
import os
import os.path as osp
import re
import unicodedata
from collections.abc import ItemsView, KeysView
from collections.abc import Set as AbstractSet
from typing import Iterable, List, Optional, Sequence, Union

from mmengine.fileio import get_text

from mmcoop.utils.value_checks import is_int

__all__ = [
    'AnnotationError', 'normalize_class_name', 'same_class_names',
    'check_given_classes', 'describe_class_difference',
    'describe_mismatch', 'path_is_inside',
    'check_outside_dataset', 'atomic_write_npy', 'atomic_write_json',
    'build_pipeline', 'check_not_empty', 'NotEmptyMixin',
    'read_annotation_text', 'check_class_names',
    'read_class_list', 'class_columns', 'check_indices'
]


def build_pipeline(pipeline) -> list:
    """Build transform configs through mmcoop's ``TRANSFORMS``.

    mmpretrain's ``BaseDataset`` builds with mmpretrain's registry, which
    only sees mmcoop transforms when the default scope is ``'mmcoop'``;
    building here makes mmcoop datasets work without a default scope too.
    """
    from mmcoop.registry import TRANSFORMS
    return [
        TRANSFORMS.build(t) if isinstance(t, dict) else t
        for t in (pipeline or ())
    ]


class AnnotationError(ValueError):
    """An annotation file (or tree) does not have the expected content.

    The message always names the file, the offending field and a fix.
    """


def normalize_class_name(name: str) -> str:
    """Normalise a class name for comparisons (Unicode form, case, ``_``,
    spaces).

    ``'Traffic_Light'``, ``' traffic  light'`` and ``'traffic light'`` all
    compare equal, and so do the composed and decomposed spellings of
    ``'café'`` (NFKC: CLIP's tokenizer reads both as one text); the
    *original* spelling is what enters the prompts. The one normalisation
    of mmcoop: datasets, ``ClassCheckHook`` and the checkpoint-fit policy
    (:mod:`mmcoop.engine.checkpoint_fit`) use it.
    """
    name = unicodedata.normalize('NFKC', str(name))
    return re.sub(r'\s+', ' ', name.replace('_', ' ')).strip().lower()


def nfc(text: str) -> str:
    """``text`` in Unicode's composed form (NFC): a label typed on one
    system and a class name written on another (macOS writes decomposed
    names) compare equal when they read the same."""
    return unicodedata.normalize('NFC', text)


def same_class_names(first: Sequence[str], second: Sequence[str]) -> bool:
    """Whether two class lists name the same classes in the same order, up
    to :func:`normalize_class_name`."""
    return [normalize_class_name(c) for c in first
            ] == [normalize_class_name(c) for c in second]


def check_given_classes(source: str,
                        given: Sequence[str],
                        file_names: Sequence[str],
                        strict: bool = True) -> None:
    """Check a user-given class list against the category names of an
    annotation file (the one check of COCO-format datasets).

    Args:
        source (str): the annotation file, named in the errors.
        given (Sequence[str]): the classes the dataset was given.
        file_names (Sequence[str]): the file's category names, in sorted
            category-id order.
        strict (bool): also require the names to match (up to
            :func:`normalize_class_name`); ``False`` allows own prompt
            wording. The lengths must match either way, and a given name
            that is one of the file's names must be at its position.

    Raises:
        AnnotationError: naming the file, the counts or the first
            differences, and the fix.
    """
    if len(given) != len(file_names):
        raise AnnotationError(
            f'{source}: the annotation file has {len(file_names)} categories '
            f'but the dataset was given {len(given)} classes. Fix: pass one '
            'class name per category, in sorted category-id order, or drop '
            'the `classes` / `metainfo` argument to use the file\'s names.')
    if strict and not same_class_names(given, file_names):
        raise AnnotationError(
            f'{source}: the given classes do not match the category names '
            'of the file (sorted by category id): '
            f'{describe_mismatch(given, file_names)}. Fix: reorder/rename '
            'them, or pass strict_class_names=False to use your own prompt '
            'wording (one name per category, in sorted category-id order).')
    # own wording allowed, but a name of the file at another position is
    # another category's labels under this name
    position = {normalize_class_name(n): j for j, n in enumerate(file_names)}
    moved = [(i, name, position[normalize_class_name(name)])
             for i, name in enumerate(given)
             if position.get(normalize_class_name(name), i) != i]
    if moved:
        shown = ', '.join(f'{name!r} given as class {i}, the file\'s '
                          f'category {j}' for i, name, j in moved[:4])
        raise AnnotationError(
            f'{source}: the given classes name categories of the file at '
            f'other positions ({shown}{", ..." if len(moved) > 4 else ""}), '
            'so each would get another category\'s labels. Fix: give the '
            'names in sorted category-id order (the file\'s order), or drop '
            'the `classes` / `metainfo` argument to use the file\'s names.')


def describe_class_difference(first: Sequence[str],
                              second: Sequence[str],
                              names: Sequence[str] = ('the checkpoint',
                                                      'the config'),
                              limit: int = 8) -> str:
    """Human-readable differences between two class lists: counts, names
    only on either side, or the same names in another order."""
    parts = [f'{len(first)} vs {len(second)} classes']
    a = {normalize_class_name(c) for c in first}
    b = {normalize_class_name(c) for c in second}
    for name, only in ((names[0], [
            c for c in first if normalize_class_name(c) not in b
    ]), (names[1], [c for c in second if normalize_class_name(c) not in a])):
        if only:
            parts.append(f'only in {name}: {only[:limit]}'
                         f'{"..." if len(only) > limit else ""}')
    if len(parts) == 1:
        moved = describe_mismatch(first, second, limit)
        parts.append(f'same names in another order ({moved})')
    return '; '.join(parts)


def path_is_inside(path: str, folder: str) -> bool:
    """Whether ``path`` resolves to ``folder`` or to a path below it."""
    path = osp.realpath(osp.abspath(osp.expanduser(path)))
    folder = osp.realpath(osp.abspath(osp.expanduser(folder)))
    try:
        return osp.commonpath([path, folder]) == folder
    except ValueError:  # different drives on Windows
        return False


def check_outside_dataset(
        path: str,
        dataset_dirs: Iterable[Optional[str]],
        what: str,
        example: str = "'work_dirs/<exp>/partial_labels/mask.npy'") -> None:
    """Raise ``ValueError`` if ``path`` lies inside one of the dataset
    folders (``example`` is a good place, for the message).

    mmcoop never writes into a dataset tree (the official code writes its
    label masks into ``<root>/annotations``; that makes runs overwrite each
    other's masks and read-only dataset mounts fail).
    """
    for folder in dataset_dirs:
        if not folder or '://' in str(folder):
            continue
        if path_is_inside(path, folder):
            raise ValueError(
                f'Refusing to write the {what} {path!r}: it resolves inside '
                f'the dataset folder {osp.realpath(folder)!r}, and mmcoop '
                'never writes into a dataset tree. Fix: point it to a '
                f'folder of your own, e.g. {example}.')


def atomic_write_npy(path: str, array) -> None:
    """Write ``array`` as ``.npy`` to exactly ``path`` (temp file + rename,
    :func:`mmcoop.utils.checkpoint.atomic_write`); creates the folder."""
    import numpy as np

    from mmcoop.utils.checkpoint import atomic_write, make_parent
    make_parent(path)
    atomic_write(path, lambda f: np.save(f, array, allow_pickle=False))


def atomic_write_json(path: str, data) -> None:
    """Write ``data`` as indented JSON to exactly ``path`` (atomically, as
    :func:`atomic_write_npy`)."""
    import json

    from mmcoop.utils.checkpoint import atomic_write, make_parent
    make_parent(path)
    text = json.dumps(data, indent=1).encode()
    atomic_write(path, lambda f: f.write(text))


def describe_mismatch(expected: Sequence[str],
                      got: Sequence[str],
                      limit: int = 5) -> str:
    """Describe the first differences between two class-name lists."""
    diffs = [
        f'#{i}: {a!r} vs {b!r}' for i, (a, b) in enumerate(zip(expected, got))
        if normalize_class_name(a) != normalize_class_name(b)
    ]
    return ', '.join(diffs[:limit]) + (', ...' if len(diffs) > limit else '')


def check_not_empty(dataset, num_samples: Optional[int] = None) -> None:
    """Raise :class:`AnnotationError` if ``dataset`` has no samples
    (``num_samples``, by default ``len(dataset.data_list)``).

    A split can become empty after loading through ``indices`` (or a
    filter); MMEngine would then fail with ``need at least one array to
    concatenate``, or, unserialized, train and validate on nothing.
    """
    if num_samples is None:
        num_samples = len(dataset.data_list)
    if num_samples:
        return
    indices = getattr(dataset, '_indices', None)
    # the file that lists the samples (VOC: the image set)
    source = getattr(dataset, 'ann_file', '') or getattr(
        dataset, 'image_set_path', '')
    if indices is None:  # nothing to blame on `indices`
        raise AnnotationError(
            f'{type(dataset).__name__} ({source}): no samples, so there is '
            'nothing to iterate over. Fix: check the annotation file, '
            '`data_root` and the split of the dataset.')
    raise AnnotationError(
        f'{type(dataset).__name__} ({source}): no '
        f'samples left (indices={indices!r}), so there is nothing to '
        'iterate over. Fix: check `indices` and the split of the dataset.')


class NotEmptyMixin:
    """For a ``BaseDataset`` that loads a ``data_list``: once loaded (and
    cut by ``indices`` or its filters) it must hold a sample, with or
    without ``serialize_data`` (:func:`check_not_empty`); ``indices`` must
    be valid sample indices (:func:`check_indices`)."""

    def _get_unserialized_subset(self, indices):
        source = getattr(self, 'ann_file', '') or getattr(
            self, 'image_set_path', '')
        check_indices(indices, len(self.data_list),
                      f'{type(self).__name__} ({source})')
        return super()._get_unserialized_subset(indices)

    def full_init(self):
        if self._fully_initialized:
            return
        super().full_init()
        if not self.serialize_data:
            check_not_empty(self)

    def _serialize_data(self):
        check_not_empty(self)
        return super()._serialize_data()


def relative_path_note(path: str) -> str:
    """For a "not found" message: where a relative ``path`` was looked
    for (the working directory), else ''. A relative ``data_root`` or
    ``ann_file`` is read from where the command runs, not from the config's
    folder or the repository."""
    if not isinstance(path, str) or osp.isabs(path) or '://' in path:
        return ''
    return (f' (a relative path, read from the working directory '
            f'{os.getcwd()!r}: run from the folder it is relative to, or '
            'give an absolute data_root)')


def read_annotation_text(path: str, backend_args=None) -> str:
    """The text of an annotation file (mmengine's ``get_text``), without a
    leading UTF-8 byte-order mark (Windows editors write one; left in, it
    becomes part of the first JSON token, image id, concept or tag). A
    folder, or a file that is not UTF-8 text, is an
    :class:`AnnotationError` naming the file and the fix; a missing file
    raises the backend's ``FileNotFoundError`` (the caller names the layout
    it expects)."""
    if osp.isdir(path):
        raise AnnotationError(
            f'{path}: is a folder, not an annotation file. Fix: give the '
            'path of the file itself.')
    try:
        text = get_text(path, backend_args=backend_args)
        return text[1:] if text.startswith('\ufeff') else text
    except UnicodeDecodeError as e:
        raise AnnotationError(
            f'{path}: not UTF-8 text (byte {e.start}: {e.reason}). Fix: save '
            'the file as UTF-8.') from None


def check_ordered(names, where: str) -> None:
    """Refuse a set (or frozenset) of class names, naming ``where``: it has
    no order, and a class is its position in the list (its prompt, its
    score column, the checkpoint's rows); a set of strings iterates in
    another order in every process (string hashing is salted)."""
    if isinstance(names, AbstractSet) and not isinstance(
            names, (KeysView, ItemsView)):
        raise ValueError(
            f'{where} is a {type(names).__name__}, which has no order: the '
            'class index is the position in the list, so the classes would '
            'come in another order from run to run. Fix: give a list in '
            "class-index order, e.g. ['person', 'bicycle', 'car'].")


def check_class_names(names: Sequence, where: str) -> List[str]:
    """``names`` as a list of class names, each a non-empty string, no two
    equal up to :func:`normalize_class_name` (they would be one class for
    every class check, and one CLIP prompt); else a ``ValueError`` naming
    ``where`` (e.g. ``'`classnames`'`` or ``"'k.txt': line"``) and the
    entries; a set is refused (:func:`check_ordered`)."""
    check_ordered(names, where)
    names = list(names)
    for i, name in enumerate(names):
        if not isinstance(name, str) or not normalize_class_name(name):
            raise ValueError(
                f'{where}[{i}] is {name!r}: each class needs a name (a '
                'non-empty string; it enters the text prompt).')
    seen = {}
    for name in names:
        seen.setdefault(normalize_class_name(name), []).append(name)
    dups = [same for same in seen.values() if len(same) > 1]
    if dups:
        raise ValueError(
            f'{where} has duplicates: {dups} (names equal up to case, '
            "'_' and spaces). Each class needs a distinct name (it enters "
            'the text prompt).')
    return names


def read_class_list(classes: Union[str, Sequence[str]],
                    field: str = 'classes') -> List[str]:
    """Class names from a list, or from a UTF-8 text file with one name a
    line (a BOM, outer spaces and blank lines dropped), checked by
    :func:`check_class_names`; a missing file names ``field``."""
    if isinstance(classes, str):
        path = osp.expanduser(classes)
        if not osp.isfile(path):
            raise FileNotFoundError(
                f'{field}={classes!r} is not a file. Fix: give a list of '
                f"class names (e.g. {field}=['dog', 'cat']) or the path of "
                'a text file with one name a line.')
        text = read_annotation_text(path)
        return check_class_names(
            [line.strip() for line in text.splitlines() if line.strip()],
            f'{classes!r} ({field})')
    return check_class_names(classes, field)


def class_columns(classes: Sequence[str], names: Sequence[str],
                  owner: str, field: str):
    """Column indices of ``names`` in a dataset's ``classes``, matched
    exactly or else up to :func:`normalize_class_name` (``'Dog'`` finds
    ``'dog'``); names that are not among them, or that match several
    classes, raise ``ValueError`` naming ``owner.field``."""
    import numpy as np

    classes = list(classes)
    exact = {}
    loose = {}
    for i, c in enumerate(classes):
        exact.setdefault(c, i)
        loose.setdefault(normalize_class_name(c), []).append(i)
    missing = [
        c for c in names
        if c not in exact and normalize_class_name(c) not in loose
    ]
    if missing:
        raise ValueError(
            f'{owner}: {field} {missing[:10]} are not among the dataset\'s '
            f'classes (its metainfo `classes`, compared up to case, \'_\' '
            f'and spaces); fix the names in `{field}`.')
    columns = []
    for c in names:
        if c in exact:
            columns.append(exact[c])
            continue
        found = loose[normalize_class_name(c)]
        if len(found) > 1:
            raise ValueError(
                f'{owner}: {field} entry {c!r} matches the classes '
                f'{[classes[i] for i in found]} (equal up to case, \'_\' '
                f'and spaces); fix the name in `{field}` to one of them '
                'exactly.')
        columns.append(found[0])
    return np.array(columns, dtype=np.int64)


def check_indices(indices, num_samples: int, owner: str) -> None:
    """Check a dataset's ``indices`` argument against its ``num_samples``
    loaded samples, with MMEngine's meaning: an int keeps the first (or,
    negative, the last) that many samples; a sequence of ints keeps those
    samples (a negative one counts from the end). Anything else -- a
    float, a bool, a string, an index out of range -- is a ``ValueError``
    naming ``owner`` (the dataset and its file) and the fix, instead of
    MMEngine's ``IndexError`` / ``TypeError`` or a silently truncated
    index."""
    import numpy as np
    if indices is None or is_int(indices):
        return
    fix = (f'Fix: give `indices` as an int (the first N samples) or a list '
           f'of ints in [0, {num_samples - 1}] (negative: from the end).')
    if isinstance(indices, np.ndarray):
        items = indices.reshape(-1).tolist() if indices.ndim == 1 else None
    elif isinstance(indices, (list, tuple, range)):
        items = list(indices)
    else:
        items = None
    if items is None:
        raise ValueError(
            f'{owner}: indices={indices!r:.80} is not an int or a list of '
            f'ints. {fix}')
    for k, idx in enumerate(items):
        if not is_int(idx):
            raise ValueError(
                f'{owner}: indices[{k}] is {idx!r} ({type(idx).__name__}), '
                f'not an integer sample index. {fix}')
        if not -num_samples <= idx < num_samples:
            raise ValueError(
                f'{owner}: indices[{k}] is {idx}, but the dataset has '
                f'{num_samples} samples. {fix}')

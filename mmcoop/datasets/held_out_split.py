# Copyright (c) mmcoop contributors. All rights reserved.
"""A validation split held out from the training set, saved as a file."""
import json
import os.path as osp
from typing import List, Sequence, Union

import numpy as np
from mmengine.dataset import BaseDataset
from mmengine.logging import MMLogger
from mmengine.registry import DefaultScope

from mmcoop.registry import DATASETS
from mmcoop.utils.checkpoint import is_not_writable, with_fix
from mmcoop.utils.value_checks import check_int, is_real
from .utils import atomic_write_json, check_outside_dataset
from .wrapper import dataset_dirs

__all__ = [
    'held_out_split', 'draw_held_out_keys', 'read_split_file', 'image_keys',
    'check_val_fraction'
]

SPLIT_FORMAT = 'mmcoop.held_out_split.v1'
PARTS = ('train', 'val')
#: where a split file goes in the refusal of one inside a dataset tree
_SPLIT_EXAMPLE = "'work_dirs/splits/<dataset>_<split>_holdout0.1_seed0.json'"


def check_val_fraction(val_fraction, field: str = 'val_fraction') -> float:
    """``val_fraction`` (named ``field`` in the error) must be a real number
    (not a bool or a string) in (0, 1)."""
    if not is_real(val_fraction) or not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(
            f'{field} must be a number in (0, 1) (the fraction of the '
            f'training images held out), got {val_fraction!r} '
            f'({type(val_fraction).__name__}).')
    return float(val_fraction)


def held_out_count(num_images: int, val_fraction: float) -> int:
    """How many of ``num_images`` are held out: ``round(val_fraction *
    N)``, at least 1 and at most N - 1."""
    return min(num_images - 1,
               max(1, int(round(val_fraction * num_images))))


def draw_held_out_keys(keys: Sequence[str], val_fraction: float,
                       seed: int) -> List[str]:
    """The keys of the held-out part: ``round(val_fraction * N)`` keys
    (at least 1, at most N - 1) drawn without replacement by NumPy's
    ``default_rng(seed)`` from the *sorted* keys, so the draw does not
    depend on the order the dataset lists its images in. Returned sorted.
    """
    check_val_fraction(val_fraction)
    ordered = sorted(keys)
    n = len(ordered)
    if n < 2:
        raise ValueError(f'Cannot hold out a validation split from {n} '
                         'image(s).')
    picked = np.random.default_rng(seed).permutation(n)[:held_out_count(
        n, val_fraction)]
    return sorted(ordered[i] for i in picked)


def image_keys(dataset) -> List[str]:
    """One key per image: the file name of ``img_path`` (unique)."""
    paths = [
        str(dataset.get_data_info(i)['img_path']) for i in range(len(dataset))
    ]
    keys = [osp.basename(p) for p in paths]
    if len(set(keys)) != len(keys):
        from collections import Counter
        dup = sorted(k for k, n in Counter(keys).items() if n > 1)
        shown = [p for p in paths if osp.basename(p) == dup[0]][:3]
        raise ValueError(
            f'{type(dataset).__name__}: image file names are not unique '
            f'({len(dup)} repeated, e.g. {dup[0]!r}: {shown}), and the '
            'held-out split of the clean protocol (like a mask file with '
            'keys) names images by file name. Fix: give the images unique '
            'file names (e.g. the folder as a prefix), or train under '
            "protocol=dict(name='official').")
    return keys


def read_split_file(path: str) -> dict:
    """Read and check a split file (see :func:`held_out_split`)."""
    fix = (f'Fix: delete {path!r} (the split is then drawn from the seed '
           'and saved there) or point `split_file` to a split of this '
           'training set.')
    try:
        with open(path) as f:
            split = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f'Split file {path!r} is not readable JSON '
                         f'({type(e).__name__}: {e}). {fix}') from None
    if not isinstance(split, dict) or split.get('format') != SPLIT_FORMAT:
        raise ValueError(f'Split file {path!r}: field "format" must be '
                         f'{SPLIT_FORMAT!r}. {fix}')
    for field, kind in (('val', list), ('num_images', int),
                        ('val_fraction', float), ('seed', int)):
        value = split.get(field)
        if kind is float and isinstance(value, int):
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f'Split file {path!r}: field "{field}" must be '
                             f'a {kind.__name__}, got {value!r}. {fix}')
    val, num_images = split['val'], split['num_images']
    for i, key in enumerate(val):
        if not isinstance(key, str) or not key:
            raise ValueError(
                f'Split file {path!r}: field "val"[{i}] is {key!r}; each '
                'entry must be the file name of a held-out image (a '
                f'non-empty string). {fix}')
    repeated = sorted({k for k in val if val.count(k) > 1}) if len(
        set(val)) != len(val) else []
    if repeated:
        raise ValueError(f'Split file {path!r}: field "val" lists '
                         f'{repeated[:3]} more than once. {fix}')
    if not 0 < len(val) < num_images:
        part = 'validation' if not val else 'training'
        raise ValueError(
            f'Split file {path!r}: field "val" holds {len(val)} of the '
            f'{num_images} images ("num_images"), so the {part} part would '
            f'be empty; it must hold at least 1 and at most '
            f'{num_images - 1}. {fix}')
    return split


def held_out_split(dataset: Union[BaseDataset, dict],
                   split_file: str,
                   part: str,
                   val_fraction: float = 0.1,
                   seed: int = 0) -> BaseDataset:
    """One part of a training set split into train and held-out val.

    Registered as ``HeldOutSplit`` (a builder: it returns the inner
    dataset's own ``get_subset``, so the part is a dataset of the inner
    type and every wrapper, hook and cache sees the usual class). Build
    it twice with the same ``split_file``: ``part='train'`` inside the
    partial-label wrapper, ``part='val'`` (with ``test_mode=True`` on the
    inner dataset) as the validation set.

    The split file (JSON) is the record every method shares:
    ``{"format": "mmcoop.held_out_split.v1", "val": [file names],
    "num_images": N, "val_fraction": f, "seed": s}``, images keyed by the
    file name of ``img_path``. If it exists it is read and checked against
    the dataset and the arguments (errors name the file and the field); it
    is never overwritten. Otherwise the held-out part is drawn by
    :func:`draw_held_out_keys` and written there (atomically, never inside
    the dataset tree).

    Args:
        dataset (BaseDataset | dict): the training set (or its config).
        split_file (str): the ``.json`` split file to read or write.
        part (str): ``'train'`` (the rest) or ``'val'`` (held out).
        val_fraction (float): fraction held out. Defaults to 0.1.
        seed (int): seed of the draw. Defaults to 0.
    """
    if part not in PARTS:
        raise ValueError(f'HeldOutSplit: part must be one of {PARTS}, got '
                         f'{part!r}.')
    check_val_fraction(val_fraction)
    check_int('HeldOutSplit', 'seed', seed, minimum=0)
    if isinstance(dataset, dict):
        scope = None if DefaultScope.get_current_instance() else 'mmcoop'
        with DefaultScope.overwrite_default_scope(scope):
            dataset = DATASETS.build(dataset)
    dataset.full_init()
    keys = image_keys(dataset)
    if osp.exists(split_file):
        split = read_split_file(split_file)
        fix = (f'Fix: delete {split_file!r} to draw a new split, or use '
               'the arguments it was made with.')
        for field, value in (('val_fraction', float(val_fraction)),
                             ('seed', int(seed)), ('num_images', len(keys))):
            if split[field] != value:
                raise ValueError(
                    f'Split file {split_file!r}: field "{field}" is '
                    f'{split[field]!r} but this training set / config has '
                    f'{value!r}. {fix}')
        held_out = set(split['val'])
        unknown = sorted(held_out - set(keys))
        if unknown:
            raise ValueError(
                f'Split file {split_file!r}: field "val" names '
                f'{len(unknown)} image(s) that are not in the training set '
                f'(e.g. {unknown[:3]}). {fix}')
        expected = held_out_count(len(keys), val_fraction)
        if len(held_out) != expected:
            # an edited list: the runs of one table would train and select
            # on different images
            raise ValueError(
                f'Split file {split_file!r}: field "val" holds '
                f'{len(held_out)} distinct image(s), but val_fraction='
                f'{split["val_fraction"]} of its {len(keys)} images holds '
                f'out {expected}: the file was edited. {fix}')
    else:
        check_outside_dataset(split_file, dataset_dirs(dataset),
                              'held-out split file', example=_SPLIT_EXAMPLE)
        val = draw_held_out_keys(keys, val_fraction, seed)
        try:
            atomic_write_json(
                split_file,
                dict(
                    format=SPLIT_FORMAT,
                    num_images=len(keys),
                    val_fraction=float(val_fraction),
                    seed=int(seed),
                    key='file name of img_path',
                    val=val))
        except OSError as e:
            if not is_not_writable(e):
                raise
            raise with_fix(
                e, 'This is the held-out split file (`protocol.split_file`; '
                'by default in a `splits/` folder beside the work dir): set '
                'it to a writable path.') from e
        held_out = set(val)
    want = part == 'val'
    indices = [i for i, k in enumerate(keys) if (k in held_out) == want]
    subset = dataset.get_subset(indices)
    if want:
        _warn_uninformative_val(subset, split_file)
    return subset


def _warn_uninformative_val(val, split_file: str) -> None:
    """Warn when no class of the held-out part has both a positive and a
    known negative: every class's AP is then 100 or 0 whatever the model
    scores, so the validation mAP is the same at every epoch and the
    best-epoch selection of the clean protocol picks the first epoch."""
    informative = None
    for i in range(len(val)):
        info = val.get_data_info(i)
        score = info.get('gt_score')
        if score is None:
            continue  # a dataset without tri-state targets: not judged
        score = np.asarray(score)
        if informative is None:
            informative = np.zeros((2, score.shape[0]), bool)
        informative[0] |= score == 1
        informative[1] |= score == 0
    if informative is None or (informative[0] & informative[1]).any():
        return
    MMLogger.get_current_instance().warning(
        f'HeldOutSplit ({split_file}): no class of the {len(val)} held-out '
        'image(s) has both a positive and a known negative, so every '
        "class's AP is 100 or 0 whatever the model scores: the validation "
        'mAP does not depend on the model, and the best-epoch selection '
        'picks the first epoch. Fix: a larger val_fraction (--val-fraction '
        'of tools/sweep.py).')


DATASETS.register_module(name='HeldOutSplit', module=held_out_split)

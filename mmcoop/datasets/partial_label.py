# Copyright (c) mmcoop contributors. All rights reserved.
"""Partial-label wrapper: hide a seeded fraction of the training labels."""
import os.path as osp
from typing import List, Optional, Sequence, Union

import numpy as np
from mmengine.dataset import BaseDataset, force_full_init
from mmengine.logging import MMLogger

from mmcoop.registry import DATASETS
from mmcoop.utils.checkpoint import is_not_writable, with_fix
from mmcoop.utils.paths import expand_user
from mmcoop.utils.tri_state_targets import (ABSENT, PRESENT, TARGET_RULE,
                                            UNKNOWN, invalid_targets,
                                            invalid_values, is_numeric)
from mmcoop.utils.value_checks import check_int, is_int, is_real
from .held_out_split import image_keys
from .mask_files import read_mask_file
from .samplers import EpochIndex, seeded_sample
from .utils import (atomic_write_npy, check_outside_dataset, class_columns,
                    read_class_list)
from .wrapper import DatasetWrapper

__all__ = ['PartialLabelDataset', 'make_known_mask', 'complete_targets']

MODES = ('bernoulli', 'per_image_count')


def make_known_mask(num_images: int,
                    num_classes: int,
                    known_proportion: float,
                    mode: str = 'bernoulli',
                    seed: int = 0) -> np.ndarray:
    """Draw the (N, C) boolean mask of *known* labels.

    Deterministic for a given ``(num_images, num_classes, known_proportion,
    mode, seed)`` on any machine (NumPy's PCG64 via
    ``np.random.default_rng``; no torch RNG, no global state).

    - ``'bernoulli'``: every (image, class) entry is known independently with
      probability ``p`` (official DualCoOp/PositiveCoOp protocol:
      ``torch.rand(N, C) < pp``).
    - ``'per_image_count'``: exactly ``round_half_up((1 - p) * C)`` labels
      are hidden in every image, chosen uniformly without replacement (the
      Durand et al. style used by lcalem/partial-labels).
    """
    _check_proportion(known_proportion)
    if mode not in MODES:
        raise ValueError(f'mode must be one of {MODES}, got {mode!r}.')
    rng = np.random.default_rng(seed)
    if known_proportion == 1.0:
        return np.ones((num_images, num_classes), dtype=bool)
    if mode == 'bernoulli':
        return rng.random((num_images, num_classes)) < known_proportion
    num_drop = num_hidden_per_image(num_classes, known_proportion)
    mask = np.ones((num_images, num_classes), dtype=bool)
    if num_drop:
        order = np.argsort(rng.random((num_images, num_classes)), axis=1)
        np.put_along_axis(mask, order[:, :num_drop], False, axis=1)
    return mask


def num_hidden_per_image(num_classes: int, known_proportion: float) -> int:
    """Labels hidden per image in ``'per_image_count'`` mode.

    ``round((1 - p) * C)`` rounded half up (``p=0.75, C=10`` hides 3), with a
    tiny tolerance so that ``(1 - 0.9) * 20 = 1.9999999999999996`` gives 2.
    """
    return int(np.floor((1.0 - known_proportion) * num_classes + 0.5 + 1e-9))


def _check_proportion(p) -> None:
    # any real number (numpy scalars included), not a bool or a string
    if not is_real(p) or not (0.0 < float(p) <= 1.0):
        raise ValueError(
            f'known_proportion must be a number in (0, 1] (the fraction of '
            f'training labels that stay known; 1 = complete labels), got '
            f'{p!r}.')


def _label_indices(raw):
    """``gt_label`` as an int64 array of class indices, or None if it is
    not an int or a flat list of ints (a float, a bool, a string, a nested
    list would be truncated or converted silently by NumPy)."""
    items = raw.tolist() if hasattr(raw, 'tolist') else raw
    if not isinstance(items, (list, tuple)):
        items = [items]
    if not all(map(is_int, items)):
        return None
    return np.asarray(items, dtype=np.int64).reshape(-1)


def _bad_target(dataset, i: int, info: dict, problem: str) -> ValueError:
    source = getattr(dataset, 'ann_file', None)
    return ValueError(
        f'{type(dataset).__name__}[{i}] ({info.get("img_path")})'
        f'{f" of {source}" if source else ""}: {problem}. Fix: correct the '
        'annotation: gt_label is a list of class indices (ints in '
        f'[0, C)), gt_score one value per class, {TARGET_RULE}.')


def complete_targets(dataset, num_classes: int) -> np.ndarray:
    """Stack the complete targets of ``dataset`` into an (N, C) int8 array.

    Uses ``data_info['gt_score']`` when the dataset provides one (the
    values of :mod:`mmcoop.utils.tri_state_targets`), otherwise the one-hot
    of ``gt_label`` (e.g. a plain
    :class:`mmpretrain.datasets.MultiLabelDataset`). Any other value -- a
    soft or NaN score, a float, bool or string label, an index out of
    range -- is a ``ValueError`` naming the sample, never a silently
    truncated target.
    """
    n = len(dataset)
    targets = np.zeros((n, num_classes), dtype=np.int8)
    for i in range(n):
        info = dataset.get_data_info(i)
        score = info.get('gt_score')
        if score is not None:
            score = np.asarray(score)
            if score.shape != (num_classes, ):
                raise _bad_target(
                    dataset, i, info, f'gt_score has shape {score.shape}, '
                    f'expected ({num_classes},) for {num_classes} classes')
            if not is_numeric(score):
                raise _bad_target(
                    dataset, i, info, f'gt_score has dtype {score.dtype}, '
                    'not numbers')
            if invalid_targets(score).any():  # NaN too
                raise _bad_target(
                    dataset, i, info, f'gt_score holds '
                    f'{invalid_values(score)}, values other than {PRESENT}, '
                    f'{ABSENT} and {UNKNOWN}')
            targets[i] = score
        else:
            raw = info.get('gt_label', [])
            labels = _label_indices(raw)
            if labels is None:
                raise _bad_target(
                    dataset, i, info, f'gt_label is {raw!r:.80}, not a list '
                    'of integer class indices')
            if labels.size and (labels.min() < 0
                                or labels.max() >= num_classes):
                raise _bad_target(
                    dataset, i, info, f'gt_label {labels.tolist()} out of '
                    f'range for {num_classes} classes')
            targets[i, labels] = 1
    return targets


def padding_targets(info: dict) -> dict:
    """``info`` (a ``data_info``) of a sample the distributed sampler
    repeats to even out the processes (:attr:`EpochIndex.padding`), with
    every label unknown: its image goes through the model, its loss is 0,
    so N processes train on each image once per epoch, as one does."""
    if 'gt_score' in info:
        info['gt_score'] = np.full_like(
            np.asarray(info['gt_score'], np.float32), UNKNOWN)
        info['gt_label'] = []
    return info


@DATASETS.register_module()
class PartialLabelDataset(DatasetWrapper):
    """Wrap a multi-label training set and hide part of its labels.

    Every sample's ``gt_score`` becomes tri-state: 1 (known positive), 0
    (known negative), -1 (unknown); ``gt_label`` keeps only the known
    positives. The inner dataset keeps its pipeline: this wrapper writes the
    partial targets into the ``data_info`` and then runs the *inner*
    dataset's pipeline (give ``pipeline=`` to the inner dataset; the wrapper
    has none). Test sets are never wrapped (they keep complete labels).

    The mask is drawn by :func:`make_known_mask` from ``seed`` (same mask on
    any machine and on resume). With ``mask_file``:

    - the file exists: it is loaded and validated -- never overwritten.
      mmcoop's own ``.npy`` bool masks, ``{0, 1}`` known-masks,
      ``{-1, 0, 1}`` partial targets and ``.npz`` files keyed by image file
      name are accepted (:mod:`mmcoop.datasets.mask_files`), e.g. the fixed
      mask files other papers release;
    - it does not exist: the drawn mask is written there (atomically).

    ``mask_file`` must lie outside the dataset tree (error otherwise). With
    no ``mask_file``, :class:`mmcoop.engine.PartialLabelMaskHook` saves the
    mask into the work dir.

    It changes labels only (:attr:`DatasetWrapper.labels_only`): a feature
    cache around it is keyed on the inner dataset's images, so another mask
    reuses the same cache.

    Args:
        dataset (BaseDataset | dict): The training set (or its config).
        known_proportion (float): Fraction ``p`` in (0, 1] of labels that
            stay known.
        mode (str): ``'bernoulli'`` (official; independent Bernoulli(p) per
            (image, class)) or ``'per_image_count'`` (exactly
            ``round((1-p)*C)`` labels hidden per image). Defaults to
            ``'bernoulli'``.
        seed (int): Seed of the mask. Defaults to 0.
        mask_file (str, optional): ``.npy`` file to load the mask from or to
            save it to. Defaults to None.
        unseen_classes (str | Sequence[str], optional): class names (or a
            text file, one name a line) hidden in every training image:
            their targets are all -1, so they add nothing to the partial
            loss (the zero-shot protocols, e.g.
            :data:`mmcoop.datasets.unseen_splits.COCO_48_17_UNSEEN`).
            Applied on top of the drawn or loaded mask. Defaults to None.
        lazy_init (bool): Defer loading until first use. Defaults to False.

    Examples:
        >>> ds = PartialLabelDataset(
        ...     dict(type='COCO2014MultiLabel', data_root='data/coco',
        ...          split='train', pipeline=train_pipeline),
        ...     known_proportion=0.5, seed=0)
        >>> ds.known_mask.mean()   # about 0.5
    """

    labels_only = True

    def __init__(self,
                 dataset: Union[BaseDataset, dict],
                 known_proportion: float,
                 mode: str = 'bernoulli',
                 seed: int = 0,
                 mask_file: Optional[str] = None,
                 unseen_classes: Union[str, Sequence[str], None] = None,
                 lazy_init: bool = False):
        _check_proportion(known_proportion)
        if mode not in MODES:
            raise ValueError(
                f'PartialLabelDataset: mode must be one of {MODES}, got '
                f'{mode!r}.')
        check_int('PartialLabelDataset', 'seed', seed, minimum=0)
        self._wrap(dataset)
        views = getattr(self.dataset, 'num_views', 1)
        if isinstance(views, int) and views > 1:
            # it reads by plain index: view 0 in every epoch
            raise ValueError(
                f'PartialLabelDataset wraps a {type(self.dataset).__name__} '
                f'of num_views={views}: the wrapper reads its samples by '
                'plain index, so every epoch would get view 0 (the other '
                'views extracted for nothing). Fix: put the '
                'PartialLabelDataset inside the cache (the feature_cache '
                'config switch does), or num_views=1.')
        # the built dataset's pipeline: a config may hold it a level deeper
        # (HeldOutSplit of the clean protocol wraps the dataset)
        transforms = getattr(getattr(self.dataset, 'pipeline', None),
                             'transforms', None)
        if transforms is not None and not transforms:
            MMLogger.get_current_instance().warning(
                'PartialLabelDataset: the inner dataset has no `pipeline`; '
                'the wrapper runs the inner pipeline, so samples will not be '
                'loaded or packed.')
        if getattr(self.dataset, 'test_mode', False):
            raise ValueError(
                'PartialLabelDataset wraps training sets only: the inner '
                'dataset has test_mode=True. Test/val sets keep complete '
                'labels; use the plain dataset there.')
        split = getattr(self.dataset, 'split', None)
        if split in ('val', 'test'):
            MMLogger.get_current_instance().warning(
                f'PartialLabelDataset wraps a {split!r} split; the official '
                'protocol hides labels of the training split only.')

        self.test_mode = False
        self.max_refetch = getattr(self.dataset, 'max_refetch', 1000)
        self.known_proportion = float(known_proportion)
        self.mode = mode
        self.seed = int(seed)
        self.unseen_classes = None if unseen_classes is None else \
            read_class_list(unseen_classes,
                            'PartialLabelDataset.unseen_classes')
        self.mask_file = mask_file = expand_user(
            mask_file, 'PartialLabelDataset.mask_file')
        self._known_mask = None
        self._targets = None
        if mask_file is not None:
            check_outside_dataset(mask_file, self.dataset_dirs(),
                                  'partial-label mask file')
        if not lazy_init:
            self.full_init()

    # ------------------------------------------------------------------
    @property
    def pipeline(self):
        """The inner dataset's pipeline (the wrapper has none of its own)."""
        return self.dataset.pipeline

    @property
    @force_full_init
    def known_mask(self) -> np.ndarray:
        """(N, C) bool array, True where the label is not hidden
        (read-only); a real unknown of the data (-1 in
        :attr:`complete_targets`) stays unknown either way."""
        return self._known_mask

    @property
    @force_full_init
    def complete_targets(self) -> np.ndarray:
        """(N, C) int8 complete targets of the inner dataset (read-only)."""
        return self._targets

    # ------------------------------------------------------------------
    def _init_wrapper(self) -> None:
        """Load the complete targets and the mask (``full_init``)."""
        classes = self.CLASSES
        if not classes:
            raise ValueError(
                'PartialLabelDataset: the inner dataset has no '
                "metainfo['classes']; pass `classes=[...]` to it.")
        num_classes = len(classes)
        targets = complete_targets(self.dataset, num_classes)
        n = len(targets)  # > 0: DatasetWrapper.full_init checked it

        source = f'seed {self.seed}'
        unseen = class_columns(classes, self.unseen_classes or [],
                               'PartialLabelDataset', 'unseen_classes')
        if self.mask_file is not None and osp.exists(self.mask_file):
            mask = self._load_mask(self.mask_file, n, num_classes, targets)
            mask[:, unseen] = False
            source = f'loaded from {self.mask_file}'
        else:
            mask = make_known_mask(n, num_classes, self.known_proportion,
                                   self.mode, self.seed)
            mask[:, unseen] = False
            if self.mask_file is not None:
                try:
                    atomic_write_npy(self.mask_file, mask)
                except OSError as e:
                    if not is_not_writable(e):
                        raise
                    raise with_fix(
                        e, 'This is the mask file of the training set '
                        '(`mask_file`, saved when it does not exist yet): '
                        'set it to a writable path.') from e
                source = f'seed {self.seed}, saved to {self.mask_file}'
        mask.flags.writeable = False
        targets.flags.writeable = False
        self._known_mask = mask
        self._targets = targets
        self._log_stats(source, self._stats(mask, targets))

    def _load_mask(self, path: str, n: int, c: int,
                   targets: Optional[np.ndarray] = None) -> np.ndarray:
        """Read ``mask_file`` (formats: :mod:`mmcoop.datasets.mask_files`)."""
        mask = read_mask_file(path, n, c, targets,
                              lambda: image_keys(self.dataset))
        frac = float(mask.mean())
        tol = max(
            0.02, 5 * np.sqrt(self.known_proportion *
                              (1 - self.known_proportion) / mask.size))
        if abs(frac - self.known_proportion) > tol:
            MMLogger.get_current_instance().warning(
                f'Partial-label mask {path!r}: known fraction {frac:.4f} but '
                f'known_proportion={self.known_proportion}; the file wins.')
        return np.ascontiguousarray(mask)

    def stats(self) -> dict:
        """Statistics of the labels the model sees (known fraction,
        positives...).

        An entry counts as known when the mask keeps it *and* the data
        knows it: real unknowns (-1 in :attr:`complete_targets`, e.g. Open
        Images or a CSV with negatives) are unknown whatever the mask says,
        and are counted in ``num_unknown_in_data``.
        """
        self.full_init()
        return self._stats(self._known_mask, self._targets)

    @staticmethod
    def _stats(mask: np.ndarray, t: np.ndarray) -> dict:
        pos = t == PRESENT
        known = mask & (t != UNKNOWN)
        return dict(
            num_images=int(mask.shape[0]),
            num_classes=int(mask.shape[1]),
            known_fraction=float(known.mean()),
            num_known=int(known.sum()),
            num_unknown_in_data=int((t == UNKNOWN).sum()),
            num_positives=int(pos.sum()),
            num_known_positives=int((pos & mask).sum()),
            num_known_negatives=int(((t == ABSENT) & mask).sum()),
            num_images_without_known_positive=int(
                (~(pos & mask).any(1)).sum()))

    def _log_stats(self, source: str, s: dict) -> None:
        logger = MMLogger.get_current_instance()
        logger.info(
            f'PartialLabelDataset ({self.mode}, p={self.known_proportion}, '
            f'{source}): {s["num_images"]} images x {s["num_classes"]} '
            f'classes, realised known fraction {s["known_fraction"]:.4f}'
            + (f' ({s["num_unknown_in_data"]} labels unknown in the data)'
               if s['num_unknown_in_data'] else '') + ', '
            f'{s["num_known_positives"]}/{s["num_positives"]} positives '
            f'known, {s["num_known_negatives"]} known negatives, '
            f'{s["num_images_without_known_positive"]} images without a '
            'known positive.')
        if s['num_positives'] and not s['num_known_positives']:
            # a loss of negatives only: the model learns to say "absent"
            logger.warning(
                f'PartialLabelDataset: none of the {s["num_positives"]} '
                f'positive labels is known (known_proportion='
                f'{self.known_proportion} of {s["num_images"]} images x '
                f'{s["num_classes"]} classes), so training sees only '
                'negatives. Fix: a larger known_proportion, or more images.')
        if s['num_known_positives'] and not s['num_known_negatives']:
            # a loss of positives only: the model learns to say "present"
            logger.warning(
                f'PartialLabelDataset: no negative label is known '
                f'({s["num_images"]} images x {s["num_classes"]} classes, '
                f'{s["num_unknown_in_data"]} labels unknown in the data), so '
                'training sees only positives. Fix: check the labels (a '
                'negatives column or field that no image fills marks every '
                'class an image does not list as unknown; for a complete '
                'labelling leave it out), or a larger known_proportion.')

    def check_mask_file(self, path: str) -> bool:
        """Whether ``path`` already holds this mask.

        Returns False if the file does not exist, True if it holds the same
        mask, and raises ``FileExistsError`` if it holds anything else.
        """
        self.full_init()
        if not osp.exists(path):
            return False
        try:
            old = np.load(path, allow_pickle=False)
            same = isinstance(old, np.ndarray) and old.dtype == np.bool_ \
                and np.array_equal(old, self._known_mask)
        except Exception:  # noqa: BLE001
            same = False
        if not same:
            raise FileExistsError(
                f'{path!r} exists and holds a different partial-label mask; '
                'refusing to overwrite it. Fix: use another work_dir, delete '
                'the file, or pass it as `mask_file` to train on that mask.')
        return True

    def save_mask(self, path: str) -> bool:
        """Save the mask to ``path`` (``.npy``, bool).

        Never writes inside the dataset tree, never overwrites a different
        existing file (raises). Returns True if written, False if an
        identical file was already there (e.g. on resume).
        """
        self.full_init()
        check_outside_dataset(path, self.dataset_dirs(),
                              'partial-label mask file')
        if self.check_mask_file(path):
            return False
        atomic_write_npy(path, self._known_mask)
        return True

    # ------------------------------------------------------------------
    @force_full_init
    def get_data_info(self, idx: int) -> dict:
        """The inner ``data_info`` with partial targets.

        ``gt_score`` is the tri-state (C,) float32 array and ``gt_label``
        the known positives.
        """
        info = self.dataset.get_data_info(idx)
        known = self._known_mask[idx]
        score = np.where(known, self._targets[idx], UNKNOWN).astype(np.float32)
        info['gt_score'] = score
        info['gt_label'] = np.flatnonzero(score == PRESENT).tolist()
        return info

    @force_full_init
    def __getitem__(self, idx: int) -> dict:
        if isinstance(idx, EpochIndex):  # from EpochSeededSampler
            with seeded_sample(idx.seed, idx.epoch, int(idx)):
                return self._prepare(int(idx), idx.padding)
        return self._prepare(idx)

    def _prepare(self, idx: int, padding: bool = False) -> dict:
        max_refetch = self.max_refetch
        for _ in range(max_refetch + 1):
            info = self.get_data_info(idx)
            if padding:
                padding_targets(info)
            data = self.dataset.pipeline(info)
            if data is not None:
                return data
            idx = np.random.randint(0, len(self))
        raise RuntimeError(
            f'PartialLabelDataset: no valid sample after {max_refetch} '
            'retries; check the image paths and the pipeline.')

    @force_full_init
    def get_cat_ids(self, idx: int) -> List[int]:
        """Known positive classes of sample ``idx``."""
        row = self._known_mask[idx] & (self._targets[idx] == PRESENT)
        return np.flatnonzero(row).tolist()

    def get_subset(self, indices):
        """Not supported: subset the inner dataset instead."""
        raise NotImplementedError(
            'PartialLabelDataset.get_subset is not supported (the mask is '
            'drawn for the whole training set); use `indices=` on the inner '
            'dataset.')

    get_subset_ = get_subset

    def _repr_fields(self, initialized: bool) -> list:
        fields = [('Known proportion', self.known_proportion),
                  ('Mode', self.mode), ('Seed', self.seed),
                  ('Mask file', self.mask_file)]
        if initialized:
            s = self.stats()
            fields += [('Number of samples', s['num_images']),
                       ('Realised known fraction',
                        f'{s["known_fraction"]:.4f}')]
        return fields

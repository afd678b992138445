# Copyright (c) mmcoop contributors. All rights reserved.
import os.path as osp
import re
from typing import Iterator, Optional

from mmengine.dist import barrier, is_main_process
from mmengine.hooks import Hook

from mmcoop.registry import HOOKS
from .rng_state_hook import is_resuming


def find_partial_label_datasets(dataset, _depth: int = 0) -> Iterator:
    """Yield the :class:`PartialLabelDataset` s inside (wrapped) datasets.

    Looks through ``.dataset`` / ``.datasets`` attributes, so mmengine's
    ``ConcatDataset``, ``RepeatDataset``, ``ClassBalancedDataset`` and
    mmpretrain's ``KFoldDataset`` are searched too.
    """
    from mmcoop.datasets.partial_label import PartialLabelDataset
    if dataset is None or _depth > 8:
        return
    if isinstance(dataset, PartialLabelDataset):
        yield dataset
        return
    inner = getattr(dataset, 'dataset', None)
    if inner is not None:
        yield from find_partial_label_datasets(inner, _depth + 1)
    for ds in getattr(dataset, 'datasets', None) or ():
        yield from find_partial_label_datasets(ds, _depth + 1)


def default_mask_path(work_dir: str,
                      dataset,
                      subdir: str = 'partial_labels') -> str:
    """``{work_dir}/partial_labels/mask_p{p:.2f}_seed{seed}.npy``.

    ``'per_image_count'`` masks get a ``_per_image_count`` suffix so that
    they never collide with the Bernoulli mask of the same p and seed.
    """
    name = f'mask_p{dataset.known_proportion:.2f}_seed{dataset.seed}'
    if dataset.mode != 'bernoulli':
        name += f'_{dataset.mode}'
    return osp.join(work_dir, subdir, name + '.npy')


def check_subdir(owner: str, subdir) -> str:
    """``subdir`` if it is a non-empty relative path without a ``..``
    component, i.e. a folder inside the work dir."""
    parts = re.split(r'[\\/]+', subdir) if isinstance(subdir, str) else ()
    if not isinstance(subdir, str) or not subdir.strip() or osp.isabs(
            subdir) or re.match(r'^[A-Za-z]:', subdir) or '..' in parts:
        raise ValueError(
            f'{owner}: subdir must be a relative folder inside the work dir '
            "(a non-empty str without '..', e.g. 'partial_labels'; '.' for "
            f'the work dir itself), got {subdir!r}. An absolute path or '
            "'..' would write the mask outside work_dir; to keep it "
            "elsewhere, set the dataset's mask_file instead.")
    return subdir


@HOOKS.register_module()
class PartialLabelMaskHook(Hook):
    """Save the partial-label mask of the training set into the work dir.

    In ``before_train``, for every :class:`~mmcoop.datasets.
    PartialLabelDataset` in the training dataloader whose ``mask_file`` is
    None, the mask is written (main process only) to
    ``{work_dir}/partial_labels/mask_p{p:.2f}_seed{seed}.npy``. An existing
    identical file is kept (resume: the seed gives the same mask); an
    existing *different* file raises ``FileExistsError``. The mask
    statistics are logged either way.

    Args:
        subdir (str): Folder under ``work_dir``: a relative path without
            ``..`` (an absolute one or ``..`` would write outside the work
            dir and is refused). Defaults to ``'partial_labels'``.
    """

    priority = 'VERY_HIGH'

    def __init__(self, subdir: str = 'partial_labels') -> None:
        self.subdir = check_subdir('PartialLabelMaskHook', subdir)
        self.saved_paths = []
        self._masks: Optional[list] = None  # this run's, for checkpoints
        self._resumed: Optional[list] = None  # the resumed checkpoint's
        # a checkpoint without the record: the settings of its config
        self._resumed_settings: Optional[list] = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self._masks:
            checkpoint.setdefault('meta', {})[META_KEY] = self._masks

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if is_resuming(runner):
            meta = checkpoint.get('meta') or {}
            self._resumed = meta.get(META_KEY)
            if self._resumed is None:  # a checkpoint from before the record
                self._resumed_settings = settings_in_config(meta.get('cfg'))

    def before_train(self, runner) -> None:
        loader = runner.train_dataloader
        dataset: Optional[object] = getattr(loader, 'dataset', None)
        found = list(find_partial_label_datasets(dataset))
        self._masks = [mask_record(ds) for ds in found]
        self._check_resumed_masks(runner)
        if not found:
            runner.logger.info('PartialLabelMaskHook: the training set is '
                               'not a PartialLabelDataset; nothing to save.')
            return
        for ds in found:
            stats = ds.stats()
            if ds.mask_file is not None:
                path, written = ds.mask_file, False
            else:
                path = default_mask_path(runner.work_dir, ds, self.subdir)
                if is_main_process():
                    written = ds.save_mask(path)
                else:  # every rank refuses a different file, none hangs
                    written = False
                    ds.check_mask_file(path)
            self.saved_paths.append(path)
            runner.logger.info(
                f'Partial-label mask ({ds.mode}, p={ds.known_proportion}, '
                f'seed={ds.seed}): {path} ({"written" if written else "kept"}'
                f'); known fraction {stats["known_fraction"]:.4f}, '
                f'{stats["num_known_positives"]}/{stats["num_positives"]} '
                'positives known.')
        barrier()

    def _check_resumed_masks(self, runner) -> None:
        """A resumed run trains on the known labels its checkpoint was
        trained on: another ``known_proportion``, ``seed``, ``mode`` or
        ``mask_file`` (another mask) would train the rest of the run on
        other labels, silently (each mask has a file of its own, so the
        file check never sees it). A checkpoint without the record (written
        before it) is checked by the settings of the config it carries
        (``meta['cfg']``, :func:`settings_in_config`)."""
        source = ''
        if self._resumed is None:
            settings = self._resumed_settings
            if settings is None or len(settings) != len(self._masks) or [
                    _settings(m) for m in self._masks
            ] == [_settings(m) for m in settings]:
                return
            self._resumed = settings
            source = (" (read from the config the checkpoint carries: it "
                      'predates the mask record)')
        else:
            digests = [m['sha256'] for m in self._masks]
            if [m.get('sha256') for m in self._resumed] == digests:
                return

        def show(masks):
            return '; '.join(
                f"{m.get('mode')} p={m.get('known_proportion')} "
                f"seed={m.get('seed')}" + (f" mask_file={m['mask_file']!r}"
                                           if m.get('mask_file') else '')
                for m in masks) or 'none'

        raise ValueError(
            f'--resume in {runner.work_dir}: the checkpoint was trained on '
            f'the partial-label mask(s) [{show(self._resumed)}]{source}, '
            'this config '
            f'draws [{show(self._masks)}], other known labels: the rest of '
            'the run would train on them. Fix: resume with the recorded '
            'train_dataloader.dataset known_proportion / seed / mode / '
            'mask_file, or start a new run in another --work-dir (with '
            'load_from=CKPT to start from its weights).')


#: ``checkpoint['meta']`` key of the training masks' records
META_KEY = 'partial_label_masks'
#: the settings of a mask record that a config gives
_SETTINGS = ('mode', 'known_proportion', 'seed', 'mask_file')


def _settings(record: dict) -> dict:
    """The settings of a mask record, a ``mask_file`` as an absolute
    path (a config may write it relative or with ``~``)."""
    out = {k: record.get(k) for k in _SETTINGS}
    if isinstance(out['mask_file'], str):
        out['mask_file'] = osp.abspath(osp.expanduser(out['mask_file']))
    return out


def settings_in_config(text) -> Optional[list]:
    """The mask settings (:data:`_SETTINGS`, with
    :class:`~mmcoop.datasets.PartialLabelDataset`'s defaults) of every
    ``PartialLabelDataset`` in the training set of a config's text (the
    ``meta['cfg']`` MMEngine stores in checkpoints), in the order a run
    finds them; None when the text does not give them. The text is parsed,
    never run (:func:`~mmcoop.engine.config_text.stored_config_values`: a
    checkpoint from elsewhere runs no code)."""
    import inspect

    from mmcoop.datasets import PartialLabelDataset
    from mmcoop.engine.config_text import stored_config_values
    from mmcoop.utils.config_types import type_name
    if not isinstance(text, str) or not text.strip():
        return None
    loader = stored_config_values(text).get('train_dataloader')
    node = loader.get('dataset') if isinstance(loader, dict) else None
    if not isinstance(node, dict):
        return None
    defaults = {
        k: p.default
        for k, p in inspect.signature(
            PartialLabelDataset.__init__).parameters.items()
    }
    found = []
    while isinstance(node, dict):
        if type_name(node) == 'PartialLabelDataset':
            found.append({k: node.get(k, defaults.get(k)) for k in _SETTINGS})
        node = node.get('dataset')
    return found


def mask_record(dataset) -> dict:
    """What identifies the mask a :class:`PartialLabelDataset` trains on:
    its settings, and the SHA-256 of the mask itself."""
    import hashlib

    import numpy as np
    mask = np.ascontiguousarray(dataset.known_mask)
    return dict(
        mode=dataset.mode,
        known_proportion=dataset.known_proportion,
        seed=dataset.seed,
        mask_file=dataset.mask_file,
        shape=list(mask.shape),
        sha256=hashlib.sha256(mask.tobytes()).hexdigest())

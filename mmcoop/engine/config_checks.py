# Copyright (c) mmcoop contributors. All rights reserved.
"""Checks of a whole config, run by ``MMCoopRunner`` before anything is
built or written.

* :func:`check_unknown_keys`: top-level keys that nothing reads (a typo
  such as ``modle=``) are named in a warning, or an error with
  ``strict_config=True`` (``--strict-config``).
* :func:`check_work_dir_outside_datasets`: a work dir inside a dataset
  folder is refused before MMEngine creates it or writes its log and
  config dump there.
"""
import difflib
import os.path as osp
import warnings
from typing import Any, Iterable, List, Optional

from mmcoop.datasets.utils import check_outside_dataset

__all__ = [
    'RUNNER_KEYS', 'MMCOOP_KEYS', 'UnknownConfigKeyError',
    'check_unknown_keys', 'dataset_dirs', 'check_work_dir_outside_datasets'
]

#: top-level keys read by MMEngine's ``Runner`` / ``Runner.from_cfg`` and the
#: config machinery (MMEngine 0.10).
RUNNER_KEYS = frozenset({
    'model', 'work_dir', 'train_dataloader', 'val_dataloader',
    'test_dataloader', 'train_cfg', 'val_cfg', 'test_cfg', 'auto_scale_lr',
    'optim_wrapper', 'param_scheduler', 'val_evaluator', 'test_evaluator',
    'default_hooks', 'custom_hooks', 'data_preprocessor', 'load_from',
    'resume', 'launcher', 'env_cfg', 'log_processor', 'log_level',
    'visualizer', 'default_scope', 'randomness', 'experiment_name',
    'model_wrapper_cfg', 'find_unused_parameters', 'compile', 'runner_type',
    'custom_imports', 'gpu_ids', 'vis_backends', 'cfg',
    'activation_checkpointing', 'efficient_conv_bn_eval'
})

#: top-level keys mmcoop interprets (docs/architecture.md says where).
MMCOOP_KEYS = frozenset({
    'feature_cache', 'mmcoop_hooks', 'checkpoint_check', 'strict_config',
    'protocol'
})


class UnknownConfigKeyError(ValueError):
    """A config has top-level keys that nothing reads (strict mode)."""


def _contains(tree: Any, value: Any) -> bool:
    """Whether ``value`` occurs (by equality) anywhere inside ``tree``."""
    if type(tree) is type(value) and tree == value:
        return True
    if isinstance(tree, dict):
        return any(_contains(v, value) for v in tree.values())
    if isinstance(tree, (list, tuple)):
        return any(_contains(v, value) for v in tree)
    return False


def check_unknown_keys(cfg, known: Iterable[str] = ()) -> List[str]:
    """Warn about (or, with ``cfg.strict_config``, refuse) top-level keys
    that nothing reads.

    A key is read when MMEngine's runner or mmcoop interprets it
    (:data:`RUNNER_KEYS`, :data:`MMCOOP_KEYS`, ``known``), or when it is a
    helper variable of the config file whose value is used in a key that
    is read (``data_root``, ``train_pipeline``, ...). Returns the unknown
    keys.
    """
    known = RUNNER_KEYS | MMCOOP_KEYS | set(known)
    used = {k: v for k, v in cfg.items() if k in known}
    unknown = sorted(
        key for key, value in cfg.items()
        if key not in known and not key.startswith('_')
        and not _contains(used, value))
    if not unknown:
        return []
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, sorted(known), n=1)
        hints.append(f'{key!r}' + (f' (did you mean {close[0]!r}?)'
                                   if close else ''))
    where = f' of {cfg.filename}' if getattr(cfg, 'filename', None) else ''
    msg = (f'Top-level config key(s){where} that nothing reads: '
           f'{", ".join(hints)}. A misspelt key silently keeps the inherited '
           'value. Fix: correct or remove them (helper variables must be '
           'used in a key that is read).')
    if cfg.get('strict_config', False):
        raise UnknownConfigKeyError(msg + ' (strict_config=True)')
    warnings.warn(msg + ' Set strict_config=True (--strict-config) to '
                  'make this an error.')
    return unknown


def _join(root: Optional[str], path: Any) -> Optional[str]:
    if not isinstance(path, str) or not path or '://' in path:
        return None
    if root and not osp.isabs(osp.expanduser(path)):
        return osp.join(root, path)
    return path


def dataset_dirs(dataset: Any) -> List[str]:
    """The dataset trees of a dataset (config dict or object, through
    wrappers such as ``PartialLabelDataset``): ``data_root`` and the
    ``data_prefix`` folders. (The folder of an ``ann_file`` outside
    ``data_root`` is not one: annotation files often lie in a project
    folder that also holds ``work_dirs``.)"""
    out = []
    while dataset is not None:
        get = (dataset.get if isinstance(dataset, dict) else
               lambda k, d=None, o=dataset: getattr(o, k, d))
        root = get('data_root', None)
        root = root if isinstance(root, str) and root else None
        out.append(root)
        prefix = get('data_prefix', None)
        if isinstance(prefix, dict):
            out.extend(_join(root, v) for v in prefix.values())
        else:
            out.append(_join(root, prefix))
        dataset = get('dataset', None)
        if isinstance(dataset, (list, tuple)):  # ConcatDataset-like
            for d in dataset:
                out.extend(dataset_dirs(d))
            break
    return [d for d in out if d]


def check_work_dir_outside_datasets(work_dir: str, loaders: Iterable) -> None:
    """Raise ``ValueError`` if ``work_dir`` lies inside a folder that a
    dataloader's dataset reads from (``loaders``: dataloader configs or
    objects, None entries are skipped)."""
    dirs = []
    for loader in loaders:
        if loader is None:
            continue
        dataset = (loader.get('dataset', None) if isinstance(loader, dict)
                   else getattr(loader, 'dataset', None))
        dirs.extend(dataset_dirs(dataset))
    check_outside_dataset(
        work_dir, dirs, 'work dir', example="'work_dirs/<experiment>'")

# Copyright (c) mmcoop contributors. All rights reserved.
"""Evaluation protocols: ``official`` (as the papers) and ``clean``.

A config selects one with ``protocol = dict(name=..., ...)`` (the
``configs/_base_/protocols/*.py`` pieces, or ``--cfg-options
protocol.name=clean``); :func:`apply_protocol` turns it into dataloaders,
evaluators and hooks. ``MMCoopRunner.from_cfg`` calls it (so every launcher
does) before the feature cache is applied.

``official`` -- the official DualCoOp / PositiveCoOp code's protocol, for
direct comparison with the papers' numbers:

* validation *is* the test split, every epoch; the best epoch on it is
  kept (``CheckpointHook(save_best='multi-label/mAP')``) and tested again,
  i.e. model selection on the test split;
* VOC ``difficult`` objects count as negatives;
* CF1 / OF1 at the fixed threshold 0.5 (and top-3); no calibration (there
  is no split to calibrate on that is not the test split).

``clean`` -- the default for new tables:

* a validation split held out from the *training* set (``val_fraction``,
  drawn with ``seed``) and saved as ``split_file`` (JSON): every method of
  a table reads the same file (:func:`mmcoop.datasets.held_out_split`);
* model selection on it: ``selection='best'`` (best validation mAP,
  ``best_multi-label_mAP_epoch_N.pth``) or ``'last'`` (``epoch_N.pth``);
* the test split is never built during training; it is evaluated once, by
  ``tools/test.py`` on the selected checkpoint;
* per-class thresholds calibrated on the validation split are stored in
  the checkpoints (:class:`mmcoop.engine.ThresholdCalibrationHook`) and the
  test reports ``CF1_calib`` / ``OF1_calib`` next to the 0.5 and top-3
  figures;
* the seeded partial-label mask is saved into the work dir
  (``PartialLabelMaskHook``), next to the results.
"""
import copy
import os.path as osp
import re

from mmengine.config import ConfigDict

from mmcoop.datasets.held_out_split import check_val_fraction
from mmcoop.utils.config_types import type_name
from mmcoop.utils.paths import check_not_a_list
from mmcoop.utils.value_checks import check_int

__all__ = ['apply_protocol', 'PROTOCOLS', 'SELECTIONS', 'BEST_METRIC']

PROTOCOLS = ('official', 'clean')
SELECTIONS = ('best', 'last')
#: the validation metric the best checkpoint is selected by
BEST_METRIC = 'multi-label/mAP'
TOPK = 3
_KEYS = {
    'official': {'name'},
    'clean': {'name', 'val_fraction', 'seed', 'split_file', 'selection'},
}


def _plain(cfg):
    return copy.deepcopy(
        cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg))


def _image_dataset(dataset: dict) -> dict:
    """The innermost dataset config (the one with images and labels)."""
    while isinstance(dataset.get('dataset'), dict):
        dataset = dataset['dataset']
    return dataset


def _each_dataset(cfg):
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(name, None)
        dataset = loader.get('dataset') if loader else None
        while isinstance(dataset, dict):
            yield dataset
            dataset = dataset.get('dataset')


def _evaluators(cfg):
    for name in ('val_evaluator', 'test_evaluator'):
        ev = cfg.get(name, None)
        if ev is None:
            continue
        for metric in ev if isinstance(ev, (list, tuple)) else [ev]:
            if type_name(metric) == 'PartialMultiLabelMetric':
                yield name, metric


def _refuse_unseen_class_evaluation(cfg, name: str) -> None:
    """The protocols select the best epoch on ``multi-label/mAP`` of a
    ``PartialMultiLabelMetric``; a zero-shot config evaluates with
    ``UnseenClassMetric`` (``zsl/...`` keys: MMEngine's checkpoint hook
    stopped with ``KeyError: 'multi-label/mAP'`` after the first epoch),
    and a held-out split of its training images would carry the labels of
    the classes it hides in training."""
    for field in ('val_evaluator', 'test_evaluator'):
        ev = cfg.get(field, None) or []
        for metric in ev if isinstance(ev, (list, tuple)) else [ev]:
            if type_name(metric) == 'UnseenClassMetric':
                raise ValueError(
                    f'protocol={name!r} selects the best epoch on '
                    f'{BEST_METRIC} (a PartialMultiLabelMetric), but '
                    f'`{field}` is an UnseenClassMetric (zero-shot: its '
                    'metrics are zsl/...), and a held-out split of the '
                    'training images would carry the labels of the classes '
                    'hidden in training. The zero-shot configs train a fixed '
                    'schedule and test its last epoch. Fix: drop `protocol` '
                    'from this config.')


def _select_best(cfg) -> None:
    cfg.default_hooks = cfg.get('default_hooks', None) or ConfigDict()
    ckpt = cfg.default_hooks.get('checkpoint', None) or ConfigDict(
        type='CheckpointHook', interval=1)
    ckpt['save_best'] = BEST_METRIC
    ckpt['rule'] = 'greater'
    cfg.default_hooks.checkpoint = ckpt


def _add_hook(cfg, hook_type: str) -> None:
    hooks = list(cfg.get('custom_hooks', None) or [])
    if not any(type_name(h) == hook_type for h in hooks):
        hooks.append(dict(type=hook_type))
    cfg.custom_hooks = hooks


def _default_split_file(cfg, dataset: dict, val_fraction: float,
                        seed: int) -> str:
    name = '_'.join(
        str(p) for p in (type_name(dataset), dataset.get('split', 'train'))
        if p)
    name = re.sub(r'[^A-Za-z0-9_.-]+', '-', name).lower()
    root = osp.dirname(osp.normpath(cfg.get('work_dir', None) or
                                    'work_dirs/x'))
    return osp.join(root, 'splits',
                    f'{name}_holdout{val_fraction:g}_seed{seed}.json')


def apply_protocol(cfg):
    """Apply ``cfg.protocol`` (see the module doc); no-op without it.

    Args:
        cfg (mmengine.Config): modified in place and returned.
    """
    protocol = cfg.get('protocol', None)
    if not protocol:
        return cfg
    protocol = dict(protocol)
    name = protocol.get('name')
    if name not in PROTOCOLS:
        raise ValueError(f'protocol.name must be one of {PROTOCOLS}, got '
                         f'{name!r} (config field `protocol`).')
    unknown = set(protocol) - _KEYS[name]
    if unknown:
        raise ValueError(f'protocol: unknown keys {sorted(unknown)} for '
                         f'{name!r}; allowed: {sorted(_KEYS[name])}.')
    _refuse_unseen_class_evaluation(cfg, name)
    for _, metric in _evaluators(cfg):
        metric.setdefault('topk', TOPK)
    if name == 'official':
        _apply_official(cfg)
    else:
        _apply_clean(cfg, protocol)
    # checkpoints record the protocol; a checkpoint of another one is named
    # when loaded
    _add_hook(cfg, 'ProtocolCheckHook')
    return cfg


def _apply_official(cfg) -> None:
    for dataset in _each_dataset(cfg):
        if type_name(dataset) == 'VOC2007MultiLabel':
            dataset['difficult_as'] = 'negative'
    if cfg.get('test_dataloader', None) is not None:
        # the official code validates on the test split
        cfg.val_dataloader = copy.deepcopy(cfg.test_dataloader)
        cfg.val_evaluator = copy.deepcopy(cfg.test_evaluator)
        cfg.val_cfg = cfg.get('val_cfg', None) or ConfigDict()
    for name, metric in _evaluators(cfg):
        if name == 'val_evaluator' and metric.get('calibrate'):
            raise ValueError(
                "protocol 'official' validates on the test split: "
                'calibrate=True (from test_evaluator) would fit the '
                'per-class thresholds on it, and ThresholdCalibrationHook '
                'would apply them to the same split as CF1_calib / '
                'OF1_calib. Fix: remove calibrate=True from test_evaluator, '
                "or use protocol.name='clean' (thresholds fitted on a "
                'split held out from train).')
    if cfg.get('train_cfg', None) is not None:
        cfg.train_cfg['val_interval'] = 1
    _select_best(cfg)
    cfg.protocol = dict(name='official', selection='best')


def _apply_clean(cfg, protocol: dict) -> None:
    selection = protocol.get('selection', 'best')
    if selection not in SELECTIONS:
        raise ValueError(f'protocol.selection must be one of {SELECTIONS}, '
                         f'got {selection!r}.')
    # checked, not converted: seed=0.7 would become 0 and reuse the split
    # file of seed 0, val_fraction='abc' fail without the field
    val_fraction = check_val_fraction(
        protocol.get('val_fraction', 0.1), 'protocol.val_fraction')
    seed = check_int('protocol', 'seed', protocol.get('seed', 0), minimum=0)
    train = cfg.train_dataloader.dataset
    if type_name(train) == 'PartialLabelDataset':
        holder, key = train, 'dataset'
    else:
        holder, key = cfg.train_dataloader, 'dataset'
    inner = holder[key]
    if type_name(inner) == 'HeldOutSplit':  # applied already
        return
    inner = _plain(inner)
    check_not_a_list(protocol.get('split_file'), 'protocol.split_file')
    split_file = protocol.get('split_file') or _default_split_file(
        cfg, _image_dataset(inner), val_fraction, seed)
    split = dict(split_file=split_file, val_fraction=val_fraction, seed=seed)
    holder[key] = dict(type='HeldOutSplit', dataset=inner, part='train',
                       **split)
    cfg.protocol = dict(protocol, split_file=split_file, selection=selection,
                        val_fraction=val_fraction, seed=seed)
    if type_name(train) == 'PartialLabelDataset':
        # the mask goes into the work dir next to the results, whether or
        # not the config's own custom_hooks list the hook
        _add_hook(cfg, 'PartialLabelMaskHook')
    old_val = cfg.get('val_dataloader', None)
    if old_val is None:  # `--no-validate`: nothing to select on
        if selection == 'best':
            raise ValueError(
                "protocol: selection='best' needs validation; with "
                "--no-validate set protocol.selection='last'.")
        return
    # the held-out images are read like the test images: test pipeline,
    # test_mode, the val loader's batch size and workers
    val_inner = _plain(inner)
    pipeline = _image_dataset(_plain(old_val.dataset)).get('pipeline')
    image_ds = _image_dataset(val_inner)
    if pipeline is not None:
        image_ds['pipeline'] = pipeline
    image_ds['test_mode'] = True
    val_loader = _plain(old_val)
    val_loader['dataset'] = dict(type='HeldOutSplit', dataset=val_inner,
                                 part='val', **split)
    cfg.val_dataloader = val_loader
    val_evaluator = _plain(cfg.val_evaluator)
    if cfg.get('test_evaluator', None) is not None:
        cfg.test_evaluator = _plain(cfg.test_evaluator)
    if type_name(val_evaluator) == 'PartialMultiLabelMetric':
        val_evaluator['calibrate'] = True
    cfg.val_evaluator = val_evaluator
    cfg.val_cfg = cfg.get('val_cfg', None) or ConfigDict()
    if selection == 'best':
        _select_best(cfg)
    _add_hook(cfg, 'ThresholdCalibrationHook')

# Copyright (c) mmcoop contributors. All rights reserved.
"""Per-class thresholds calibrated on the validation split, kept in the
checkpoints and applied when a checkpoint is tested."""
import os.path as osp
from typing import List, Optional

import numpy as np
from mmengine.hooks import Hook

from mmcoop.evaluation.metrics.multi_label import off_the_fp32_grid
from mmcoop.registry import HOOKS

META_KEY = 'calibrated_thresholds'
#: before calibrated thresholds were clipped to [0, 1], a checkpoint could
#: store one this far outside (a midpoint 1e-6 / 2 below a score of 0);
#: such values are read back clipped
_STORED_SLACK = 1e-6


def stored_thresholds(meta: Optional[dict]) -> Optional[List[float]]:
    """The per-class thresholds a checkpoint's ``meta`` stores (None if
    none), as the one reader of :data:`META_KEY` (tests and
    :func:`mmcoop.apis.init_model`). Values within ``1e-6`` outside [0, 1]
    -- written by older calibrations -- are clipped; anything else is left
    to the consumer's range check."""
    stored = ((meta or {}).get(META_KEY) or {}).get('thresholds')
    if stored is None:
        return None
    values = np.asarray(stored, dtype=np.float64)
    if values.ndim != 1 or not np.isfinite(values).all() or \
            (values < -_STORED_SLACK).any() or \
            (values > 1 + _STORED_SLACK).any():
        return list(stored)
    # off the fp32 grid (as calibrations since 2026-12-05 store them), so
    # that the metric's '>' and inference's '>=' agree on older files too
    return off_the_fp32_grid(np.clip(values, 0., 1.)).tolist()


@HOOKS.register_module()
class ThresholdCalibrationHook(Hook):
    """Store validation-calibrated per-class thresholds in checkpoints and
    use them when the checkpoint is tested.

    * Training: the validation metric (``PartialMultiLabelMetric`` with
      ``calibrate=True``) fits F1-maximising per-class thresholds at every
      validation. Every checkpoint of the *same* epoch (``best_*.pth``,
      and ``epoch_N.pth`` when MMEngine re-saves it after a validation)
      gets them in ``meta['calibrated_thresholds']`` = ``dict(thresholds,
      classes, epoch, split)``. The last epoch's checkpoint, written before
      its validation, is re-saved once after training so that it carries
      the thresholds of its own weights too.
    * Testing: after a checkpoint is loaded, test metrics without
      ``class_thresholds`` get the checkpoint's and report ``CF1_calib`` /
      ``OF1_calib``. :func:`mmcoop.apis.init_model` reads the same field
      (``inference_model(..., threshold='calibrated')``).

    Only meaningful when validation is *not* the test split (the ``clean``
    protocol adds it; the ``official`` one does not).

    Args:
        split (str): Name of the validation data recorded with the
            thresholds. Defaults to ``'val'``.

    Without a validation metric with ``calibrate=True`` the hook has
    nothing to store: it warns once, at the first validation.
    """

    priority = 'NORMAL'  # before CheckpointHook (VERY_LOW) saves the best

    def __init__(self, split: str = 'val') -> None:
        if not isinstance(split, str) or not split:
            raise ValueError(
                'ThresholdCalibrationHook: split must be a non-empty str '
                "naming the validation data (e.g. 'val'), recorded with the "
                f'thresholds, got {split!r}.')
        self.split = split
        self._warned_no_calibration = False
        self._latest: Optional[dict] = None
        self._stored_epochs = set()
        self._loaded: Optional[dict] = None

    def after_val_epoch(self, runner, metrics=None) -> None:
        val_metrics = list(runner.val_evaluator.metrics)
        for metric in val_metrics:
            thresholds = getattr(metric, 'calibrated_thresholds', None)
            if thresholds is not None:
                classes = (metric.dataset_meta or {}).get('classes')
                self._latest = dict(
                    thresholds=[float(t) for t in thresholds],
                    classes=list(classes) if classes else None,
                    epoch=int(runner.epoch),
                    split=self.split)
                return
        if not self._warned_no_calibration and not any(
                getattr(m, 'calibrate', False) is True for m in val_metrics):
            self._warned_no_calibration = True
            kinds = [type(m).__name__ for m in val_metrics]
            runner.logger.warning(
                'ThresholdCalibrationHook: no validation metric has '
                f'calibrate=True (val_evaluator: {kinds}), so no per-class '
                'thresholds are calibrated or stored in the checkpoints. '
                "Fix: val_evaluator = dict(type='PartialMultiLabelMetric', "
                "calibrate=True, ...) (the 'clean' protocol sets it), or "
                'remove ThresholdCalibrationHook from custom_hooks.')

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        meta = checkpoint.setdefault('meta', {})
        if self._latest is not None and \
                meta.get('epoch') == self._latest['epoch']:
            meta[META_KEY] = dict(self._latest)
            self._stored_epochs.add(self._latest['epoch'])

    def after_train(self, runner) -> None:
        """Re-save the final ``epoch_N.pth`` with the thresholds of its
        own validation (MMEngine writes it before validating)."""
        latest = self._latest
        if latest is None or latest['epoch'] != runner.epoch or \
                latest['epoch'] in self._stored_epochs:
            return
        last = runner.message_hub.get_info('last_ckpt')
        if not last or osp.basename(last) != f'epoch_{runner.epoch}.pth' \
                or not osp.isfile(last):
            return
        runner.save_checkpoint(
            osp.dirname(last),
            osp.basename(last),
            meta=dict(epoch=runner.epoch, iter=runner.iter),
            by_epoch=False)
        runner.logger.info(f'{last}: re-saved with the per-class thresholds '
                           f'calibrated on the {self.split} split.')

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        meta = checkpoint.get('meta') or {}
        thresholds = stored_thresholds(meta)
        self._loaded = None if thresholds is None else dict(
            meta[META_KEY], thresholds=thresholds)

    def before_test(self, runner) -> None:
        stored = self._loaded
        if not stored:
            return
        for metric in runner.test_evaluator.metrics:
            if hasattr(metric, 'class_thresholds') and \
                    metric.class_thresholds is None:
                metric.class_thresholds = list(stored['thresholds'])
                runner.logger.info(
                    f'{type(metric).__name__}: per-class thresholds '
                    f'calibrated on the {stored.get("split")} split at epoch '
                    f'{stored.get("epoch")} (from the checkpoint meta).')

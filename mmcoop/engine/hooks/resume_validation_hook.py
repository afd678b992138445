# Copyright (c) mmcoop contributors. All rights reserved.
"""Run, after a resume, the validation the resumed checkpoint was due."""
import bisect
import os.path as osp
import time
from typing import Optional

from mmengine.hooks import Hook
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop

from mmcoop.registry import HOOKS
from .rng_state_hook import is_resuming

#: ``meta`` key of a checkpoint saved after the validation of its own
#: epoch (iteration) finished
VALIDATED_KEY = 'validated'


def _position(loop) -> Optional[tuple]:
    """``(unit, done, end)`` of an epoch- or iteration-based train loop."""
    if isinstance(loop, EpochBasedTrainLoop):
        return 'epoch', loop.epoch, loop.max_epochs
    if isinstance(loop, IterBasedTrainLoop):
        return 'iteration', loop.iter, loop.max_iters
    return None


def validation_due(loop, done: int, end: int) -> bool:
    """Whether MMEngine's train ``loop`` (of ``end`` epochs or iterations)
    validates after epoch (iteration) ``done``: the loops' own rule
    (``val_begin``, the interval in force at ``done`` under
    ``dynamic_intervals``, and always at the end)."""
    milestones = list(getattr(loop, 'dynamic_milestones', None) or [0])
    intervals = list(
        getattr(loop, 'dynamic_intervals', None) or [loop.val_interval])
    # as the loops' _decide_current_val_interval, after the counter moved
    interval = intervals[max(bisect.bisect(milestones, done + 1) - 1, 0)]
    return done >= loop.val_begin and (done % interval == 0 or done == end)


@HOOKS.register_module()
class ResumeValidationHook(Hook):
    """Record in each checkpoint whether its validation finished, and
    after a resume run the validation that did not.

    MMEngine saves ``epoch_N.pth`` before the validation of epoch ``N``, so
    a run killed during that validation resumed at epoch ``N + 1`` and
    never validated ``N``: the best checkpoint and the calibrated
    thresholds of the uninterrupted run were lost (at the last epoch the
    resume trained nothing and the run ended unvalidated).

    * After each validation during training, the checkpoint of that epoch
      (iteration) gets ``meta['validated'] = True``: MMEngine re-saves it
      when the best score changes; otherwise it is re-saved here (mmcoop's
      checkpoints hold only the trainable tensors).
    * After a resume, a checkpoint without the mark whose position was due
      a validation (the loop's own rule, :func:`validation_due`) is
      validated first, at ``before_train``, as the uninterrupted run did.

    Registered by :class:`~mmcoop.engine.MMCoopRunner` unless
    ``mmcoop_hooks = dict(resume_validation=False)``.
    """

    priority = 'LOWEST'  # after CheckpointHook's best save and re-save

    def __init__(self) -> None:
        self._resumed: Optional[dict] = None
        # position whose validation runs or ran, and when it started
        self._validated_at: Optional[int] = None
        self._val_started = 0.
        # position of the last numbered checkpoint saved before validation
        self._saved_at: Optional[int] = None
        # the train loop is read only while it runs (outside training,
        # e.g. tools/test.py, MMEngine's runner.train_loop would build it)
        self._training = False

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if is_resuming(runner):
            self._resumed = dict(checkpoint.get('meta') or {})

    def before_val_epoch(self, runner) -> None:
        # a checkpoint saved from here on at this position is saved after
        # the validation's metrics (the best checkpoint and MMEngine's
        # re-save, in after_val_epoch; the thresholds' re-save)
        position = _position(runner.train_loop) if self._training else None
        self._validated_at = None if position is None else position[1]
        self._val_started = time.time()

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        # meta's epoch (iter) is the position the checkpoint resumes at;
        # the loop's counter is one behind it in after_train_epoch (iter)
        meta = checkpoint.setdefault('meta', {})
        position = _position(runner.train_loop) if self._training else None
        key = position and ('epoch' if position[0] == 'epoch' else 'iter')
        done = meta.get(key) if key else None
        if done is not None and done == self._validated_at:
            meta[VALIDATED_KEY] = True
        else:
            meta.pop(VALIDATED_KEY, None)
            self._saved_at = done

    def after_val_epoch(self, runner, metrics=None) -> None:
        done = self._validated_at
        if not self._training or done is None or self._saved_at != done:
            return
        last = runner.message_hub.get_info('last_ckpt')
        if not last or '://' in str(last) or not osp.isfile(last) or \
                osp.getmtime(last) >= self._val_started:
            return  # remote, gone, or already re-saved by MMEngine
        runner.save_checkpoint(
            osp.dirname(last),
            osp.basename(last),
            meta=dict(epoch=runner.epoch, iter=runner.iter),
            by_epoch=False)

    def after_train(self, runner) -> None:
        self._training = False

    def before_train(self, runner) -> None:
        self._training = True
        meta, self._resumed = self._resumed, None
        loop = runner.train_loop
        position = _position(loop)
        if meta is None or position is None or runner.val_loop is None:
            return
        unit, done, end = position
        if done <= 0 or done > end or meta.get(VALIDATED_KEY) is True \
                or not validation_due(loop, done, end):
            return
        runner.logger.info(
            f'Resumed at {unit} {done}, whose checkpoint does not record '
            f'its validation (a run stopped during it, or saved before '
            f'mmcoop recorded it): validating {unit} {done} now, as the '
            'run that was not interrupted did (best checkpoint, calibrated '
            'thresholds).')
        runner.val_loop.run()

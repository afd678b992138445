# Copyright (c) mmcoop contributors. All rights reserved.
"""MMEngine runner with safe checkpoint loading and crash-safe saving."""
import os.path as osp
from typing import Callable, Union

from mmengine.model import is_model_wrapper
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint_to_model

from mmcoop.registry import RUNNERS
from mmcoop.utils.checkpoint import (atomic_torch_save, is_own_checkpoint,
                                     safe_torch_load, trusted_torch_load)


@RUNNERS.register_module()
class MMCoopRunner(Runner):
    """``mmengine.runner.Runner`` with mmcoop's checkpoint policy.

    * ``resume`` reads the run's *own* checkpoints (files inside
      ``work_dir``) with a trusted loader, because mmengine 0.10.x pickles
      runtime state (``HistoryBuffer``) that torch >= 2.6 rejects under
      ``weights_only=True``. The protection is never disabled process-wide.
    * every other load (``load_from``, ``tools/test.py``, a resume file from
      outside the work dir) uses ``weights_only=True`` and fails with a clear
      message for files that would execute code.
    * checkpoints are written to a temporary file and renamed, so a crash
      mid-write never leaves a truncated file under the final name, and
      ``last_checkpoint`` never points at one.

    Select it with ``runner_type = 'MMCoopRunner'`` (set in mmcoop's
    ``default_runtime.py``).
    """

    _resuming = False

    def resume(self, filename: str, *args, **kwargs) -> None:
        self._resuming = True
        try:
            super().resume(filename, *args, **kwargs)
        finally:
            self._resuming = False

    def load_checkpoint(self,
                        filename: str,
                        map_location: Union[str, Callable] = 'cpu',
                        strict: bool = False,
                        revise_keys: list = [(r'^module.', '')]):
        if not osp.isfile(filename):
            raise FileNotFoundError(
                f'Checkpoint {filename!r} does not exist (from `load_from`, '
                '`--resume` or the test checkpoint argument).')
        if self._resuming and is_own_checkpoint(filename, self.work_dir):
            checkpoint = trusted_torch_load(filename, map_location)
        else:
            checkpoint = safe_torch_load(filename, map_location, 'checkpoint')
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        model = self.model.module if is_model_wrapper(
            self.model) else self.model
        checkpoint = _load_checkpoint_to_model(
            model, checkpoint, strict, revise_keys=revise_keys)
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename}')
        return checkpoint

    def save_checkpoint(self, out_dir: str, filename: str, *args, **kwargs):
        """Save as mmengine does, but atomically (temp file + rename)."""
        import mmengine.runner.runner as runner_module
        original = runner_module.save_checkpoint

        def _atomic_save(checkpoint, filepath, *a, **k):
            if '://' in str(filepath):  # remote backends: mmengine's path
                return original(checkpoint, filepath, *a, **k)
            atomic_torch_save(checkpoint, str(filepath))

        runner_module.save_checkpoint = _atomic_save
        try:
            return super().save_checkpoint(out_dir, filename, *args, **kwargs)
        finally:
            runner_module.save_checkpoint = original

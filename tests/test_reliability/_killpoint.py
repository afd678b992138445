# Copyright (c) mmcoop contributors. All rights reserved.
"""Test-only hook: park a training run at a given iteration so that the test
can SIGKILL it there (deterministic crash point, no timing races).

Active only when the environment variable ``MMCOOP_KILL_MARKER`` names a
file; the hook writes it at ``epoch``/``batch`` and sleeps until killed.
Numerically it does nothing, so runs with and without it are identical.
"""
import os
import time

from mmengine.hooks import Hook

from mmcoop.registry import HOOKS


@HOOKS.register_module()
class KillPointHook(Hook):

    def __init__(self, epoch: int = 2, batch: int = 5):
        self.epoch = epoch
        self.batch = batch

    def after_train_iter(self,
                         runner,
                         batch_idx,
                         data_batch=None,
                         outputs=None):
        marker = os.environ.get('MMCOOP_KILL_MARKER')
        if marker and runner.epoch + 1 == self.epoch \
                and batch_idx + 1 == self.batch:
            with open(marker, 'w') as f:
                f.write(f'epoch {runner.epoch + 1} batch {batch_idx + 1}\n')
            time.sleep(300)

# Copyright (c) mmcoop contributors. All rights reserved.
"""Test-only hook: record the resident memory of the main process and of
its dataloader workers after every test/val iteration (``/proc``, Linux)."""
import json
import os

from mmengine.hooks import Hook

from mmcoop.registry import HOOKS

_PAGE = os.sysconf('SC_PAGE_SIZE')


def rss(pid='self') -> int:
    with open(f'/proc/{pid}/statm') as f:
        return int(f.read().split()[1]) * _PAGE


def children(pid=None):
    pid = pid or os.getpid()
    out = []
    for task in os.listdir(f'/proc/{pid}/task'):
        try:
            with open(f'/proc/{pid}/task/{task}/children') as f:
                out += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


@HOOKS.register_module()
class MemoryProbeHook(Hook):

    def __init__(self, out_file: str):
        self.out_file = out_file
        self.records = []

    def _record(self, runner, phase, batch_idx):
        workers = 0
        pids = children()
        for pid in pids:
            try:
                workers += rss(pid)
            except OSError:
                pass
        self.records.append(
            dict(
                phase=phase,
                batch=batch_idx,
                main=rss(),
                workers=workers,
                num_children=len(pids)))

    def after_test_iter(self,
                        runner,
                        batch_idx,
                        data_batch=None,
                        outputs=None):
        self._record(runner, 'test', batch_idx)

    def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self._record(runner, 'val', batch_idx)

    def after_train_iter(self,
                         runner,
                         batch_idx,
                         data_batch=None,
                         outputs=None):
        self._record(runner, 'train', batch_idx)

    def _dump(self):
        with open(self.out_file, 'w') as f:
            json.dump(self.records, f)

    def after_train(self, runner):
        self._dump()

    def after_test(self, runner):
        self._dump()

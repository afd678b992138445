# Copyright (c) mmcoop contributors. All rights reserved.
"""A resumed run validates the epoch its checkpoint stopped at: MMEngine
saves ``epoch_N.pth`` before validating epoch N, so a run killed during
that validation never validated N (best checkpoint, calibrated thresholds
lost; at the last epoch the run ended unvalidated), and even after a
finished validation the resumed best score came from the epochs before N."""
import os
import os.path as osp

import _common
import pytest
import torch
from mmengine.evaluator import BaseMetric

from mmcoop.engine.hooks.resume_validation_hook import validation_due


class ToyMSE(BaseMetric):
    """The squared error; ``killed_at``: the validation (1-based count) that
    raises, as a kill during it would stop the run."""
    default_prefix = 'toy'

    def __init__(self, killed_at=None):
        super().__init__()
        self.killed_at = killed_at
        self.count = 0

    def process(self, data_batch, data_samples):
        for out, y in zip(data_samples, data_batch['labels']):
            self.results.append(float((out.squeeze() - y)**2))

    def compute_metrics(self, results):
        self.count += 1
        if self.count == self.killed_at:
            raise KeyboardInterrupt('killed during the validation')
        return dict(mse=sum(results) / len(results))


def _runner(work, resume=False, killed_at=None):
    loader = dict(dataset=_common.ToyDataset(),
                  sampler=dict(type='DefaultSampler', shuffle=False),
                  batch_size=4, num_workers=0,
                  collate_fn=dict(type='default_collate'))
    return _common.toy_runner(
        work, 3, resume=resume, val_dataloader=loader, val_cfg=dict(),
        val_evaluator=[ToyMSE(killed_at)],
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=1,
                            save_best='toy/mse', rule='less'),
            logger=dict(type='LoggerHook', interval=1)))


def _validated(runner):
    """The epochs ``runner`` validated since it resumed (from its log: runs
    started in the same second share one)."""
    with open(osp.join(runner.log_dir, f'{runner.timestamp}.log')) as f:
        text = f.read()
    text = text.split('Auto-resuming from')[-1]
    return [int(line.split('Epoch(val) [')[1].split(']')[0])
            for line in text.splitlines()
            if 'Epoch(val)' in line and 'toy/mse' in line]


@pytest.fixture(scope='module')
def finished(tmp_path_factory):
    """The uninterrupted run: its best score and best checkpoint."""
    work = tmp_path_factory.mktemp('rv') / 'ref'
    runner = _runner(work)
    runner.train()
    best = [n for n in os.listdir(work) if n.startswith('best_')]
    return runner.message_hub.get_info('best_score'), best


def _killed_in_validation(work, validation):
    runner = _runner(work, killed_at=validation)
    with pytest.raises(KeyboardInterrupt):
        runner.train()


@pytest.mark.parametrize('killed_at', [2, 3])
def test_killed_in_validation_validates_that_epoch_first(
        finished, tmp_path, killed_at):
    """Killed while validating epoch 2 (of 3): the resumed run validates
    epoch 2, then trains and validates 3; killed while validating the last
    epoch: the resume trains nothing but validates it. Best score and best
    checkpoint are the uninterrupted run's."""
    best_score, best_files = finished
    work = tmp_path / 'w'
    _killed_in_validation(work, killed_at)
    runner = _runner(work, resume=True)
    runner.train()
    assert _validated(runner) == list(range(killed_at, 4))
    assert runner.iter == 6
    assert runner.message_hub.get_info('best_score') == pytest.approx(
        best_score)
    assert sorted(n for n in os.listdir(work)
                  if n.startswith('best_')) == best_files
    if killed_at == 2:
        # epoch_3.pth, re-saved after its validation (MMEngine re-saves it
        # when the best changes), says so: resuming the finished run
        # validates nothing again
        meta = torch.load(work / 'epoch_3.pth', weights_only=False)['meta']
        assert meta['validated'] is True
        again = _runner(work, resume=True)
        again.train()
        assert _validated(again) == []


def test_validation_due_follows_the_loops_rule():
    """MMEngine's rule, with dynamic intervals (every 3rd epoch from
    val_begin=2, every epoch from epoch 7) and the last epoch."""
    from types import SimpleNamespace
    loop = SimpleNamespace(val_begin=2, val_interval=3,
                           dynamic_milestones=[0, 7], dynamic_intervals=[3, 1])
    assert [e for e in range(11) if validation_due(loop, e, 10)] == [
        3, 6, 7, 8, 9, 10]
    plain = SimpleNamespace(val_begin=1, val_interval=2)
    assert [e for e in range(1, 6) if validation_due(plain, e, 5)] == [
        2, 4, 5]

# Copyright (c) mmcoop contributors. All rights reserved.
"""The demo's last log line: the final val mAP next to chance level."""
from typing import Optional

from mmengine.hooks import Hook

from mmcoop.registry import HOOKS
from .dataset import DemoShapesDataset
from .shapes import chance_level_map_from_targets

__all__ = ['DemoResultHook']


def find_demo_dataset(dataset) -> Optional[DemoShapesDataset]:
    """The :class:`DemoShapesDataset` inside ``dataset`` (through wrappers
    with a ``dataset`` attribute), or None."""
    while dataset is not None and not isinstance(dataset, DemoShapesDataset):
        dataset = getattr(dataset, 'dataset', None)
    return dataset


@HOOKS.register_module()
class DemoResultHook(Hook):
    """After training, log ``[mmcoop demo] final val mAP X | chance level
    (random scores) Y`` (rank 0), where Y is the expected mAP of uniform
    random scores on the same val images.

    It logs only when the val dataset is a :class:`DemoShapesDataset` on a
    generated demo tree: with any other data (a config that inherits the
    demo config for its own dataset) it stays silent, so the demo's chance
    level is never reported for other data.

    Args:
        metric (str): The val metric to report. Defaults to
            ``'multi-label/mAP'``.
        num_draws (int): Random score draws of the chance level.
        seed (int): Seed of the draws.
    """

    priority = 'LOWEST'

    def __init__(self,
                 metric: str = 'multi-label/mAP',
                 num_draws: int = 200,
                 seed: int = 0):
        self.metric = metric
        self.num_draws = num_draws
        self.seed = seed
        self.last = float('nan')

    def after_val_epoch(self, runner, metrics=None) -> None:
        if metrics and self.metric in metrics:
            self.last = float(metrics[self.metric])

    def after_train(self, runner) -> None:
        if runner.rank != 0 or runner.val_loop is None:
            return
        dataset = find_demo_dataset(runner.val_loop.dataloader.dataset)
        if dataset is None or not dataset.is_demo_tree:
            return
        chance = chance_level_map_from_targets(dataset.gt_targets(),
                                               self.num_draws, self.seed)
        runner.logger.info(
            f'[mmcoop demo] final val mAP {self.last:.2f} | chance level '
            f'(random scores) {chance:.2f}')

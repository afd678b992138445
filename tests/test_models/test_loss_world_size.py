# Copyright (c) mmcoop contributors. All rights reserved.
"""The summed loss is a sum over the *global* batch under data parallelism."""
import pytest
import torch

import mmcoop.models.losses.partial_asymmetric_loss as pal
from mmcoop.models.losses import PartialAsymmetricLoss


@pytest.mark.parametrize('world_size', [1, 2, 4])
def test_sum_scaled_by_world_size(monkeypatch, world_size):
    torch.manual_seed(0)
    logits = torch.randn(4, 2, 3)
    target = torch.tensor([[1., 0, -1], [0, 1, 1], [-1, -1, 0], [1, 1, 0]])
    single = PartialAsymmetricLoss()(logits, target)
    monkeypatch.setattr(pal, 'get_world_size', lambda: world_size)
    # DDP averages gradients over processes: scaling each local sum by the
    # world size makes N processes equal one process on the whole batch.
    local = [
        PartialAsymmetricLoss()(logits[i::world_size], target[i::world_size])
        for i in range(world_size)
    ]
    torch.testing.assert_close(sum(local) / world_size, single)


@pytest.mark.parametrize('world_size', [1, 2, 4])
def test_mean_is_over_the_known_entries_of_the_global_batch(
        monkeypatch, world_size):
    """'mean' divided each process's sum by its own count of known labels,
    and DDP averaged those: on 2 processes the gradient differed from one
    process's by more than its size. The count is now summed over the
    processes (all_reduce), as the sum is."""
    torch.manual_seed(0)
    logits = torch.randn(4, 2, 3)
    # the processes' shares hold 5 and 1 known labels (world size 2)
    target = torch.tensor([[1., 0, -1], [-1, -1, 1], [0, 1, 1],
                           [-1, -1, -1]])
    single = PartialAsymmetricLoss(reduction='mean')(logits, target)
    shares = [target[i::world_size] for i in range(world_size)]
    total = sum(int((t != -1).sum()) for t in shares)

    def all_reduce(count, op):  # the sum over the processes
        assert op == 'sum'
        count.fill_(total)

    monkeypatch.setattr(pal, 'get_world_size', lambda: world_size)
    monkeypatch.setattr(pal, 'all_reduce', all_reduce)
    local = [
        PartialAsymmetricLoss(reduction='mean')(logits[i::world_size],
                                                shares[i])
        for i in range(world_size)
    ]
    torch.testing.assert_close(sum(local) / world_size, single)

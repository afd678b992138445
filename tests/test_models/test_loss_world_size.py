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
    # 'mean' is already batch-size independent: no scaling
    mean = PartialAsymmetricLoss(reduction='mean')(logits, target)
    monkeypatch.setattr(pal, 'get_world_size', lambda: 1)
    torch.testing.assert_close(
        mean, PartialAsymmetricLoss(reduction='mean')(logits, target))

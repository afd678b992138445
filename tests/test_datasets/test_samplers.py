# Copyright (c) mmcoop contributors. All rights reserved.
"""EpochSeededSampler + PartialLabelDataset: augmentations are a function of
(seed, epoch, index), whatever the workers, the RNG state or a resume."""
import pickle
import random

import numpy as np
import pytest
import torch
from mmengine.dataset import DefaultSampler, pseudo_collate
from torch.utils.data import DataLoader

from mmcoop.datasets import EpochIndex, EpochSeededSampler, PartialLabelDataset

RANDOM_PIPELINE = [
    dict(type='LoadImageFromFileChecked'),
    dict(type='Resize', scale=(32, 32)),
    dict(type='RandomCutout', cutout_factor=0.5, prob=0.5),
    dict(type='DualCoOpRandAugment'),
    dict(type='PackInputs'),
]


@pytest.fixture
def dataset(coco_root):
    return PartialLabelDataset(
        dict(
            type='COCO2014MultiLabel',
            data_root=coco_root,
            split='train',
            pipeline=RANDOM_PIPELINE),
        known_proportion=0.5)


def test_epoch_index_is_an_int_that_survives_pickling():
    idx = EpochIndex(3, epoch=2, seed=7)
    back = pickle.loads(pickle.dumps(idx))
    assert isinstance(back, EpochIndex) and back == 3
    assert (back.epoch, back.seed, back.padding) == (2, 7, False)
    assert [10, 11, 12, 13][back] == 13
    assert pickle.loads(pickle.dumps(EpochIndex(3, 2, 7, True))).padding


@pytest.mark.parametrize('world_size', [2, 3, 4])
def test_distributed_padding_is_marked_and_trains_nothing(
        dataset, monkeypatch, world_size):
    """With N processes, MMEngine's sampler repeats samples so that each
    process gets as many: those were trained twice per epoch (2 processes
    on 25 images differed from one process by 9e-4). They are marked, and
    given with every label unknown: each image counts once per epoch."""
    import mmengine.dataset.sampler as sampler_module
    n = len(dataset)
    assert any(-n % w for w in (2, 3, 4))  # some world size pads
    ranks = []
    for rank in range(world_size):
        monkeypatch.setattr(sampler_module, 'get_dist_info',
                            lambda r=rank: (r, world_size))
        sampler = EpochSeededSampler(dataset, shuffle=True, seed=5)
        sampler.set_epoch(1)
        ranks.append(list(sampler))
    assert len({len(r) for r in ranks}) == 1  # as many for every process
    real = sorted(int(i) for r in ranks for i in r if not i.padding)
    assert real == list(range(n))  # every image once
    padded = [i for r in ranks for i in r if i.padding]
    assert len(padded) == -n % world_size
    for idx in padded:
        sample = dataset[idx]['data_samples']
        assert (sample.gt_score.numpy() == -1).all()
        assert sample.gt_label.numel() == 0
        # the same image and draws as the sample it repeats
        torch.testing.assert_close(
            dataset[idx]['inputs'],
            dataset[EpochIndex(int(idx), idx.epoch, idx.seed)]['inputs'])


def test_sampler_keeps_default_order(dataset):
    plain = DefaultSampler(dataset, shuffle=True, seed=5)
    seeded = EpochSeededSampler(dataset, shuffle=True, seed=5)
    for epoch in (0, 3):
        plain.set_epoch(epoch)
        seeded.set_epoch(epoch)
        got = list(seeded)
        assert got == list(plain)
        assert all(isinstance(i, EpochIndex) and i.epoch == epoch
                   and i.seed == 5 for i in got)


def _image(dataset, idx):
    return dataset[idx]['inputs'].clone()


def test_draws_depend_on_seed_epoch_index_only(dataset):
    idx = EpochIndex(1, epoch=0, seed=5)
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    first = _image(dataset, idx)
    states = (random.getstate(), np.random.get_state()[1].copy(),
              torch.get_rng_state())
    random.seed(2), np.random.seed(2), torch.manual_seed(2)
    assert torch.equal(_image(dataset, idx), first)  # other global state
    # the global RNGs are left as they were
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    _image(dataset, idx)
    assert random.getstate() == states[0]
    assert np.array_equal(np.random.get_state()[1], states[1])
    assert torch.equal(torch.get_rng_state(), states[2])
    # another epoch (or seed) draws other augmentations
    others = [
        _image(dataset, EpochIndex(1, epoch=e, seed=s))
        for e, s in ((1, 5), (2, 5), (0, 6), (3, 6))
    ]
    assert any(not torch.equal(o, first) for o in others)
    # plain ints keep the global-RNG behaviour
    np.random.seed(3)
    a = _image(dataset, 1)
    np.random.seed(4)
    b = [_image(dataset, 1) for _ in range(4)]
    assert any(not torch.equal(a, x) for x in b)


def _epochs(dataset, num_workers, persistent, epochs=2):
    sampler = EpochSeededSampler(dataset, shuffle=True, seed=11)
    loader = DataLoader(
        dataset,
        batch_size=2,
        sampler=sampler,
        num_workers=num_workers,
        persistent_workers=persistent,
        collate_fn=pseudo_collate)
    out = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        out.append([torch.stack(b['inputs']) for b in loader])
    return out


def test_same_batches_for_any_workers_and_after_a_restart(dataset):
    reference = _epochs(dataset, 0, False)
    for workers, persistent in ((2, True), (1, False)):
        got = _epochs(dataset, workers, persistent)
        for ref_epoch, got_epoch in zip(reference, got):
            assert len(ref_epoch) == len(got_epoch)
            for r, g in zip(ref_epoch, got_epoch):
                assert torch.equal(r, g)
    assert not all(
        torch.equal(a, b) for a, b in zip(reference[0], reference[1]))
    # a "resumed" loader that starts at epoch 1 sees epoch 1's batches
    sampler = EpochSeededSampler(dataset, shuffle=True, seed=11)
    sampler.set_epoch(1)
    loader = DataLoader(dataset, batch_size=2, sampler=sampler,
                        num_workers=2, persistent_workers=True,
                        collate_fn=pseudo_collate)
    resumed = [torch.stack(b['inputs']) for b in loader]
    for r, g in zip(reference[1], resumed):
        assert torch.equal(r, g)

# Copyright (c) mmcoop contributors. All rights reserved.
"""PrecomputedFeatures + FeatureDataPreprocessor inside ImageClassifier."""
import re

import pytest
import torch
from _perf_helpers import CLASSES, head_cfg
from mmengine.dataset import pseudo_collate
from mmengine.optim import OptimWrapper
from mmpretrain.models import ImageClassifier
from mmpretrain.structures import DataSample

from mmcoop.models import FeatureDataPreprocessor, PrecomputedFeatures

D, N = 64, 5


def _batch(dtype=torch.float16, size=4):
    samples = []
    for i in range(size):
        score = torch.tensor([1., 0., -1.]).roll(i)
        samples.append(
            dict(
                inputs=torch.randn(D, N).to(dtype),
                data_samples=DataSample().set_gt_score(score).set_gt_label(
                    torch.where(score == 1)[0])))
    return pseudo_collate(samples)


@pytest.mark.parametrize('kind', ['DualCoOpHead', 'BaselineHead'])
def test_train_and_val_step(kind):
    torch.manual_seed(0)
    model = ImageClassifier(
        backbone=dict(type='mmcoop.PrecomputedFeatures', embed_dim=D),
        head=head_cfg(kind),
        data_preprocessor=dict(type='mmcoop.FeatureDataPreprocessor'))
    assert isinstance(model.data_preprocessor, FeatureDataPreprocessor)
    assert list(model.backbone.parameters()) == []
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    batch = _batch()
    before = {k: v.clone() for k, v in model.head.state_dict().items()}
    log = model.train_step(batch, optim)
    assert torch.isfinite(log['loss'])
    changed = [
        k for k, v in model.head.state_dict().items()
        if not torch.equal(v, before[k])
    ]
    assert changed
    out = model.val_step(batch)
    assert len(out) == 4
    assert out[0].pred_score.shape == (len(CLASSES), )
    assert out[0].pred_score.dtype == torch.float32
    # a stacked (B, D, N) batch works too (default_collate)
    stacked = dict(batch, inputs=torch.stack(batch['inputs']))
    again = model.val_step(stacked)
    torch.testing.assert_close(again[0].pred_score, out[0].pred_score)


def test_preprocessor_stacks_without_normalising():
    pre = FeatureDataPreprocessor()
    batch = _batch(torch.float16, 3)
    out = pre(batch, training=True)
    assert out['inputs'].shape == (3, D, N)
    assert out['inputs'].dtype == torch.float16  # cast later, on device
    assert torch.equal(out['inputs'][1], batch['inputs'][1])
    assert out['data_samples'] is batch['data_samples'] or len(
        out['data_samples']) == 3
    with pytest.raises(ValueError, match='batch augmentations'):
        FeatureDataPreprocessor(batch_augments=dict(augments=[]))
    with pytest.raises(ValueError, match='ClsDataPreprocessor'):
        pre(dict(inputs=[torch.zeros(3, 8, 8)], data_samples=None))


def test_backbone_returns_fp32_and_checks_shapes():
    bb = PrecomputedFeatures(embed_dim=D, num_positions=N)
    x = torch.randn(2, D, N).half()
    (out, ) = bb(x)
    assert out.dtype == torch.float32 and torch.equal(out, x.float())
    with pytest.raises(ValueError, match='CachedFeatureDataset'):
        bb(torch.zeros(2, 3, 64, 64))
    with pytest.raises(ValueError, match='num_positions=5'):
        bb(torch.zeros(2, D, 7))


@pytest.mark.parametrize('field', ['embed_dim', 'num_positions'])
@pytest.mark.parametrize('value', [0, -1, 64.0, '64', True])
def test_expected_sizes_must_be_positive_ints(field, value):
    """'64' was refused at the first batch as 'features have shape (64, 5)
    but embed_dim=64'; True matched D = 1."""
    with pytest.raises(ValueError,
                       match=re.escape(f'PrecomputedFeatures: {field} must '
                                       f'be an int >= 1, got {value!r}')):
        PrecomputedFeatures(**{field: value})

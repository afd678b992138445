# Copyright (c) mmcoop contributors. All rights reserved.
"""PartialAsymmetricLoss against the official ``AsymmetricLoss`` formula
(utils/asymmetric_loss.py L5-60, gamma_neg=2, gamma_pos=1, clip=0.05, sum),
with numbers worked out by hand."""
import math

import pytest
import torch
from mmpretrain.structures import DataSample

from mmcoop.models.losses import PartialAsymmetricLoss
from mmcoop.registry import MODELS

LN3 = math.log(3.)


def _logits(d):
    """``(B, 2, C)`` logits with l_neg = 0 and l_pos = d, so that
    p = softmax(logits, 1)[:, 1] = sigmoid(d)."""
    d = torch.tensor(d, dtype=torch.float64)
    return torch.stack([torch.zeros_like(d), d], dim=1)


# 2 x 3 case. p = sigmoid(d):  d = 0 -> 1/2,  d = ln 3 -> 3/4.
D = [[0., LN3, -10.], [LN3, 0., 0.]]
Y = [[1., 0., -1.], [1., -1., 0.]]
# y = 1: -(1 - p)^1 log p             y = 0: p_neg = 1 - p + 0.05,
#                                            -(1 - p_neg)^2 log p_neg
HAND = [
    0.5 * math.log(2.),  # [0, 0]: p = 1/2, y = 1
    0.49 * -math.log(0.3),  # [0, 1]: p = 3/4, y = 0, p_neg = 0.30
    0.,  # [0, 2]: unknown
    0.25 * math.log(4. / 3.),  # [1, 0]: p = 3/4, y = 1
    0.,  # [1, 1]: unknown
    0.2025 * -math.log(0.55),  # [1, 2]: p = 1/2, y = 0, p_neg = 0.55
]
HAND_SUM = 1.1295027751656397
# d loss / d l_pos with the focusing weight w held constant (no_grad):
#   y = 1: -w (1 - p)          y = 0: +w p (1 - p) / p_neg
HAND_GRAD_POS = [[-0.25, 0.30625, 0.], [-0.0625, 0., 0.0920454545454545]]


def test_hand_computed_2x3_with_unknowns():
    assert abs(sum(HAND) - HAND_SUM) < 1e-12
    logits = _logits(D).requires_grad_(True)
    loss_fn = PartialAsymmetricLoss(gamma_neg=2, gamma_pos=1, clip=0.05)
    loss = loss_fn(logits, torch.tensor(Y))
    assert abs(loss.item() - HAND_SUM) < 1e-6
    loss.backward()
    grad_pos = logits.grad[:, 1]
    torch.testing.assert_close(
        grad_pos,
        torch.tensor(HAND_GRAD_POS, dtype=grad_pos.dtype),
        atol=1e-6,
        rtol=1e-5)
    # l_neg enters only through l_pos - l_neg
    torch.testing.assert_close(logits.grad[:, 0], -grad_pos)


def test_defaults_are_the_official_settings():
    loss_fn = PartialAsymmetricLoss()
    assert (loss_fn.gamma_neg, loss_fn.gamma_pos, loss_fn.clip, loss_fn.eps,
            loss_fn.reduction) == (2., 1., 0.05, 1e-6, 'sum')
    loss = loss_fn(_logits(D), torch.tensor(Y))
    assert abs(loss.item() - HAND_SUM) < 1e-6


def test_unknown_entries_do_not_matter():
    y = torch.tensor(Y)
    a = _logits(D)
    b = a.clone()
    b[0, :, 2] = torch.tensor([7., -3.])  # change only unknown entries
    b[1, :, 1] = torch.tensor([-2., 9.])
    loss_fn = PartialAsymmetricLoss()
    assert loss_fn(a, y).item() == loss_fn(b, y).item()


def test_reduction_mean_and_loss_weight():
    y = torch.tensor(Y)
    mean = PartialAsymmetricLoss(reduction='mean')(_logits(D), y)
    assert abs(mean.item() - HAND_SUM / 4) < 1e-6  # 4 known entries
    weighted = PartialAsymmetricLoss(loss_weight=0.03)(_logits(D), y)
    assert abs(weighted.item() - 0.03 * HAND_SUM) < 1e-7


def test_all_unknown_gives_zero_loss_and_grad():
    logits = _logits(D).requires_grad_(True)
    for reduction in ('sum', 'mean'):
        loss = PartialAsymmetricLoss(reduction=reduction)(logits,
                                                          -torch.ones(2, 3))
        assert loss.item() == 0.
        loss.backward()
        assert torch.all(logits.grad == 0)


def test_probability_shift_and_eps_clamp():
    loss_fn = PartialAsymmetricLoss()
    # y = 0 with p = sigmoid(-10): p_neg = min(1 - p + 0.05, 1) = 1 -> 0
    assert loss_fn(_logits([[-10.]]), torch.tensor([[0.]])).item() == 0.
    # y = 1 with p = sigmoid(-30) < eps: log clamps at eps
    loss = loss_fn(_logits([[-30.]]), torch.tensor([[1.]]))
    assert abs(loss.item() - (-math.log(1e-6))) < 1e-4
    # without focusing and shift it is the plain two-way cross-entropy
    plain = PartialAsymmetricLoss(gamma_neg=0, gamma_pos=0, clip=0)
    logits = torch.randn(4, 2, 5)
    y = torch.randint(0, 2, (4, 5)).float()
    ce = torch.nn.functional.cross_entropy(logits, y.long(), reduction='sum')
    torch.testing.assert_close(plain(logits, y), ce)


@pytest.mark.parametrize('bad', [0.5, 2., -2.])
def test_bad_target_values(bad):
    y = torch.tensor(Y)
    y[1, 1] = bad
    with pytest.raises(
            ValueError,
            match='1 \\(present\\), 0 \\(absent\\) '
            'or -1 \\(unknown\\)'):
        PartialAsymmetricLoss()(_logits(D), y)


def test_bad_shapes():
    loss_fn = PartialAsymmetricLoss()
    with pytest.raises(ValueError, match='do not match the logits'):
        loss_fn(_logits(D), torch.zeros(2, 4))
    with pytest.raises(ValueError, match='do not match the logits'):
        loss_fn(_logits(D), torch.zeros(3))
    with pytest.raises(ValueError, match=r'\(B, 2, C\)'):
        loss_fn(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r'\(B, 2, C\)'):
        loss_fn(torch.zeros(2, 3, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match='reduction'):
        PartialAsymmetricLoss(reduction='none')


def test_build_from_registry():
    loss_fn = MODELS.build(
        dict(type='PartialAsymmetricLoss', gamma_neg=4, loss_weight=2.))
    assert isinstance(loss_fn, PartialAsymmetricLoss)
    assert loss_fn.gamma_neg == 4 and loss_fn.loss_weight == 2.


def test_head_reads_tristate_gt_score_and_gt_label():
    head = MODELS.build(
        dict(type='BaselineHead', classnames=['a', 'b', 'c'], in_channels=4))
    logits = _logits(D).float()
    samples = [DataSample().set_gt_score(torch.tensor(row)) for row in Y]
    loss = head._get_loss(logits, samples)['loss']
    assert abs(loss.item() - HAND_SUM) < 1e-5
    # without gt_score every class is known: gt_label -> one-hot {0, 1}
    samples = [DataSample().set_gt_label([0]), DataSample().set_gt_label([])]
    loss = head._get_loss(logits, samples)['loss']
    # by hand (terms as in HAND): row 0 is [0, 0] and [0, 1] of HAND plus
    # [0, 2] (p_neg clipped to 1: 0); row 1 is all negatives: p = 3/4
    # (p_neg = 0.30) and twice p = 1/2 (p_neg = 0.55)
    assert loss.item() == pytest.approx(
        0.5 * math.log(2.) + 2 * 0.49 * -math.log(0.3) +
        2 * 0.2025 * -math.log(0.55), abs=1e-6)
    expected = PartialAsymmetricLoss()(logits,
                                       torch.tensor([[1., 0., 0.],
                                                     [0., 0., 0.]]))
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize('gamma_neg, gamma_pos, clip', [
    (4., 0., 0.1), (0., 2.5, None), (1., 1., 0.), (2., 1., 0.3)])
def test_other_focusing_and_shift_by_entry(gamma_neg, gamma_pos, clip):
    """Focusing exponents and shifts other than the official 2 / 1 / 0.05
    (and ``clip=None``): value and ``d loss / d l_pos`` against the formula
    written out entry by entry, the focusing weight held constant."""
    g = torch.Generator().manual_seed(7)
    logits = (3 * torch.randn(3, 2, 5, generator=g,
                              dtype=torch.float64)).requires_grad_(True)
    y = torch.randint(-1, 2, (3, 5), generator=g).double()
    loss_fn = PartialAsymmetricLoss(
        gamma_neg=gamma_neg, gamma_pos=gamma_pos, clip=clip)
    loss = loss_fn(logits, y)
    loss.backward()
    shift = clip or 0.
    total, grad = 0., torch.zeros(3, 5, dtype=torch.float64)
    values = logits.detach()
    for b in range(3):
        for c in range(5):
            d = float(values[b, 1, c] - values[b, 0, c])
            p = 1 / (1 + math.exp(-d))
            if y[b, c] == 1:
                w = (1 - p)**gamma_pos
                total -= w * math.log(p)
                grad[b, c] = -w * (1 - p)
            elif y[b, c] == 0:
                q = min(1 - p + shift, 1.)
                w = (1 - q)**gamma_neg
                total -= w * math.log(q)
                grad[b, c] = w * p * (1 - p) / q if 1 - p + shift < 1 else 0.
    assert loss.item() == pytest.approx(total, rel=1e-6, abs=1e-9)
    torch.testing.assert_close(
        logits.grad[:, 1], grad.to(logits.grad.dtype), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logits.grad[:, 0], -logits.grad[:, 1])


def _compacted_official(logits, target, clip=0.05, eps=1e-6, gn=2., gp=1.):
    """The official loss as written (utils/asymmetric_loss.py L32-60): the
    unknown entries removed by a boolean index, then the sum."""
    prob = logits.softmax(dim=1)
    known = target != -1
    y = target[known]
    p_pos, p_neg = prob[:, 1][known], prob[:, 0][known]
    p_neg = (p_neg + clip).clamp(max=1)
    loss = y * torch.log(p_pos.clamp(min=eps)) + \
        (1 - y) * torch.log(p_neg.clamp(min=eps))
    with torch.no_grad():
        pt = p_pos * y + p_neg * (1 - y)
        weight = torch.pow(1 - pt, gp * y + gn * (1 - y))
    return -(loss * weight).sum()


def test_masking_the_unknowns_trains_as_removing_them():
    """The loss masks unknown entries instead of removing them (a boolean
    index reads the count back from the device at every step). The
    gradient of a sum is the same for any order of its terms, so each
    logit's gradient, hence training, is that of the official removal
    bit for bit; the loss value may differ in its last bits."""
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(16, 2, 80, generator=g) * 8).requires_grad_(True)
    target = torch.randint(-1, 2, (16, 80), generator=g).float()
    ours = PartialAsymmetricLoss()(logits, target)
    (grad, ) = torch.autograd.grad(ours, logits)
    ref_logits = logits.detach().clone().requires_grad_(True)
    ref = _compacted_official(ref_logits, target)
    ref.backward()
    assert torch.equal(grad, ref_logits.grad)
    assert abs(ours.item() - ref.item()) <= 1e-6 * abs(ref.item())

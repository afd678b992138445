# Copyright (c) mmcoop contributors. All rights reserved.
"""Constructor values of the heads, the loss and the prompt learner are
checked when built (naming the class, the field, the value); legal values
keep their behaviour. A class subset without any known class in the batch
(``fill=False``) gives a zero loss connected to the graph."""
import math
import re

import pytest
import torch
from _head_configs import NAMES, head_cfg
from _official_reference import TINY_RN
from mmpretrain.structures import DataSample

from mmcoop.models.backbones import FrozenCLIPTextEncoder
from mmcoop.models.heads.class_subset import check_class_subset
from mmcoop.models.losses import PartialAsymmetricLoss
from mmcoop.models.prompt_learners import PromptLearner
from mmcoop.registry import MODELS

PROMPT_HEADS = ['PositiveCoOpHead', 'NegativeCoOpHead', 'DualCoOpHead']
NAN, INF = float('nan'), float('inf')


def _refused(owner, field, value, expected):
    """The message of mmcoop.utils.value_checks for ``owner.field``."""
    return (re.escape(f'{owner}: {field} must be ') + '.*' + expected +
            '.*' + re.escape(f'got {value!r}'))


# --------------------------------------------------------------------------
# heads


@pytest.mark.parametrize('head_type,field', [
    (head, field) for head in PROMPT_HEADS
    for field in ('feat_scale', 'logit_scale')
] + [('BaselineHead', 'logit_scale')])
@pytest.mark.parametrize('value', [0, -5., NAN, INF, '5', None, True])
def test_scales_must_be_finite_positive(head_type, field, value):
    with pytest.raises(ValueError,
                       match=_refused(head_type, field, value,
                                      r'a finite number > 0')):
        MODELS.build(head_cfg(head_type, **{field: value}))


@pytest.mark.parametrize('value', [-1, 0, 64.0, '64', True, None])
def test_baseline_in_channels_must_be_positive_int(value):
    with pytest.raises(ValueError,
                       match=_refused('BaselineHead', 'in_channels', value,
                                      r'an int >= 1')):
        MODELS.build(head_cfg('BaselineHead', in_channels=value))


@pytest.mark.parametrize('head_type,field,value', [
    (head, field, value) for head, field in (
        ('DualCoOpHead', 'class_specific'),
        ('PositiveCoOpHead', 'class_specific'),
        ('PositiveCoOpHead', 'use_residual'),
        ('PositiveCoOpHead', 'shared_embedding'),
        ('NegativeCoOpHead', 'use_residual'),
        ('NegativeCoOpHead', 'shared_embedding'),
        ('ZeroShotHead', 'use_residual'),
        ('ZeroShotHead', 'shared_embedding'),
    ) for value in ('False', 0, 1, None)
    # ZeroShotHead: None means "unused"
    if not (head == 'ZeroShotHead' and value is None)
])
def test_head_flags_must_be_bool(head_type, field, value):
    with pytest.raises(ValueError,
                       match=_refused(head_type, field, value,
                                      'True or False')):
        MODELS.build(head_cfg(head_type, **{field: value}))


@pytest.mark.parametrize('head_type', ['BaselineHead', 'DualCoOpHead'])
@pytest.mark.parametrize('value', [-0.1, 1.5, NAN, 'x'])
def test_head_thr_in_unit_interval(head_type, value):
    with pytest.raises(ValueError,
                       match=_refused(head_type, 'thr', value,
                                      r'a number in \[0, 1\]')):
        MODELS.build(head_cfg(head_type, thr=value))


@pytest.mark.parametrize('value', [0, -1, 2.0, True, '2'])
def test_head_topk_positive_int(value):
    with pytest.raises(ValueError,
                       match=_refused('BaselineHead', 'topk', value,
                                      r'an int >= 1')):
        MODELS.build(head_cfg('BaselineHead', topk=value))


def test_head_topk_at_most_num_classes():
    with pytest.raises(ValueError,
                       match=re.escape('BaselineHead: topk must be an int '
                                       'in 1..3 (the number of classes), '
                                       'got 4.')):
        MODELS.build(head_cfg('BaselineHead', topk=4))


def test_head_thr_and_topk_not_both():
    """pred_label follows thr when both are set: topk was ignored."""
    with pytest.raises(ValueError,
                       match=re.escape('BaselineHead: thr=0.3 and topk=2 '
                                       'are both set')):
        MODELS.build(head_cfg('BaselineHead', thr=0.3, topk=2))


@pytest.mark.parametrize('head_type,field,value', [
    ('BaselineHead', 'loss', None),
    ('BaselineHead', 'loss', 'PartialAsymmetricLoss'),
    ('DualCoOpHead', 'loss', ['PartialAsymmetricLoss']),
    ('DualCoOpHead', 'text_encoder', None),
    ('PositiveCoOpHead', 'text_encoder', 'FrozenCLIPTextEncoder'),
])
def test_head_sub_configs_must_be_dicts(head_type, field, value):
    """MMEngine's builder said only 'cfg should be a dict'."""
    cfg = head_cfg(head_type)
    cfg[field] = value
    with pytest.raises(ValueError,
                       match=re.escape(f'{head_type}: {field} must be a '
                                       'config dict such as dict(type=') +
                       '.*' + re.escape(f'got {value!r}.')):
        MODELS.build(cfg)


@pytest.mark.parametrize('names', [5, 2.5, True])
def test_head_classnames_not_iterable(names):
    with pytest.raises(ValueError,
                       match=re.escape(f'classnames={names!r}: give the '
                                       'class names')):
        MODELS.build(head_cfg('BaselineHead', names=names))


def test_legal_prediction_values():
    dense = torch.randn(2, 64, 10, generator=torch.Generator().manual_seed(0))
    # topk = C: every class predicted
    head = MODELS.build(head_cfg('BaselineHead', topk=3)).eval()
    with torch.no_grad():
        samples = head.predict((dense, ))
    assert [sorted(s.pred_label.tolist()) for s in samples] == [[0, 1, 2]] * 2
    # the bounds of thr: 0 predicts every class (scores >= 0), 1 none that
    # is not certain
    for thr, count in ((0., 3), (1, 0)):
        head = MODELS.build(head_cfg('BaselineHead', thr=thr)).eval()
        with torch.no_grad():
            samples = head.predict((dense, ))
        assert all(len(s.pred_label) == count for s in samples)
    # neither: mmpretrain's default threshold 0.5
    assert MODELS.build(head_cfg('BaselineHead')).thr == 0.5


@pytest.mark.parametrize('head_type', PROMPT_HEADS)
def test_legal_scales_scale_the_logits(head_type, tiny_rn_file):
    """Ints are accepted; logit_scale multiplies the logits."""
    dense = torch.randn(2, 64, 10, generator=torch.Generator().manual_seed(0))
    out = {}
    for scale in (5, 2.5):
        torch.manual_seed(0)
        head = MODELS.build(
            head_cfg(head_type, tiny_rn_file, feat_scale=20,
                     logit_scale=scale)).eval()
        assert head.logit_scale == scale and head.feat_scale == 20
        with torch.no_grad():
            out[scale] = head((dense, ))
    torch.testing.assert_close(out[2.5] * 2, out[5], rtol=1e-5, atol=1e-5)


def test_baseline_legal_values():
    head = MODELS.build(
        head_cfg('BaselineHead', in_channels=1, logit_scale=0.5))
    assert head.fc.in_features == 1 and head.logit_scale == 0.5


# --------------------------------------------------------------------------
# class subset


@pytest.mark.parametrize('fill', ['False', 0, None])
def test_class_subset_fill_must_be_bool(fill):
    with pytest.raises(ValueError,
                       match=_refused('DualCoOpHead', 'class_subset.fill',
                                      fill, 'True or False')):
        check_class_subset(dict(num_classes=2, fill=fill), 'DualCoOpHead')
    with pytest.raises(ValueError,
                       match=_refused('DualCoOpHead', 'class_subset.fill',
                                      fill, 'True or False')):
        MODELS.build(
            head_cfg('DualCoOpHead',
                     class_subset=dict(num_classes=2, fill=fill)))


def test_class_subset_legal_values():
    assert check_class_subset(dict(num_classes=2)) == dict(
        num_classes=2, fill=True)
    assert check_class_subset(dict(num_classes=2, fill=False)) == dict(
        num_classes=2, fill=False)
    with pytest.raises(ValueError,
                       match=_refused('head', 'class_subset.num_classes',
                                      2.0, 'an int >= 1')):
        check_class_subset(dict(num_classes=2.0))


def _samples(target):
    return [DataSample().set_gt_score(t) for t in target]


@pytest.mark.parametrize('head_type', PROMPT_HEADS)
def test_class_subset_without_known_classes(head_type, tiny_rn_file):
    """fill=False and a batch whose labels are all unknown: no class to
    score, a zero loss on every trainable parameter (zero gradients, as
    fill=True gives); a batch with known classes is unchanged."""
    dense = torch.randn(2, 64, 10, generator=torch.Generator().manual_seed(1))
    heads = {}
    for fill in (False, True):
        torch.manual_seed(0)
        heads[fill] = MODELS.build(
            head_cfg(head_type, tiny_rn_file,
                     class_subset=dict(num_classes=2, fill=fill))).train()
    unknown = torch.full((2, 3), -1.)
    for fill, head in heads.items():
        loss = head.loss((dense, ), _samples(unknown))['loss']
        assert loss.dim() == 0 and loss.dtype == torch.float32
        assert float(loss.detach()) == 0. and loss.requires_grad
        loss.backward()
        trainable = [p for p in head.parameters() if p.requires_grad]
        assert trainable
        for param in trainable:
            if fill:  # a parameter of classes not drawn may get no grad
                continue
            assert param.grad is not None
            assert not param.grad.any()
    # one known class, labelled against the prediction (a loss > 0): the
    # loss of that class alone, whatever fill
    with torch.no_grad():
        logits = heads[True]((dense, ))
    known = unknown.clone()
    known[0, 1] = float(logits[0, 1, 1] < logits[0, 0, 1])
    losses = [
        float(h.loss((dense, ), _samples(known))['loss'].detach())
        for h in heads.values()
    ]
    full = PartialAsymmetricLoss()(logits, known)
    assert losses == pytest.approx([float(full)] * 2, rel=1e-5)
    assert float(full) > 0


# --------------------------------------------------------------------------
# loss


@pytest.mark.parametrize('field,value,expected', [
    ('loss_weight', 0, r'a finite number > 0'),
    ('loss_weight', -1., r'a finite number > 0'),
    ('loss_weight', NAN, r'a finite number > 0'),
    ('loss_weight', INF, r'a finite number > 0'),
    ('loss_weight', '1', r'a finite number > 0'),
    ('gamma_neg', -1, r'a finite number >= 0'),
    ('gamma_neg', NAN, r'a finite number >= 0'),
    ('gamma_pos', INF, r'a finite number >= 0'),
    ('gamma_pos', None, r'a finite number >= 0'),
    ('clip', NAN, r'None or a number in \[0, 1\)'),
    ('clip', 1, r'None or a number in \[0, 1\)'),
    ('clip', -0.05, r'None or a number in \[0, 1\)'),
    ('clip', '0.05', r'None or a number in \[0, 1\)'),
    ('clip', True, r'None or a number in \[0, 1\)'),
    ('eps', 0, r'a number in \(0, 1\)'),
    ('eps', 1., r'a number in \(0, 1\)'),
    ('eps', NAN, r'a number in \(0, 1\)'),
    ('eps', None, r'a number in \(0, 1\)'),
])
def test_loss_values_are_checked(field, value, expected):
    with pytest.raises(ValueError,
                       match=_refused('PartialAsymmetricLoss', field, value,
                                      expected)):
        MODELS.build(dict(type='PartialAsymmetricLoss', **{field: value}))


def test_loss_reduction_message():
    with pytest.raises(ValueError,
                       match=r"PartialAsymmetricLoss: reduction must be "
                       r"'sum' or 'mean', got 'none'"):
        PartialAsymmetricLoss(reduction='none')


def _logits(d):
    d = torch.tensor(d, dtype=torch.float64)
    return torch.stack([torch.zeros_like(d), d], dim=1)


def test_loss_legal_configs():
    """The defaults and the shipped (official) settings build and give the
    hand-computed loss; clip None and 0 are the same (no shift); gamma 0
    is plain cross-entropy."""
    ln3 = math.log(3.)
    logits = _logits([[0., ln3]])
    target = torch.tensor([[1., 0.]])
    # p = 1/2 (y = 1), 3/4 (y = 0; p_neg = 0.25 + 0.05 = 0.30)
    hand = 0.5 * math.log(2.) + 0.49 * -math.log(0.3)
    official = MODELS.build(
        dict(type='PartialAsymmetricLoss', gamma_neg=2, gamma_pos=1,
             clip=0.05, loss_weight=0.03))
    assert float(official(logits, target)) == pytest.approx(0.03 * hand)
    assert float(PartialAsymmetricLoss()(logits, target)) == pytest.approx(
        hand)
    no_shift = [
        float(PartialAsymmetricLoss(clip=clip)(logits, target))
        for clip in (None, 0, 0.)
    ]
    assert no_shift == pytest.approx(
        [0.5 * math.log(2.) + 0.5625 * -math.log(0.25)] * 3)
    ce = PartialAsymmetricLoss(gamma_neg=0, gamma_pos=0, clip=None,
                               eps=0.5, reduction='mean')
    # -(log 1/2 + log max(1/4, eps = 1/2)) / 2 known entries
    assert float(ce(logits, target)) == pytest.approx(math.log(2.))


# --------------------------------------------------------------------------
# prompt learner


@pytest.fixture(scope='module')
def text_encoder(tiny_rn_file):
    return FrozenCLIPTextEncoder(TINY_RN, pretrained=tiny_rn_file)


@pytest.mark.parametrize('n_ctx', [75, 76, 10**5, 10**6, 10**10])
def test_huge_n_ctx_refused_before_allocating(text_encoder, n_ctx,
                                              monkeypatch):
    """An n_ctx that cannot fit the 77-token context stops before the
    (C, n_ctx, W) context is allocated (no torch.empty call)."""
    def no_alloc(*args, **kwargs):
        raise AssertionError('the context was allocated')

    monkeypatch.setattr(torch, 'empty', no_alloc)
    with pytest.raises(ValueError,
                       match=r"The prompt 'X X X X X X X X \.\.\. cat\.' "
                       r"does not fit the text context length of "
                       r"'mmcoop-tiny-RN' \(77 tokens\): its "
                       rf'n_ctx={n_ctx} context tokens .*Fix: use fewer '
                       r'context tokens \(n_ctx < 75'):
        PromptLearner(NAMES * 30, text_encoder, n_ctx=n_ctx)


def test_n_ctx_near_the_limit(text_encoder):
    """SOS + 72 contexts + 'cat' + '.' + EOS = 76 tokens fit; one more
    context token is refused by the prompt check (same message family)."""
    learner = PromptLearner(['cat'], text_encoder, n_ctx=72)
    assert learner.ctx.shape == (1, 72, text_encoder.width)
    for n_ctx in (73, 74):
        with pytest.raises(ValueError,
                           match=r'does not fit the text context length .*'
                           r'\(77 tokens\).*n_ctx=' + str(n_ctx)):
            PromptLearner(['cat'], text_encoder, n_ctx=n_ctx)


@pytest.mark.parametrize('field,value,expected', [
    ('class_specific', 'False', 'True or False'),
    ('class_specific', 1, 'True or False'),
    ('init_std', -0.02, r'a finite number >= 0'),
    ('init_std', NAN, r'a finite number >= 0'),
])
def test_prompt_learner_values(text_encoder, field, value, expected):
    with pytest.raises(ValueError,
                       match=_refused('PromptLearner', field, value,
                                      expected)):
        PromptLearner(['cat'], text_encoder, n_ctx=2, **{field: value})
    # a zero std: an all-zero context
    assert not PromptLearner(['cat'], text_encoder, n_ctx=2,
                             init_std=0).ctx.any()

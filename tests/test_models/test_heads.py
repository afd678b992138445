# Copyright (c) mmcoop contributors. All rights reserved.
"""Heads against the official formulas; frozen-ness, parameter counts,
checkpoints, the eval-time class-feature cache, predictions, registry."""
import copy

import pytest
import torch
from _head_configs import NAMES, head_cfg
from _official_reference import TINY_RN, TINY_RN_512
from mmengine.registry import DefaultScope
from mmengine.runner import load_checkpoint
from mmengine.runner.checkpoint import get_state_dict
from mmpretrain.structures import DataSample

from mmcoop.models.heads import (BaselineHead, DualCoOpHead, NegativeCoOpHead,
                                 PositiveCoOpHead,
                                 class_specific_region_aggregation,
                                 spatial_softmax_pool)
from mmcoop.registry import DATASETS, MODELS

PROMPT_HEADS = ['PositiveCoOpHead', 'NegativeCoOpHead', 'DualCoOpHead']
ALL_HEADS = PROMPT_HEADS + ['BaselineHead']


def classifier_cfg(head_type, clip_file=None, size=64, **kwargs):
    return dict(
        type='ImageClassifier',
        backbone=dict(
            type='FrozenCLIP',
            model_name=TINY_RN,
            pretrained=clip_file,
            input_resolution=size),
        head=head_cfg(head_type, clip_file, **kwargs))


def _dense(batch=2, dim=64, positions=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, dim, positions, generator=g)


# --------------------------------------------------------------------------
# aggregation by hand
# --------------------------------------------------------------------------
def test_region_aggregation_by_explicit_loops(official):
    # float64 and a fixed seed: the logits reach 100, so float32 sums in
    # another order differ by ~1e-5 (near assert_close's float32 atol)
    B, D, N, C = 2, 5, 4, 3
    g = torch.Generator().manual_seed(0)
    dense, neg, pos = (torch.randn(*shape, generator=g, dtype=torch.float64)
                       for shape in ((B, D, N), (C, D), (C, D)))
    out = class_specific_region_aggregation(dense, neg, pos)
    assert out.shape == (B, 2, C)
    for b in range(B):
        for c in range(C):
            s_neg, s_pos = [], []
            for n in range(N):
                v = dense[b, :, n]
                s_neg.append(20 * torch.dot(v, neg[c]) /
                             (v.norm() * neg[c].norm()))
                s_pos.append(20 * torch.dot(v, pos[c]) /
                             (v.norm() * pos[c].norm()))
            s_neg, s_pos = torch.stack(s_neg), torch.stack(s_pos)
            w = torch.exp(s_pos) / torch.exp(s_pos).sum()  # from POSITIVE
            torch.testing.assert_close(out[b, 0, c], 5 * (w * s_neg).sum())
            torch.testing.assert_close(out[b, 1, c], 5 * (w * s_pos).sum())
    torch.testing.assert_close(out, official.region_logits(dense, neg, pos))
    # p(present) = softmax over [neg, pos] = sigmoid(l_pos - l_neg)
    torch.testing.assert_close(
        out.softmax(1)[:, 1], torch.sigmoid(out[:, 1] - out[:, 0]))


def test_spatial_softmax_pool_by_hand():
    scores = torch.tensor([[[0., 1., 2.]]])
    w = torch.exp(scores) / torch.exp(scores).sum(-1, keepdim=True)
    torch.testing.assert_close(
        spatial_softmax_pool(scores), 5 * (w * scores).sum(-1))
    other = torch.tensor([[[2., 0., 0.]]])
    w = torch.exp(other) / torch.exp(other).sum(-1, keepdim=True)
    torch.testing.assert_close(
        spatial_softmax_pool(scores, other, logit_scale=1.),
        (w * scores).sum(-1))


# --------------------------------------------------------------------------
# each head = the official forward, written out
# --------------------------------------------------------------------------
@pytest.fixture(scope='module')
def built_heads(tiny_rn_file):
    torch.manual_seed(0)
    return {t: MODELS.build(head_cfg(t, tiny_rn_file)) for t in ALL_HEADS}


def _text(official, clip, learner):
    tokens = learner.tokens
    return official.text_encoder(
        clip, official.prompt_embeddings(clip, learner.ctx, tokens), tokens)


def test_prompt_tokens_are_the_official_ones(built_heads, official):
    expected = official.tokens(NAMES, n_ctx=4)
    for head_type in PROMPT_HEADS:
        head = built_heads[head_type]
        for learner in (getattr(head, 'pos_prompt',
                                None), getattr(head, 'neg_prompt', None)):
            if learner is not None:
                assert torch.equal(learner.tokens, expected)


@pytest.mark.parametrize('head_type', ALL_HEADS)
def test_head_matches_official_formula(head_type, built_heads, tiny_rn_clip,
                                       official):
    head = built_heads[head_type].train()
    dense = _dense()
    logits = head((dense, ))
    assert logits.shape == (2, 2, 3)
    with torch.no_grad():
        if head_type == 'PositiveCoOpHead':
            # models/positivecoop.py: [txt_prompt_neg ; TE(ctx_pos) + learn]
            pos = _text(official, tiny_rn_clip, head.pos_prompt) \
                + head.pos_residual
            expected = official.region_logits(dense, head.neg_embedding, pos)
        elif head_type == 'NegativeCoOpHead':
            # models/negativecoop.py: [TE(ctx_neg) + learn ; txt_prompt_pos]
            neg = _text(official, tiny_rn_clip, head.neg_prompt) \
                + head.neg_residual
            expected = official.region_logits(dense, neg, head.pos_embedding)
        elif head_type == 'DualCoOpHead':
            expected = official.region_logits(
                dense, _text(official, tiny_rn_clip, head.neg_prompt),
                _text(official, tiny_rn_clip, head.pos_prompt))
        else:
            expected = official.baseline_logits(dense, head.fc.weight,
                                                head.fc.bias)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('head_type', ALL_HEADS)
def test_other_scales_match_the_official_formula(head_type, tiny_rn_file,
                                                 tiny_rn_clip, official):
    """``feat_scale`` / ``logit_scale`` other than the official 20 / 5 take
    their place in the official formula. ``feat_scale`` also sharpens the
    spatial softmax, so it is not a plain multiple of the default logits."""
    scales = dict(logit_scale=3.) if head_type == 'BaselineHead' else dict(
        feat_scale=7.5, logit_scale=3.)
    torch.manual_seed(0)
    head = MODELS.build(head_cfg(head_type, tiny_rn_file, **scales)).train()
    dense = _dense()
    logits = head((dense, ))
    with torch.no_grad():
        if head_type == 'BaselineHead':
            expected = official.baseline_logits(dense, head.fc.weight,
                                                head.fc.bias, **scales)
        else:
            neg, pos = _official_class_features(head, tiny_rn_clip, official)
            expected = official.region_logits(dense, neg, pos, **scales)
            default = official.region_logits(dense, neg, pos)
            assert not torch.allclose(default * 3. / 5., expected, atol=1e-2)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


def _official_class_features(head, clip, official):
    """``(neg, pos)`` of a prompt head by the official formulas: a prompt
    through the official TextEncoder (plus its residual), or the learned
    embedding as it is."""
    neg, pos = (getattr(head, f'{side}_embedding', None)
                for side in ('neg', 'pos'))
    if neg is None:
        neg = _text(official, clip, head.neg_prompt)
        if getattr(head, 'neg_residual', None) is not None:
            neg = neg + head.neg_residual
    if pos is None:
        pos = _text(official, clip, head.pos_prompt)
        if getattr(head, 'pos_residual', None) is not None:
            pos = pos + head.pos_residual
    return neg, pos


@pytest.mark.parametrize('head_type', ['PositiveCoOpHead', 'NegativeCoOpHead'])
def test_shared_context_embedding_heads(head_type, tiny_rn_file,
                                        tiny_rn_clip, official):
    """PositiveCoOp / NegativeCoOp with one context for all classes
    (``class_specific=False``, official ``CSC=False``), residual and
    per-class embedding kept: the official formula."""
    torch.manual_seed(0)
    head = MODELS.build(
        head_cfg(head_type, tiny_rn_file, class_specific=False)).train()
    learner = getattr(head, 'pos_prompt', None) or head.neg_prompt
    assert learner.ctx.shape == (4, 64)
    dense = _dense()
    with torch.no_grad():
        expected = official.region_logits(
            dense, *_official_class_features(head, tiny_rn_clip, official))
    torch.testing.assert_close(
        head((dense, )), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('head_type', ALL_HEADS)
def test_gradients_match_the_official_formula(head_type, tiny_rn_file,
                                              tiny_rn_clip, official):
    """The gradient of a loss on the logits with respect to every learned
    tensor (contexts, embeddings, residuals, Linear) equals autograd
    through the official formulas with the same tensors (float64)."""
    torch.manual_seed(0)
    head = MODELS.build(head_cfg(head_type, tiny_rn_file)).double().train()
    clip = copy.deepcopy(tiny_rn_clip).double()
    dense = _dense().double()
    weight = torch.randn(2, 2, 3, generator=torch.Generator().manual_seed(9),
                         dtype=torch.float64)
    params = {n: p for n, p in head.named_parameters() if p.requires_grad}
    (head((dense, )) * weight).sum().backward()
    got = {n: p.grad.clone() for n, p in params.items()}
    copies = {n: p.detach().clone().requires_grad_(True)
              for n, p in params.items()}
    if head_type == 'BaselineHead':
        logits = official.baseline_logits(dense, copies['fc.weight'],
                                          copies['fc.bias'])
    else:
        feats = {}
        for side in ('neg', 'pos'):
            if f'{side}_embedding' in copies:
                feats[side] = copies[f'{side}_embedding']
                continue
            tokens = getattr(head, f'{side}_prompt').tokens
            feats[side] = official.text_encoder(
                clip, official.prompt_embeddings(
                    clip, copies[f'{side}_prompt.ctx'], tokens), tokens)
            if f'{side}_residual' in copies:
                feats[side] = feats[side] + copies[f'{side}_residual']
        logits = official.region_logits(dense, feats['neg'], feats['pos'])
    (logits * weight).sum().backward()
    assert set(got) == set(copies)
    for name, grad in got.items():
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(grad, copies[name].grad, rtol=1e-9,
                                   atol=1e-12, msg=name)


def test_baseline_softmax_is_per_channel(built_heads):
    """Unlike the prompt heads, each of the 2C channels has its own spatial
    weights (models/baseline.py L244)."""
    head = built_heads['BaselineHead']
    dense = _dense()
    scores = torch.einsum('kd,bdn->bkn', head.fc.weight, dense) \
        + head.fc.bias[None, :, None]
    logits = head((dense, ))
    for k in range(6):
        w = scores[:, k].softmax(-1)
        torch.testing.assert_close(
            logits.reshape(2, 6)[:, k], 5 * (w * scores[:, k]).sum(-1))
    # channels [0, C) are the negatives
    torch.testing.assert_close(logits[:, 0], logits.reshape(2, 6)[:, :3])


def test_without_residual(tiny_rn_file, tiny_rn_clip, official):
    head = MODELS.build(
        head_cfg('PositiveCoOpHead', tiny_rn_file, use_residual=False))
    assert head.pos_residual is None
    assert {n
            for n, p in head.named_parameters()
            if p.requires_grad} == {'pos_prompt.ctx', 'neg_embedding'}
    dense = _dense()
    with torch.no_grad():
        expected = official.region_logits(
            dense, head.neg_embedding,
            _text(official, tiny_rn_clip, head.pos_prompt))
        torch.testing.assert_close(
            head((dense, )), expected, rtol=1e-5, atol=1e-5)
    neg = MODELS.build(
        head_cfg('NegativeCoOpHead', tiny_rn_file, use_residual=False))
    assert neg.neg_residual is None


def test_shared_context_dualcoop(tiny_rn_file, tiny_rn_clip, official):
    head = MODELS.build(
        head_cfg('DualCoOpHead', tiny_rn_file, class_specific=False))
    assert head.pos_prompt.ctx.shape == (4, 64)
    assert head.neg_prompt.ctx.shape == (4, 64)
    dense = _dense()
    with torch.no_grad():
        expected = official.region_logits(
            dense, _text(official, tiny_rn_clip, head.neg_prompt),
            _text(official, tiny_rn_clip, head.pos_prompt))
        torch.testing.assert_close(
            head((dense, )), expected, rtol=1e-5, atol=1e-5)


def test_ctx_init_words_in_a_head(tiny_rn_file):
    head = MODELS.build(
        head_cfg('DualCoOpHead', tiny_rn_file, ctx_init='a photo of a'))
    assert head.pos_prompt.n_ctx == 4
    assert head.pos_prompt.prompt_texts[0] == 'a photo of a cat.'
    torch.testing.assert_close(head.pos_prompt.ctx, head.neg_prompt.ctx)


def test_bad_ctx_init_words_name_the_head_field(tiny_rn_file):
    for field in ('ctx_init', 'neg_ctx_init'):
        with pytest.raises(ValueError, match=f"^{field}='  ' has no words"):
            MODELS.build(
                head_cfg('DualCoOpHead', tiny_rn_file, **{field: '  '}))


def test_written_prompts_that_do_not_fit_are_refused(tiny_rn_file):
    """ZeroShotHead (hand-written prompts through encode_texts): a prompt
    the tokenizer would cut short (so two classes would share one prompt)
    is refused naming it, when the head is built (it was at the first test
    batch); before that, the classes got identical features."""
    names = ['cat', 'small ' * 80 + 'dog', 'small ' * 80 + 'bird']
    with pytest.raises(ValueError, match=r"The prompt 'a photo (of|without) "
                       r'a small small .*does not fit the text context length '
                       r"of 'mmcoop-tiny-RN' \(77 tokens\).*Fix: shorten "
                       'the class name or the template'):
        MODELS.build(head_cfg('ZeroShotHead', tiny_rn_file, names=names))


def test_learned_embeddings_init_standard_normal(tiny_rn_file):
    torch.manual_seed(0)
    head = MODELS.build(
        head_cfg(
            'PositiveCoOpHead',
            tiny_rn_file,
            names=[f'c{i}' for i in range(40)]))
    for p in (head.neg_embedding, head.pos_residual):
        assert p.shape == (40, 64)
        assert abs(p.std().item() - 1.) < 0.05 and abs(p.mean().item()) < .05


# --------------------------------------------------------------------------
# parameter counts (D = W = 512, CSC, n_ctx = 16)
# --------------------------------------------------------------------------
@pytest.mark.parametrize('head_type,num_classes,expected', [
    ('PositiveCoOpHead', 80, 737_280),
    ('PositiveCoOpHead', 20, 184_320),
    ('NegativeCoOpHead', 80, 737_280),
    ('NegativeCoOpHead', 20, 184_320),
    ('DualCoOpHead', 80, 1_310_720),
    ('DualCoOpHead', 20, 327_680),
    ('BaselineHead', 80, 82_080),
    ('BaselineHead', 20, 20_520),
])
def test_trainable_parameter_counts(head_type, num_classes, expected):
    cfg = head_cfg(
        head_type,
        None,
        model_name=TINY_RN_512,
        names=[f'class{i}' for i in range(num_classes)])
    if head_type != 'BaselineHead':
        cfg.update(n_ctx=16, class_specific=True)
    head = MODELS.build(cfg)
    trainable = sum(p.numel() for p in head.parameters() if p.requires_grad)
    assert trainable == expected
    # nothing else is trainable, and the frozen text tower is not counted
    if head_type != 'BaselineHead':
        assert not any(p.requires_grad for p in head.text_encoder.parameters())


# --------------------------------------------------------------------------
# frozen-ness in the full classifier
# --------------------------------------------------------------------------
@pytest.fixture(scope='module')
def classifiers(tiny_rn_file):
    torch.manual_seed(1)
    return {
        t: MODELS.build(classifier_cfg(t, tiny_rn_file))
        for t in ALL_HEADS
    }


def _loss_samples():
    return [
        DataSample().set_gt_score(torch.tensor([1., 0., -1.])),
        DataSample().set_gt_score(torch.tensor([0., 1., 1.])),
    ]


@pytest.mark.parametrize('head_type', ALL_HEADS)
def test_only_head_parameters_get_gradients(head_type, classifiers):
    model = classifiers[head_type]
    model.train()
    model.zero_grad(set_to_none=True)
    losses = model(torch.randn(2, 3, 64, 64), _loss_samples(), mode='loss')
    losses['loss'].backward()
    frozen = [
        n for n, p in model.named_parameters() if n.startswith('backbone.')
        or '.text_encoder.' in n or n.startswith('head.text_encoder.')
    ]
    head = [
        n for n, p in model.named_parameters()
        if n.startswith('head.') and not n.startswith('head.text_encoder')
    ]
    assert frozen and head
    params = dict(model.named_parameters())
    for name in frozen:
        assert not params[name].requires_grad, name
        assert params[name].grad is None, name
    for name in head:
        assert params[name].requires_grad, name
        assert params[name].grad is not None, name
        assert params[name].grad.abs().sum() > 0, name
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize('head_type', ['DualCoOpHead', 'BaselineHead'])
def test_train_mode_keeps_towers_in_eval_and_bn_stats(head_type, classifiers):
    model = classifiers[head_type]
    model.train()
    assert model.training and model.head.training
    assert not model.backbone.training
    assert not any(m.training for m in model.backbone.modules())
    if head_type != 'BaselineHead':
        assert not model.head.text_encoder.training
    bn = {
        k: v.clone()
        for k, v in model.backbone.visual.state_dict().items()
        if 'running_' in k or 'num_batches' in k
    }
    model(torch.randn(2, 3, 64, 64) * 2 + 1, _loss_samples(), mode='loss')
    after = model.backbone.visual.state_dict()
    assert bn and all(torch.equal(after[k], v) for k, v in bn.items())


def test_init_weights_leaves_everything_unchanged(tiny_rn_file):
    """The runner calls ``model.init_weights()`` before training."""
    model = MODELS.build(classifier_cfg('DualCoOpHead', tiny_rn_file))
    model.backbone.save_frozen = model.head.text_encoder.save_frozen = True
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.init_weights()
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())


# --------------------------------------------------------------------------
# checkpoints hold only what was trained
# --------------------------------------------------------------------------
EXPECTED_KEYS = {
    'PositiveCoOpHead':
    {'head.pos_prompt.ctx', 'head.neg_embedding', 'head.pos_residual'},
    'NegativeCoOpHead':
    {'head.neg_prompt.ctx', 'head.pos_embedding', 'head.neg_residual'},
    'DualCoOpHead': {'head.pos_prompt.ctx', 'head.neg_prompt.ctx'},
    'BaselineHead': {'head.fc.weight', 'head.fc.bias'},
}


@pytest.mark.parametrize('head_type', ALL_HEADS)
def test_state_dict_has_no_clip_weights(head_type, classifiers):
    model = classifiers[head_type]
    assert set(model.state_dict()) == EXPECTED_KEYS[head_type]
    # what mmengine's Runner.save_checkpoint uses
    assert set(get_state_dict(model)) == EXPECTED_KEYS[head_type]


def test_save_frozen_keeps_clip_weights(tiny_rn_file):
    cfg = classifier_cfg('PositiveCoOpHead', tiny_rn_file)
    cfg['backbone']['save_frozen'] = True
    cfg['head']['text_encoder']['save_frozen'] = True
    keys = set(MODELS.build(cfg).state_dict())
    assert 'backbone.visual.attnpool.c_proj.weight' in keys
    assert 'head.text_encoder.token_embedding.weight' in keys
    assert EXPECTED_KEYS['PositiveCoOpHead'] < keys


@pytest.mark.parametrize('head_type', ['PositiveCoOpHead', 'BaselineHead'])
def test_head_only_checkpoint_restores_head_keeps_clip(head_type, tmp_path,
                                                       tiny_rn_file):
    torch.manual_seed(1)
    trained = MODELS.build(classifier_cfg(head_type, tiny_rn_file))
    path = str(tmp_path / 'head_only.pth')
    torch.save({'state_dict': trained.state_dict()}, path)
    torch.manual_seed(2)  # other head init; CLIP from random weights
    model = MODELS.build(classifier_cfg(head_type, None))
    model.backbone.save_frozen = True
    clip_before = {
        k: v.clone()
        for k, v in model.state_dict().items() if k.startswith('backbone.')
    }
    load_checkpoint(model, path, map_location='cpu', strict=True)
    for key, value in trained.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    for key, value in model.state_dict().items():
        if key.startswith('backbone.'):
            assert torch.equal(value, clip_before[key]), key


# --------------------------------------------------------------------------
# eval-time class-feature cache
# --------------------------------------------------------------------------
def _count_class_features(head, monkeypatch):
    calls = []
    original = head.class_features

    def counted():
        calls.append(1)
        return original()

    monkeypatch.setattr(head, 'class_features', counted)
    return calls


@pytest.mark.parametrize('head_type', PROMPT_HEADS)
def test_eval_cache(head_type, tiny_rn_file, monkeypatch):
    torch.manual_seed(0)
    head = MODELS.build(head_cfg(head_type, tiny_rn_file))
    calls = _count_class_features(head, monkeypatch)
    dense = _dense()
    head.train()
    with torch.no_grad():
        uncached = head((dense, ))
        head((dense, ))
    assert len(calls) == 2  # training: recomputed every step
    head.eval()
    with torch.no_grad():
        first = head((dense, ))
        second = head((dense, ))
    assert len(calls) == 3  # computed once for the two eval batches
    torch.testing.assert_close(first, uncached, rtol=0, atol=0)
    torch.testing.assert_close(second, uncached, rtol=0, atol=0)
    head((dense, ))  # eval with grad enabled: not cached
    assert len(calls) == 4

    # a parameter update (optimizer step) invalidates the cache
    learned = [p for p in head.parameters() if p.requires_grad]
    head.train()
    optim = torch.optim.SGD(learned, lr=10.)
    head.loss((dense, ), _loss_samples())['loss'].backward()
    optim.step()
    head.eval()
    with torch.no_grad():
        updated = head((dense, ))
        assert not torch.allclose(updated, first)
        head.train()
        fresh = head((dense, ))
        head.eval()
    torch.testing.assert_close(updated, fresh, rtol=0, atol=0)
    # an in-place edit of one parameter does too (a random one: the
    # embeddings are L2-normalised and the prompts go through LayerNorms, so
    # rescaling or a constant shift could leave the output unchanged)
    with torch.no_grad():
        learned[0].add_(torch.randn_like(learned[0]))
        edited = head((dense, ))
        assert not torch.allclose(edited, updated)
        head.train()
        torch.testing.assert_close(edited, head((dense, )), rtol=0, atol=0)


@pytest.mark.parametrize('head_type', PROMPT_HEADS)
def test_eval_cache_follows_weights_swapped_through_data(
        head_type, tiny_rn_file):
    """MMEngine's EMAHook swaps the averaged weights in for validation with
    ``p.data.copy_``, which autograd's version counter does not see: the
    next evaluation must still score with the swapped-in weights (it used
    the cached text features of the old ones, mixed with the new learned
    embeddings, which the cache shared with the parameters)."""
    torch.manual_seed(0)
    head = MODELS.build(head_cfg(head_type, tiny_rn_file)).eval()
    dense = _dense()
    learned = [p for p in head.parameters() if p.requires_grad]
    averaged = [p.detach() + 0.5 * torch.randn_like(p) for p in learned]
    with torch.no_grad():
        before = head((dense, ))
        for p, avg in zip(learned, averaged):  # EMAHook._swap_ema_parameters
            tmp = p.data.clone()
            p.data.copy_(avg)
            avg.copy_(tmp)
        swapped = head((dense, ))
        head.train()
        fresh = head((dense, ))
        head.eval()
        assert not torch.allclose(swapped, before)
        torch.testing.assert_close(swapped, fresh, rtol=0, atol=0)
        for p, avg in zip(learned, averaged):  # and back
            p.data.copy_(avg)
        torch.testing.assert_close(head((dense, )), before, rtol=0, atol=0)


def test_eval_cache_follows_loaded_checkpoints(tiny_rn_file):
    torch.manual_seed(0)
    a = MODELS.build(head_cfg('DualCoOpHead', tiny_rn_file)).eval()
    b = MODELS.build(head_cfg('DualCoOpHead', tiny_rn_file)).eval()
    dense = _dense()
    with torch.no_grad():
        before = a((dense, ))
        a.load_state_dict(b.state_dict())
        after = a((dense, ))
        torch.testing.assert_close(after, b((dense, )), rtol=0, atol=0)
    assert not torch.allclose(before, after)


@pytest.mark.parametrize('head_type', ['DualCoOpHead', 'ZeroShotHead'])
def test_eval_cache_follows_the_text_tower_and_autocast(
        head_type, tiny_rn_file):
    """The cache was keyed on the trainable values only: new frozen text
    weights (a checkpoint that carries them; for a ZeroShotHead, which has
    no trainable value, the cache never refreshed) and features computed
    under an outer autocast (a test loop's fp16=True) were served to later
    evaluations: logits off by up to 25, or with bf16's error in an fp32
    run."""
    torch.manual_seed(0)
    head = MODELS.build(head_cfg(head_type, tiny_rn_file)).eval()
    dense = _dense()

    def fresh():  # computed anew (training mode does not use the cache)
        head.train()
        out = head((dense, ))
        head.eval()
        return out

    with torch.no_grad():
        with torch.autocast('cpu', dtype=torch.bfloat16):
            head((dense, ))  # fills the cache under autocast
        plain = head((dense, ))
        torch.testing.assert_close(plain, fresh(), rtol=0, atol=0)
        before = head((dense, ))  # fills the cache
        for p in head.text_encoder.parameters():  # as a load copies them
            p.add_(0.05 * torch.randn_like(p))
        after = head((dense, ))
        assert not torch.allclose(after, before)
        torch.testing.assert_close(after, fresh(), rtol=0, atol=0)


# --------------------------------------------------------------------------
# predictions
# --------------------------------------------------------------------------
@pytest.mark.parametrize('head_type', ['PositiveCoOpHead', 'BaselineHead'])
def test_predict_gives_p_present(head_type, built_heads):
    head = built_heads[head_type].eval()
    dense = _dense()
    with torch.no_grad():
        logits = head((dense, ))
        samples = head.predict((dense, ))
    probs = torch.softmax(logits, dim=1)[:, 1]
    assert len(samples) == 2
    for sample, p, lo in zip(samples, probs, logits[:, 1] - logits[:, 0]):
        torch.testing.assert_close(sample.pred_score, p)
        # the log-odds the metrics rank by: p is their sigmoid
        torch.testing.assert_close(sample.pred_log_odds, lo)
        torch.testing.assert_close(sample.pred_log_odds.sigmoid(), p)
        # default threshold 0.5 (mmpretrain's multi-label default)
        assert sample.pred_label.tolist() == torch.where(p >= 0.5)[0].tolist()
    # data samples passed in are filled in place
    given = [DataSample(), DataSample()]
    with torch.no_grad():
        out = head.predict((dense, ), given)
    assert out[0] is given[0]


def test_predict_topk(tiny_rn_file):
    head = MODELS.build(head_cfg('BaselineHead', topk=2)).eval()
    with torch.no_grad():
        samples = head.predict((_dense(), ))
    assert all(len(s.pred_label) == 2 for s in samples)


def test_classifier_predict_end_to_end(classifiers):
    model = classifiers['DualCoOpHead'].eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        samples = model(x, mode='predict')
        logits = model(x, mode='tensor')
    torch.testing.assert_close(
        torch.stack([s.pred_score for s in samples]),
        logits.softmax(dim=1)[:, 1])


# --------------------------------------------------------------------------
# registry and class names
# --------------------------------------------------------------------------
@pytest.mark.parametrize('head_type', ALL_HEADS)
def test_build_every_head_from_config(head_type):
    head = MODELS.build(head_cfg(head_type, None))
    assert type(head).__name__ == head_type
    assert head.num_classes == 3 and head.classnames == [
        'cat', 'traffic light', 'hair_drier'
    ]
    assert isinstance(
        head, (PositiveCoOpHead, NegativeCoOpHead, DualCoOpHead, BaselineHead))


def test_build_in_another_default_scope():
    """Sub-modules (text encoder, loss) resolve in the mmcoop scope even
    when the caller's default scope is mmpretrain (e.g.
    ``mmpretrain.apis.get_model`` with ``type='mmcoop.DualCoOpHead'``)."""
    cfg = head_cfg('DualCoOpHead', None)
    cfg['type'] = 'mmcoop.DualCoOpHead'
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        head = MODELS.build(cfg)
    assert type(head.text_encoder).__name__ == 'FrozenCLIPTextEncoder'


def test_classnames_from_a_registered_dataset():

    class _TinyDataset:
        METAINFO = dict(classes=('dog', 'potted plant'))

    DATASETS.register_module(
        name='_TinyTestDataset', module=_TinyDataset, force=True)
    head = MODELS.build(
        head_cfg('DualCoOpHead', None, names='_TinyTestDataset'))
    assert head.classnames == ['dog', 'potted plant']
    assert head.pos_prompt.prompt_texts[1] == 'X X X X potted plant.'


def test_classnames_from_the_class_file_of_the_csv_base(
        tmp_path, monkeypatch):
    """The CSV base's ``classes`` is a file; ``classnames={{_base_.classes}}``
    (docs/data.md) gives the head that file, read as the dataset reads it
    (BOM, outer spaces and blank lines dropped; relative to the working
    directory). Before: 'neither a list of class names nor a registered
    dataset type'."""
    (tmp_path / 'classes.txt').write_text(
        '\ufeffdog \n\npotted plant\n', encoding='utf-8')
    monkeypatch.chdir(tmp_path)
    head = MODELS.build(
        head_cfg('DualCoOpHead', None, names='classes.txt'))
    assert head.classnames == ['dog', 'potted plant']
    assert head.pos_prompt.prompt_texts[1] == 'X X X X potted plant.'
    with pytest.raises(ValueError, match=r"nor an existing class file .* "
                       r'Fix: give the names, the dataset type or the path'):
        MODELS.build(head_cfg('BaselineHead', names='missing.txt'))


@pytest.mark.parametrize('names,match', [
    ('NoSuchDataset', 'neither a list'),
    ([], 'empty'),
    (['cat', 'cat'], 'duplicates'),
    # one prompt, one class for the datasets' class check
    (['hair_drier', 'Hair drier ', 'cat'],
     r"classnames has duplicates: \[\['hair_drier', 'Hair drier '\]\] "
     r"\(names equal up to "
     r"case, '_' and spaces\)"),
    (['cat', '  '], r"classnames\[1\] is '  ': each class needs a name"),
    (['cat', '_'], r"classnames\[1\] is '_'"),
    (['cat', 5], r'classnames\[1\] is 5: .*non-empty string'),
    (['cat', None], r'classnames\[1\] is None'),
    # no order: the classes came in another order in every process
    ({'cat', 'dog'}, r'classnames is a set, which has no order.*Fix: give '
     r'a list in class-index order'),
    (frozenset({'cat'}), r'classnames is a frozenset'),
])
def test_bad_classnames(names, match):
    with pytest.raises(ValueError, match=match):
        MODELS.build(head_cfg('BaselineHead', names=names))


@pytest.mark.parametrize('kw, match', [
    (dict(pos_templates=None), r"`pos_templates` must be a list of templates "
     r"such as \['a photo of a \{\}.'\], got None"),
    (dict(pos_templates=None, neg_templates=None), r'`pos_templates` must be'),
    (dict(neg_templates=7), r'`neg_templates` must be a list .*got 7'),
    (dict(pos_templates=['a photo of a {}.', 5]),
     r'`pos_templates\[1\]`: Prompt template 5 must be a string with '
     r'exactly one `\{\}` slot'),
    (dict(neg_templates=('no {} here {}', )),
     r'`neg_templates\[0\]`: Prompt template'),
    (dict(pos_templates=[]), r'`pos_templates` is empty'),
    # every class scored 0.5
    (dict(pos_templates=['a photo of a {}.', 'a {}.'],
          neg_templates=('a {}.', 'a photo of a {}.')),
     r'`neg_templates` are the `pos_templates`.*every class would score '
     r'0\.5.*Fix'),
])
def test_zero_shot_head_bad_templates(kw, match, tmp_path):
    """Refused by field (and index) before the text encoder is built (its
    weights file does not exist). Before: None or 7 failed with "object is
    not iterable", a bad template's error did not name the field."""
    cfg = head_cfg('ZeroShotHead', str(tmp_path / 'missing.pt'), **kw)
    with pytest.raises(ValueError, match=match):
        MODELS.build(cfg)


def test_zero_shot_prompts_that_do_not_fit_are_refused_at_build():
    """Before: at the first test batch."""
    with pytest.raises(ValueError, match=r"(?s)The prompt 'a photo of a "
                       r"very .*does not fit the text context length.*"
                       r'`pos_templates` / `neg_templates`'):
        MODELS.build(head_cfg('ZeroShotHead', pos_templates=[
            'a photo of a ' + 'very ' * 80 + '{}.']))


def test_neg_ctx_init_of_positivecoop_is_named_as_unused():
    """PositiveCoOp learns no negative prompt: its ``neg_ctx_init`` did
    nothing, silently."""
    with pytest.warns(UserWarning, match=r"PositiveCoOpHead: neg_ctx_init="
                      r"'a photo without a' has no effect"):
        MODELS.build(head_cfg('PositiveCoOpHead',
                              neg_ctx_init='a photo without a'))


@pytest.mark.parametrize('loss, why', [
    (dict(type='AsymmetricLoss'), 'AssertionError: pred and target should '
     'be in the same shape'),
    (dict(type='FocalLoss'), 'AssertionError'),
    (dict(type='CrossEntropyLoss', use_sigmoid=True),
     'AssertionError: (no message)'),
    (torch.nn.BCEWithLogitsLoss(), 'ValueError: Target size'),
])
def test_losses_of_another_kind_are_refused_at_build(loss, why):
    """mmpretrain's multi-label losses (found through the registry) and a
    BCE take (B, C) logits and 0/1 targets; before: built, then an
    AssertionError from inside them at the first training step."""
    import re
    name = type(MODELS.build(loss) if isinstance(loss, dict) else
                loss).__name__
    for head in ('BaselineHead', 'PositiveCoOpHead'):
        with pytest.raises(ValueError, match=re.escape(
                f'{head}: loss ({name}) does not take what the head gives '
                'it, (B, 2, C) logits') + '.*' + re.escape(why) +
                r".*Fix: loss=dict\(type='PartialAsymmetric"):
            MODELS.build(head_cfg(head, loss=loss))

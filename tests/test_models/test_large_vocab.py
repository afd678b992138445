# Copyright (c) mmcoop contributors. All rights reserved.
"""Large vocabularies: chunked text encoding equals the one-batch pass;
the per-step class subset gives the loss stated in its docstring."""
import math

import pytest
import torch
from _official_reference import TINY_RN
from mmpretrain.structures import DataSample

from mmcoop.models.heads.class_subset import (check_class_subset,
                                              sample_class_subset)
from mmcoop.registry import MODELS

NAMES = ['cat', 'traffic light', 'hair drier', 'dog', 'fire hydrant', 'cup']


def _head(head_type, clip_file, **kwargs):
    torch.manual_seed(0)
    return MODELS.build(
        dict(
            type=head_type,
            classnames=NAMES,
            n_ctx=4,
            text_encoder=dict(
                type='FrozenCLIPTextEncoder',
                model_name=TINY_RN,
                pretrained=clip_file),
            **kwargs))


@pytest.mark.parametrize('head_type', ['DualCoOpHead', 'PositiveCoOpHead'])
@pytest.mark.parametrize('chunk', [1, 4, 5])
def test_chunked_text_encoding_equals_one_batch(head_type, chunk,
                                                tiny_rn_file):
    # float64: the chunked pass is the same computation, so the results
    # agree to rounding (fp32 differs at the 1e-7 relative level: the
    # matrix kernels sum in another order for other batch sizes)
    head = _head(head_type, tiny_rn_file).double().train()
    prompt = head.pos_prompt
    out = {}
    for size in (None, chunk):
        head.text_encoder.text_chunk_size = size
        prompt.ctx.grad = None
        neg, pos = head.class_features()
        (neg.sin().sum() + pos.square().sum()).backward()
        out[size] = (neg.detach(), pos.detach(), prompt.ctx.grad.clone())
        with torch.no_grad():  # the evaluation path (no recomputation)
            out[size] += head.class_features()
    for full, chunked in zip(out[None], out[chunk]):
        torch.testing.assert_close(chunked, full, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('chunk', [None, 1, 4])
def test_prompt_ends_kept_on_the_host_truncate_as_the_tokens(
        chunk, tiny_rn_file):
    """The prompt learners keep their prompts' end positions on the CPU
    (``ends``), which the text encoder's truncation reads instead of the
    device tokens: the same length for every chunk, so the same features,
    bit for bit."""
    head = _head('DualCoOpHead', tiny_rn_file).eval()
    text = head.text_encoder
    text.text_chunk_size = chunk
    prompts = (head.neg_prompt, head.pos_prompt)
    for p in prompts:
        assert p.ends.device.type == 'cpu'
        assert torch.equal(p.ends, text.end_positions(p.tokens))
    with torch.no_grad():
        embeds = torch.cat([p(text.embed_tokens(p.tokens)) for p in prompts])
        tokens = torch.cat([p.tokens for p in prompts])
        assert torch.equal(head.encode_prompts(*prompts), text(embeds, tokens))
        # a length that is too short would change them: the ends are read
        short = torch.cat([p.ends for p in prompts]) - 1
        assert not torch.equal(text(embeds, tokens, short),
                               text(embeds, tokens))


@pytest.mark.parametrize('bad', [0, -3, 2.5, True])
def test_text_chunk_size_must_be_positive_int(bad):
    with pytest.raises(ValueError, match='text_chunk_size'):
        MODELS.build(
            dict(
                type='FrozenCLIPTextEncoder',
                model_name=TINY_RN,
                text_chunk_size=bad))


def test_sample_class_subset_cases():
    # known classes (a 1 or 0 somewhere in the batch): 1 and 3 of 6
    target = torch.tensor([[-1., 1., -1., -1., -1., -1.],
                           [-1., -1., -1., 0., -1., -1.]])
    seen = set()
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        index, scale = sample_class_subset(target, 4, generator=g)
        assert scale.dtype == torch.float32 and scale.dim() == 0
        assert float(scale) == 1.
        assert index.tolist() == sorted(set(index.tolist()))
        assert len(index) == 4 and {1, 3} <= set(index.tolist())
        seen |= set(index.tolist())
    assert seen == set(range(6))  # the fill draws from all the others
    index, scale = sample_class_subset(target, 4, fill=False)
    assert index.tolist() == [1, 3] and float(scale) == 1.
    # more known classes than K: K of them, loss scaled by n / K = 2
    picks = set()
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        for fill in (True, False):
            index, scale = sample_class_subset(target, 1, fill=fill,
                                               generator=g)
            assert float(scale) == 2. and len(index) == 1
            picks.add(int(index))
    assert picks == {1, 3}
    # C <= K: every class
    index, scale = sample_class_subset(target, 6)
    assert index.tolist() == list(range(6)) and float(scale) == 1.
    # no known class: K others, factor 1
    index, scale = sample_class_subset(torch.full((2, 6), -1.), 4)
    assert len(set(index.tolist())) == 4 and float(scale) == 1.
    index, scale = sample_class_subset(torch.full((2, 6), -1.), 4,
                                       fill=False)
    assert index.numel() == 0 and float(scale) == 1.


def _subset_frequencies(target, k, draws, seed=0):
    g = torch.Generator().manual_seed(seed)
    counts = {}
    for _ in range(draws):
        index, scale = sample_class_subset(target, k, generator=g)
        key = tuple(index.tolist())
        counts[key] = counts.get(key, 0) + 1
    return counts, float(scale)


@pytest.mark.parametrize('known, k, scale', [
    ((1, 3), 4, 1.),  # n <= K: both known, 2 of the 4 others
    ((0, 1, 2, 4, 5), 2, 2.5),  # n > K: 2 of the 5 known, factor 5 / 2
    ((), 3, 1.),  # no known class: 3 of the 6
])
def test_sample_class_subset_is_uniform(known, k, scale):
    """Every allowed K-subset is drawn with the same probability: all the
    known classes and a uniform draw of the others (n <= K), a uniform
    K-subset of the known classes (n > K); the frequencies of 6000 draws
    are within 5 standard deviations of uniform, and each subset has the
    factor ``max(n / K, 1)``."""
    from itertools import combinations
    target = torch.full((3, 6), -1.)
    for i, c in enumerate(known):
        target[i % 3, c] = float(i % 2)
    if len(known) > k:
        allowed = set(combinations(known, k))
    else:
        others = [c for c in range(6) if c not in known]
        allowed = {tuple(sorted(known + rest))
                   for rest in combinations(others, k - len(known))}
    draws = 6000
    counts, got_scale = _subset_frequencies(target, k, draws)
    assert got_scale == scale
    assert set(counts) == allowed
    p = 1 / len(allowed)
    sd = math.sqrt(p * (1 - p) / draws)
    for subset, count in counts.items():
        assert abs(count / draws - p) < 5 * sd, (subset, count / draws, p)


def test_sample_class_subset_draws_on_the_host():
    """The draw comes from the CPU generator (the global one by default),
    whatever the targets' device: a seed gives the same classes."""
    target = torch.full((2, 50), -1.)
    target[0, [3, 9, 27]] = 1.
    first = sample_class_subset(
        target, 10, generator=torch.Generator().manual_seed(5))[0]
    again = sample_class_subset(
        target.double(), 10, generator=torch.Generator().manual_seed(5))[0]
    assert torch.equal(first, again)
    torch.manual_seed(5)
    default = sample_class_subset(target, 10)[0]
    assert torch.equal(first, default)
    index, scale = sample_class_subset(target.to('meta'), 10)
    assert index.shape == (10, ) and index.device.type == 'meta'
    assert scale.shape == () and scale.device.type == 'meta'


@pytest.mark.parametrize('cfg', [8, dict(k=3), dict(num_classes=0),
                                 dict(num_classes=2, extra=1)])
def test_bad_class_subset(cfg):
    with pytest.raises(ValueError, match='class_subset'):
        check_class_subset(cfg)


def _samples(target):
    return [DataSample().set_gt_score(t) for t in target]


def _asl_by_hand(logits, target, classes):
    """Partial ASL (gamma+ 1, gamma- 2, clip 0.05, sum) over ``classes``,
    written out entry by entry."""
    total = 0.
    for b in range(target.shape[0]):
        for c in classes:
            y = float(target[b, c])
            if y == -1:
                continue
            neg, pos = float(logits[b, 0, c]), float(logits[b, 1, c])
            p = math.exp(pos) / (math.exp(pos) + math.exp(neg))
            if y == 1:
                total -= (1 - p) * math.log(p)
            else:
                q = min(1 - p + 0.05, 1.)
                total -= (1 - q)**2 * math.log(q)
    return total


@pytest.mark.parametrize('head_type', ['DualCoOpHead', 'PositiveCoOpHead'])
def test_class_subset_loss(head_type, tiny_rn_file):
    full = _head(head_type, tiny_rn_file).train()
    dense = torch.randn(2, 64, 10, generator=torch.Generator().manual_seed(1))
    # classes 0 and 4 known in the batch, everything else unknown
    target = torch.full((2, 6), -1.)
    target[0, 0], target[1, 0], target[1, 4] = 1., 0., 1.
    with torch.no_grad():
        logits = full((dense, ))
    loss_full = full.loss((dense, ), _samples(target))['loss']
    assert loss_full.item() == pytest.approx(
        _asl_by_hand(logits, target, range(6)), rel=1e-5)

    # n = 2 <= K = 3: exactly the full loss (and gradient)
    sub = _head(head_type, tiny_rn_file, class_subset=dict(num_classes=3))
    sub.load_state_dict(full.state_dict())
    sub.train()
    loss_sub = sub.loss((dense, ), _samples(target))['loss']
    assert float(loss_sub) == pytest.approx(float(loss_full), rel=1e-5)
    loss_full.backward()
    loss_sub.backward()
    g_sub, g_full = sub.pos_prompt.ctx.grad, full.pos_prompt.ctx.grad
    assert float((g_sub - g_full).norm() / g_full.norm()) < 1e-5

    # n = 2 > K = 1: one known class, its terms times n / K = 2
    one = _head(head_type, tiny_rn_file, class_subset=dict(num_classes=1))
    one.load_state_dict(full.state_dict())
    one.train()
    _check_one_known_class_drawn(one, dense, target, logits, (0, 4))
    # evaluation scores every class
    assert one.eval()((dense, )).shape == (2, 2, 6)


@pytest.mark.parametrize('head_type', ['DualCoOpHead', 'NegativeCoOpHead'])
def test_a_subset_step_encodes_at_the_full_length(head_type, tiny_rn_file,
                                                  monkeypatch):
    """The subset's prompts are truncated after the last end of all the
    classes' prompts, the length of the full pass (kept on the host: the
    device index is not read); exact, as the text transformer is causal.
    Here the subset is 'cat' and 'dog', whose own prompts end earlier
    (before: cut there, which needed the index on the host). Float64: the
    subset step's loss and gradients are the full step's, n <= K."""
    from mmcoop.models.backbones.frozen_clip import FrozenCLIPTextEncoder
    lengths = []
    transform = FrozenCLIPTextEncoder._transform

    def spy(self, prompts, tokens, attn_mask):
        lengths.append(prompts.shape[1])
        return transform(self, prompts, tokens, attn_mask)

    monkeypatch.setattr(FrozenCLIPTextEncoder, '_transform', spy)
    full = _head(head_type, tiny_rn_file).double().train()
    sub = _head(head_type, tiny_rn_file,
                class_subset=dict(num_classes=2)).double().train()
    sub.load_state_dict(full.state_dict())
    dense = torch.randn(2, 64, 10, generator=torch.Generator().manual_seed(3),
                        dtype=torch.float64)
    target = torch.full((2, 6), -1., dtype=torch.float64)
    target[0, 0], target[1, 0], target[1, 3] = 1., 0., 1.  # cat, dog
    prompt = 'neg_prompt' if head_type == 'NegativeCoOpHead' else \
        'pos_prompt'
    out = []
    for head in (full, sub):
        loss = head.loss((dense, ), _samples(target))['loss']
        loss.backward()
        out.append((loss.detach(), head.get_parameter(f'{prompt}.ctx').grad))
    length = int(full.get_submodule(prompt).ends.max()) + 1
    assert length > int(full.get_submodule(prompt).ends[[0, 3]].max()) + 1
    assert lengths == [length, length]
    for a, b in zip(*out):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)


def _check_one_known_class_drawn(one, dense, target, logits, known):
    """A head with ``class_subset=dict(num_classes=1)`` and n = 2 known
    classes: every loss is one known class's hand-computed terms times
    n / K = 2, and over 8 draws both classes are drawn."""
    by_class = {c: 2 * _asl_by_hand(logits, target, [c]) for c in known}
    got = set()
    for seed in range(8):
        torch.manual_seed(seed)
        value = float(one.loss((dense, ), _samples(target))['loss'])
        match = [c for c, v in by_class.items()
                 if value == pytest.approx(v, rel=1e-4)]
        assert len(match) == 1, (value, by_class)
        got.add(match[0])
    assert got == set(known)


@pytest.mark.parametrize('head_type',
                         ['NegativeCoOpHead', 'PositiveCoOpHead',
                          'DualCoOpHead'])
def test_subset_class_features_are_the_rows_of_the_full_ones(
        head_type, tiny_rn_file):
    """``class_features(index)`` (only K prompts encoded, the learned rows
    of those K classes) equals rows ``index`` of the full ``(C, D)``
    features, for every prompt head, residuals and embeddings included;
    float64, as the batch size changes the order of the sums."""
    head = _head(head_type, tiny_rn_file).double().train()
    index = torch.tensor([4, 0, 5])
    with torch.no_grad():
        full = head.class_features()
        sub = head.class_features(index)
    for f, s in zip(full, sub):
        assert s.shape == (3, f.shape[1])
        torch.testing.assert_close(s, f[index], rtol=1e-12, atol=1e-12)


def test_negative_coop_class_subset_loss(tiny_rn_file):
    """NegativeCoOp (the learned prompt on the absence side, a residual on
    it, the presence embedding learned): with n <= K the subset's loss and
    gradients are the full ones; with n > K one class's hand-computed terms
    times n / K; with reduction='mean' the mean over the subset's known
    entries (no factor)."""
    full = _head('NegativeCoOpHead', tiny_rn_file).train()
    dense = torch.randn(2, 64, 10, generator=torch.Generator().manual_seed(2))
    target = torch.full((2, 6), -1.)
    target[0, 1], target[1, 1], target[0, 3] = 0., 1., 1.
    with torch.no_grad():
        logits = full((dense, ))
    loss_full = full.loss((dense, ), _samples(target))['loss']
    assert loss_full.item() == pytest.approx(
        _asl_by_hand(logits, target, range(6)), rel=1e-5)
    loss_full.backward()

    sub = _head('NegativeCoOpHead', tiny_rn_file,
                class_subset=dict(num_classes=4))
    sub.load_state_dict(full.state_dict())
    sub.train()
    loss_sub = sub.loss((dense, ), _samples(target))['loss']
    assert loss_sub.item() == pytest.approx(loss_full.item(), rel=1e-5)
    loss_sub.backward()
    for name in ('neg_prompt.ctx', 'neg_residual', 'pos_embedding'):
        g_sub = sub.get_parameter(name).grad
        g_full = full.get_parameter(name).grad
        assert float((g_sub - g_full).norm() / g_full.norm()) < 1e-5, name

    one = _head('NegativeCoOpHead', tiny_rn_file,
                class_subset=dict(num_classes=1))
    one.load_state_dict(full.state_dict())
    one.train()
    _check_one_known_class_drawn(one, dense, target, logits, (1, 3))

    mean = _head('NegativeCoOpHead', tiny_rn_file,
                 class_subset=dict(num_classes=1),
                 loss=dict(type='PartialAsymmetricLoss', reduction='mean'))
    mean.load_state_dict(full.state_dict())
    mean.train()
    known = {c: int((target[:, c] != -1).sum()) for c in (1, 3)}
    by_class = {c: _asl_by_hand(logits, target, [c]) / known[c]
                for c in (1, 3)}
    got = set()
    for seed in range(8):
        torch.manual_seed(seed)
        value = float(mean.loss((dense, ), _samples(target))['loss'])
        match = [c for c, v in by_class.items()
                 if value == pytest.approx(v, rel=1e-4)]
        assert len(match) == 1, (value, by_class)
        got.add(match[0])
    assert got == {1, 3}

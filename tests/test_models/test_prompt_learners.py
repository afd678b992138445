# Copyright (c) mmcoop contributors. All rights reserved.
"""PromptLearner: token layout, CSC vs shared contexts, initialisation."""
import re

import pytest
import torch
from _official_reference import TINY_RN

from mmcoop.models.backbones import FrozenCLIPTextEncoder
from mmcoop.models.prompt_learners import PromptLearner

SOT, EOT = 49406, 49407
X = 343  # BPE id of 'x</w>' (the tokenizer lower-cases 'X')
DOT = 269  # '.</w>'


@pytest.fixture(scope='module')
def text_encoder(tiny_rn_file):
    return FrozenCLIPTextEncoder(TINY_RN, pretrained=tiny_rn_file)


def _bpe(text_encoder, text):
    """BPE ids of ``text`` without SOT / EOT."""
    ids = text_encoder.tokenize([text])[0].tolist()
    return ids[1:ids.index(EOT)]


def test_token_layout(text_encoder):
    """[SOS] ctx x n [class tokens] '.' [EOS] 0 ... (official
    ``MLCPromptLearner``: ``"X X ... X {name}."``)."""
    names = ['cat', 'traffic_light', 'hair drier']
    learner = PromptLearner(names, text_encoder, n_ctx=4)
    assert learner.prompt_texts == [
        'X X X X cat.', 'X X X X traffic light.', 'X X X X hair drier.'
    ]
    for row, name in zip(learner.tokens.tolist(),
                         ['cat', 'traffic light', 'hair drier']):
        cls = _bpe(text_encoder, name)
        expected = [SOT] + [X] * 4 + cls + [DOT, EOT]
        assert row[:len(expected)] == expected
        assert set(row[len(expected):]) == {0}
        assert len(row) == 77
    # two-token names use more positions
    assert len(_bpe(text_encoder, 'traffic light')) == 2


def _prompts(learner, text_encoder):
    return learner(text_encoder.embed_tokens(learner.tokens))


def test_prompt_embeddings_splice_context(text_encoder):
    learner = PromptLearner(['cat', 'dog'], text_encoder, n_ctx=3)
    prompts = _prompts(learner, text_encoder)
    assert prompts.shape == (2, 77, 64)
    table = text_encoder.token_embedding.weight
    tokens = learner.tokens
    torch.testing.assert_close(prompts[:, 0], table[tokens[:, 0]])
    torch.testing.assert_close(prompts[:, 1:4], learner.ctx)
    torch.testing.assert_close(prompts[:, 4:], table[tokens[:, 4:]])


def test_class_specific_context(text_encoder):
    learner = PromptLearner(['a', 'b', 'c'],
                            text_encoder,
                            n_ctx=5,
                            class_specific=True)
    assert learner.ctx.shape == (3, 5, 64)
    prompts = _prompts(learner, text_encoder)
    prompts[1, 1:6].sum().backward()
    grad = learner.ctx.grad
    assert grad[1].abs().sum() > 0
    assert grad[0].abs().sum() == 0 and grad[2].abs().sum() == 0


def test_shared_context(text_encoder):
    learner = PromptLearner(['a', 'b', 'c'],
                            text_encoder,
                            n_ctx=5,
                            class_specific=False)
    assert learner.ctx.shape == (5, 64)
    prompts = _prompts(learner, text_encoder)
    for c in range(3):
        torch.testing.assert_close(prompts[c, 1:6], learner.ctx)
    prompts[:, 1:6].sum().backward()
    # every class contributes to the one shared context
    torch.testing.assert_close(learner.ctx.grad,
                               torch.full_like(learner.ctx, 3.))


def test_random_init_std(text_encoder):
    torch.manual_seed(0)
    learner = PromptLearner([f'c{i}' for i in range(20)],
                            text_encoder,
                            n_ctx=16)
    assert learner.ctx.shape == (20, 16, 64)
    assert abs(learner.ctx.std().item() - 0.02) < 0.002
    assert abs(learner.ctx.mean().item()) < 0.002
    torch.manual_seed(0)
    other = PromptLearner(['x'], text_encoder, n_ctx=2, init_std=0.5)
    assert other.ctx.std().item() > 0.1


@pytest.mark.parametrize('csc', [True, False])
def test_ctx_init_words(text_encoder, csc, mm_log):
    learner = PromptLearner(['cat', 'dog'],
                            text_encoder,
                            n_ctx=16,
                            class_specific=csc,
                            ctx_init='a_photo of a')
    # as the official code: n_ctx = number of words; the unused n_ctx is
    # named in the log (the trainable-parameter count follows the words)
    assert learner.n_ctx == 4
    assert ("ctx_init='a photo of a' sets the context to its 4 token(s); "
            'n_ctx=16 is not used') in mm_log.getvalue()
    assert learner.prompt_texts == ['a photo of a cat.', 'a photo of a dog.']
    words = text_encoder.tokenize(['a photo of a'])[0, 1:5]
    expected = text_encoder.token_embedding.weight[words]
    if csc:
        assert learner.ctx.shape == (2, 4, 64)
        for c in range(2):
            torch.testing.assert_close(learner.ctx[c], expected)
    else:
        assert learner.ctx.shape == (4, 64)
        torch.testing.assert_close(learner.ctx, expected)
    # the prompt equals the plain token embeddings of the full sentence
    prompts = _prompts(learner, text_encoder)
    table = text_encoder.token_embedding.weight
    torch.testing.assert_close(prompts, table[learner.tokens])
    assert learner.ctx.requires_grad


def test_buffers_not_saved(text_encoder):
    learner = PromptLearner(['cat'], text_encoder, n_ctx=2)
    assert list(learner.state_dict()) == ['ctx']
    assert [n for n, _ in learner.named_parameters()] == ['ctx']


def test_prompt_too_long(text_encoder):
    """A prompt the tokenizer would cut short is refused naming the prompt,
    the context length and the fix; so is a ctx_init that does not fit."""
    long_name = ' '.join(['word'] * 70)
    with pytest.raises(ValueError, match=r"The prompt 'X X .*word.*' does "
                       r'not fit the text context length .*\(77 tokens\).*'
                       r'shorten the class name.*n_ctx=16'):
        PromptLearner(['cat', long_name], text_encoder, n_ctx=16)
    with pytest.raises(ValueError, match=r"The prompt 'a a a .*' does not "
                       r'fit .*fewer words in `ctx_init`'):
        PromptLearner(['cat'], text_encoder, ctx_init=' '.join(['a'] * 80))
    # one token short of the limit still fits: 1 + 16 + 57 + 1 + 1 = 76
    fits = PromptLearner([' '.join(['word'] * 57)], text_encoder, n_ctx=16)
    assert int(fits.tokens[0].argmax()) == 75


@pytest.mark.parametrize('ctx_init,match', [
    ('   ', r"ctx_init='   ' has no words"),
    ('_', r"ctx_init='_' has no words"),
    (5, r'ctx_init must be a string of words .*got 5 \(int\)'),
    (['a', 'photo'], r'ctx_init must be a string of words'),
    ('\x00', r"ctx_init='\\x00' gives no tokens .*Fix: use words"),
])
def test_bad_ctx_init_is_refused(text_encoder, ctx_init, match):
    with pytest.raises(ValueError, match=match):
        PromptLearner(['cat'], text_encoder, n_ctx=4, ctx_init=ctx_init)
    # None and '' mean a random context (the official default '')
    for no_words in (None, ''):
        assert PromptLearner(['cat'], text_encoder, n_ctx=3,
                             ctx_init=no_words).n_ctx == 3


@pytest.mark.parametrize('n_ctx', [0, -2, 2.0, True, None])
def test_bad_n_ctx_is_refused(text_encoder, n_ctx):
    """No learned context (or a negative, float, bool count) stops the
    build naming the field and the fix; ``ctx_init`` sets the count."""
    with pytest.raises(ValueError, match=r'n_ctx must be a positive int.*'
                       r'got ' + re.escape(repr(n_ctx)) + r'.*ctx_init'):
        PromptLearner(['dog', 'cat'], text_encoder, n_ctx=n_ctx)
    learner = PromptLearner(['dog', 'cat'], text_encoder, n_ctx=n_ctx,
                            ctx_init='a photo of a')
    assert learner.n_ctx == 4


def test_token_embeddings_follow_the_loaded_weights(text_encoder):
    """Prefix/suffix come from the table passed in at call time, not from a
    copy taken at construction."""
    learner = PromptLearner(['cat'], text_encoder, n_ctx=2)
    embeds = torch.randn(1, 77, 64)
    prompts = learner(embeds)
    torch.testing.assert_close(prompts[:, :1], embeds[:, :1])
    torch.testing.assert_close(prompts[:, 3:], embeds[:, 3:])


def test_context_follows_the_embedding_dtype(text_encoder):
    learner = PromptLearner(['cat'], text_encoder, n_ctx=2)
    embeds = text_encoder.embed_tokens(learner.tokens).double()
    embeds = embeds + 1e-12 * torch.randn_like(embeds)  # not float32 values
    out = learner(embeds)
    assert out.dtype == torch.float64
    # the fixed tokens pass through in float64 (no float32 round trip),
    # the context is the learned one, widened
    assert torch.equal(out[:, :1], embeds[:, :1])
    assert torch.equal(out[:, 3:], embeds[:, 3:])
    ctx = out[:, 1:3]
    assert torch.equal(ctx, learner.ctx.detach().double().expand_as(ctx))

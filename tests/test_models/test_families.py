# Copyright (c) mmcoop contributors. All rights reserved.
"""CLIP families beyond RN101: widths, ViT dense modes, text pooling."""
import json
import sys

import open_clip
import pytest
import torch
import torch.nn.functional as F

from mmcoop.models.backbones import FrozenCLIP, FrozenCLIPTextEncoder
from mmcoop.registry import MODELS

WIDE = 'mmcoop-tiny-ViT-wide'  # joint width 48, text width 40, vision 32
NAMES = ['cat', 'traffic light', 'hair_drier']


def _head(head_type, **kwargs):
    cfg = dict(type=head_type, classnames=NAMES, **kwargs)
    if head_type != 'BaselineHead':
        cfg.update(
            n_ctx=3,
            text_encoder=dict(type='FrozenCLIPTextEncoder', model_name=WIDE))
    return MODELS.build(cfg)


# --------------------------------------------------------------------------
# widths come from the towers
# --------------------------------------------------------------------------
def _self_only_mask(n):
    """An attention mask letting each of ``n`` tokens attend to itself."""
    return torch.full((n, n), float('-inf')).fill_diagonal_(0)


def _open_clip_self_only_branch(visual, x):
    """The attention branch of an open_clip ViT's last block, each token
    attending only to itself (the reference of the value mode)."""
    h = visual._embeds(x)
    for block in visual.transformer.resblocks[:-1]:
        h = block(h)
    last = visual.transformer.resblocks[-1]
    y = last.ln_1(h)
    return last.attn(y, y, y, attn_mask=_self_only_mask(h.shape[1]),
                     need_weights=False)[0]


def _timm_self_only_branch(trunk, x):
    """The attention branch of a timm trunk's last block on the tokens that
    enter it, each token attending only to itself."""
    (inputs, ) = trunk.forward_intermediates(
        x, indices=[len(trunk.blocks) - 2], output_fmt='NLC',
        intermediates_only=True)
    last = trunk.blocks[-1]
    return last.attn(last.norm1(inputs),
                     attn_mask=_self_only_mask(inputs.shape[1]))


def _each_token_through_head(trunk, head, tokens):
    """(B, D, N): every token of ``tokens`` (B, N, W) pooled on its own by
    the timm trunk's head and the CLIP head (the token repeated to the
    length the trunk's pooling takes, its prefix tokens included)."""
    n = tokens.shape[1]
    length = trunk.num_prefix_tokens + n
    return torch.stack([
        head(trunk.forward_head(tokens[:, i:i + 1].expand(-1, length, -1)))
        for i in range(n)
    ], dim=2)


def _timm_dense_reference(clip, x, mode):
    """(B, D, 1 + N) of a timm-tower CLIP: ``encode_image``, then every
    patch token (the final ones, or in the value mode the last block's
    self-only attention branch and the final norm) pooled on its own."""
    trunk, head = clip.visual.trunk, clip.visual.head
    with torch.no_grad():
        if mode == 'value':
            tokens = trunk.norm(_timm_self_only_branch(trunk, x))
        else:
            tokens = trunk.forward_features(x)[:, trunk.num_prefix_tokens:]
        return torch.cat([
            clip.encode_image(x)[:, :, None],
            _each_token_through_head(trunk, head, tokens)
        ], 2)


def test_widths_come_from_the_towers():
    backbone = FrozenCLIP(WIDE, input_resolution=64)
    enc = FrozenCLIPTextEncoder(WIDE)
    assert (backbone.embed_dim, enc.width, enc.embed_dim) == (48, 40, 48)
    (dense, ) = backbone(torch.randn(2, 3, 64, 64))
    assert dense.shape == (2, 48, 17)
    pos = _head('PositiveCoOpHead')
    assert pos.pos_prompt.ctx.shape == (3, 3, 40)  # text width
    assert pos.neg_embedding.shape == (3, 48)  # joint width
    assert pos.pos_residual.shape == (3, 48)
    neg = _head('NegativeCoOpHead')
    assert neg.neg_prompt.ctx.shape == (3, 3, 40)
    assert neg.pos_embedding.shape == (3, 48)
    dual = _head('DualCoOpHead')
    assert dual.pos_prompt.ctx.shape == dual.neg_prompt.ctx.shape == (3, 3,
                                                                      40)
    base = _head('BaselineHead', in_channels=backbone.embed_dim)
    assert base.fc.weight.shape == (6, 48)
    for head in (pos, neg, dual, base):
        logits = head((dense, ))
        assert logits.shape == (2, 2, 3)
        assert torch.isfinite(logits).all()


@pytest.mark.parametrize('head_type', ['PositiveCoOpHead', 'BaselineHead'])
def test_width_mismatch_is_a_clear_error(head_type):
    kwargs = dict(in_channels=512) if head_type == 'BaselineHead' else {}
    head = _head(head_type, **kwargs)
    with pytest.raises(ValueError, match=r'expects \(B, (512|48), N\).*'
                       r'got \(2, 64, 5\).*model_name'):
        head((torch.randn(2, 64, 5), ))


# --------------------------------------------------------------------------
# ViT dense modes
# --------------------------------------------------------------------------
def _clip(model_name, seed=0):
    from mmcoop.models.backbones import build_open_clip
    return build_open_clip(model_name, init_seed=seed)


@pytest.mark.parametrize('mode', [None, 'tokens'])
def test_vit_tokens_mode_class_token_is_encode_image(mode):
    backbone = FrozenCLIP(WIDE, input_resolution=64, dense_mode=mode)
    assert backbone.dense_mode == 'tokens'
    x = torch.randn(2, 3, 64, 64)
    (dense, ) = backbone(x)
    with torch.no_grad():
        expected = _clip(WIDE).encode_image(x)
    torch.testing.assert_close(dense[:, :, 0], expected, rtol=1e-5, atol=1e-5)


def test_vit_value_mode_is_self_attention_of_the_last_block():
    """The value path equals the last block's attention branch with every
    token attending only to itself (a diagonal mask on the real
    ``nn.MultiheadAttention``), then ``ln_post`` and ``proj``."""
    backbone = FrozenCLIP(WIDE, input_resolution=64, dense_mode='value')
    clip = _clip(WIDE)
    x = torch.randn(2, 3, 64, 64)
    (dense, ) = backbone(x)
    visual = clip.visual
    with torch.no_grad():
        branch = _open_clip_self_only_branch(visual, x)
        n = branch.shape[1]
        expected = visual.ln_post(branch) @ visual.proj
    assert dense.shape == (2, 48, n)
    torch.testing.assert_close(
        dense, expected.transpose(1, 2), rtol=1e-5, atol=1e-5)
    # and it is not the tokens mode
    (tokens, ) = FrozenCLIP(WIDE, input_resolution=64)(x)
    assert not torch.allclose(tokens, dense, atol=1e-3)


def test_dense_mode_must_fit_the_architecture():
    with pytest.raises(ValueError, match="dense_mode='tokens'.*resnet"):
        FrozenCLIP('mmcoop-tiny-RN', input_resolution=64, dense_mode='tokens')
    with pytest.raises(ValueError, match="dense_mode='values'"):
        FrozenCLIP(WIDE, input_resolution=64, dense_mode='values')
    assert FrozenCLIP(
        'mmcoop-tiny-RN', input_resolution=64).dense_mode == 'value'


# --------------------------------------------------------------------------
# families: tiny random instances of each architecture
# --------------------------------------------------------------------------
# name -> input resolution (a multiple of the patch size / stride)
FAMILIES = {
    'mmcoop-tiny-RN': 64,  # OpenAI ResNet: attention-pool value path
    WIDE: 64,  # OpenAI / LAION / DataComp / MetaCLIP ViT
    'mmcoop-tiny-MAP': 64,  # SigLIP: timm ViT, map head, 'last' text pool
    'mmcoop-tiny-MAP2': 64,  # SigLIP2: the same with GELU-tanh text MLP
    'mmcoop-tiny-EVA02': 56,  # EVA02-CLIP: timm Eva tower (patch 14)
    'mmcoop-tiny-ConvNeXt': 64,  # ConvNeXt CLIP: timm ConvNeXt tower
}
TIMM = ['mmcoop-tiny-MAP', 'mmcoop-tiny-MAP2', 'mmcoop-tiny-EVA02',
        'mmcoop-tiny-ConvNeXt']

# The real SigLIP tokenizers: open_clip's HFTokenizer (``text_cfg.
# hf_tokenizer_name``, ``clean: canonicalize``) over a sentencepiece vocab,
# with no start token and an end token appended. The real ones are a
# download, and HFTokenizer loads them with `transformers`, which cannot be
# installed next to mmpretrain 1.2 (docs/backbones.md). Here a small one is
# built with the `tokenizers` library and called as HFTokenizer calls it.
SIGLIP_T5 = 'mmcoop-test-MAP-t5tok'  # SigLIP: T5 vocab, pad = eos = 1
SIGLIP_GEMMA = 'mmcoop-test-MAP2-gemmatok'  # SigLIP2: Gemma, pad 0, eos 1
SIGLIP_SPLIT = 'mmcoop-test-MAP-splitx'  # no '▁x' piece: 'x' splits
HF_FAMILIES = {SIGLIP_T5: 64, SIGLIP_GEMMA: 64}
# the words the tests write; their ids follow the special tokens in order
WORDS = ['a', 'b', 'x', 'photo', 'of', 'dog', 'cat', 'traffic', 'light',
         'hair', 'drier', 'picture', 'the', 'without']
# special tokens (ids 0, 1, ...) and the padding one
SPECIAL = {SIGLIP_T5: (['<pad>', '</s>', '<unk>'], '</s>'),
           SIGLIP_GEMMA: (['<pad>', '<eos>', '<bos>', '<unk>'], '<pad>'),
           SIGLIP_SPLIT: (['<pad>', '</s>', '<unk>'], '</s>')}
# the text_cfg keys of open_clip's ViT-B-16-SigLIP.json / -SigLIP2.json
# (which set no pad_id), with tiny widths
SIGLIP_TEXT_CFG = dict(
    context_length=64, width=64, heads=2, layers=2, no_causal_mask=True,
    proj_bias=True, pool_type='last', norm_kwargs=dict(eps=1e-6),
    tokenizer_kwargs=dict(clean='canonicalize'))


def _hf_vocab(name):
    """``[(piece, score)]``: special tokens, '▁word' for ``WORDS``
    (without '▁x' for ``SIGLIP_SPLIT``), '▁', single letters."""
    words = [w for w in WORDS if name != SIGLIP_SPLIT or w != 'x']
    return ([(s, 0.) for s in SPECIAL[name][0]] +
            [('▁' + w, -1.) for w in words] + [('▁', -3.)] +
            [(c, -5.) for c in 'abcdefghijklmnopqrstuvwxyz'])


def _save_hf_tokenizer(name, path):
    """A SigLIP-style ``tokenizer.json``: Unigram pieces, Metaspace
    pre-tokenizer, the end token (id 1) appended, no start token."""
    from tokenizers import (Tokenizer, decoders, models, pre_tokenizers,
                            processors)
    special = SPECIAL[name][0]
    tok = Tokenizer(models.Unigram(_hf_vocab(name), unk_id=len(special) - 1))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(
        single=f'$A {special[1]}', special_tokens=[(special[1], 1)])
    tok.save(str(path))


class _HFStyleTokenizer:
    """``open_clip.tokenizer.HFTokenizer.__call__`` on the ``tokenizers``
    file of a folder: clean, encode, truncate and pad to the context
    length. ``N`` strings -> ``(N, L)`` ids."""

    def __init__(self, folder, context_length, clean, pad):
        from open_clip.tokenizer import get_clean_fn
        from tokenizers import Tokenizer
        self.clean = get_clean_fn(clean)
        self.tok = Tokenizer.from_file(f'{folder}/tokenizer.json')
        self.tok.enable_truncation(context_length)
        self.tok.enable_padding(
            pad_id=self.tok.token_to_id(pad), pad_token=pad,
            length=context_length)

    @classmethod
    def of(cls, name):
        """The tokenizer the model config ``name`` names, as open_clip's
        ``get_tokenizer`` builds it."""
        text_cfg = open_clip.get_model_config(name)['text_cfg']
        return cls(text_cfg['hf_tokenizer_name'], text_cfg['context_length'],
                   text_cfg['tokenizer_kwargs']['clean'], SPECIAL[name][1])

    def __call__(self, texts):
        texts = [texts] if isinstance(texts, str) else texts
        encoded = self.tok.encode_batch([self.clean(t) for t in texts])
        return torch.tensor([e.ids for e in encoded])


@pytest.fixture(scope='session')
def hf_tokenizer_models(tmp_path_factory):
    """Register the tiny SigLIP / SigLIP2-layout models (``HF_FAMILIES``,
    ``SIGLIP_SPLIT``) whose text_cfg names a local tokenizer, and have
    ``open_clip.get_tokenizer`` give their ``_HFStyleTokenizer``."""
    root = tmp_path_factory.mktemp('hf_tokenizers')
    for name in SPECIAL:
        (root / name).mkdir()
        _save_hf_tokenizer(name, root / name / 'tokenizer.json')
        text_cfg = dict(SIGLIP_TEXT_CFG, vocab_size=len(_hf_vocab(name)),
                        hf_tokenizer_name=str(root / name))
        if name == SIGLIP_GEMMA:  # SigLIP2's text MLP
            text_cfg['act_kwargs'] = dict(approximate='tanh')
        cfg = dict(embed_dim=192, init_logit_bias=-10, custom_text=True,
                   vision_cfg=dict(image_size=64,
                                   timm_model_name='vit_tiny_patch16_224',
                                   timm_model_pretrained=False,
                                   timm_pool='map', timm_proj='none'),
                   text_cfg=text_cfg)
        (root / f'{name}.json').write_text(json.dumps(cfg))
        open_clip.add_model_config(root / f'{name}.json')
    get_tokenizer = open_clip.get_tokenizer
    patch = pytest.MonkeyPatch()
    patch.setattr(
        open_clip, 'get_tokenizer', lambda name, *args, **kwargs:
        _HFStyleTokenizer.of(name) if name in SPECIAL else get_tokenizer(
            name, *args, **kwargs))
    yield root
    patch.undo()


FAMILIES.update(HF_FAMILIES)
# bidirectional text towers pooled at the last position (truncation off)
SIGLIP_TEXT = ('mmcoop-tiny-MAP', 'mmcoop-tiny-MAP2', *HF_FAMILIES)


@pytest.fixture(scope='module')
def family(request):
    """name -> (FrozenCLIP, FrozenCLIPTextEncoder, the plain open_clip
    model at the same input size), built once."""
    built = {}

    def get(name):
        if name not in built:
            size = FAMILIES[name]
            if name in HF_FAMILIES:
                request.getfixturevalue('hf_tokenizer_models')
            clip = _clip(name)
            trunk = getattr(clip.visual, 'trunk', None)
            if hasattr(trunk, 'set_input_size'):  # timm's public API
                trunk.set_input_size(img_size=size)
            built[name] = (FrozenCLIP(name, input_resolution=size),
                           FrozenCLIPTextEncoder(name), clip.eval())
        return built[name]

    return get


@pytest.mark.parametrize('name', TIMM)
def test_timm_dense_position_0_is_encode_image(name, family):
    backbone, _, clip = family(name)
    size = FAMILIES[name]
    x = torch.randn(2, 3, size, size)
    (dense, ) = backbone(x)
    grid = size // (32 if 'ConvNeXt' in name else
                    clip.visual.trunk.patch_embed.patch_size[0])
    assert dense.shape == (2, backbone.embed_dim, 1 + grid * grid)
    assert backbone.num_positions == 1 + grid * grid
    with torch.no_grad():
        expected = clip.encode_image(x)
    torch.testing.assert_close(dense[:, :, 0], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('name', TIMM)
def test_timm_dense_tokens_are_the_pooling_head_on_one_token(name, family):
    """Every later position is the tower's own pooling head (timm's
    ``forward_head``: map attention pool, class-token pick or average pool)
    run on a sequence / map whose every entry is that one token."""
    backbone, _, clip = family(name)
    size = FAMILIES[name]
    x = torch.randn(1, 3, size, size)
    (dense, ) = backbone(x)
    trunk, head = clip.visual.trunk, clip.visual.head
    with torch.no_grad():
        feats = trunk.forward_features(x)
        if feats.dim() == 4:  # ConvNeXt (B, C, H, W): one cell everywhere
            cells = [feats[:, :, i:i + 1, j:j + 1].expand_as(feats)
                     for i in range(feats.shape[2])
                     for j in range(feats.shape[3])]
        else:  # ViT (B, prefix + HW, C): one patch token everywhere
            cells = [feats[:, i:i + 1].expand_as(feats)
                     for i in range(trunk.num_prefix_tokens, feats.shape[1])]
        expected = torch.stack(
            [head(trunk.forward_head(c)) for c in cells], dim=2)
    assert expected.shape[2] == dense.shape[2] - 1
    torch.testing.assert_close(dense[:, :, 1:], expected, rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize('name, size', [('mmcoop-tiny-MAP', 96),
                                        ('mmcoop-tiny-EVA02', 84),
                                        ('mmcoop-tiny-ConvNeXt', 96)])
def test_timm_towers_above_their_native_size(name, size):
    """At an input size above the config's (the paper's 448 px on 224-px
    towers): position 0 is ``encode_image`` of the tower resized by timm's
    own ``set_input_size`` (position and rotary embeddings), and every
    later position the pooling head on that token alone, in both dense
    modes where the tower has them."""
    clip = _clip(name).eval()
    trunk, head = clip.visual.trunk, clip.visual.head
    if hasattr(trunk, 'set_input_size'):
        trunk.set_input_size(img_size=size)
    x = torch.randn(1, 3, size, size,
                    generator=torch.Generator().manual_seed(10))
    modes = ['tokens'] if 'ConvNeXt' in name else ['tokens', 'value']
    for mode in modes:
        backbone = FrozenCLIP(name, input_resolution=size, dense_mode=mode)
        (dense, ) = backbone(x)
        with torch.no_grad():
            pooled = clip.encode_image(x)
            if 'ConvNeXt' in name:
                feats = trunk.forward_features(x)
                cells = [feats[:, :, i:i + 1, j:j + 1].expand_as(feats)
                         for i in range(feats.shape[2])
                         for j in range(feats.shape[3])]
            else:
                if mode == 'value':
                    tokens = trunk.norm(_timm_self_only_branch(trunk, x))
                else:
                    tokens = trunk.forward_features(
                        x)[:, trunk.num_prefix_tokens:]
                length = trunk.num_prefix_tokens + tokens.shape[1]
                cells = [tokens[:, i:i + 1].expand(-1, length, -1)
                         for i in range(tokens.shape[1])]
            expected = torch.stack(
                [head(trunk.forward_head(c)) for c in cells], dim=2)
            expected = torch.cat([pooled[:, :, None], expected], dim=2)
        grid = size // (32 if 'ConvNeXt' in name else
                        trunk.patch_embed.patch_size[0])
        assert dense.shape == (1, backbone.embed_dim, 1 + grid * grid)
        scale = expected.abs().max()
        torch.testing.assert_close(
            dense / scale, expected / scale, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('name', list(FAMILIES))
def test_text_path_equals_encode_text(name, family):
    _, enc, clip = family(name)
    texts = ['a photo of a dog.', 'X X X X hair drier.', 'a cat']
    with torch.no_grad():
        expected = clip.encode_text(enc.tokenize(texts))
        out = enc.encode_texts(texts)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('name', list(FAMILIES))
def test_ctx_init_prompts_equal_the_written_prompt(name, family):
    """Context initialised from words: before training, each learned
    prompt is exactly the hand-written prompt through ``encode_text``."""
    from mmcoop.models.prompt_learners import PromptLearner
    _, enc, clip = family(name)
    learner = PromptLearner(NAMES, enc, ctx_init='a photo of a')
    assert learner.n_ctx == 4
    with torch.no_grad():
        out = enc(learner(enc.embed_tokens(learner.tokens)), learner.tokens)
        expected = clip.encode_text(enc.tokenize(
            [f'a photo of a {n.replace("_", " ")}.' for n in NAMES]))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('name', list(FAMILIES))
def test_truncation_exact_where_enabled_off_where_not(name, family):
    _, enc, _ = family(name)
    tokens = enc.tokenize(['a photo of a dog.', 'traffic light'])
    embeds = enc.embed_tokens(tokens)
    causal_eot = enc.attn_mask is not None and enc.pool_type in ('argmax',
                                                                 'eos')
    assert enc.truncate == causal_eot
    assert causal_eot == (name not in SIGLIP_TEXT)
    full = FrozenCLIPTextEncoder(name, truncate=False)
    with torch.no_grad():
        reference = full(embeds, tokens)
        cut = enc(embeds, tokens)
        enc.truncate, saved = True, enc.truncate  # force it
        try:
            forced = enc(embeds, tokens)
        finally:
            enc.truncate = saved
    torch.testing.assert_close(cut, reference, rtol=1e-5, atol=1e-5)
    if causal_eot:
        torch.testing.assert_close(forced, reference, rtol=1e-5, atol=1e-5)
    else:  # bidirectional, 'last' pooling: cutting the context changes it
        assert not torch.allclose(forced, reference, atol=1e-3)


# --------------------------------------------------------------------------
# zero-shot starting point
# --------------------------------------------------------------------------
def _text_cfg(name):
    return dict(type='FrozenCLIPTextEncoder', model_name=name)


@pytest.mark.parametrize('name', [WIDE, 'mmcoop-tiny-MAP'])
def test_zero_shot_class_features_are_ensembled_written_prompts(
        name, family):
    _, _, clip = family(name)
    head = MODELS.build(
        dict(
            type='ZeroShotHead',
            classnames=NAMES,
            text_encoder=_text_cfg(name),
            pos_templates=['a photo of a {}.', 'a picture of the {}.'],
            neg_templates='a photo without a {}.'))
    assert not any(p.requires_grad for p in head.parameters())
    neg, pos = head.eval().cached_class_features()
    tokenizer = head.text_encoder.tokenize

    def encode(texts):
        with torch.no_grad():
            return F.normalize(clip.encode_text(tokenizer(texts)), dim=-1)

    names = ['cat', 'traffic light', 'hair drier']
    expected_pos = (encode([f'a photo of a {n}.' for n in names]) +
                    encode([f'a picture of the {n}.' for n in names])) / 2
    expected_neg = encode([f'a photo without a {n}.' for n in names])
    torch.testing.assert_close(pos, expected_pos, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(neg, expected_neg, rtol=1e-5, atol=1e-5)


def test_zero_shot_template_bank_and_negation_rule():
    head = MODELS.build(
        dict(
            type='ZeroShotHead',
            classnames=NAMES,
            text_encoder=_text_cfg('mmcoop-tiny-RN'),
            pos_templates='bank',
            neg_templates=None,
            n_ctx=16, use_residual=True))  # a PositiveCoOp head's keys
    assert len(head.pos_templates) == len(head.neg_templates) == 85
    assert head.neg_templates[0] == 'not ' + head.pos_templates[0]
    neg, pos = head.eval().cached_class_features()
    assert neg.shape == pos.shape == (3, 64)


def test_zero_shot_bank_features_are_open_clips_ensemble(family):
    """``pos_templates='bank'`` with the negation rule: each class feature
    is the mean over the 85 bank templates (the negatives: each prefixed
    with 'not ') of open_clip's L2-normalised ``encode_text``. Four classes
    give 340 prompts a side: several encoding batches, sorted by length."""
    from mmcoop.utils.prompt_templates import DEFAULT_TEMPLATE_BANK
    names = ['cat', 'traffic light', 'hair_drier', 'dog']
    _, enc, clip = family('mmcoop-tiny-RN')
    head = MODELS.build(
        dict(type='ZeroShotHead', classnames=names,
             text_encoder=_text_cfg('mmcoop-tiny-RN'), pos_templates='bank',
             neg_templates=None)).eval()
    neg, pos = head.cached_class_features()
    assert len(DEFAULT_TEMPLATE_BANK) == 85

    def ensemble(templates):
        rows = []
        for name in names:
            texts = [t.replace('{}', name.replace('_', ' '))
                     for t in templates]
            with torch.no_grad():
                feats = F.normalize(
                    clip.encode_text(enc.tokenize(texts)), dim=-1)
            rows.append(feats.mean(0))
        return torch.stack(rows)

    torch.testing.assert_close(
        pos, ensemble(DEFAULT_TEMPLATE_BANK), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        neg, ensemble(['not ' + t for t in DEFAULT_TEMPLATE_BANK]),
        rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('field, value, match', [
    ('pos_templates', [], '`pos_templates` is empty'),
    ('neg_templates', (), '`neg_templates` is empty'),
    ('pos_templates', 'banks', r"'banks'.*one `\{\}` slot.*'bank'"),
    ('neg_templates', ['a photo without a {}.', None], 'None.*a string'),
])
def test_zero_shot_refuses_empty_or_malformed_templates(field, value, match):
    """No template (a mean over nothing: NaN features) or a template that
    is not a string with one slot stops the build, naming the field or the
    template."""
    with pytest.raises(ValueError, match=match):
        MODELS.build(
            dict(type='ZeroShotHead', classnames=NAMES,
                 text_encoder=_text_cfg('mmcoop-tiny-RN'), **{field: value}))


@pytest.mark.parametrize('name', ['mmcoop-tiny-RN', 'mmcoop-tiny-EVA02'])
def test_dual_coop_from_words_starts_at_the_zero_shot_model(name, family):
    """DualCoOp with ``ctx_init``/``neg_ctx_init`` scores, before any
    training, exactly as the ZeroShot head with those words; PositiveCoOp's
    prompt starts at the zero-shot presence feature."""
    backbone = family(name)[0]
    size = FAMILIES[name]
    (dense, ) = backbone(torch.randn(2, 3, size, size))
    words = dict(ctx_init='a photo of a', neg_ctx_init='a photo without a')
    dual = MODELS.build(
        dict(type='DualCoOpHead', classnames=NAMES,
             text_encoder=_text_cfg(name), **words)).eval()
    zero = MODELS.build(
        dict(type='ZeroShotHead', classnames=NAMES,
             text_encoder=_text_cfg(name))).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            dual((dense, )), zero((dense, )), rtol=1e-4, atol=1e-4)
    assert dual.neg_prompt.ctx.shape[1] == 4  # 'a photo without a'
    positive = MODELS.build(
        dict(type='PositiveCoOpHead', classnames=NAMES,
             text_encoder=_text_cfg(name), use_residual=False,
             ctx_init=words['ctx_init'])).eval()
    with torch.no_grad():
        pos = positive.class_features()[1]
    torch.testing.assert_close(
        F.normalize(pos, dim=-1), zero.class_features()[1],
        rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('name', ['mmcoop-tiny-RN', 'mmcoop-tiny-MAP'])
def test_negative_coop_neg_ctx_init_is_the_written_absence_prompt(
        name, family):
    """NegativeCoOp's learned prompt is the absence side: initialised from
    ``neg_ctx_init`` (not ``ctx_init``), it is before training exactly
    open_clip's ``encode_text`` of the written absence prompt, per class
    (CSC) and shared."""
    _, enc, clip = family(name)
    names = ['cat', 'traffic light', 'hair drier']
    with torch.no_grad():
        expected = clip.encode_text(
            enc.tokenize([f'a photo without a {n}.' for n in names]))
    for csc in (True, False):
        head = MODELS.build(
            dict(type='NegativeCoOpHead', classnames=NAMES,
                 text_encoder=_text_cfg(name), use_residual=False,
                 class_specific=csc, ctx_init='a photo of a',
                 neg_ctx_init='a photo without a')).eval()
        assert head.neg_prompt.n_ctx == 4
        with torch.no_grad():
            neg, _ = head.class_features()
        torch.testing.assert_close(neg, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('eos_id', [49407, 1])
def test_eos_pooled_text_tower(eos_id, tmp_path):
    """A text tower pooled at a token id (``pool_type='eos'``), with a
    layer scale: hand-written prompts and ``ctx_init`` prompts equal
    open_clip's ``encode_text``, and truncation (on: causal mask, end-token
    pooling) is exact. With CLIP's tokenizer the end-of-text id 49407 is
    also the largest (argmax pooling finds the same position); a tokenizer
    whose end token is id 1 (CLIP's, the end token renumbered) shows that
    the id, not the largest token, is pooled."""
    from mmcoop.models.prompt_learners import PromptLearner
    clip_tokenizer = open_clip.get_tokenizer(WIDE)

    def tokenizer(texts):
        ids = clip_tokenizer(texts)
        return ids.masked_fill(ids == 49407, eos_id)

    cfg = open_clip.get_model_config(WIDE)
    cfg['text_cfg'].update(pool_type='eos', eos_id=eos_id, ls_init_value=0.5)
    cfg['custom_text'] = True  # the tower as open_clip's TextTransformer
    name = f'mmcoop-test-ViT-eos{eos_id}'
    (tmp_path / f'{name}.json').write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / f'{name}.json')
    clip = _clip(name).eval()
    assert clip.text.pool_type == 'eos'
    enc = FrozenCLIPTextEncoder(name, tokenizer=tokenizer)
    assert enc.truncate
    assert enc.end_positions(enc.tokenize(['a photo of a dog.'])) == 7
    texts = ['a photo of a dog.', 'X X X X hair drier.', 'a cat']
    learner = PromptLearner(NAMES, enc, ctx_init='a photo of a')
    with torch.no_grad():
        torch.testing.assert_close(
            enc.encode_texts(texts), clip.encode_text(enc.tokenize(texts)),
            rtol=1e-5, atol=1e-5)
        embeds = learner(enc.embed_tokens(learner.tokens))
        out = enc(embeds, learner.tokens)
        expected = clip.encode_text(enc.tokenize(
            [f'a photo of a {n.replace("_", " ")}.' for n in NAMES]))
        full = FrozenCLIPTextEncoder(name, truncate=False,
                                     tokenizer=tokenizer)(embeds,
                                                          learner.tokens)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(full, expected, rtol=1e-5, atol=1e-5)


def test_dense_mode_is_in_the_module_repr():
    """Same weights, another function: the repr (hashed into the
    feature-cache key with the weights) differs."""
    tokens = FrozenCLIP(WIDE, input_resolution=64)
    value = FrozenCLIP(WIDE, input_resolution=64, dense_mode='value')
    assert "dense_mode='value'" in repr(value)
    assert repr(tokens) == repr(value).replace("'value'", "'tokens'")


def test_prompts_without_a_start_token(monkeypatch, family):
    """A tokenizer with no leading special token (as SigLIP's): the context
    is spliced from position 0 and ``ctx_init`` still gives the written
    prompt."""
    from open_clip.tokenizer import SimpleTokenizer

    from mmcoop.models.prompt_learners import PromptLearner
    clip_tokenizer = SimpleTokenizer()
    clip = family(WIDE)[2]  # built before the tokenizer is replaced

    def no_start(texts):
        tokens = clip_tokenizer(texts)
        return torch.cat([tokens[:, 1:], torch.zeros_like(tokens[:, :1])],
                         dim=1)

    monkeypatch.setattr(open_clip, 'get_tokenizer', lambda name: no_start)
    enc = FrozenCLIPTextEncoder(WIDE)
    assert enc.text_start == 0
    learner = PromptLearner(NAMES, enc, ctx_init='a photo of a')
    assert learner.n_ctx == 4 and learner.start == 0
    with torch.no_grad():
        out = enc(learner(enc.embed_tokens(learner.tokens)), learner.tokens)
        expected = clip.encode_text(no_start(
            [f'a photo of a {n.replace("_", " ")}.' for n in NAMES]))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    # random context: the class-name tokens stay where the tokenizer put them
    random = PromptLearner(NAMES, enc, n_ctx=3)
    prompts = random(enc.embed_tokens(random.tokens))
    torch.testing.assert_close(prompts[:, :3], random.ctx)
    torch.testing.assert_close(prompts[:, 3:],
                               enc.embed_tokens(random.tokens)[:, 3:])


def test_timm_input_resolution_must_fit_the_patch_size():
    with pytest.raises(ValueError, match='multiple of the patch size'):
        FrozenCLIP('mmcoop-tiny-EVA02', input_resolution=64)  # patch 14
    with pytest.raises(ValueError, match='multiple of the patch size'):
        FrozenCLIP('mmcoop-tiny-ConvNeXt', input_resolution=48)  # stride 32


@pytest.mark.parametrize('name', ['mmcoop-tiny-MAP', 'mmcoop-tiny-EVA02'])
def test_timm_value_mode_is_self_attention_of_the_last_block(name, family):
    """timm ViTs: the last block's real attention with a self-only mask,
    the final norm, then each token alone through the pooling head;
    position 0 stays ``encode_image``."""
    _, _, clip = family(name)
    size = FAMILIES[name]
    backbone = FrozenCLIP(name, input_resolution=size, dense_mode='value')
    x = torch.randn(1, 3, size, size)
    (dense, ) = backbone(x)
    trunk, head = clip.visual.trunk, clip.visual.head
    last = trunk.blocks[-1]
    # the tiny instances have no layer scale on the attention branch
    assert isinstance(getattr(last, 'ls1', torch.nn.Identity()),
                      torch.nn.Identity)
    assert getattr(last, 'gamma_1', None) is None
    with torch.no_grad():
        expected = _each_token_through_head(
            trunk, head, trunk.norm(_timm_self_only_branch(trunk, x)))
        pooled = clip.encode_image(x)
    torch.testing.assert_close(dense[:, :, 0], pooled, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dense[:, :, 1:], expected, rtol=1e-4,
                               atol=1e-5)
    (tokens, ) = family(name)[0](x)
    assert not torch.allclose(tokens[:, :, 1:], dense[:, :, 1:], atol=1e-3)


def _add_attention_layer_scale(visual, gamma):
    """Give the last block of ``visual`` a layer scale ``gamma`` on its
    attention branch: open_clip ``ls_1``, timm ``ls1`` or EVA
    ``gamma_1``."""
    from open_clip.transformer import LayerScale as ClipLayerScale
    from timm.layers import LayerScale as TimmLayerScale
    trunk = getattr(visual, 'trunk', None)
    if trunk is None:
        last = visual.transformer.resblocks[-1]
        last.ls_1 = ClipLayerScale(gamma.numel(), 1.)
        last.ls_1.gamma.data.copy_(gamma)
    elif hasattr(trunk.blocks[-1], 'ls1'):
        trunk.blocks[-1].ls1 = TimmLayerScale(gamma.numel(), 1.)
        trunk.blocks[-1].ls1.gamma.data.copy_(gamma)
    else:
        trunk.blocks[-1].gamma_1 = torch.nn.Parameter(gamma.clone())


@pytest.mark.parametrize('name', [WIDE, 'mmcoop-tiny-MAP',
                                  'mmcoop-tiny-EVA02'])
def test_value_mode_keeps_the_layer_scale_of_the_attention_branch(name):
    """Towers whose blocks scale the attention branch (open_clip
    ``ls_init_value``, timm ``init_values``): the value path is that
    scaled branch with every token attending only to itself, written out
    with the block's real attention (the tiny configs have no layer scale,
    so one with random entries is added to both models)."""
    size = FAMILIES[name]
    backbone = FrozenCLIP(name, input_resolution=size, dense_mode='value')
    clip = _clip(name).eval()
    trunk = getattr(clip.visual, 'trunk', None)
    if trunk is not None:
        trunk.set_input_size(img_size=size)
    width = trunk.embed_dim if trunk is not None else \
        clip.visual.transformer.width
    gamma = torch.rand(width, generator=torch.Generator().manual_seed(3)) \
        * 2 - 0.5
    for visual in (backbone.visual, clip.visual):
        _add_attention_layer_scale(visual, gamma)
    x = torch.randn(1, 3, size, size,
                    generator=torch.Generator().manual_seed(4))
    (dense, ) = backbone(x)
    with torch.no_grad():
        if trunk is None:  # open_clip VisionTransformer
            visual = clip.visual
            branch = _open_clip_self_only_branch(visual, x)
            expected = (visual.ln_post(gamma * branch) @ visual.proj)
            expected = expected.transpose(1, 2)
        else:
            head = clip.visual.head
            tokens = _each_token_through_head(
                trunk, head,
                trunk.norm(gamma * _timm_self_only_branch(trunk, x)))
            expected = torch.cat(
                [clip.encode_image(x)[:, :, None], tokens], dim=2)
    # relative to the largest feature (random EVA features are ~1e-4)
    scale = expected.abs().max()
    torch.testing.assert_close(
        dense / scale, expected / scale, rtol=1e-4, atol=1e-5)
    # the scale matters: without it the value path differs
    plain = FrozenCLIP(name, input_resolution=size, dense_mode='value')
    moved = (plain(x)[0][:, :, 1:] - dense[:, :, 1:]).abs().max()
    assert moved > 0.1 * scale


EVA_CLIP = 'mmcoop-test-EVA02-clip-layout'
SIGLIP_LAYOUT = 'mmcoop-test-SigLIP-layout'


def _register_timm_clip(folder, clip_name, model_cls, model_args, pool,
                        proj, embed_dim):
    """Register the timm model ``model_cls(**model_args)`` under a test name
    and an open_clip config ``clip_name`` (tiny text tower) on it."""
    import inspect

    import timm
    from timm.models import register_model
    timm_name = 'mmcoop_test_' + clip_name.replace('-', '_').lower()
    if not timm.is_model(timm_name):

        def create(pretrained=False, **kwargs):
            # the model arguments (num_classes, global_pool), not the
            # factory's (pretrained_cfg, cache_dir, ...)
            kwargs = {k: v for k, v in kwargs.items() if k in
                      inspect.signature(model_cls.__init__).parameters}
            return model_cls(**dict(model_args, **kwargs))

        create.__name__ = timm_name
        register_model(create)
    cfg = dict(embed_dim=embed_dim, custom_text=True,
               vision_cfg=dict(image_size=model_args['img_size'],
                               timm_model_name=timm_name,
                               timm_model_pretrained=False,
                               timm_pool=pool, timm_proj=proj),
               text_cfg=dict(context_length=77, vocab_size=49408, width=64,
                             heads=2, layers=1))
    path = folder / f'{clip_name}.json'
    path.write_text(json.dumps(cfg))
    open_clip.add_model_config(path)
    return clip_name


@pytest.fixture(scope='session')
def eva_clip_layout(tmp_path_factory):
    """A tiny open_clip model on a timm Eva with the layout of the real
    EVA02-CLIP towers (timm ``eva02_*_clip_*``, which the shipped
    EVA02-B-16 / EVA02-L-14-336 families use): separate q / k / v
    projections (``qkv_fused=False``), a norm inside the attention
    (``scale_attn_inner``), SwiGLU with a norm, rotary embeddings. The
    shipped tiny EVA02 has fused qkv and no inner norm."""
    from timm.models.eva import Eva
    return _register_timm_clip(
        tmp_path_factory.mktemp('eva_clip'), EVA_CLIP, Eva,
        dict(img_size=56, patch_size=14, embed_dim=64, depth=2, num_heads=2,
             qkv_fused=False, mlp_ratio=4 * 2 / 3, swiglu_mlp=True,
             scale_mlp=True, scale_attn_inner=True, use_rot_pos_emb=True,
             ref_feat_shape=(4, 4), global_pool='token'), 'token', None, 48)


@pytest.fixture(scope='session')
def siglip_layout(tmp_path_factory):
    """A tiny open_clip model on a timm ViT with the layout of the real
    SigLIP / SigLIP2 towers (timm ``vit_*_siglip_*``): no class token
    (``class_token=False``), the map head. The shipped tiny MAP configs
    keep the class token of ``vit_tiny_patch16_224``."""
    from timm.models.vision_transformer import VisionTransformer
    return _register_timm_clip(
        tmp_path_factory.mktemp('siglip_layout'), SIGLIP_LAYOUT,
        VisionTransformer,
        dict(img_size=64, patch_size=16, embed_dim=64, depth=2, num_heads=2,
             class_token=False, global_pool='map'), 'map', 'none', 64)


@pytest.mark.parametrize('mode', ['tokens', 'value'])
def test_siglip_layout_without_class_token(mode, siglip_layout):
    """SigLIP's ViT has no prefix token: position 0 is ``encode_image``
    and each of the 16 patches follows, passed alone through the map head
    (the final tokens, or the last block's value path in the value
    mode)."""
    size = 64
    backbone = FrozenCLIP(siglip_layout, input_resolution=size,
                          dense_mode=mode)
    clip = _clip(siglip_layout).eval()
    trunk = clip.visual.trunk
    assert trunk.num_prefix_tokens == 0 and trunk.attn_pool is not None
    x = torch.randn(1, 3, size, size,
                    generator=torch.Generator().manual_seed(6))
    (dense, ) = backbone(x)
    expected = _timm_dense_reference(clip, x, mode)
    assert dense.shape == (1, 64, 1 + 16)
    scale = expected.abs().max()
    torch.testing.assert_close(
        dense / scale, expected / scale, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('mode', ['tokens', 'value'])
def test_eva_clip_layout_dense_features(mode, eva_clip_layout):
    """EVA02-CLIP's attention (separate v projection with its bias, the
    inner norm before the output projection): position 0 is
    ``encode_image``; in the value mode every token is the last block's
    real attention with a self-only mask, then the final norm and the
    head; in the tokens mode every final token through the head."""
    size = 56
    backbone = FrozenCLIP(eva_clip_layout, input_resolution=size,
                          dense_mode=mode)
    clip = _clip(eva_clip_layout).eval()
    trunk = clip.visual.trunk
    trunk.set_input_size(img_size=size)
    last = trunk.blocks[-1]
    assert last.attn.qkv is None and last.attn.v_proj.bias is not None
    assert isinstance(last.attn.norm, torch.nn.LayerNorm)
    x = torch.randn(1, 3, size, size,
                    generator=torch.Generator().manual_seed(5))
    (dense, ) = backbone(x)
    expected = _timm_dense_reference(clip, x, mode)
    assert dense.shape == (1, 48, 1 + (size // 14)**2)
    scale = expected.abs().max()
    torch.testing.assert_close(
        dense / scale, expected / scale, rtol=1e-4, atol=1e-5)


def test_convnext_has_no_value_mode():
    with pytest.raises(ValueError, match="dense_mode='value'.*timm_convnext"):
        FrozenCLIP('mmcoop-tiny-ConvNeXt', input_resolution=64,
                   dense_mode='value')


def _ids(name, *words):
    """Ids of '\u2581word' pieces in ``_hf_vocab(name)`` (no split)."""
    return [len(SPECIAL[name][0]) + WORDS.index(w) for w in words]


@pytest.mark.parametrize('name', list(HF_FAMILIES))
def test_siglip_tokenizer_context_lands_on_the_placeholders(name, family):
    """SigLIP-style tokens (no start token, lower-cased, punctuation
    dropped, end token 1, padding 1 (T5) or 0 (Gemma)): the context starts
    at 0 and replaces exactly the 'x' placeholders."""
    from mmcoop.models.prompt_learners import PromptLearner
    _, enc, _ = family(name)
    pad = 1 if name == SIGLIP_T5 else 0
    assert (enc.text_start, enc.pad_id, enc.truncate) == (0, pad, False)
    learner = PromptLearner(NAMES, enc, n_ctx=3)
    x = _ids(name, 'x') * 3
    rows = [x + _ids(name, 'cat') + [1],
            x + _ids(name, 'traffic', 'light') + [1],
            x + _ids(name, 'hair', 'drier') + [1]]
    expected = torch.tensor([r + [pad] * (64 - len(r)) for r in rows])
    assert torch.equal(learner.tokens, expected)
    assert enc.end_positions(learner.tokens).tolist() == [4, 5, 5]
    embeds = enc.embed_tokens(learner.tokens)
    prompts = learner(embeds)
    torch.testing.assert_close(prompts[:, :3], learner.ctx, rtol=0, atol=0)
    torch.testing.assert_close(prompts[:, 3:], embeds[:, 3:], rtol=0, atol=0)
    # 3 placeholders + 59 words + the end token fill positions 0..62; one
    # word more puts the end token on the last position (it may have cut)
    PromptLearner([' '.join(['cat'] * 59)], enc, n_ctx=3)
    with pytest.raises(ValueError, match='does not fit'):
        PromptLearner([' '.join(['cat'] * 60)], enc, n_ctx=3)


def test_placeholder_split_by_the_tokenizer_is_an_error(hf_tokenizer_models):
    """Without a '\u2581x' piece each 'X' is two tokens: the context would
    cover 'x x' and part of the third, not the placeholders."""
    from mmcoop.models.prompt_learners import PromptLearner
    enc = FrozenCLIPTextEncoder(SIGLIP_SPLIT)
    space, letter = len(_hf_vocab(SIGLIP_SPLIT)) - 27, len(
        _hf_vocab(SIGLIP_SPLIT)) - 3  # '\u2581' and 'x'
    assert enc.tokenize(['X X X'])[0, :7].tolist() == [space, letter] * 3 + [1]
    with pytest.raises(ValueError,
                       match=r"mmcoop-test-MAP-splitx: the prompt prefix "
                       r"'X X X' does not tokenize to n_ctx=3 tokens at "
                       r"positions 0\.\.2 .*class 'cat'.*`ctx_init`"):
        PromptLearner(NAMES, enc, n_ctx=3)
    learner = PromptLearner(NAMES, enc, ctx_init='a photo of a')
    assert learner.n_ctx == 4 and learner.start == 0


def test_hf_style_tokenizer_is_open_clips_hftokenizer(hf_tokenizer_models):
    """The tests' ``_HFStyleTokenizer`` gives the ids of open_clip's own
    ``HFTokenizer`` (through ``transformers``) on the same tokenizer file:
    cleaning, end token, truncation and padding. transformers is not a test
    dependency (setup.cfg, ``siglip`` extra), so this runs where one is
    installed."""
    pytest.importorskip('transformers')
    from open_clip.tokenizer import HFTokenizer
    from transformers import PreTrainedTokenizerFast
    texts = ['X X X dog.', 'A photo of a Traffic-Light!', 'hair drier', '',
             'x ' * 80]
    for name in HF_FAMILIES:
        special, pad = SPECIAL[name]
        folder = hf_tokenizer_models / name / 'transformers'
        PreTrainedTokenizerFast(
            tokenizer_file=str(hf_tokenizer_models / name / 'tokenizer.json'),
            pad_token=pad, eos_token=special[1],
            unk_token=special[-1]).save_pretrained(str(folder))
        text_cfg = open_clip.get_model_config(name)['text_cfg']
        real = HFTokenizer(str(folder), text_cfg['context_length'],
                           **text_cfg['tokenizer_kwargs'])
        ours = _HFStyleTokenizer.of(name)
        assert torch.equal(real(texts), ours(texts)), name


def test_tokenizer_from_a_local_folder(family, hf_tokenizer_models, tmp_path,
                                       monkeypatch):
    """``tokenizer`` = the folder of a downloaded Hugging Face tokenizer
    (SigLIP on a machine without the hub): loaded from that folder as
    open_clip loads the model's own (``HFTokenizer`` with the config's
    context length and cleaning); the text path equals ``encode_text``.
    ``HFTokenizer`` is the tests' ``tokenizers`` version (open_clip's needs
    transformers, see above)."""
    import shutil

    import open_clip.tokenizer as open_clip_tokenizer
    _, own, clip = family(SIGLIP_T5)
    folder = tmp_path / 'downloaded' / 'ViT-B-16-SigLIP'
    shutil.copytree(hf_tokenizer_models / SIGLIP_T5, folder)
    calls = []

    def hf_tokenizer(source, context_length, tokenizer_mode=None,
                     clean='whitespace'):
        calls.append((source, context_length, tokenizer_mode, clean))
        return _HFStyleTokenizer(source, context_length, clean,
                                 SPECIAL[SIGLIP_T5][1])

    monkeypatch.setattr(open_clip_tokenizer, 'HFTokenizer', hf_tokenizer)
    enc = FrozenCLIPTextEncoder(SIGLIP_T5, tokenizer=str(folder))
    assert calls == [(str(folder), 64, None, 'canonicalize')]
    texts = ['a photo of a cat.', 'A picture of the Traffic-Light', '']
    assert torch.equal(enc.tokenize(texts), own.tokenize(texts))
    assert (enc.text_start, enc.pad_id, enc.end_is_pad) == (0, 1, True)
    with torch.no_grad():
        torch.testing.assert_close(enc.encode_texts(texts),
                                   clip.encode_text(own.tokenize(texts)))


def test_tokenizer_callable_is_used_as_is(family):
    """A callable ``tokenizer`` replaces open_clip's (no patching)."""
    _, own, clip = family(WIDE)
    seen = []

    def tokenizer(texts):
        seen.append(list(texts))
        return own.tokenize(texts)

    enc = FrozenCLIPTextEncoder(WIDE, tokenizer=tokenizer)
    assert enc.tokenizer is tokenizer and seen
    with torch.no_grad():
        torch.testing.assert_close(
            enc.encode_texts(['a photo of a dog.']),
            clip.encode_text(own.tokenize(['a photo of a dog.'])))
    assert seen[-1] == ['a photo of a dog.']


def _without_end_token(texts):
    import open_clip
    ids = open_clip.get_tokenizer('mmcoop-tiny-ViT')(texts)
    return ids.masked_fill(ids == ids.max(), 0)  # the end token: padding


@pytest.mark.parametrize('tokenizer, error, match', [
    (5, TypeError, r'`text_encoder.tokenizer` must be None.*got int 5'),
    ('.', ValueError, r"tokenizes with open_clip's built-in CLIP tokenizer.*"
     r'remove `tokenizer`'),
    (lambda texts: torch.zeros(len(texts), 16, dtype=torch.long), ValueError,
     r'does not fit the text tower.*\(N, 77\) integer ids.*got \(2, 16\)'),
    (lambda texts: torch.full((len(texts), 77), 10 ** 6), ValueError,
     r'integer ids in 0\.\.\d+, got \(2, 77\) torch.int64, ids 1000000'),
    (lambda texts: torch.zeros(len(texts), 77), ValueError,
     r'integer ids.*torch.float32'),
    (lambda texts: [[0] * 77 for _ in texts], ValueError,
     r'integer ids.*got \[\[0'),
    (lambda texts: 1 / 0, ValueError,
     r'failed on a plain prompt: ZeroDivisionError.*text_encoder.tokenizer'),
    # ids of the right shape and range without the end-of-text token:
    # every prompt was pooled at the start token, one feature for all
    (lambda texts: _without_end_token(texts), ValueError,
     r"does not mark the end of a prompt.*'argmax' pooling.*'a' would be "
     r"pooled at position 0 and 'a photo of a dog\.' at 0.*same text "
     r'feature.*text_encoder.tokenizer'),
])
def test_tokenizer_misuse_is_a_clear_error(tokenizer, error, match):
    """A tokenizer of the wrong kind or for another tower stops at
    construction, naming the field (not an index error in the embedding
    or a shifted prompt later)."""
    with pytest.raises(error, match=match):
        FrozenCLIPTextEncoder('mmcoop-tiny-ViT', tokenizer=tokenizer)


def test_hf_tokenizer_that_cannot_load_names_the_fix(hf_tokenizer_models,
                                                     tmp_path, monkeypatch):
    """A model whose Hugging Face tokenizer cannot be loaded (no
    transformers, no hub): the error names the extra and the
    ``tokenizer`` field; a folder that does not exist is named."""
    monkeypatch.setitem(sys.modules, 'transformers', None)  # not installed
    with pytest.raises(RuntimeError,
                       match=r"tokenizer .*'mmcoop-test-MAP-t5tok'.*"
                       r"(ModuleNotFound|Import)Error.*"
                       r"pip install 'mmcoop\[siglip\]'.*"
                       r'check that .*t5tok. holds the tokenizer files'):
        FrozenCLIPTextEncoder(
            SIGLIP_T5, tokenizer=str(hf_tokenizer_models / SIGLIP_T5))
    # open_clip's own tokenizer (tokenizer=None) of such a model
    cfg = open_clip.get_model_config('mmcoop-tiny-MAP')
    cfg['text_cfg']['hf_tokenizer_name'] = 'timm/some-siglip'
    (tmp_path / 'mmcoop-test-MAP-hub.json').write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / 'mmcoop-test-MAP-hub.json')
    with pytest.raises(RuntimeError,
                       match=r"tokenizer 'timm/some-siglip' of 'mmcoop-test-"
                       r"MAP-hub'.*download the 'timm/some-siglip' "
                       r'repository elsewhere and set `model.head.'
                       r'text_encoder.tokenizer` to its folder'):
        FrozenCLIPTextEncoder('mmcoop-test-MAP-hub')
    monkeypatch.undo()
    with pytest.raises(FileNotFoundError,
                       match=r'tokenizer=.*missing.* is not a folder.*'
                       r'tokenizer.json'):
        FrozenCLIPTextEncoder(SIGLIP_T5, tokenizer=str(tmp_path / 'missing'))


# --------------------------------------------------------------------------
# torch.compile of the towers (``compile``): one graph, the eager function
# --------------------------------------------------------------------------
@pytest.mark.parametrize('name', list(FAMILIES))
def test_compiled_towers_are_one_graph_with_the_eager_output(name, family):
    """``fullgraph=True``: the compiled parts have no graph break in any
    family (what CUDA graphs need); ``aot_eager`` traces forward and
    backward as inductor would, running eager kernels, so the features and
    the prompt gradient are the eager ones. Each family's two graphs are
    counted: compiled, not an eager fallback."""
    from torch._dynamo import lookup_backend  # torch's registered backends

    from mmcoop.models.prompt_learners import PromptLearner
    backbone, enc, _ = family(name)
    learner = PromptLearner(NAMES, enc, n_ctx=2)
    x = torch.randn(2, 3, FAMILIES[name], FAMILIES[name],
                    generator=torch.Generator().manual_seed(0))
    graphs = []

    def counted_aot_eager(gm, example_inputs):
        graphs.append(gm)
        return lookup_backend('aot_eager')(gm, example_inputs)

    torch.compiler.reset()  # each family starts with empty dynamo caches
    results = []
    for options in (None, dict(backend=counted_aot_eager, fullgraph=True)):
        backbone.compile_options = enc.compile_options = options
        try:
            with torch.no_grad():
                dense = backbone(x)[0]
            text = enc(learner(enc.embed_tokens(learner.tokens)),
                       learner.tokens)
            text.pow(2).sum().backward()
        finally:
            backbone.compile_options = enc.compile_options = None
        results.append((dense, text.detach(), learner.ctx.grad))
        learner.ctx.grad = None
    assert len(graphs) == 2
    for eager, compiled in zip(*results):
        scale = eager.abs().max()
        torch.testing.assert_close(
            compiled / scale, eager / scale, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------
# the assembled model, end to end, on a tower whose widths differ
# --------------------------------------------------------------------------
def _reference_text(clip, ctx, tokens, start=1):
    """open_clip's text path (transformer, final norm, end-token pooling,
    projection) on the token embeddings of ``tokens`` with ``ctx`` (the
    learned context, ``(n, W)`` or ``(C, n, W)``) spliced in after the
    start token, as the official prompt learner does."""
    emb = clip.token_embedding(tokens)
    n = ctx.shape[-2]
    if ctx.dim() == 2:
        ctx = ctx.unsqueeze(0).expand(tokens.shape[0], -1, -1)
    x = torch.cat([emb[:, :start], ctx, emb[:, start + n:]], dim=1)
    x = clip.transformer(x + clip.positional_embedding,
                         attn_mask=clip.attn_mask)
    x = clip.ln_final(x)
    return x[torch.arange(x.shape[0]),
             tokens.argmax(dim=-1)] @ clip.text_projection


@pytest.mark.parametrize('head_type', [
    'PositiveCoOpHead', 'NegativeCoOpHead', 'DualCoOpHead', 'BaselineHead'
])
def test_assembled_model_on_a_tower_of_other_widths(head_type):
    """``ImageClassifier`` logits and the gradients of every learned tensor
    on the ViT whose text width (40), joint width (48) and vision width
    (32) differ, against an independent reference: open_clip's own image
    tower (class token = ``encode_image``, tokens through ``proj``) and
    text layers, and the official aggregation formulas (the heads' other
    tests run on the tiny RN, whose widths are equal). In float64."""
    sys.path.insert(0, __file__.rsplit('/', 1)[0])
    from _official_reference import baseline_logits, region_logits
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='FrozenCLIP', model_name=WIDE,
                      input_resolution=64),
        head=dict(type=head_type, classnames=NAMES, in_channels=48)
        if head_type == 'BaselineHead' else dict(
            type=head_type, classnames=NAMES, n_ctx=3,
            text_encoder=dict(type='FrozenCLIPTextEncoder',
                              model_name=WIDE)))).double()
    head = model.head
    clip = _clip(WIDE).double().eval()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    model.train()
    logits = model(x, mode='tensor')
    learned = [p for p in head.parameters() if p.requires_grad]
    grads = torch.autograd.grad(logits.square().sum(), learned)

    clip.visual.output_tokens = True
    with torch.no_grad():
        pooled, tokens = clip.visual(x)
    dense = torch.cat([pooled[:, None], tokens @ clip.visual.proj],
                      1).transpose(1, 2)
    assert dense.shape[1] == 48
    ref_params = [p.detach().clone().requires_grad_() for p in learned]
    named = dict(zip([n for n, p in head.named_parameters()
                      if p.requires_grad], ref_params))
    if head_type == 'BaselineHead':
        ref = baseline_logits(dense, named['fc.weight'], named['fc.bias'])
    else:

        def prompt(polarity):
            learner = getattr(head, f'{polarity}_prompt')
            return _reference_text(clip, named[f'{polarity}_prompt.ctx'],
                                   learner.tokens, learner.start)

        if head_type == 'DualCoOpHead':
            neg, pos = prompt('neg'), prompt('pos')
        elif head_type == 'PositiveCoOpHead':
            neg = named['neg_embedding']
            pos = prompt('pos') + named['pos_residual']
        else:
            neg = prompt('neg') + named['neg_residual']
            pos = named['pos_embedding']
        ref = region_logits(dense, neg, pos)
    ref_grads = torch.autograd.grad(ref.square().sum(), ref_params)
    torch.testing.assert_close(logits, ref, rtol=1e-9, atol=1e-9)
    for g, r in zip(grads, ref_grads):
        assert float(r.abs().max()) > 0
        torch.testing.assert_close(g, r, rtol=1e-7, atol=1e-9)

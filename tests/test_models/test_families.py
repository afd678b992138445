# Copyright (c) mmcoop contributors. All rights reserved.
"""CLIP families beyond RN101: widths, ViT dense modes, text pooling."""
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
        h = visual._embeds(x)
        for block in visual.transformer.resblocks[:-1]:
            h = block(h)
        last = visual.transformer.resblocks[-1]
        n = h.shape[1]
        only_self = torch.full((n, n), float('-inf')).fill_diagonal_(0)
        branch = last.attn(
            last.ln_1(h), last.ln_1(h), last.ln_1(h), attn_mask=only_self,
            need_weights=False)[0]
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

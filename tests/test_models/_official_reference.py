# Copyright (c) mmcoop contributors. All rights reserved.
"""The official DualCoOp / PositiveCoOp formulas, written out by hand.

No official code is imported; every model test compares mmcoop against these
re-derivations. References are to SamyakR99/PositiveCoOp (HEAD 58c9c51) and
sunxm2357/DualCoOp (49e71d7).
"""
import open_clip
import torch
import torch.nn.functional as F

TINY_RN = 'mmcoop-tiny-RN'  # D = text width = 64
TINY_RN_512 = 'mmcoop-tiny-RN-512'  # D = text width = 512
TINY_VIT = 'mmcoop-tiny-ViT'


# --------------------------------------------------------------------------
# formulas
# --------------------------------------------------------------------------
def attention_conv_value_path(feat, pool_state):
    """Official ``AttentionConv.forward`` dense output (clip/model.py
    L117-154), with the positional embedding resized bicubically to the
    feature grid as ``build_model_conv_proj`` (L746-753) does.

    ``c_proj(v_proj(cat(mean, tokens) + pos))`` for every token, returned
    ``(B, D, 1 + h*w)``.
    """
    b, c, h, w = feat.shape
    pos = pool_state['positional_embedding']
    if h * w + 1 != pos.shape[0]:
        g = round((pos.shape[0] - 1)**0.5)
        spatial = pos[1:].permute(1, 0).reshape(1, -1, g, g)
        spatial = F.interpolate(spatial, size=(h, w), mode='bicubic')
        spatial = spatial.reshape(-1, h * w).permute(1, 0)
        pos = torch.cat([pos[:1], spatial], dim=0)
    x = feat.reshape(b, c, h * w).permute(2, 0, 1)  # (HW, B, C)
    x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)
    x = x + pos[:, None, :]
    x = F.linear(x, pool_state['v_proj.weight'], pool_state['v_proj.bias'])
    x = F.linear(x, pool_state['c_proj.weight'], pool_state['c_proj.bias'])
    return x.permute(1, 2, 0)


def text_encoder(clip_model, prompts, tokens):
    """Official ``TextEncoder.forward`` (models/dualcoop.py L40-51): all 77
    positions, EOT feature (argmax token), text projection."""
    x = prompts + clip_model.positional_embedding  # (N, 77, W)
    # the official permutes to (L, N, W) for its MHA; open_clip's
    # transformer takes (N, L, W) with the same causal mask
    x = clip_model.transformer(x, attn_mask=clip_model.attn_mask)
    x = clip_model.ln_final(x)
    return x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] \
        @ clip_model.text_projection


def region_logits(dense, neg_feats, pos_feats, feat_scale=20, logit_scale=5):
    """Official class-specific region aggregation (models/dualcoop.py
    L221-244, positivecoop.py L203-220): text rows ``[neg; pos]``,
    ``20 * conv1d`` cosine, softmax over positions of the positive half
    used for both halves, ``5 * sum``, reshaped to ``(B, 2, C)``. The
    official constants 20 and 5 are ``feat_scale`` and ``logit_scale``."""
    text = torch.cat([neg_feats, pos_feats], dim=0)
    text = text / text.norm(dim=-1, keepdim=True)
    img = dense / dense.norm(dim=1, keepdim=True)
    out = feat_scale * F.conv1d(img, text[:, :, None])
    b, c, _ = out.shape
    w_half = F.softmax(out[:, c // 2:], dim=-1)
    w = torch.cat([w_half, w_half], dim=1)
    out = logit_scale * (out * w).sum(-1)
    return out.reshape(b, 2, c // 2)


def baseline_logits(dense, weight, bias, logit_scale=5):
    """Official ``Baseline.forward`` (models/baseline.py L221-257):
    ``Linear(D, 2C)`` on un-normalised features, a softmax over positions
    for each of the 2C channels separately, ``5 * sum`` (5 is
    ``logit_scale``)."""
    out = F.linear(dense.permute(0, 2, 1), weight, bias).permute(0, 2, 1)
    w = F.softmax(out, dim=-1)
    out = logit_scale * (out * w).sum(-1)
    b, c = out.shape
    return out.reshape(b, 2, c // 2)


def prompt_embeddings(clip_model, ctx, tokens):
    """Official ``MLCPromptLearner.forward``: ``[prefix, ctx, suffix]`` with
    prefix/suffix the token embeddings of ``"X X ... X {name}."``."""
    emb = clip_model.token_embedding(tokens)
    n_ctx = ctx.shape[-2]
    if ctx.dim() == 2:
        ctx = ctx.unsqueeze(0).expand(tokens.shape[0], -1, -1)
    return torch.cat([emb[:, :1], ctx, emb[:, 1 + n_ctx:]], dim=1)


def official_tokens(names, n_ctx):
    """Tokens of the official prompts ``"X X ... X {name}."``."""
    tokenizer = open_clip.get_tokenizer(TINY_RN)
    prefix = ' '.join(['X'] * n_ctx)
    return tokenizer([f'{prefix} {name.replace("_", " ")}.' for name in names])

# Copyright (c) mmcoop contributors. All rights reserved.
"""The mixed-precision options: CUDA-only unless ``autocast_cpu`` (bf16)."""
import pytest
import torch
from _perf_helpers import TINY, build_backbone

from mmcoop.models import FrozenCLIPTextEncoder


@pytest.mark.parametrize('dtype', ['fp16', 'bf16'])
def test_image_autocast_is_a_noop_on_cpu(dtype):
    x = torch.randn(2, 3, 64, 64)
    plain = build_backbone(seed=0)
    amp = build_backbone(seed=0, autocast_dtype=dtype)
    with torch.no_grad():
        assert torch.equal(plain(x)[0], amp(x)[0])


def test_text_autocast_is_a_noop_on_cpu():
    torch.manual_seed(0)
    plain = FrozenCLIPTextEncoder(TINY)
    torch.manual_seed(0)
    amp = FrozenCLIPTextEncoder(TINY, autocast_dtype='bf16')
    tokens = plain.tokenize(['X X a dog.', 'X a red car.'])
    prompts = plain.embed_tokens(tokens).requires_grad_()
    prompts2 = prompts.detach().clone().requires_grad_()
    out, out2 = plain(prompts, tokens), amp(prompts2, tokens)
    assert torch.equal(out, out2)
    out.sum().backward()
    out2.sum().backward()
    assert torch.equal(prompts.grad, prompts2.grad)


# Measured on this tiny tower: bf16 moves the outputs by 0.45% (image) and
# 0.48% (text) of their largest magnitude, the prompt gradient by 0.76% (bf16
# keeps 8 significant bits, unit roundoff 2^-8 = 0.39%). The bound below is
# ~3x that; the lower bound shows that bf16 really ran.
BF16_REL_TOL = 2e-2


def _rel_diff(a, b):
    return float((a - b).abs().max() / b.abs().max())


def test_image_bf16_autocast_on_cpu():
    x = torch.randn(2, 3, 64, 64)
    plain = build_backbone(seed=0)
    amp = build_backbone(seed=0, autocast_dtype='bf16', autocast_cpu=True)
    with torch.no_grad():
        ref, out = plain(x)[0], amp(x)[0]
    assert out.dtype == torch.float32
    assert 1e-4 < _rel_diff(out, ref) < BF16_REL_TOL


def test_text_bf16_autocast_on_cpu():
    torch.manual_seed(0)
    plain = FrozenCLIPTextEncoder(TINY)
    torch.manual_seed(0)
    amp = FrozenCLIPTextEncoder(TINY, autocast_dtype='bf16', autocast_cpu=True)
    tokens = plain.tokenize(['X X a dog.', 'X a red car.'])
    prompts = plain.embed_tokens(tokens).detach().requires_grad_()
    prompts2 = prompts.detach().clone().requires_grad_()
    out, out2 = plain(prompts, tokens), amp(prompts2, tokens)
    assert out2.dtype == torch.float32
    assert 1e-4 < _rel_diff(out2.detach(), out.detach()) < BF16_REL_TOL
    out.sum().backward()
    out2.sum().backward()
    assert prompts2.grad.dtype == torch.float32
    assert _rel_diff(prompts2.grad, prompts.grad) < BF16_REL_TOL


def test_channels_last_same_function():
    x = torch.randn(2, 3, 64, 64)
    plain = build_backbone(seed=0)
    cl = build_backbone(seed=0, channels_last=True)
    assert cl.visual.conv1.weight.is_contiguous(
        memory_format=torch.channels_last)
    assert not plain.visual.conv1.weight.is_contiguous(
        memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(cl(x)[0], plain(x)[0])


def test_invalid_autocast_dtype():
    with pytest.raises(ValueError, match="'fp16' or 'bf16'"):
        build_backbone(autocast_dtype='fp8')
    for dtype in (None, 'fp16'):
        with pytest.raises(ValueError, match="autocast_cpu=True needs"):
            build_backbone(autocast_dtype=dtype, autocast_cpu=True)

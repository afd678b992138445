# Copyright (c) mmcoop contributors. All rights reserved.
"""FrozenCLIP / FrozenCLIPTextEncoder / CLIP weight loading."""
import copy
import os
import re
import subprocess
import sys
import warnings
import zipfile

import open_clip
import pytest
import torch
import torch.nn as nn
from _common import make_clip_state_dict
from _official_reference import TINY_RN, TINY_RN_512, TINY_VIT

from mmcoop.models.backbones import FrozenCLIP, FrozenCLIPTextEncoder
from mmcoop.models.backbones.clip_loader import (is_torchscript_archive,
                                                 resize_attnpool_pos_embed,
                                                 resize_vit_pos_embed)
from mmcoop.registry import MODELS


def _trunk(visual, x):
    x = visual.stem(x)
    for layer in (visual.layer1, visual.layer2, visual.layer3, visual.layer4):
        x = layer(x)
    return x


# --------------------------------------------------------------------------
# dense features against the official AttentionConv value path
# --------------------------------------------------------------------------
@pytest.mark.parametrize('size', [64, 96, 128])
def test_resnet_dense_features_match_official_attention_conv(
        size, tiny_rn_file, tiny_rn_clip, official):
    # native grid 2 (64 px): 96 px upsamples it bicubically to 3x3, 128 to 4x4
    backbone = FrozenCLIP(
        TINY_RN, pretrained=tiny_rn_file, input_resolution=size)
    x = torch.randn(2, 3, size, size)
    (dense, ) = backbone(x)
    grid = size // 32
    assert dense.shape == (2, 64, 1 + grid * grid)
    assert backbone.num_positions == 1 + grid * grid

    sd = torch.load(tiny_rn_file, weights_only=True)
    pool = {
        k[len('visual.attnpool.'):]: v
        for k, v in sd.items() if k.startswith('visual.attnpool.')
    }
    with torch.no_grad():
        feat = _trunk(tiny_rn_clip.visual, x)  # frozen BN statistics
        expected = official.attention_conv_value_path(feat, pool)
    torch.testing.assert_close(dense, expected, rtol=1e-5, atol=1e-5)
    # position 0 is the mean token
    mean_only = official.attention_conv_value_path(feat, pool)[:, :, 0]
    torch.testing.assert_close(dense[:, :, 0], mean_only, rtol=1e-5, atol=1e-5)


def test_resnet_448_gives_197_positions():
    backbone = FrozenCLIP(TINY_RN, pretrained=None, input_resolution=448)
    (dense, ) = backbone(torch.randn(1, 3, 448, 448))
    assert dense.shape == (1, 64, 197)
    assert backbone.visual.attnpool.positional_embedding.shape == (197, 256)


def test_resnet_runtime_resize_for_other_input_sizes(tiny_rn_file,
                                                     tiny_rn_clip, official):
    """An input whose grid differs from ``input_resolution`` is resized on
    the fly, as the official ``AttentionConv.forward`` does."""
    backbone = FrozenCLIP(
        TINY_RN, pretrained=tiny_rn_file, input_resolution=64)
    x = torch.randn(1, 3, 96, 96)
    (dense, ) = backbone(x)
    assert dense.shape == (1, 64, 10)
    sd = torch.load(tiny_rn_file, weights_only=True)
    pool = {
        k[len('visual.attnpool.'):]: v
        for k, v in sd.items() if k.startswith('visual.attnpool.')
    }
    with torch.no_grad():
        expected = official.attention_conv_value_path(
            _trunk(tiny_rn_clip.visual, x), pool)
    torch.testing.assert_close(dense, expected, rtol=1e-5, atol=1e-5)


def test_pos_embed_resizers_by_hand():
    pos = torch.randn(1 + 7 * 7, 8)
    out = resize_attnpool_pos_embed(pos, 14)
    spatial = pos[1:].permute(1, 0).reshape(1, -1, 7, 7)
    spatial = torch.nn.functional.interpolate(
        spatial, size=(14, 14), mode='bicubic', align_corners=False)
    expected = torch.cat([pos[:1], spatial.reshape(8, -1).permute(1, 0)])
    torch.testing.assert_close(out, expected)
    assert resize_attnpool_pos_embed(pos, 7) is pos
    # the ViT resizer is the same interpolation laid out (g, g, C)
    torch.testing.assert_close(resize_vit_pos_embed(pos, 14), expected)


@pytest.mark.parametrize('size', [64, 96])
def test_vit_dense_features(size, tiny_vit_file):
    backbone = FrozenCLIP(
        TINY_VIT, pretrained=tiny_vit_file, input_resolution=size)
    x = torch.randn(2, 3, size, size)
    (dense, ) = backbone(x)
    grid = size // 16
    assert dense.shape == (2, 64, 1 + grid * grid)
    # token 0 is CLIP's own image embedding (class token, ln_post, proj) with
    # the positional embedding resized bicubically
    clip = open_clip.create_model(TINY_VIT, pretrained=None)
    clip.load_state_dict(torch.load(tiny_vit_file, weights_only=True))
    clip.eval()
    clip.visual.positional_embedding = nn.Parameter(
        resize_vit_pos_embed(clip.visual.positional_embedding.data, grid))
    with torch.no_grad():
        expected = clip.visual(x)
    torch.testing.assert_close(dense[:, :, 0], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('size', [64, 96])
def test_vit_tokens_mode_every_position_is_open_clips_token_output(
        size, tiny_vit_file):
    """``dense_mode='tokens'``: every position, not only the class token, is
    open_clip's own token output (``output_tokens=True``: the last layer's
    tokens after ``ln_post``) projected by ``proj``, with the positional
    embedding resized bicubically."""
    backbone = FrozenCLIP(
        TINY_VIT, pretrained=tiny_vit_file, input_resolution=size)
    assert backbone.dense_mode == 'tokens'
    x = torch.randn(2, 3, size, size,
                    generator=torch.Generator().manual_seed(size))
    (dense, ) = backbone(x)
    clip = open_clip.create_model(TINY_VIT, pretrained=None)
    clip.load_state_dict(torch.load(tiny_vit_file, weights_only=True))
    visual = clip.eval().visual
    visual.positional_embedding = nn.Parameter(
        resize_vit_pos_embed(visual.positional_embedding.data, size // 16))
    visual.output_tokens = True
    with torch.no_grad():
        pooled, tokens = visual(x)
        expected = torch.cat([pooled[:, None], tokens @ visual.proj], dim=1)
    assert dense.shape == (2, 64, 1 + (size // 16)**2)
    torch.testing.assert_close(
        dense, expected.transpose(1, 2), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('name', [TINY_VIT, 'mmcoop-tiny-MAP',
                                  'mmcoop-tiny-EVA02', 'mmcoop-tiny-ConvNeXt',
                                  TINY_RN])
def test_images_of_another_size_are_refused_naming_the_fix(name):
    """Images the tower cannot take stop with the sizes and the fix (they
    failed deep in open_clip / timm, or a ConvNeXt scored them); a ResNet
    takes any square size, as the official code evaluates at 224 px."""
    res = 56 if 'EVA02' in name else 64  # patch 14
    backbone = FrozenCLIP(name, pretrained=None, input_resolution=res)
    assert backbone(torch.zeros(1, 3, res, res))[0].shape[0] == 1
    bad = [(1, 3, res, res // 2), (1, 1, res, res)]
    if name == TINY_RN:
        assert backbone(torch.zeros(1, 3, 96, 96))[0].shape[2] == 1 + 3 * 3
        # below the stride: torch's "Output size is too small"; not a
        # multiple of it: the last pixels silently dropped
        bad += [(1, 3, 16, 16), (1, 3, 80, 80)]
    else:
        bad.append((1, 3, 2 * res, 2 * res))
    need = (r'square images, S a multiple of 32 \(the stride\)'
            if name == TINY_RN else f'{res} x {res} images')
    for shape in bad:
        with pytest.raises(ValueError, match=(
                rf"FrozenCLIP\('{name}'\) takes \(B, 3, S, S\) {need}.*got "
                rf'a batch of shape {re.escape(str(shape))}\. Fix: make the '
                rf'pipelines resize to \({res}, {res}\)')):
            backbone(torch.zeros(shape))


def test_input_resolution_must_fit_the_grid():
    with pytest.raises(ValueError, match='multiple of 32'):
        FrozenCLIP(TINY_RN, pretrained=None, input_resolution=100)
    with pytest.raises(ValueError, match='multiple of the patch size'):
        FrozenCLIP(TINY_VIT, pretrained=None, input_resolution=72)


@pytest.mark.parametrize('kw, match', [
    (dict(input_resolution=0), 'input_resolution must be an int >= 1, got 0'),
    (dict(input_resolution=-32), 'input_resolution must be an int >= 1, '
     'got -32'),
    (dict(input_resolution=448.5), r'input_resolution must be an int >= 1, '
     r'got 448\.5'),
    (dict(input_resolution='448'), "input_resolution must be an int >= 1, "
     "got '448'"),
    (dict(channels_last='no'), "channels_last must be True or False, got "
     "'no'"),
    (dict(save_frozen=1), 'save_frozen must be True or False, got 1'),
    (dict(init_seed=1.5), r'init_seed must be an int in \[0, '
     r'18446744073709551615\], got 1\.5'),
    # torch.manual_seed's bound (was torch's "Overflow when unpacking long")
    (dict(init_seed=2**64), r'init_seed must be an int in \[0, '
     r'18446744073709551615\], got 18446744073709551616'),
])
def test_image_tower_refuses_bad_values_before_loading(kw, match, tmp_path):
    """Checked before the weights are read (the file does not exist).
    Before: 0 and -32 passed the 'multiple of 32' check and failed inside
    the position-embedding resize, 448.5 became 448 silently, 'no' was a
    true flag."""
    missing = str(tmp_path / 'missing.pt')
    with pytest.raises(ValueError, match='FrozenCLIP: ' + match):
        FrozenCLIP(TINY_RN, pretrained=missing, **kw)
    # a mode no tower has: also before the weights (was after loading them)
    with pytest.raises(ValueError, match=r"dense_mode='dense' is not a dense "
                       r"mode; use one of \['tokens', 'value'\] or None"):
        FrozenCLIP(TINY_RN, pretrained=missing, dense_mode='dense')


@pytest.mark.parametrize('kw, match', [
    (dict(autocast_cpu='no', autocast_dtype='bf16'),
     "autocast_cpu must be True or False, got 'no'"),
    (dict(truncate='yes'), "truncate must be True or False, got 'yes'"),
    (dict(force_quick_gelu=None), 'force_quick_gelu must be True or False'),
    (dict(text_chunk_size=0), 'text_chunk_size must be an int >= 1, got 0'),
    (dict(text_chunk_size=True), 'text_chunk_size must be an int >= 1'),
    (dict(init_seed='0'), r"init_seed must be an int in \[0, \d+\], got '0'"),
    (dict(init_seed=-1), r'init_seed must be an int in \[0, \d+\], got -1'),
])
def test_text_tower_refuses_bad_values_before_loading(kw, match, tmp_path):
    """As the image tower: checked before the weights are read. Before,
    ``autocast_cpu='no'`` switched CPU autocast on and ``init_seed='0'``
    seeded another random tower."""
    missing = str(tmp_path / 'missing.pt')
    with pytest.raises(ValueError, match='FrozenCLIPTextEncoder: ' + match):
        FrozenCLIPTextEncoder(TINY_RN, pretrained=missing, **kw)


# --------------------------------------------------------------------------
# frozen-ness
# --------------------------------------------------------------------------
def test_frozen_clip_is_frozen_and_stays_in_eval(tiny_rn_file):
    backbone = FrozenCLIP(
        TINY_RN, pretrained=tiny_rn_file, input_resolution=64)
    assert not any(p.requires_grad for p in backbone.parameters())
    backbone.train()
    assert not backbone.training
    assert not any(m.training for m in backbone.modules())
    stats = {
        k: v.clone()
        for k, v in backbone.visual.state_dict().items()
        if 'running' in k or 'num_batches' in k
    }
    backbone(torch.randn(2, 3, 64, 64) * 3 + 1)
    for k, v in backbone.visual.state_dict().items():
        if k in stats:
            assert torch.equal(v, stats[k]), k
    # checkpoints hold only trained weights unless asked
    assert backbone.state_dict() == {}
    keep = FrozenCLIP(
        TINY_RN, pretrained=None, input_resolution=64, save_frozen=True)
    assert 'visual.attnpool.c_proj.weight' in keep.state_dict()


def test_frozen_module_keeps_weights_on_checkpoint_without_them(tiny_rn_file):
    backbone = FrozenCLIP(
        TINY_RN, pretrained=tiny_rn_file, input_resolution=64)
    before = {k: v.clone() for k, v in backbone.visual.state_dict().items()}
    backbone.load_state_dict({}, strict=True)  # nothing missing
    for k, v in backbone.visual.state_dict().items():
        assert torch.equal(v, before[k])
    # a checkpoint that carries them is loaded
    other = FrozenCLIP(
        TINY_RN, pretrained=None, input_resolution=64, save_frozen=True)
    backbone.load_state_dict(other.state_dict(), strict=True)
    torch.testing.assert_close(backbone.visual.conv1.weight,
                               other.visual.conv1.weight)


def test_text_encoder_frozen():
    enc = FrozenCLIPTextEncoder(TINY_RN, pretrained=None)
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.training
    assert enc.state_dict() == {}
    assert (enc.width, enc.embed_dim, enc.context_length) == (64, 64, 77)


# --------------------------------------------------------------------------
# text encoder: truncation is exact; matches the official TextEncoder
# --------------------------------------------------------------------------
def _max_rel(a, b):
    """max |a - b| relative to max |b| (elementwise ratios of near-zero
    entries only measure float32 rounding)."""
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize('dtype,tol', [(torch.float32, 1e-5),
                                       (torch.float64, 1e-12)])
def test_truncated_text_encoding_equals_full_length(dtype, tol, tiny_rn_file,
                                                    tiny_rn_clip, official):
    kwargs = dict(model_name=TINY_RN, pretrained=tiny_rn_file)
    short = FrozenCLIPTextEncoder(truncate=True, **kwargs).to(dtype)
    full = FrozenCLIPTextEncoder(truncate=False, **kwargs).to(dtype)
    assert short.truncate and not full.truncate
    clip = copy.deepcopy(tiny_rn_clip).to(dtype)
    names = ['cat', 'traffic light', 'a much longer class name here']
    tokens = official.tokens(names, n_ctx=4)
    ctx = torch.randn(3, 4, 64, dtype=dtype) * 0.02
    outs, grads = [], []
    for enc in (short, full):
        c = ctx.clone().requires_grad_(True)
        out = enc(official.prompt_embeddings(clip, c, tokens), tokens)
        weight = torch.linspace(-1, 1, out.numel(), dtype=dtype)
        (out * weight.view_as(out)).sum().backward()
        outs.append(out.detach())
        grads.append(c.grad)
    assert _max_rel(outs[0], outs[1]) <= tol
    assert _max_rel(grads[0], grads[1]) <= tol
    # and both equal the official TextEncoder formula (all 77 tokens)
    with torch.no_grad():
        prompts = official.prompt_embeddings(clip, ctx, tokens)
        expected = official.text_encoder(clip, prompts, tokens)
    assert _max_rel(outs[0], expected) <= tol


def test_encode_texts_equals_open_clip_encode_text(tiny_rn_file, tiny_rn_clip):
    enc = FrozenCLIPTextEncoder(TINY_RN, pretrained=tiny_rn_file)
    texts = ['a photo of a dog.', 'X X X X hair drier.']
    with torch.no_grad():
        expected = tiny_rn_clip.encode_text(open_clip.tokenize(texts))
        out = enc.encode_texts(texts)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_force_quick_gelu_is_open_clips(tmp_path, tiny_vit_file):
    """``force_quick_gelu=True`` on a GELU config (as ``RN101`` with OpenAI
    weights): both towers equal open_clip's model built with
    ``force_quick_gelu=True`` and the same weights (dense position 0 =
    ``encode_image``, text = ``encode_text``), and differ from GELU."""
    import json
    cfg = open_clip.get_model_config(TINY_VIT)
    cfg.pop('quick_gelu')
    name = 'mmcoop-test-ViT-gelu'
    (tmp_path / f'{name}.json').write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / f'{name}.json')
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(8))
    texts = ['a photo of a dog.', 'X X X X hair drier.']
    state = torch.load(tiny_vit_file, weights_only=True)
    out = {}
    for quick in (True, False):
        clip = open_clip.create_model(name, force_quick_gelu=quick)
        clip.load_state_dict(state)
        clip.eval()
        backbone = FrozenCLIP(name, pretrained=tiny_vit_file,
                              input_resolution=64, force_quick_gelu=quick)
        enc = FrozenCLIPTextEncoder(name, pretrained=tiny_vit_file,
                                    force_quick_gelu=quick)
        with torch.no_grad():
            image, text = backbone(x)[0][:, :, 0], enc.encode_texts(texts)
            torch.testing.assert_close(
                image, clip.encode_image(x), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(
                text, clip.encode_text(open_clip.tokenize(texts)), rtol=1e-5,
                atol=1e-5)
        out[quick] = image, text
    for quick, gelu in zip(out[True], out[False]):
        assert not torch.allclose(quick, gelu, atol=1e-4)


# --------------------------------------------------------------------------
# loading CLIP weights
# --------------------------------------------------------------------------
def _visual_equal(backbone, sd):
    own = {f'visual.{k}': v for k, v in backbone.visual.state_dict().items()}
    for key, value in sd.items():
        if key.startswith('visual.') and 'attnpool.positional' not in key:
            torch.testing.assert_close(
                own[key], value.to(own[key].dtype), msg=key)


def test_load_state_dict_files(tmp_path, tiny_rn_file):
    sd = torch.load(tiny_rn_file, weights_only=True)
    wrapped = tmp_path / 'wrapped.pth'
    torch.save({'state_dict': {
        f'module.{k}': v
        for k, v in sd.items()
    }}, wrapped)
    for path in (tiny_rn_file, str(wrapped)):
        backbone = FrozenCLIP(TINY_RN, pretrained=path, input_resolution=64)
        _visual_equal(backbone, sd)
        enc = FrozenCLIPTextEncoder(TINY_RN, pretrained=path)
        torch.testing.assert_close(enc.token_embedding.weight,
                                   sd['token_embedding.weight'])
        torch.testing.assert_close(enc.text_projection, sd['text_projection'])


class _Holder(nn.Module):

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _torchscript_archive(sd, path):
    """An OpenAI-style archive: a scripted module whose ``state_dict()``
    has the CLIP keys (fp16, plus the int entries OpenAI's files hold)."""
    root = _Holder()
    for key, value in sd.items():
        *parents, leaf = key.split('.')
        module = root
        for name in parents:
            if not isinstance(getattr(module, name, None), nn.Module):
                module.add_module(name, nn.Module())
            module = getattr(module, name)
        if torch.is_floating_point(value):
            module.register_parameter(
                leaf, nn.Parameter(value.half(), requires_grad=False))
        else:
            module.register_buffer(leaf, value.clone())
    for key, value in (('input_resolution', 224), ('context_length', 77),
                       ('vocab_size', 49408)):
        root.register_buffer(key, torch.tensor(value))
    with warnings.catch_warnings():  # torch.jit's deprecation (newer torch)
        warnings.simplefilter('ignore')
        torch.jit.save(torch.jit.script(root), str(path))


def test_torchscript_archive_is_refused_with_a_working_conversion(
        tmp_path, monkeypatch):
    """An OpenAI TorchScript archive is never loaded (``torch.jit.load``
    would keep the file's code); the error names the file and the field and
    prints a conversion command, which -- run where the file is trusted --
    gives a state dict with the archive's weights."""
    sd = make_clip_state_dict(TINY_RN, seed=3)
    path = tmp_path / 'RN-tiny.pt'
    _torchscript_archive(sd, path)
    assert is_torchscript_archive(str(path))

    def forbidden(*args, **kwargs):
        raise AssertionError('torch.jit.load must not be called')

    with monkeypatch.context() as m:
        m.setattr(torch.jit, 'load', forbidden)
        for cls in (FrozenCLIP, FrozenCLIPTextEncoder):
            with pytest.raises(RuntimeError, match='TorchScript') as err:
                cls(TINY_RN, pretrained=str(path))
            message = str(err.value)
            assert 'RN-tiny.pt' in message and '`pretrained`' in message
    command = re.search(r'python -c "([^"]+)"', message).group(1)
    converted = tmp_path / 'RN-tiny-state-dict.pth'
    assert str(converted) in command and not converted.exists()
    env = dict(os.environ, PYTHONWARNINGS='ignore')
    subprocess.run([sys.executable, '-c', command], check=True, env=env,
                   cwd=tmp_path)
    half = {k: v.half() if torch.is_floating_point(v) else v
            for k, v in sd.items()}
    backbone = FrozenCLIP(
        TINY_RN, pretrained=str(converted), input_resolution=64)
    _visual_equal(backbone, half)
    enc = FrozenCLIPTextEncoder(TINY_RN, pretrained=str(converted))
    torch.testing.assert_close(enc.token_embedding.weight,
                               half['token_embedding.weight'].float())


def test_state_dict_file_is_not_mistaken_for_an_archive(tiny_rn_file):
    # torch.save files are zip archives too, without TorchScript code
    assert zipfile.is_zipfile(tiny_rn_file)
    assert not is_torchscript_archive(tiny_rn_file)


def test_unknown_model_name():
    with pytest.raises(ValueError, match='Unknown open_clip model name'):
        FrozenCLIP('RN9000', pretrained=None)
    with pytest.raises(ValueError, match='Unknown open_clip model name'):
        FrozenCLIPTextEncoder('not-a-clip', pretrained=None)


def test_missing_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'):
        FrozenCLIP(TINY_RN, pretrained=str(tmp_path / 'nope.pt'))


def test_unknown_pretrained_tag():
    with pytest.raises(ValueError, match='neither an existing file nor'):
        FrozenCLIP(TINY_RN, pretrained='laion2b-does-not-exist')


def test_truncated_weights_file(tmp_path, tiny_rn_file):
    data = open(tiny_rn_file, 'rb').read()
    path = tmp_path / 'truncated.pt'
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(RuntimeError, match='truncated'):
        FrozenCLIP(TINY_RN, pretrained=str(path))
    empty = tmp_path / 'empty.pt'
    empty.write_bytes(b'')
    with pytest.raises(RuntimeError, match='empty'):
        FrozenCLIP(TINY_RN, pretrained=str(empty))


def test_garbage_weights_file_is_reported_as_unreadable(tmp_path):
    path = tmp_path / 'garbage.pt'
    path.write_bytes(b'this is not a checkpoint at all')
    with pytest.raises(RuntimeError) as info:
        FrozenCLIP(TINY_RN, pretrained=str(path))
    assert 'arbitrary code' not in str(info.value)
    assert 'not a PyTorch checkpoint' in str(info.value)


@pytest.mark.parametrize('name,content', [
    ('garbage.safetensors', b'not a safetensors file at all'),
    ('garbage.npz', b'not an npz archive'),
    ('list.pth', None),
])
def test_unreadable_weights_blame_the_file_not_model_name(
        tmp_path, name, content):
    """A corrupt .safetensors / .npz, or a torch file holding something
    other than a state dict, is named as unreadable with the fix (it was
    reported as weights of another architecture: 'Check `model_name`')."""
    path = tmp_path / name
    if content is None:
        torch.save([1, 2, 3], path)
    else:
        path.write_bytes(content)
    with pytest.raises(RuntimeError, match=(
            rf"CLIP weights file '.*{re.escape(name)}' \(field `pretrained`\)"
            r' is not a readable state dict \(.+\)\. Fix: replace the '
            'file')) as info:
        FrozenCLIP(TINY_RN, pretrained=str(path))
    assert 'model_name' not in str(info.value)


def test_weights_in_a_folder_or_under_home(tmp_path, monkeypatch,
                                           tiny_rn_file):
    """A folder names the weights files inside it; '~' is the home folder
    (as for dataset paths and the tokenizer)."""
    folder = tmp_path / 'RN-repo'
    folder.mkdir()
    (folder / 'open_clip_model.safetensors').write_bytes(b'')
    with pytest.raises(IsADirectoryError, match=(
            r"CLIP weights '.*RN-repo' \(field `pretrained`\) is a folder\. "
            r"Set `pretrained` to the weights file inside it \(here: "
            r"\['open_clip_model\.safetensors'\]")):
        FrozenCLIP(TINY_RN, pretrained=str(folder))
    monkeypatch.setenv('HOME', os.path.dirname(tiny_rn_file))
    home = FrozenCLIP(TINY_RN, pretrained='~/' + os.path.basename(
        tiny_rn_file))
    full = FrozenCLIP(TINY_RN, pretrained=tiny_rn_file)
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(home(x)[0], full(x)[0], rtol=0, atol=0)


@pytest.mark.parametrize('tower', ['visual', 'text'])
def test_a_file_of_one_tower_blames_the_file_not_model_name(
        tmp_path, tiny_rn_file, tower):
    """A file holding one tower (an image encoder saved alone) was refused
    as weights of another architecture ('Check `model_name`'); the file is
    named with what it lacks."""
    sd = torch.load(tiny_rn_file, weights_only=True)
    kept = {k: v for k, v in sd.items()
            if k.startswith('visual.') == (tower == 'visual')}
    path = tmp_path / f'{tower}_only.pt'
    torch.save(kept, path)
    lacks = 'the text tower' if tower == 'visual' else 'the image tower'
    for cls in (FrozenCLIP, FrozenCLIPTextEncoder):
        with pytest.raises(RuntimeError, match=(
                rf"CLIP weights file '.*{tower}_only.pt' \(field "
                rf'`pretrained`\) holds .* only \({len(kept)} tensors\): '
                rf'the file lacks {lacks}.*Fix: set `pretrained` to the '
                'whole CLIP checkpoint')) as info:
            cls(TINY_RN, pretrained=str(path))
        assert 'model_name' not in str(info.value)
    # keys of another layout (Hugging Face's, big_vision's) say nothing of
    # towers: the load's own error, which names model_name
    other = {f'vision_model.{k}' if k.startswith('visual.') else
             f'text_model.{k}': v for k, v in sd.items()}
    path = tmp_path / 'hf_layout.pt'
    torch.save(other, path)
    with pytest.raises(RuntimeError, match='do not fit.*model_name'):
        FrozenCLIP(TINY_RN, pretrained=str(path))


def test_a_folder_named_like_a_tag_does_not_shadow_the_tag(
        tmp_path, monkeypatch):
    """A folder ``openai`` in the working directory (e.g. where weights
    were downloaded) turned the tag 'openai' into that path: the shipped
    configs then failed with 'is a folder'. A tag stays a tag; the folder
    is meant when written as a path."""
    from mmcoop.models.backbones.clip_loader import is_weights_path
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'openai').mkdir()
    (tmp_path / 'mine').write_bytes(b'')
    assert not is_weights_path('openai')
    assert is_weights_path('./openai') and is_weights_path('mine')
    assert is_weights_path('w.pth') and not is_weights_path('laion2b_x')


def test_weights_missing_keys_name_the_architecture(tmp_path, tiny_rn_file):
    sd = torch.load(tiny_rn_file, weights_only=True)
    del sd['visual.attnpool.c_proj.weight']
    path = tmp_path / 'partial.pt'
    torch.save(sd, path)
    with pytest.raises(RuntimeError, match='do not fit.*model_name'):
        FrozenCLIP(TINY_RN, pretrained=str(path))


def test_weights_with_unexpected_keys_name_them(tmp_path, tiny_rn_file):
    sd = torch.load(tiny_rn_file, weights_only=True)
    sd['visual.attnpool.extra_proj.weight'] = torch.zeros(2, 2)
    path = tmp_path / 'extra.pt'
    torch.save(sd, path)
    for cls in (FrozenCLIP, FrozenCLIPTextEncoder):
        with pytest.raises(RuntimeError, match='do not fit.*model_name') as e:
            cls(TINY_RN, pretrained=str(path))
        assert 'visual.attnpool.extra_proj.weight' in str(e.value)
        assert 'extra.pt' in str(e.value)


@pytest.mark.parametrize('other', ['vit', 'rn512'])
def test_weights_of_another_architecture(other, tmp_path, tiny_vit_file):
    if other == 'vit':
        path = tiny_vit_file
    else:
        path = str(tmp_path / 'rn512.pt')
        torch.save(make_clip_state_dict(TINY_RN_512), path)
    with pytest.raises(RuntimeError, match='do not fit.*model_name'):
        FrozenCLIP(TINY_RN, pretrained=path)


def test_build_from_registry():
    backbone = MODELS.build(
        dict(
            type='FrozenCLIP',
            model_name=TINY_RN,
            pretrained=None,
            input_resolution=96))
    assert isinstance(backbone, FrozenCLIP) and backbone.embed_dim == 64
    enc = MODELS.build(
        dict(
            type='FrozenCLIPTextEncoder', model_name=TINY_RN, pretrained=None))
    assert isinstance(enc, FrozenCLIPTextEncoder)


# --------------------------------------------------------------------------
# random towers: init_seed
# --------------------------------------------------------------------------
def test_random_towers_depend_on_init_seed_only():
    from mmcoop.models.backbones import build_open_clip
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = FrozenCLIP(TINY_VIT, input_resolution=64)
    # building a tower leaves the global RNG where it was ...
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(456)
    b = FrozenCLIP(TINY_VIT, input_resolution=64)
    text = FrozenCLIPTextEncoder(TINY_VIT)
    # ... and the towers do not depend on it
    for (name, pa), (_, pb) in zip(a.visual.named_parameters(),
                                   b.visual.named_parameters()):
        assert torch.equal(pa, pb), name
    # image and text towers of one seed come from the same random CLIP
    ref = build_open_clip(TINY_VIT, init_seed=0)
    assert torch.equal(a.visual.conv1.weight, ref.visual.conv1.weight)
    assert torch.equal(text.token_embedding.weight,
                       ref.token_embedding.weight)
    assert torch.equal(text.text_projection, ref.text_projection)
    # another seed: another tower; None: the global RNG decides
    c = FrozenCLIP(TINY_VIT, input_resolution=64, init_seed=1)
    assert not torch.equal(a.visual.conv1.weight, c.visual.conv1.weight)
    torch.manual_seed(7)
    d = FrozenCLIP(TINY_VIT, input_resolution=64, init_seed=None)
    torch.manual_seed(7)
    e = build_open_clip(TINY_VIT, init_seed=None)
    assert torch.equal(d.visual.conv1.weight, e.visual.conv1.weight)
    assert not torch.equal(d.visual.conv1.weight, a.visual.conv1.weight)


def test_clip_normalization_follows_open_clips_pretrained_configs():
    """The image statistics a model's weights expect, from open_clip's
    tables: SigLIP's 0.5 / 0.5, CLIP's for OpenAI weights and for models
    without tags; a local file of a model whose tags disagree (ViT-L-14:
    laion2b_s32b_b82k uses 0.5 / 0.5, the others CLIP's) is refused, not
    guessed."""
    from mmcoop.models.backbones.clip_loader import clip_normalization
    half = ((0.5, ) * 3, (0.5, ) * 3)
    clip = (tuple(open_clip.OPENAI_DATASET_MEAN),
            tuple(open_clip.OPENAI_DATASET_STD))
    assert clip_normalization('ViT-B-16-SigLIP') == half
    assert clip_normalization('ViT-B-16-SigLIP', '/w/siglip.bin') == half
    assert clip_normalization('RN101-quickgelu', 'openai') == clip
    assert clip_normalization(TINY_RN) == clip
    assert clip_normalization('ViT-L-14', 'laion2b_s32b_b82k') == half
    assert clip_normalization('ViT-L-14', 'openai') == clip
    with pytest.raises(ValueError, match=r"'ViT-L-14' expect different image "
                       r'normalisations.*Give the open_clip tag'):
        clip_normalization('ViT-L-14', '/w/vit-l-14.pt')


def test_init_cfg_reaching_a_frozen_tower_is_refused(tiny_rn_file, tmp_path,
                                                     monkeypatch):
    """mmpretrain-style ``model.init_cfg`` (TruncNormal on every Linear,
    Constant on every LayerNorm): MMEngine's ``init_weights`` applies it to
    every submodule, the frozen CLIP towers included, which no checkpoint
    saves. Before: training fitted the prompts to a random CLIP (exit 0);
    now the run stops before the first step."""
    import _common
    from mmengine.model import initialize

    from mmcoop.models.backbones.frozen import FrozenMixin
    tower = FrozenCLIPTextEncoder(model_name='mmcoop-tiny-RN',
                                  pretrained=tiny_rn_file)
    tower.check_weights_unchanged('text')  # as built
    tower.load_state_dict(tower.state_dict())  # as loaded: unchanged
    tower.to(torch.float64).to(torch.float32)
    tower.check_weights_unchanged('text')
    initialize(tower, dict(type='TruncNormal', layer='Linear', std=.02))
    with pytest.raises(ValueError) as err:
        tower.check_weights_unchanged('head.text_encoder')
    for words in ('`head.text_encoder`', 're-initialised', 'init_cfg',
                  'Fix: remove that init_cfg'):
        assert words in str(err.value)

    class WithTower(_common.ToyModel):

        def __init__(self):
            super().__init__()
            self.tower = FrozenCLIPTextEncoder(
                model_name='mmcoop-tiny-RN', pretrained=tiny_rn_file)
            self.init_cfg = [dict(type='TruncNormal', layer='Linear',
                                  std=.02)]

    assert isinstance(WithTower().tower, FrozenMixin)
    monkeypatch.setattr(_common, 'ToyModel', WithTower)
    runner = _common.toy_runner(tmp_path / 'w', 1)
    with pytest.raises(ValueError, match='`tower`'):
        runner.train()
    assert not any(n.endswith('.pth') for n in os.listdir(tmp_path / 'w'))


def test_vit_weights_of_another_image_size_are_refused(tmp_path):
    """open_clip resized the positional embedding of weights made for
    another image size to the architecture's grid while loading (think
    OpenAI's ViT-L/14@336 loaded as ViT-L-14), silently: refused, naming
    the grid and the image size of the weights."""
    import json
    cfg_dir = tmp_path / 'cfg'
    cfg_dir.mkdir()
    config = json.loads(open(
        os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__)))), 'mmcoop', 'clip_configs',
            'mmcoop-tiny-ViT.json')).read())
    config['vision_cfg']['image_size'] = 32
    (cfg_dir / 'test-tiny-ViT-32.json').write_text(json.dumps(config))
    open_clip.add_model_config(str(cfg_dir))
    path = str(tmp_path / 'vit64.pth')
    torch.save(make_clip_state_dict(TINY_VIT), path)
    FrozenCLIP(TINY_VIT, pretrained=path, input_resolution=64)  # its own
    with pytest.raises(RuntimeError) as err:
        FrozenCLIP('test-tiny-ViT-32', pretrained=path, input_resolution=64)
    msg = str(err.value)
    for words in ('17 positions (a 4x4 grid, 64 px for patch 16)',
                  "'test-tiny-ViT-32' has 5 (2x2)", 'another image size',
                  'Fix: the architecture of these weights'):
        assert words in msg, msg


def test_quick_gelu_weights_without_it_are_named():
    """OpenAI (and YFCC) weights need QuickGELU: a tag was warned about,
    a local file of such an architecture was not (open_clip's offline
    message leads users to a file)."""
    from mmcoop.models.backbones.clip_loader import _needs_quick_gelu
    weights = '/weights/open_clip_pytorch_model.bin'
    assert _needs_quick_gelu('RN101', weights, False)  # every RN101 release
    assert _needs_quick_gelu('RN101', 'openai', False)
    assert _needs_quick_gelu('ViT-B-32', 'openai', False)
    for name, pretrained, force in (('RN101-quickgelu', weights, False),
                                    ('RN101', weights, True),
                                    ('ViT-B-32', weights, False),  # mixed
                                    ('ViT-B-32', 'laion2b_s34b_b79k', False),
                                    (TINY_RN, weights, False),
                                    ('RN101', None, False)):
        assert not _needs_quick_gelu(name, pretrained, force), name


def test_a_loaded_file_is_not_called_random(tiny_rn_file, caplog):
    """open_clip's 'No pretrained weights loaded ... initialized randomly'
    was printed before every weights file mmcoop then loaded."""
    import logging
    with caplog.at_level(logging.WARNING):
        FrozenCLIP(TINY_RN, pretrained=tiny_rn_file, input_resolution=64)
    assert 'No pretrained weights loaded' not in caplog.text

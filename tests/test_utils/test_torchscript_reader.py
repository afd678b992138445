# Copyright (c) mmcoop contributors. All rights reserved.
"""The data-only TorchScript reader (OpenAI CLIP archives)."""
import os
import pickle
import warnings
import zipfile

import pytest
import torch
import torch.nn as nn

from mmcoop.utils.torchscript_reader import (TorchScriptReadError,
                                             read_torchscript_state_dict)


class _Block(nn.Module):

    def __init__(self, mask):
        super().__init__()
        self.attn = nn.MultiheadAttention(4, 2)
        self.ln = nn.LayerNorm(4)
        self.attn_mask = mask  # a tensor attribute, not a parameter/buffer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.attn(x, x, x, need_weights=False, attn_mask=self.attn_mask)
        return self.ln(out[0])


class _Root(nn.Module):

    def __init__(self):
        super().__init__()
        # two _Block with different attribute types -> a name-mangled class
        self.blocks = nn.Sequential(_Block(torch.zeros(3, 3)), _Block(None))
        self.a = nn.Module()
        self.a.register_parameter('w', nn.Parameter(torch.randn(2, 5).half()))
        self.b = nn.Module()
        self.b.register_buffer('v', torch.arange(6).view(2, 3).t())
        self.register_buffer('input_resolution', torch.tensor(224))
        self.proj = nn.Parameter(torch.randn(4, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x) @ self.proj


@pytest.fixture
def archive(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / 'clip-like.pt'
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # torch.jit deprecation
        torch.jit.save(torch.jit.script(_Root()), str(path))
    return path


def _rewrite(src, dst, replace=None, drop=()):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, 'w') as zout:
        for info in zin.infolist():
            if info.filename in drop:
                continue
            data = zin.read(info.filename)
            if replace and info.filename.endswith(replace[0]):
                data = replace[1]
            zout.writestr(info.filename, data)
    return dst


def test_equals_torch_jit_load(archive):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        expected = torch.jit.load(str(archive)).state_dict()
    got = read_torchscript_state_dict(str(archive))
    assert list(got) == list(expected)
    assert 'blocks.0.attn_mask' not in got
    for key, value in expected.items():
        assert got[key].dtype == value.dtype, key
        assert got[key].shape == value.shape, key
        assert got[key].stride() == value.stride(), key
        assert torch.equal(got[key], value), key
    assert got['a.w'].dtype == torch.float16


def test_never_runs_torch_jit(archive, monkeypatch):
    from mmcoop.models.backbones.clip_loader import load_clip_state_dict

    def forbidden(*args, **kwargs):
        raise AssertionError('torch.jit.load must not be called')

    monkeypatch.setattr(torch.jit, 'load', forbidden)
    sd = load_clip_state_dict(str(archive))
    assert 'input_resolution' not in sd  # popped by the CLIP loader
    assert sd['a.w'].dtype == torch.float32  # CLIP loader casts to fp32


class _Payload:

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}', )


def test_foreign_global_is_refused(archive, tmp_path):
    marker = tmp_path / 'pwned'
    evil = _rewrite(archive, tmp_path / 'evil.pt',
                    replace=('/data.pkl',
                             pickle.dumps(_Payload(marker), protocol=2)))
    with pytest.raises(TorchScriptReadError, match=r'global posix\.system|'
                       r'global os\.system') as err:
        read_torchscript_state_dict(str(evil))
    assert 'evil.pt' in str(err.value)
    assert not marker.exists()
    # through the CLIP loader: the error names the file and the field
    from mmcoop.models.backbones.clip_loader import load_clip_state_dict
    with pytest.raises(RuntimeError, match='pretrained') as err:
        load_clip_state_dict(str(evil))
    assert 'evil.pt' in str(err.value)
    assert not marker.exists()


def test_truncated_archive(archive, tmp_path):
    with zipfile.ZipFile(archive) as zf:
        storage = sorted(n for n in zf.namelist() if '/data/' in n)[0]
    broken = _rewrite(archive, tmp_path / 'broken.pt', drop=(storage, ))
    with pytest.raises(TorchScriptReadError, match='truncated'):
        read_torchscript_state_dict(str(broken))
    with pytest.raises(TorchScriptReadError, match='not a readable'):
        read_torchscript_state_dict(str(tmp_path / 'missing.pt'))

# Copyright (c) mmcoop contributors. All rights reserved.
"""Fixtures for the model tests (tiny CLIP weights, official formulas)."""
import types

import _official_reference as ref
import open_clip
import pytest
import torch
from _common import make_clip_state_dict
from _official_reference import TINY_RN, TINY_VIT

from mmcoop.models.backbones import register_mmcoop_clip_configs
from mmcoop.utils import register_all_modules


@pytest.fixture(scope='session', autouse=True)
def _register():
    register_all_modules()
    register_mmcoop_clip_configs()


@pytest.fixture(scope='session')
def tiny_rn_file(tmp_path_factory):
    """``mmcoop-tiny-RN`` weights saved with ``torch.save(state_dict)``."""
    path = tmp_path_factory.mktemp('clip') / 'tiny_rn.pt'
    torch.save(make_clip_state_dict(TINY_RN), path)
    return str(path)


@pytest.fixture(scope='session')
def tiny_vit_file(tmp_path_factory):
    path = tmp_path_factory.mktemp('clip') / 'tiny_vit.pt'
    torch.save(make_clip_state_dict(TINY_VIT, seed=1), path)
    return str(path)


@pytest.fixture(scope='session')
def tiny_rn_clip(tiny_rn_file):
    """The plain open_clip model with the weights of ``tiny_rn_file``."""
    model = open_clip.create_model(TINY_RN, pretrained=None)
    model.load_state_dict(torch.load(tiny_rn_file, weights_only=True))
    return model.eval().requires_grad_(False)


@pytest.fixture(scope='session')
def official():
    """The official formulas (see ``_official_reference.py``)."""
    return types.SimpleNamespace(
        attention_conv_value_path=ref.attention_conv_value_path,
        text_encoder=ref.text_encoder,
        region_logits=ref.region_logits,
        baseline_logits=ref.baseline_logits,
        prompt_embeddings=ref.prompt_embeddings,
        tokens=ref.official_tokens)

# Copyright (c) mmcoop contributors. All rights reserved.
import textwrap

import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope, init_default_scope
from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS

from mmcoop import registry
from mmcoop.utils import register_all_modules


def test_registries_are_mmpretrain_children():
    assert registry.MODELS.parent is MMPRETRAIN_MODELS
    for name in ('MODELS', 'DATASETS', 'TRANSFORMS', 'METRICS', 'HOOKS',
                 'RUNNERS', 'PARAM_SCHEDULERS'):
        reg = getattr(registry, name)
        assert reg.scope == 'mmcoop'
        assert reg.parent is not None and reg.parent.scope == 'mmpretrain'


def test_register_all_modules_sets_scope_and_registers():
    register_all_modules()
    assert DefaultScope.get_current_instance().scope_name == 'mmcoop'
    for name in ('FrozenCLIP', 'FrozenCLIPTextEncoder', 'PositiveCoOpHead',
                 'NegativeCoOpHead', 'DualCoOpHead', 'BaselineHead',
                 'PartialAsymmetricLoss', 'PromptLearner'):
        assert registry.MODELS.get(name) is not None, name
    # parent types resolve from the child
    assert registry.MODELS.get('ImageClassifier').__module__.startswith(
        'mmpretrain')
    assert registry.MODELS.get('ClsDataPreprocessor') is not None
    assert registry.RUNNERS.get('MMCoopRunner') is not None
    assert registry.HOOKS.get('FiniteCheckHook') is not None


def test_config_with_custom_imports_builds_mixed_types(tmp_path):
    cfg_file = tmp_path / 'cfg.py'
    cfg_file.write_text(textwrap.dedent("""
        default_scope = 'mmcoop'
        custom_imports = dict(imports=['mmcoop.models'],
                              allow_failed_imports=False)
        model = dict(
            type='ImageClassifier',
            data_preprocessor=dict(type='ClsDataPreprocessor'),
            backbone=dict(type='FrozenCLIP', model_name='mmcoop-tiny-RN',
                          pretrained=None, input_resolution=64),
            head=dict(type='BaselineHead', classnames=['a', 'b', 'c'],
                      in_channels=64))
        """))
    cfg = Config.fromfile(str(cfg_file))
    init_default_scope(cfg.default_scope)
    model = registry.MODELS.build(cfg.model)
    assert type(model).__name__ == 'ImageClassifier'
    feats = model.extract_feat(torch.zeros(1, 3, 64, 64))
    assert feats[0].shape == (1, 64, 5)
    assert model.head(feats).shape == (1, 2, 3)

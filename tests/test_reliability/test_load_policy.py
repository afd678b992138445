# Copyright (c) mmcoop contributors. All rights reserved.
"""Issue #12.2: one load policy for tools/test.py, ``load_from``,
``mmcoop.apis.init_model`` and demo/image_demo.py
(:mod:`mmcoop.engine.checkpoint_fit`)."""
import glob
import os.path as osp

import pytest
import torch
from _common import load_tool
from _helpers import base_cfg, write_config

from mmcoop.utils import CheckpointMismatchError


@pytest.fixture(scope='module')
def setup(tiny_assets, tmp_path_factory):
    from mmcoop.apis import init_model
    tmp = tmp_path_factory.mktemp('policy')
    data_root = tiny_assets['data_root']
    s = base_cfg(data_root, tiny_assets['clip'], tiny_assets['classes'],
                 max_epochs=1, size=32)
    s['randomness'] = dict(seed=0)
    cfg = write_config(tmp / 'policy.py', s)
    state = dict(init_model(cfg).state_dict())
    assert set(state) == {
        'head.pos_prompt.ctx', 'head.neg_embedding', 'head.pos_residual'
    }
    partial = dict(state)
    del partial['head.neg_embedding']
    torch.save({'state_dict': partial}, tmp / 'partial.pth')
    official = {
        'prompt_learner.ctx_pos': state['head.pos_prompt.ctx'],
        'txt_prompt_neg': state['head.neg_embedding'],
        'txt_prompt_learn': state['head.pos_residual'],
        'image_encoder.conv1.weight': torch.zeros(1),
    }
    torch.save({'epoch': 50, 'arch': 'RN101', 'state_dict': official},
               tmp / 'model_best.pth.tar')
    images = sorted(glob.glob(osp.join(data_root, 'val2014', '*.jpg')))
    return dict(tmp=tmp, cfg=cfg, images=images)


def _entry_points(setup, ckpt, work):
    """Every way mmcoop loads a checkpoint for a model."""
    from mmcoop.apis import init_model
    return dict(
        test_tool=lambda: load_tool('tools/test.py').main(
            [setup['cfg'], ckpt, '--work-dir', work]),
        init_model=lambda: init_model(setup['cfg'], ckpt),
        image_demo=lambda: load_tool('demo/image_demo.py').main(
            [setup['images'][0], setup['cfg'], ckpt]),
        load_from=lambda: load_tool('tools/train.py').main([
            setup['cfg'], '--work-dir', work + '_train', '--cfg-options',
            f'load_from={ckpt}'
        ]))


@pytest.mark.parametrize(
    'entry', ['test_tool', 'init_model', 'image_demo', 'load_from'])
def test_unloaded_trainable_parameter_is_an_error(setup, tmp_path, entry):
    ckpt = str(setup['tmp'] / 'partial.pth')
    with pytest.raises(CheckpointMismatchError) as err:
        _entry_points(setup, ckpt, str(tmp_path / 'w'))[entry]()
    msg = str(err.value)
    assert 'partial.pth' in msg
    assert 'missing keys: head.neg_embedding' in msg
    assert 'official_to_mmcoop' not in msg  # not an official file
    assert 'checkpoint_check = dict(missing=False)' in msg


@pytest.mark.parametrize('entry', ['test_tool', 'init_model'])
def test_official_checkpoint_names_the_converter(setup, tmp_path, entry):
    ckpt = str(setup['tmp'] / 'model_best.pth.tar')
    with pytest.raises(CheckpointMismatchError) as err:
        _entry_points(setup, ckpt, str(tmp_path / 'w'))[entry]()
    msg = str(err.value)
    assert ('python tools/model_converters/official_to_mmcoop.py '
            f'{ckpt} model_best_mmcoop.pth --method positivecoop') in msg


def test_partial_load_only_on_explicit_request(setup, tmp_path):
    from mmcoop.apis import init_model
    ckpt = str(setup['tmp'] / 'partial.pth')
    metrics = load_tool('tools/test.py').main([
        setup['cfg'], ckpt, '--work-dir',
        str(tmp_path / 'w'), '--cfg-options', 'checkpoint_check.missing=False'
    ])
    assert 'multi-label/mAP' in metrics
    with pytest.warns(UserWarning, match='head.neg_embedding'):
        model = init_model(setup['cfg'], ckpt, strict=False)
    loaded = torch.load(ckpt, weights_only=True)['state_dict']
    torch.testing.assert_close(model.head.pos_residual.detach(),
                               loaded['head.pos_residual'])

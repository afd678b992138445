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
    # the same tensors, recorded as trained on another CLIP of that width
    towers = {
        name: dict(model_name='mmcoop-tiny-ViT', pretrained=None,
                   force_quick_gelu=False, init_seed=0)
        for name in ('backbone', 'head.text_encoder')
    }
    torch.save({'state_dict': state, 'meta': dict(clip_towers=towers)},
               tmp / 'other_clip.pth')
    images = sorted(glob.glob(osp.join(data_root, 'val2014', '*.jpg')))
    return dict(tmp=tmp, cfg=cfg, images=images, clip=tiny_assets['clip'])


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


@pytest.mark.parametrize('entry', ['init_model', 'image_demo'])
def test_config_checkpoint_check_is_read_by_inference(setup, tmp_path, entry):
    """The fix the error names, ``checkpoint_check = dict(missing=False)``
    in the config, works for init_model and the image demo as it does for
    tools/test.py (they had ignored it and kept refusing)."""
    from mmcoop.apis import init_model
    ckpt = str(setup['tmp'] / 'partial.pth')
    if entry == 'init_model':
        model = init_model(setup['cfg'], ckpt, cfg_options=dict(
            checkpoint_check=dict(missing=False)))
        loaded = torch.load(ckpt, weights_only=True)['state_dict']
        torch.testing.assert_close(model.head.pos_residual.detach(),
                                   loaded['head.pos_residual'])
    else:
        load_tool('demo/image_demo.py').main([
            setup['images'][0], setup['cfg'], ckpt, '--cfg-options',
            'checkpoint_check.missing=False'])
    with pytest.raises(ValueError, match="checkpoint_check: unknown keys"):
        init_model(setup['cfg'], ckpt, cfg_options=dict(
            checkpoint_check=dict(mising=False)))


@pytest.mark.parametrize('entry', ['test_tool', 'init_model', 'load_from'])
def test_checkpoint_of_another_clip_is_refused(setup, tmp_path, entry):
    """A head trained on another CLIP whose shapes fit (the same widths)
    is refused naming the tower and the field: its prompts belong to that
    CLIP. Loading it anyway takes an explicit request."""
    from mmcoop.apis import init_model
    ckpt = str(setup['tmp'] / 'other_clip.pth')
    with pytest.raises(CheckpointMismatchError, match=(
            r"other_clip\.pth' was trained with another CLIP as `backbone`: "
            r"model_name='mmcoop-tiny-ViT' there, 'mmcoop-tiny-RN' in this "
            r'config.*checkpoint_check = dict\(towers=False\)')):
        _entry_points(setup, ckpt, str(tmp_path / 'w'))[entry]()
    if entry == 'init_model':
        with pytest.warns(UserWarning, match='another CLIP'):
            init_model(setup['cfg'], ckpt, strict=False)


def test_checkpoints_record_their_clip_towers(setup, tmp_path):
    """Every checkpoint the runner saves records the frozen CLIP towers of
    its model (meta['clip_towers']), which the load policy compares."""
    from mmcoop.apis import init_model
    work = tmp_path / 'w'
    load_tool('tools/train.py').main([setup['cfg'], '--work-dir', str(work)])
    ckpt = str(work / 'epoch_1.pth')
    meta = torch.load(ckpt, weights_only=False)['meta']  # just written
    tower = dict(model_name='mmcoop-tiny-RN', pretrained=setup['clip'],
                 force_quick_gelu=False, init_seed=0)
    assert meta['clip_towers'] == {'backbone': tower,
                                   'head.text_encoder': tower}
    init_model(setup['cfg'], ckpt)  # its own config: loads

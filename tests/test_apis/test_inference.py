# Copyright (c) mmcoop contributors. All rights reserved.
"""mmcoop.apis: init_model / inference_model / MultiLabelInferencer and the
image demo, on a tiny random CLIP and generated images."""
import argparse
import copy
import os.path as osp
import warnings

import mmcv
import numpy as np
import pytest
import torch
from _common import load_tool, tiny_classifier_config
from mmengine.config import Config
from mmpretrain.structures import DataSample
from PIL import Image

from mmcoop.apis import (MultiLabelInferencer, draw_predictions,
                         inference_model, init_model)
from mmcoop.utils import CheckpointMismatchError, UnsafeCheckpointError

CLASSES = ['cat', 'dog', 'traffic light', 'hair drier']


def tiny_config(head_type='PositiveCoOpHead'):
    head = dict(type=head_type, classnames=CLASSES)
    if head_type != 'BaselineHead':
        head.update(
            n_ctx=4,
            text_encoder=dict(
                type='FrozenCLIPTextEncoder', model_name='mmcoop-tiny-RN'))
    else:
        head.update(in_channels=64)
    return tiny_classifier_config(head)


def build(cfg, ckpt=None, **kwargs):
    """Same seed -> same random frozen towers (they are not in the ckpt)."""
    torch.manual_seed(0)
    return init_model(cfg, ckpt, **kwargs)


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('apis')
    cfg = tiny_config()
    cfg_path = str(tmp / 'tiny_positivecoop.py')
    Config(copy.deepcopy(cfg)).dump(cfg_path)
    model = build(cfg)
    # "train": move the head away from its initialisation, so that loading
    # is visible.
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.head.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen))
    state = model.state_dict()
    assert all(k.startswith('head.') for k in state)  # head-only checkpoint
    ckpt = str(tmp / 'head_only.pth')
    torch.save({'state_dict': state,
                'meta': {'dataset_meta': {'classes': CLASSES}}}, ckpt)
    rng = np.random.default_rng(0)
    images = []
    for i, (h, w) in enumerate([(50, 70), (64, 64), (91, 37)]):
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        path = str(tmp / f'img{i}.png')
        Image.fromarray(arr).save(path)
        images.append(path)
    loaded = build(cfg_path, ckpt)
    return dict(tmp=tmp, cfg=cfg, cfg_path=cfg_path, ckpt=ckpt, images=images,
                trained=model, model=loaded)


def manual_predict(model, path):
    """The reference: LoadImageFromFile + Resize by hand, then predict."""
    img = mmcv.imread(path)  # BGR, as LoadImageFromFile
    img = mmcv.imresize(img, (64, 64))
    inputs = torch.from_numpy(img).permute(2, 0, 1).contiguous()
    data = model.data_preprocessor(
        dict(inputs=[inputs], data_samples=[DataSample()]), False)
    with torch.no_grad():
        out = model(data['inputs'], data['data_samples'], mode='predict')
    return out[0].pred_score.numpy()


def test_init_model_loads_head_only_checkpoint(setup):
    model, trained = setup['model'], setup['trained']
    assert not model.training
    assert model.dataset_meta['classes'] == CLASSES
    assert model.cfg.model.head.type == 'PositiveCoOpHead'
    for (k, a), b in zip(trained.state_dict().items(),
                         model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)
    # frozen towers were not in the checkpoint: same seed, same weights
    torch.testing.assert_close(
        trained.backbone.visual.attnpool.c_proj.weight,
        model.backbone.visual.attnpool.c_proj.weight)


def test_inference_matches_predict(setup):
    model = setup['model']
    results = inference_model(
        model, setup['images'], batch_size=2, threshold=0.5)
    assert len(results) == 3
    for path, res in zip(setup['images'], results):
        assert set(res) == {'scores', 'labels', 'classes', 'img_path'}
        assert res['img_path'] == path
        assert res['scores'].shape == (len(CLASSES), )
        assert res['scores'].dtype == np.float32
        assert ((res['scores'] >= 0) & (res['scores'] <= 1)).all()
        np.testing.assert_allclose(
            res['scores'], manual_predict(model, path), rtol=0, atol=1e-6)
        expected = [i for i in np.argsort(-res['scores'], kind='stable')
                    if res['scores'][i] >= 0.5]
        assert res['labels'] == expected
        assert res['classes'] == [CLASSES[i] for i in expected]


def test_rgb_array_pil_and_grey_inputs(setup):
    model, path = setup['model'], setup['images'][0]
    rgb = np.asarray(Image.open(path).convert('RGB'))
    by_path, by_array, by_pil = inference_model(
        model, [path, rgb, Image.open(path)], batch_size=3)
    np.testing.assert_allclose(by_array['scores'], by_path['scores'],
                               atol=1e-6)
    np.testing.assert_allclose(by_pil['scores'], by_path['scores'],
                               atol=1e-6)
    assert by_array['img_path'] is None
    # BGR by mistake gives different scores: the channel order matters
    assert not np.allclose(
        inference_model(model, rgb[..., ::-1].copy())[0]['scores'],
        by_path['scores'], atol=1e-7)
    grey = inference_model(model, rgb[..., 0])[0]
    assert grey['scores'].shape == (len(CLASSES), )
    with pytest.raises(ValueError, match='HxWx3'):
        inference_model(model, np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(FileNotFoundError):
        inference_model(model, str(setup['tmp'] / 'missing.png'))


def test_batching_and_threshold(setup):
    model, images = setup['model'], setup['images']
    one = inference_model(model, images, batch_size=1)
    three = inference_model(model, images, batch_size=3)
    for a, b in zip(one, three):
        np.testing.assert_allclose(a['scores'], b['scores'], atol=1e-5)
    every = inference_model(model, images[0], threshold=0.0)[0]
    assert sorted(every['labels']) == list(range(len(CLASSES)))
    none = inference_model(model, images[0], threshold=1.0)[0]
    assert none['labels'] == [i for i in range(len(CLASSES))
                              if none['scores'][i] >= 1.0]
    with pytest.raises(ValueError, match=r'got 1\.01\. Scores are '
                       r'probabilities in \[0, 1\]'):
        inference_model(model, images[0], threshold=1.01)
    inferencer = MultiLabelInferencer(setup['cfg_path'], setup['ckpt'],
                                      threshold=0.0)
    assert inferencer.classes == CLASSES
    assert len(inferencer(images[0])[0]['labels']) == len(CLASSES)


def test_init_model_dict_config_and_cfg_options(setup):
    model = build(setup['cfg'], cfg_options={'model.head.thr': 0.25})
    assert model.head.thr == 0.25
    assert model.dataset_meta == {'classes': CLASSES}


def test_config_seed_reproduces_runner_towers(setup, tmp_path):
    """With randomness.seed, init_model builds the same random towers as
    the training Runner, so head-only checkpoints of pretrained=None
    configs (the offline demo) stay meaningful in another process."""
    from mmengine.runner import Runner
    cfg = copy.deepcopy(setup['cfg'])
    cfg['randomness'] = dict(seed=3)
    runner = Runner(model=copy.deepcopy(cfg['model']),
                    work_dir=str(tmp_path), randomness=dict(seed=3),
                    default_scope='mmcoop')
    torch.manual_seed(100)
    state = torch.get_rng_state()
    model = init_model(cfg)
    assert torch.equal(torch.get_rng_state(), state)  # caller RNG untouched
    for a, b in [(runner.model.backbone, model.backbone),
                 (runner.model.head, model.head)]:
        for (k, x), y in zip(a.state_dict(keep_vars=True).items(),
                             b.state_dict(keep_vars=True).values()):
            torch.testing.assert_close(x, y, msg=k)
    torch.testing.assert_close(
        runner.model.backbone.visual.attnpool.c_proj.weight,
        model.backbone.visual.attnpool.c_proj.weight)
    torch.testing.assert_close(
        runner.model.head.text_encoder.token_embedding.weight,
        model.head.text_encoder.token_embedding.weight)


def test_checkpoint_mismatch_and_unsafe(setup):
    tmp = setup['tmp']
    state = dict(setup['trained'].state_dict())
    del state['head.pos_prompt.ctx']
    state['head.bogus'] = torch.zeros(1)
    bad = str(tmp / 'bad.pth')
    torch.save({'state_dict': state}, bad)
    # one load policy (as load_from / tools/test.py): a trainable tensor
    # left unloaded is an error by default, naming the key
    with pytest.raises(CheckpointMismatchError, match='pos_prompt.ctx'):
        build(setup['cfg_path'], bad)
    with pytest.raises(CheckpointMismatchError, match='pos_prompt.ctx'):
        build(setup['cfg_path'], bad, strict=True)
    # strict=False only on explicit request: warnings, what fits is loaded
    with pytest.warns(UserWarning, match='pos_prompt.ctx.*strict=False'):
        build(setup['cfg_path'], bad, strict=False)
    # nothing fits: refused even so, without the "loading what fits" first
    unrelated = str(tmp / 'unrelated.pth')
    torch.save({'state_dict': {'other.weight': torch.zeros(2)}}, unrelated)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        with pytest.raises(CheckpointMismatchError):
            build(setup['cfg_path'], unrelated, strict=False)
    assert not any('loading what fits' in str(w.message) for w in caught)

    unsafe = str(tmp / 'unsafe.pth')
    torch.save({'state_dict': setup['trained'].state_dict(),
                'meta': {'args': argparse.Namespace(a=1)}}, unsafe)
    with pytest.raises(UnsafeCheckpointError):
        init_model(setup['cfg_path'], unsafe)


def _full_state_dict(model):
    towers = [m for m in model.modules() if hasattr(m, 'save_frozen')]
    for tower in towers:
        tower.save_frozen = True
    try:
        return dict(model.state_dict())
    finally:
        for tower in towers:
            tower.save_frozen = False


def test_full_checkpoint_with_frozen_weights(setup):
    """A checkpoint that carries the frozen tower wins over the config's."""
    tmp = setup['tmp']
    cfg = tiny_config('BaselineHead')
    model = build(cfg)
    full = _full_state_dict(model)
    assert any(k.startswith('backbone.') for k in full)
    path = str(tmp / 'full_baseline.pth')
    torch.save(full, path)  # a bare state dict, no 'state_dict' key
    torch.manual_seed(123)  # other random towers: the file must win
    with warnings.catch_warnings():
        warnings.simplefilter('error', UserWarning)
        other = init_model(cfg, path)
    np.testing.assert_allclose(
        inference_model(other, setup['images'][1])[0]['scores'],
        inference_model(model, setup['images'][1])[0]['scores'], atol=1e-6)


def test_full_checkpoint_with_frozen_text_encoder(setup):
    model = setup['model']
    path = str(setup['tmp'] / 'full_positivecoop.pth')
    torch.save(_full_state_dict(model), path)
    torch.manual_seed(123)
    other = init_model(setup['cfg_path'], path)
    np.testing.assert_allclose(
        inference_model(other, setup['images'][1])[0]['scores'],
        inference_model(model, setup['images'][1])[0]['scores'], atol=1e-6)


def test_draw_predictions():
    rgb = np.zeros((40, 80, 3), np.uint8)
    res = dict(scores=np.array([0.9, 0.1, 0.7], np.float32), labels=[0, 2],
               classes=['a', 'c'])
    img = draw_predictions(rgb, res, topk=2)
    assert img.size == (512, 256)  # short side enlarged to 256
    big = draw_predictions(np.zeros((300, 400, 3), np.uint8), res,
                           classes=['a', 'b', 'c'], threshold=0.95)
    assert big.size == (400, 300)
    assert np.asarray(big).any()  # the "no label" box is drawn


def test_image_demo(setup, capsys):
    demo = load_tool('demo/image_demo.py')
    show_dir = str(setup['tmp'] / 'vis')
    torch.manual_seed(0)
    results, saved = demo.main([
        setup['images'][0], setup['images'][2], setup['cfg_path'],
        setup['ckpt'], '--threshold', '0.3', '--show-dir', show_dir,
        '--topk', '3'
    ])
    out = capsys.readouterr().out
    assert f"{setup['images'][0]}:" in out
    for res in results:
        for name, label in zip(res['classes'], res['labels']):
            assert f"  {name}: {res['scores'][label]:.4f}" in out
    assert [osp.basename(p) for p in saved] == ['img0.png', 'img2.png']
    # 70x50 -> short side 256; 37x91 -> 256 x 630
    assert Image.open(saved[0]).size == (358, 256)
    assert Image.open(saved[1]).size == (256, 630)
    np.testing.assert_allclose(
        results[0]['scores'],
        inference_model(setup['model'], setup['images'][0])[0]['scores'],
        atol=1e-6)


def test_bad_inputs_name_the_argument_and_the_fix(setup, tmp_path):
    model = setup['model']
    with pytest.raises(IsADirectoryError, match=r'images\[1\] .* is a folder'):
        inference_model(model, [setup['images'][0], str(tmp_path)])
    rgb = np.asarray(Image.open(setup['images'][0]).convert('RGB'))
    with pytest.raises(ValueError,
                       match=r'image is a float32 array with values in '
                       r'\[0, 1\].*\(img \* 255\)\.round\(\)\.astype'):
        inference_model(model, rgb.astype(np.float32) / 255)
    with pytest.raises(ValueError, match=r'images\[0\] is a float64 array '
                       r'with values in \[-1\.0, 2\.0\]'):
        inference_model(model, [np.linspace(-1, 2, 300).reshape(10, 10, 3)])
    with pytest.raises(ValueError, match='batch_size must be an int >= 1'):
        inference_model(model, [setup['images'][0]], batch_size=0)
    # integer arrays within 0..255 are the same picture
    np.testing.assert_allclose(
        inference_model(model, rgb.astype(np.int64))[0]['scores'],
        inference_model(model, rgb)[0]['scores'],
        atol=1e-6)


def test_image_demo_bad_arguments(setup, tmp_path, capsys):
    demo = load_tool('demo/image_demo.py')
    common = [setup['cfg_path'], setup['ckpt']]
    with pytest.raises(SystemExit):
        demo.main([setup['images'][0], *common, '--batch-size', '0'])
    assert '--batch-size: must be an integer >= 1' in capsys.readouterr().err
    with pytest.raises(SystemExit, match=r'is a folder.*\*\.jpg'):
        demo.main([str(tmp_path), *common])


def test_image_demo_show_dir_policy(setup, tmp_path):
    demo = load_tool('demo/image_demo.py')
    show = tmp_path / 'new' / 'vis'  # missing folders are created
    args = [setup['images'][0], setup['cfg_path'], setup['ckpt'],
            '--show-dir', str(show)]
    _, saved = demo.main(args)
    first = (show / 'img0.png').read_bytes()
    assert saved == [str(show / 'img0.png')]
    # an existing output needs --force
    with pytest.raises(ValueError, match='already exist.*--force'):
        demo.main(args)
    (show / 'img0.png').write_bytes(b'mine')
    demo.main(args + ['--force'])
    assert (show / 'img0.png').read_bytes() == first
    # two inputs with the same stem would be written to one file
    other = tmp_path / 'other'
    other.mkdir()
    twin = other / 'img0.jpg'
    Image.open(setup['images'][0]).convert('RGB').save(twin)
    with pytest.raises(ValueError, match=r'inputs .*img0.* and .*'
                       r'other/img0.jpg.* would both be written to'):
        demo.main([setup['images'][0], str(twin), setup['cfg_path'],
                   setup['ckpt'], '--show-dir', str(tmp_path / 'v2')])
    assert not (tmp_path / 'v2').exists() or not list(
        (tmp_path / 'v2').iterdir())

# Copyright (c) mmcoop contributors. All rights reserved.
"""mmpretrain's inference API (``ImageClassificationInferencer``,
``get_model``) and mmcoop's model zoo (``list_models``, ``get_model``) with
the SHIPPED configs: the demo config as it is, and a paper config whose CLIP
is swapped for the tiny random one (no weights can be downloaded here)."""
import hashlib
import os.path as osp
import shutil

import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image

from mmcoop.apis import (fetch_checkpoint, get_model, inference_model,
                         init_model, list_models, model_info,
                         register_to_mmpretrain)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO = 'configs/demo/positivecoop_clip-tiny-vit_1xb16-coslr-20e_demo-shapes-p50.py'  # noqa: E501
PAPER_NAME = 'dualcoop_clip-rn101_openai-pre_1xb32-coslr-50e_voc07-448px-p50'
TINY = 'mmcoop-tiny-ViT'
# the paper config on the tiny random CLIP at 64 px (only the CLIP and the
# input size change; pipeline, head, scope and dataset are the shipped ones)
TINY_MODEL = dict(
    backbone=dict(model_name=TINY, pretrained=None, input_resolution=64),
    head=dict(text_encoder=dict(model_name=TINY, pretrained=None)))
TINY_OPTIONS = {
    'model.backbone.model_name': TINY,
    'model.backbone.pretrained': None,
    'model.backbone.input_resolution': 64,
    'model.head.text_encoder.model_name': TINY,
    'model.head.text_encoder.pretrained': None,
    'test_dataloader.dataset.pipeline.1.scale': (64, 64),
}


@pytest.fixture(scope='module', autouse=True)
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('imgs')
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(80, 60), (50, 120)]):
        path = str(tmp / f'img{i}.png')
        Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)).save(path)
        paths.append(path)
    return paths


def _trained_checkpoint(cfg_path, path):
    """A head-only checkpoint (as mmcoop runs save) with moved weights."""
    model = init_model(cfg_path)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.head.parameters():
            if p.requires_grad:
                p.add_(0.5 * torch.randn(p.shape, generator=gen))
    torch.save({'state_dict': model.state_dict(),
                'meta': {'dataset_meta': dict(model.dataset_meta)}}, path)
    return model


@pytest.fixture(scope='module', params=['demo', 'paper'])
def shipped(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    if request.param == 'demo':
        cfg_path = osp.join(REPO, DEMO)
    else:
        cfg = Config.fromfile(
            osp.join(REPO, 'configs', 'dualcoop', PAPER_NAME + '.py'))
        cfg.merge_from_dict(TINY_OPTIONS, allow_list_keys=True)
        cfg_path = str(tmp / 'dualcoop_tiny.py')
        cfg.dump(cfg_path)
    ckpt = str(tmp / 'head.pth')
    trained = _trained_checkpoint(cfg_path, ckpt)
    return dict(cfg_path=cfg_path, ckpt=ckpt, trained=trained,
                classes=trained.dataset_meta['classes'])


def test_inferencer_from_config_path(shipped, images):
    """ImageClassificationInferencer(model=<config>, pretrained=<ckpt>):
    the model builds in the mmcoop scope (``_scope_``), the test pipeline
    builds in mmpretrain's scope and its loader lets mmpretrain's decoded
    images through; the scores are mmcoop's."""
    from mmpretrain import ImageClassificationInferencer
    ours = inference_model(
        init_model(shipped['cfg_path'], shipped['ckpt']), images)
    inferencer = ImageClassificationInferencer(
        model=shipped['cfg_path'], pretrained=shipped['ckpt'], device='cpu')
    rgb = np.asarray(Image.open(images[1]).convert('RGB'))
    # mmpretrain takes arrays as BGR
    outs = inferencer([images[0], np.ascontiguousarray(rgb[..., ::-1])])
    for out, mine in zip(outs, ours):
        np.testing.assert_allclose(
            out['pred_scores'], mine['scores'], rtol=0, atol=1e-6)
        top = int(np.argmax(mine['scores']))
        assert out['pred_label'] == top  # mmpretrain's output is top-1
        assert out['pred_class'] == shipped['classes'][top]
    # the checkpoint moved the head: scores differ from the untrained model
    untrained = inference_model(init_model(shipped['cfg_path']), images[0])
    assert not np.allclose(untrained[0]['scores'], ours[0]['scores'],
                           atol=1e-4)


def test_inferencer_from_built_model_and_get_model(shipped, images):
    import mmpretrain
    from mmpretrain import ImageClassificationInferencer
    model = init_model(shipped['cfg_path'], shipped['ckpt'])
    ours = inference_model(model, images[0])[0]['scores']
    out = ImageClassificationInferencer(model=model)(images[0])[0]
    np.testing.assert_allclose(out['pred_scores'], ours, atol=1e-6)

    built = mmpretrain.get_model(
        shipped['cfg_path'], pretrained=shipped['ckpt'])
    trained = shipped['trained'].state_dict()
    for key, value in built.state_dict().items():
        torch.testing.assert_close(value, trained[key], msg=key)
    assert built.head.classnames == shipped['classes']


def test_loader_passes_decoded_images_through(tmp_path):
    from mmcoop.datasets.transforms import LoadImageFromFileChecked
    loader = LoadImageFromFileChecked()
    img = np.zeros((3, 4, 3), np.uint8)
    results = dict(img=img, img_shape=(3, 4), ori_shape=(3, 4))
    assert loader(results) is results and results['img'] is img
    with pytest.raises(OSError, match='missing.png'):  # paths still load
        loader(dict(img_path=str(tmp_path / 'missing.png')))


def test_list_models_and_info():
    names = list_models()
    assert len(names) == 72 and names == sorted(names)
    assert PAPER_NAME in names
    voc_baseline = list_models('BASELINE*voc07*')
    assert len(voc_baseline) == 9
    assert all(n.startswith('baseline_') and '_voc07-' in n
               for n in voc_baseline)
    info = model_info(PAPER_NAME)
    assert osp.isfile(info.config)
    assert info.config.endswith(f'configs/dualcoop/{PAPER_NAME}.py')
    assert not info.weights  # nothing released
    with pytest.raises(ValueError, match='list_models'):
        model_info('dualcoop_p50')


def test_get_model_by_name_path_and_url(tmp_path, monkeypatch, http_folder):
    cfg_path = str(tmp_path / 'tiny.py')
    cfg = Config.fromfile(model_info(PAPER_NAME).config)
    cfg.merge_from_dict(TINY_OPTIONS, allow_list_keys=True)
    cfg.dump(cfg_path)
    ckpt = str(tmp_path / 'released.pth')
    trained = _trained_checkpoint(cfg_path, ckpt)
    options = {k: v for k, v in TINY_OPTIONS.items() if k.startswith('model')}

    with pytest.raises(ValueError, match='no released checkpoint'):
        get_model(PAPER_NAME, pretrained=True, cfg_options=options)
    by_path = get_model(PAPER_NAME, pretrained=ckpt, cfg_options=options)

    # the same file from an http URL (a local server), cached in torch hub
    served, base_url = http_folder
    shutil.copy(ckpt, served / 'released.pth')
    monkeypatch.setattr(torch.hub, '_hub_dir', str(tmp_path / 'hub'))
    url = f'{base_url}/released.pth'
    by_url = get_model(PAPER_NAME, pretrained=url, cfg_options=options)
    local = fetch_checkpoint(url)
    # cached per URL: <hub>/checkpoints/<sha256(url)[:16]>/<file name>
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    assert local == str(tmp_path / 'hub' / 'checkpoints' / key /
                        'released.pth')
    expected = trained.state_dict()
    for model in (by_path, by_url):
        for key, value in model.state_dict().items():
            torch.testing.assert_close(value, expected[key], msg=key)
    with pytest.raises(FileNotFoundError, match='http'):
        fetch_checkpoint(str(tmp_path / 'nope.pth'))


def test_mmpretrain_get_model_by_name():
    """After register_to_mmpretrain, mmpretrain resolves mmcoop names."""
    import mmpretrain
    register_to_mmpretrain()
    register_to_mmpretrain()  # idempotent
    assert PAPER_NAME in mmpretrain.list_models('dualcoop*voc07*p50')
    model = mmpretrain.get_model(PAPER_NAME, pretrained=False, **TINY_MODEL)
    assert type(model.head).__name__ == 'DualCoOpHead'
    assert len(model.head.classnames) == 20

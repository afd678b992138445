# Copyright (c) mmcoop contributors. All rights reserved.
"""Bad inputs of the inference API and the image demo are refused with a
message naming the argument and the fix, before any work: thresholds, empty
and 16-bit/float images, a folder given as the checkpoint, URL checkpoints
of the same file name, the demo's numeric options and output folders."""
import copy
import hashlib
import os

import numpy as np
import pytest
import torch
from _common import load_tool, tiny_classifier_config
from mmengine.config import Config
from PIL import Image

from mmcoop.apis import (MultiLabelInferencer, fetch_checkpoint,
                         inference_model, init_model)
from mmcoop.apis.model_zoo import url_cache_path

CLASSES = ['cat', 'dog', 'traffic light', 'hair drier']


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('apis_inputs')
    cfg = tiny_classifier_config(
        dict(type='PositiveCoOpHead', classnames=CLASSES, n_ctx=4,
             text_encoder=dict(type='FrozenCLIPTextEncoder',
                               model_name='mmcoop-tiny-RN')))
    cfg_path = str(tmp / 'tiny.py')
    Config(copy.deepcopy(cfg)).dump(cfg_path)
    torch.manual_seed(0)
    model = init_model(cfg)
    ckpt = str(tmp / 'head.pth')
    torch.save({'state_dict': model.state_dict()}, ckpt)
    image = str(tmp / 'img.png')
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), np.uint8)).save(image)
    return dict(tmp=tmp, cfg=cfg, cfg_path=cfg_path, ckpt=ckpt, model=model,
                image=image)


# ------------------------------------------------------------ thresholds
def test_image_demo_labels_with_the_calibrated_thresholds(setup, capsys):
    """``image_demo.py --threshold calibrated``, as
    ``inference_model(..., threshold='calibrated')``: the per-class
    thresholds of a clean-protocol checkpoint (before: only a number)."""
    demo = load_tool('demo/image_demo.py')
    scores = inference_model(init_model(setup['cfg_path'], setup['ckpt']),
                             setup['image'])[0]['scores']
    # thresholds that keep classes 1 and 3 only (half of their scores)
    thresholds = [1.0, float(scores[1]) / 2, 1.0, float(scores[3]) / 2]
    assert min(scores[1], scores[3]) > 0
    ckpt = str(setup['tmp'] / 'calibrated.pth')
    torch.save({'state_dict': setup['model'].state_dict(),
                'meta': {'calibrated_thresholds': dict(
                    thresholds=thresholds, classes=CLASSES, epoch=1,
                    split='val')}}, ckpt)
    capsys.readouterr()
    results, _ = demo.main([setup['image'], setup['cfg_path'], ckpt,
                            '--threshold', 'calibrated'])
    assert sorted(results[0]['labels']) == [1, 3]
    out = capsys.readouterr().out
    assert 'dog:' in out and 'hair drier:' in out and 'cat:' not in out
    # a checkpoint without them: the inference API's error, as a message
    # (before: a traceback)
    with pytest.raises(SystemExit,
                       match="--threshold: .*no meta.*calibrated_thresholds"):
        demo.main([setup['image'], setup['cfg_path'], setup['ckpt'],
                   '--threshold', 'calibrated'])


@pytest.mark.parametrize('threshold, match', [
    ([0.5, 0.5], r'threshold has 2 values, but the model has 4 classes'),
    ([[0.5] * 4], r'got an array of shape \(1, 4\).*flat list'),
    (2, r'threshold must be a number in \[0, 1\].*got 2\b'),
    (-1, r'got -1\b'),
    (float('nan'), r'got nan'),
    ([0.1, 0.2, 1.5, 0.3], r"got 1\.5 for class 2 \('traffic light'\)"),
    ([0.1, 0.2, float('nan'), 0.3], r'got nan for class 2'),
    (True, r'got True'),
    (['a', 'b', 'c', 'd'], r'threshold must be a number'),
    ('high', r"got 'high'"),
])
def test_bad_thresholds_are_refused_when_given(setup, threshold, match):
    model = setup['model']
    with pytest.raises(ValueError, match=match):
        inference_model(model, setup['image'], threshold=threshold)
    # the inferencer checks its default at construction, a call's own value
    # at the call
    with pytest.raises(ValueError, match=match):
        MultiLabelInferencer(model, threshold=threshold)
    inferencer = MultiLabelInferencer(model)
    with pytest.raises(ValueError, match=match):
        inferencer(setup['image'], threshold=threshold)


def test_threshold_none_is_the_default_and_good_values_work(setup):
    model, image = setup['model'], setup['image']
    default = inference_model(model, image)[0]
    assert inference_model(model, image, threshold=None)[0]['labels'] == \
        default['labels']
    assert MultiLabelInferencer(model, threshold=None).threshold == 0.5
    scores = default['scores']
    per_class = np.where(np.arange(4) % 2 == 0, 0.0, 1.0)  # even classes
    for value in (per_class, list(per_class), tuple(per_class)):
        got = inference_model(model, image, threshold=value)[0]
        assert sorted(got['labels']) == [0, 2]
    assert inference_model(model, image, threshold=1)[0]['labels'] == [
        i for i in np.argsort(-scores, kind='stable') if scores[i] >= 1
    ]
    assert len(inference_model(model, image, threshold=0)[0]['labels']) == 4


def test_the_configs_threshold_is_the_default(setup, capsys):
    """``model.head.thr`` (what tools/test.py labels with) is the default
    of inference_model, MultiLabelInferencer, image_demo.py and the export;
    before, inference used 0.5 whatever the config said (image_demo's
    --help even suggested --cfg-options model.head.thr=0.3)."""
    from mmcoop.apis import default_threshold
    model, image = setup['model'], setup['image']
    scores = inference_model(model, image)[0]['scores']
    low = float(np.sort(scores)[0])  # every class at or above it
    model.head.thr = low
    try:
        assert default_threshold(model) == low
        assert MultiLabelInferencer(model).threshold == low
        assert inference_model(model, image)[0]['labels'] == list(
            np.argsort(-scores, kind='stable'))
        # an explicit threshold wins
        assert inference_model(model, image, threshold=1.0)[0]['labels'] \
            == [i for i in range(4) if scores[i] >= 1]
    finally:
        model.head.thr = 0.5
    model.head.thr, model.head.topk = None, 2
    try:
        with pytest.warns(UserWarning, match=r'labels the top 2 classes.*'
                          r'model\.head\.topk'):
            assert default_threshold(model) == 0.5
    finally:
        model.head.thr, model.head.topk = 0.5, None
    demo = load_tool('demo/image_demo.py')
    results, _ = demo.main([image, setup['cfg_path'], setup['ckpt'],
                            '--cfg-options', f'model.head.thr={low}'])
    assert len(results[0]['labels']) == 4
    capsys.readouterr()


def test_device_is_checked_before_the_model_is_built(setup, capsys):
    """Before: torch's "Found no NVIDIA driver" / "Expected one of cpu,
    cuda, ..." after the model was built."""
    demo = load_tool('demo/image_demo.py')
    with pytest.raises(SystemExit):
        demo.main([setup['image'], setup['cfg_path'], setup['ckpt'],
                   '--device', 'gpu'])
    assert "argument --device: 'gpu' is not a device. Fix: cpu, cuda or " \
        'cuda:N' in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"device 'gpu' is not a device"):
        init_model(setup['cfg'], device='gpu')
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"device 'cuda': no CUDA "
                           r'device is available here'):
            init_model(setup['cfg'], device='cuda')


# --------------------------------------------------------------- images
def test_empty_array_is_refused_naming_the_image(setup):
    model = setup['model']
    good = np.zeros((8, 8, 3), np.uint8)
    for empty in (np.zeros((0, 5, 3), np.uint8), np.zeros((5, 0), np.uint8),
                  Image.new('RGB', (0, 0))):
        with pytest.raises(ValueError,
                           match=r'images\[1\] is an empty image .*no '
                           r'pixels.*Fix'):
            inference_model(model, [good, empty])


@pytest.mark.parametrize('image, shown', [
    (None, 'None (NoneType)'),
    (b'\xff\xd8', "b'\\xff\\xd8' (bytes)"),
    ({'img': 1}, "{'img': 1} (dict)"),
])
def test_an_image_of_no_accepted_kind_is_named(setup, image, shown):
    """None was "array images must be HxWx3 ... got shape ()"."""
    with pytest.raises(TypeError) as err:
        inference_model(setup['model'], image)
    assert str(err.value).startswith(
        f'image is {shown}, not an image: inference takes an image file '
        'path (str or os.PathLike), an HxWx3 RGB uint8 numpy array or a '
        'PIL image, or a list of them. Fix: ')
    with pytest.raises(TypeError, match=r'^images\[1\] is None'):
        inference_model(setup['model'], [setup['image'], None])


@pytest.mark.parametrize('array, mode, match', [
    (np.full((9, 9), 40000, np.uint16), 'I;16',
     r"\(a PIL image of mode 'I;16'\) is a uint16 array with values in "
     r'\[40000, 40000\]; inference expects uint8 RGB values 0\.\.255\. '
     r'Fix: convert it to uint8 \(scaled to 0\.\.255\)\.$'),
    (np.full((9, 9), 70000, np.int32), 'I',
     r"\(a PIL image of mode 'I'\) is a int32 array with values in "
     r'\[70000, 70000\]'),
    (np.full((9, 9), 0.5, np.float32), 'F',
     r"\(a PIL image of mode 'F'\) is a float32 array with values in "
     r'\[0, 1\].*'
     r'\(img \* 255\)\.round\(\)\.astype\(np\.uint8\)\.$'),
    (np.full((9, 9), 300.0, np.float32), 'F',
     r"\(a PIL image of mode 'F'\) .* values in \[300\.0, 300"),
])
def test_wide_pil_images_are_refused_like_arrays(setup, array, mode, match):
    """16-bit and float PIL images are not saturated by convert('RGB'):
    the same check and message as the array."""
    image = Image.fromarray(array)
    assert image.mode == mode
    with pytest.raises(ValueError, match=r'image ' + match):
        inference_model(setup['model'], image)
    # the array itself: the same wording (and the file as another fix)
    with pytest.raises(ValueError, match='inference expects uint8 RGB'):
        inference_model(setup['model'], array)


def test_wide_image_files_are_refused_like_the_pil_image(setup, tmp_path):
    """The file of a 16-bit image is refused as its PIL image is (the
    configs' loader, mmcoop.LoadImageFromFileChecked, saturated it to
    white), and with 8-bit values it is the same picture as the PIL
    image."""
    infer = MultiLabelInferencer(setup['model'])
    infer.cfg = copy.deepcopy(infer.cfg)
    infer.cfg.test_dataloader.dataset.pipeline[0] = dict(
        type='mmcoop.LoadImageFromFileChecked')
    path = str(tmp_path / 'wide16.png')
    Image.fromarray(np.full((9, 9), 40000, np.uint16)).save(path)
    with pytest.raises(OSError, match=r"wide16\.png'.*'I;16' holds uint16 "
                       r'values in \[40000, 40000\].*Fix'):
        infer(path)
    grey = np.random.default_rng(1).integers(0, 256, (20, 30), np.uint16)
    Image.fromarray(grey).save(path)
    np.testing.assert_allclose(infer(path)[0]['scores'],
                               infer(Image.open(path))[0]['scores'],
                               atol=1e-6)


def test_wide_pil_images_with_8bit_values_are_the_same_picture(setup):
    model = setup['model']
    grey = np.random.default_rng(1).integers(0, 256, (20, 30), np.uint8)
    expected = inference_model(model, Image.fromarray(grey))[0]['scores']
    for dtype in (np.uint16, np.int32):
        wide = Image.fromarray(grey.astype(dtype))
        assert wide.mode in ('I;16', 'I')
        np.testing.assert_allclose(
            inference_model(model, wide)[0]['scores'], expected, atol=1e-6)


# ----------------------------------------------------------- checkpoints
def test_folder_checkpoint_names_the_file_inside(setup, tmp_path):
    work_dir = tmp_path / 'wd'
    work_dir.mkdir()
    with pytest.raises(IsADirectoryError,
                       match=r"'.*wd' is a folder, not a checkpoint file.*"
                       r'holds none'):
        init_model(setup['cfg'], str(work_dir))
    for n in (2, 10):
        (work_dir / f'epoch_{n}.pth').write_bytes(b'x')
    with pytest.raises(IsADirectoryError, match=r'e\.g\. .*epoch_10\.pth'):
        init_model(setup['cfg'], str(work_dir))
    # MMEngine's pointer to the last checkpoint wins
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'epoch_2.pth'))
    with pytest.raises(IsADirectoryError,
                       match=r'epoch_2\.pth.* named in .*last_checkpoint'):
        init_model(setup['cfg'], str(work_dir))
    with pytest.raises(FileNotFoundError, match="'nope.pth' does not exist"):
        init_model(setup['cfg'], 'nope.pth')


def test_url_checkpoints_are_cached_per_url(setup, http_folder, tmp_path,
                                            monkeypatch):
    monkeypatch.setattr(torch.hub, '_hub_dir', str(tmp_path / 'hub'))
    folder, base = http_folder
    trained = {}
    for run, seed in (('runA', 1), ('runB', 2)):
        (folder / run).mkdir()
        state = {
            k: v + torch.randn(v.shape,
                               generator=torch.Generator().manual_seed(seed))
            for k, v in setup['model'].state_dict().items()
        }
        torch.save({'state_dict': state}, folder / run / 'epoch_2.pth')
        trained[run] = state
    urls = {run: f'{base}/{run}/epoch_2.pth' for run in trained}
    local = {run: fetch_checkpoint(url) for run, url in urls.items()}
    assert local['runA'] != local['runB']
    assert local['runA'] == url_cache_path(urls['runA'])
    assert all(p.endswith('epoch_2.pth') for p in local.values())
    for run in trained:  # each URL loads its own weights
        torch.manual_seed(0)
        model = init_model(setup['cfg'], urls[run])
        key = 'head.pos_prompt.ctx'
        assert torch.equal(model.state_dict()[key], trained[run][key])
    # cached: the server is not asked again
    (folder / 'runA' / 'epoch_2.pth').unlink()
    assert fetch_checkpoint(urls['runA']) == local['runA']


def test_url_hash_suffix_is_checked(http_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, '_hub_dir', str(tmp_path / 'hub'))
    folder, base = http_folder
    data = b'checkpoint bytes'
    sha = hashlib.sha256(data).hexdigest()[:8]
    (folder / f'm-{sha}.pth').write_bytes(data)
    wrong = '0' * 8 if sha != '0' * 8 else '1' * 8
    (folder / f'm-{wrong}.pth').write_bytes(data)
    assert open(fetch_checkpoint(f'{base}/m-{sha}.pth'), 'rb').read() == data
    url = f'{base}/m-{wrong}.pth'
    with pytest.raises(RuntimeError,
                       match=f'does not match the sha256 prefix .{wrong}.'):
        fetch_checkpoint(url)
    assert not os.path.exists(url_cache_path(url))


# ------------------------------------------------------------- the demo
def test_image_demo_numeric_options(setup, capsys):
    demo = load_tool('demo/image_demo.py')
    common = [setup['image'], setup['cfg_path'], setup['ckpt']]
    for option, value, what in (('--topk', '0', 'an integer >= 1'),
                                ('--topk', '-2', 'an integer >= 1'),
                                ('--threshold', '2', r'a number in [0, 1]'),
                                ('--threshold', 'nan', r'a number in [0, 1]')):
        with pytest.raises(SystemExit) as exc:
            demo.main([*common, option, value])
        assert exc.value.code == 2
        assert f'argument {option}: must be {what}, got {value!r}' in \
            capsys.readouterr().err


def test_image_demo_makes_no_folder_when_it_fails(setup, tmp_path):
    demo = load_tool('demo/image_demo.py')
    show = tmp_path / 'a' / 'vis'
    bad = tmp_path / 'bad.pth'
    bad.write_text('not a checkpoint')
    with pytest.raises(Exception, match='bad.pth'):
        demo.main([setup['image'], setup['cfg_path'], str(bad),
                   '--show-dir', str(show)])
    assert not (tmp_path / 'a').exists()
    # a folder as the checkpoint: named, with the file to pass
    (tmp_path / 'wd').mkdir()
    with pytest.raises(SystemExit, match=r"CHECKPOINT '.*wd' is a folder"):
        demo.main([setup['image'], setup['cfg_path'], str(tmp_path / 'wd'),
                   '--show-dir', str(show)])
    assert not (tmp_path / 'a').exists()
    _, saved = demo.main([setup['image'], setup['cfg_path'], setup['ckpt'],
                          '--show-dir', str(show)])
    assert saved == [str(show / 'img.png')] and os.path.isfile(saved[0])


def test_zoo_names_and_unreachable_urls_name_the_fix(tmp_path, monkeypatch):
    """A typo of a model name gets the nearest names; a zoo name given to
    init_model (which takes a config file) points at get_model; an
    unreachable checkpoint URL names where to put the file."""
    from mmcoop.apis import init_model, list_models, model_info
    from mmcoop.apis.model_zoo import close_model_names
    name = list_models()[0]
    typo = name.replace('coop', 'cop', 1) if 'coop' in name else name[1:]
    with pytest.raises(ValueError, match=rf'close: .*{name}'):
        model_info(typo)
    # a typo in the beginning of a name (no full name is near it)
    short = 'positivecop_clip-rn101'
    with pytest.raises(ValueError, match=r'close: positivecoop_clip-rn101_'):
        model_info(short)
    assert close_model_names('xyz') == []
    with pytest.raises(FileNotFoundError, match=(
            rf"Config '{name}' is not a file\. .*mmcoop\.apis\.get_model"
            rf"\(name\); close names: \[.*'{name}'")):
        init_model(name)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'hub'))
    url = 'http://127.0.0.1:9/run/epoch_2.pth'  # nothing listens there
    with pytest.raises(OSError, match=(
            rf"Cannot download the checkpoint '{url}' .*put it at "
            rf"'{url_cache_path(url)}'")):
        fetch_checkpoint(url)


def test_zoo_calls_with_a_config_or_a_wrong_type_name_init_model():
    """get_model / model_info take index names (also written ``NAME.py``,
    as mim does); a config file or a Config object is init_model's, and a
    non-str pattern is refused by name."""
    from mmengine.config import Config

    from mmcoop.apis import get_model, list_models, model_info
    name = list_models()[0]
    assert model_info(name + '.py').name == name
    for wrong in (f'configs/x/{name}.py', Config(dict(a=1)), 'mine.py'):
        with pytest.raises(TypeError, match=r'not a model name of the index'
                           r'.*mmcoop\.apis\.init_model\(config, checkpoint'):
            get_model(wrong)
    with pytest.raises(TypeError, match='pattern must be a str'):
        list_models(1)


def test_image_demo_names_a_bad_image_and_keeps_the_others(
        setup, tmp_path, capsys):
    """One unreadable image among good ones: before, a traceback and
    nothing printed for the good ones (results were printed after every
    image had run)."""
    demo = load_tool('demo/image_demo.py')
    empty = tmp_path / 'empty.png'
    empty.write_bytes(b'')
    cfg = copy.deepcopy(setup['cfg'])
    cfg['test_dataloader']['dataset']['pipeline'][0] = dict(
        type='mmcoop.LoadImageFromFileChecked')
    cfg_path = str(tmp_path / 'checked.py')
    Config(cfg).dump(cfg_path)
    with pytest.raises(SystemExit, match=r'1 of 3 image\(s\) could not'):
        demo.main([setup['image'], str(empty), setup['image'], cfg_path,
                   setup['ckpt']])
    out, err = capsys.readouterr()
    assert out.count(f'{setup["image"]}:') == 2
    assert f"error: {empty}: Cannot decode image file '{empty}'" in err


def test_zero_shot_models_need_no_checkpoint_in_the_tools(tmp_path, capsys):
    """A ZeroShotHead learns nothing: ``none`` as the checkpoint of
    image_demo.py and export.py, as tools/test.py and the deployment
    benchmark take it (before: "Checkpoint 'none' does not exist")."""
    cfg = tiny_classifier_config(
        dict(type='ZeroShotHead', classnames=CLASSES,
             text_encoder=dict(type='FrozenCLIPTextEncoder',
                               model_name='mmcoop-tiny-RN')))
    cfg_path = str(tmp_path / 'zs.py')
    Config(cfg).dump(cfg_path)
    image = str(tmp_path / 'img.png')
    Image.fromarray(np.full((40, 50, 3), 90, np.uint8)).save(image)
    results, _ = load_tool('demo/image_demo.py').main(
        [image, cfg_path, 'none'])
    assert len(results[0]['scores']) == len(CLASSES)
    out = tmp_path / 'zs.pt'
    assert load_tool('tools/deployment/export.py').main(
        [cfg_path, 'none', '--out', str(out), '--format', 'torchscript']) == 0
    assert out.is_file()
    capsys.readouterr()

# Copyright (c) mmcoop contributors. All rights reserved.
"""Bad inputs of the deployment tools stop with a message naming the option
or file, before any work and without leaving files or folders: run_onnx's
numeric options and unreadable images, export's checkpoint errors and
output folders, benchmark's numeric options."""
import contextlib
import re

import numpy as np
import pytest
from PIL import Image

from mmcoop.deployment import ONNX_OPSETS, ExportError, export_model


@pytest.fixture(scope='module')
def exported(method_models, tmp_path_factory):
    path = str(tmp_path_factory.mktemp('exported_inputs') / 'm.onnx')
    export_model(method_models('baseline'), path, format='onnx')
    return path


@pytest.mark.parametrize('option, value, what', [
    ('--batch-size', '0', 'an integer >= 1'),
    ('--batch-size', '-1', 'an integer >= 1'),
    ('--topk', '0', 'an integer >= 1'),
    ('--topk', '-1', 'an integer >= 1'),
    ('--threshold', '5', 'a number in [0, 1]'),
    ('--threshold', 'nan', 'a number in [0, 1]'),
])
def test_run_onnx_numeric_options(run_onnx, option, value, what, capsys):
    with pytest.raises(SystemExit) as exc:
        run_onnx.main(['m.onnx', 'x.png', option, value])
    assert exc.value.code == 2
    assert f'argument {option}: must be {what}, got {value!r}' in \
        capsys.readouterr().err


def test_run_onnx_api_checks_its_numbers(run_onnx, exported, images):
    run, meta = run_onnx.load_model(exported)
    with pytest.raises(run_onnx.DeploymentError, match='batch_size must be'):
        run_onnx.predict(run, meta, images[:1], batch_size=0)
    scores = np.linspace(0, 1, len(meta['classes']), dtype=np.float32)
    with pytest.raises(run_onnx.DeploymentError, match='topk must be'):
        run_onnx.labels(scores, meta, topk=-1)
    with pytest.raises(run_onnx.DeploymentError, match=r'in \[0, 1\]'):
        run_onnx.labels(scores, meta, threshold=float('nan'))


def test_run_onnx_refuses_wide_images_and_bombs(run_onnx, exported,
                                                tmp_path, monkeypatch,
                                                capsys):
    run, meta = run_onnx.load_model(exported)
    wide = tmp_path / 'wide16.png'
    Image.fromarray(np.full((20, 20), 40000, np.uint16)).save(wide)
    assert Image.open(wide).mode.startswith('I')
    with pytest.raises(run_onnx.DeploymentError,
                       match=r"wide16\.png' \(PIL mode 'I;?1?6?.*'\) is a .* "
                       r'array with values in \[40000, 40000\].*would '
                       r'saturate.*Fix: convert it to uint8'):
        run_onnx.read_image(str(wide), meta)
    floats = tmp_path / 'float.tif'
    Image.fromarray(np.full((20, 20), 0.5, np.float32)).save(floats)
    with pytest.raises(run_onnx.DeploymentError,
                       match=r"mode 'F'\) .* values in \[0, 1\].*\* 255"):
        run_onnx.read_image(str(floats), meta)
    assert run_onnx.main([exported, str(wide)]) == 2
    assert capsys.readouterr().err.startswith(f'error: Image {str(wide)!r}')
    # 16-bit files holding 0..255 are the same picture as 8-bit ones
    grey = np.random.default_rng(0).integers(0, 256, (20, 20), np.uint8)
    eight, sixteen = tmp_path / 'g8.png', tmp_path / 'g16.png'
    Image.fromarray(grey).save(eight)
    Image.fromarray(grey.astype(np.uint16)).save(sixteen)
    np.testing.assert_array_equal(
        run_onnx.read_image(str(sixteen), meta),
        run_onnx.read_image(str(eight), meta))
    # over Pillow's pixel limit: a DeploymentError, not a raw traceback
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 100)
    with pytest.raises(run_onnx.DeploymentError,
                       match=r"g8\.png'.*exceeds limit.*MAX_IMAGE_PIXELS"):
        run_onnx.read_image(str(eight), meta)
    assert run_onnx.main([exported, str(eight)]) == 2
    assert 'MAX_IMAGE_PIXELS' in capsys.readouterr().err


def test_export_checkpoint_errors_are_one_line_and_leave_nothing(
        demo_checkpoint, export_tool, tmp_path, capsys, monkeypatch):
    config, ckpt = demo_checkpoint
    out = tmp_path / 'new' / 'sub' / 'm.onnx'
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(open(ckpt, 'rb').read()[:1000])
    work_dir = tmp_path / 'wd'
    work_dir.mkdir()
    (work_dir / 'epoch_3.pth').write_bytes(b'')
    cases = [(str(truncated), 'Could not read checkpoint'),
             (str(tmp_path / 'missing.pth'), 'does not exist'),
             (str(work_dir), r'is a folder, not a checkpoint file.*'
              r'epoch_3\.pth')]
    for checkpoint, match in cases:
        assert export_tool.main([config, checkpoint, '--out', str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith('error: ') and 'Traceback' not in err
        assert len(err.strip().splitlines()) == 1
        assert re.search(match, err), err
        assert not (tmp_path / 'new').exists()
    # a failure after the model loaded removes the folders it made

    def fail(*args, **kwargs):
        assert (tmp_path / 'new' / 'sub').is_dir()
        raise ExportError('the export failed')

    monkeypatch.setattr(export_tool, 'export_model', fail)
    assert export_tool.main([config, ckpt, '--out', str(out)]) == 2
    assert 'the export failed' in capsys.readouterr().err
    assert not (tmp_path / 'new').exists()
    monkeypatch.undo()
    with pytest.raises(SystemExit):
        export_tool.main([config, ckpt, '--out', str(out), '--threshold', '2'])
    assert 'argument --threshold: must be a number in [0, 1]' in \
        capsys.readouterr().err


def _never_built(*args, **kwargs):
    raise AssertionError('the model was built')


@pytest.mark.parametrize('options, message', [
    (['--opset', '3'], 'error: ONNX opset 3 is not supported; use an opset '
     'from {} to {} (--opset).'.format(*ONNX_OPSETS)),
    (['--opset', '21'], 'use an opset from {} to {} (--opset)'.format(
        *ONNX_OPSETS)),
    (['--format', 'torchscript', '--opset', '18'],
     'error: opset 18 (--opset) is an ONNX setting; a torchscript export '
     'has none. Fix: drop it'),
    (['--classes', 'red circle', 'zebra'],
     "error: --classes: Unknown class name(s) ['zebra'] in the class "
     'subset. The model knows 10 classes'),
    (['--classes', 'red circle', 'Red_Circle'],
     "error: --classes: The class subset names ['red circle'] more than "
     'once'),
    # a TorchScript archive named .onnx: onnxruntime refused it later,
    # with the wrong fix (a lower opset)
    (['--format', 'torchscript'], "error: --out '{out}' names an onnx file, "
     'but the format is torchscript (--format). Fix: name it *.pt'),
    (['--threshold', 'calibrate'], "argument --threshold"),
])
def test_export_options_are_checked_before_the_model_is_built(
        export_tool, options, message, tmp_path, monkeypatch, capsys):
    """Before: --opset and --classes were refused by export_model, after
    init_model had built the model and loaded the checkpoint."""
    from _deploy_helpers import DEMO_CONFIG, ROOT
    monkeypatch.setattr(export_tool, 'init_model', _never_built)
    out = tmp_path / 'm.onnx'
    with pytest.raises(SystemExit) if options[0] == '--threshold' else \
            contextlib.nullcontext():
        assert export_tool.main([
            f'{ROOT}/{DEMO_CONFIG}', 'never-read.pth', '--out',
            str(out), *options
        ]) == 2
    err = capsys.readouterr().err
    message = message.format(out=out)
    assert message in err and (options[0] == '--threshold' or len(
        err.strip().splitlines()) == 1), err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('package', ['onnx', 'onnxruntime'])
def test_missing_export_packages_are_named_before_the_model_is_built(
        export_tool, load_tool, package, monkeypatch, capsys):
    """Before: found when the ONNX file was written or verified (export) or
    timed (benchmark), after the model was built."""
    import sys
    monkeypatch.setitem(sys.modules, package, None)  # import fails
    monkeypatch.setattr(export_tool, 'init_model', _never_built)
    assert export_tool.main(['c.py', 'c.pth', '--out', 'm.onnx']) == 2
    assert f'error: ONNX export needs the `{package}` package: pip install' \
        in capsys.readouterr().err
    bench = load_tool('tools/deployment/benchmark.py')
    monkeypatch.setattr(bench, 'init_model', _never_built)
    with pytest.raises(SystemExit) as exc:
        bench.main(['c.py', 'none'])
    assert exc.value.code == 2
    assert f'error: ONNX export needs the `{package}` package' in \
        capsys.readouterr().err


@pytest.mark.parametrize('option, value', [('--rounds', '0'),
                                           ('--threads', '0'),
                                           ('--batch-sizes', '0'),
                                           ('--single-images', '-1')])
def test_benchmark_numeric_options(load_tool, option, value, capsys):
    bench = load_tool('tools/deployment/benchmark.py')
    values = [value, '1'] if option == '--batch-sizes' else [value]
    with pytest.raises(SystemExit) as exc:
        bench.main(['c.py', 'none', option, *values])
    assert exc.value.code == 2
    assert f'argument {option}: must be an integer >= 1, got {value!r}' in \
        capsys.readouterr().err


def test_benchmark_keeps_files_in_its_work_dir_without_force(
        load_tool, tmp_path, capsys):
    """--work-dir DIR: a benchmark.pt / benchmark.onnx of the user's there
    is kept (refused before the model is built) unless --force. Before:
    both were replaced silently. Errors are one line, exit code 2 (they
    were tracebacks)."""
    import re
    bench = load_tool('tools/deployment/benchmark.py')
    mine = tmp_path / 'benchmark.pt'
    mine.write_text('my own model')
    with pytest.raises(SystemExit) as exc:
        bench.main(['missing.py', 'none', '--work-dir', str(tmp_path)])
    assert exc.value.code == 2
    assert re.search(r"error: .*'.*benchmark\.pt'.*Nothing was written.*"
                     r'--force', capsys.readouterr().err)
    assert mine.read_text() == 'my own model'
    # with --force the files are claimed; the (missing) config stops next
    with pytest.raises(SystemExit):
        bench.main(['missing.py', 'none', '--work-dir', str(tmp_path),
                    '--force'])
    err = capsys.readouterr().err
    assert err.startswith('error: ') and 'missing.py' in err
    assert 'Traceback' not in err


@pytest.mark.parametrize('mode', ['LA', 'RGBA', 'P', 'I;16', 'I;16 wide'])
def test_run_onnx_decodes_by_the_loaders_rgb_rule(run_onnx, tmp_path, mode):
    """run_onnx.py (numpy + Pillow only, so its own copy of the rule) gives
    the test pipeline's pixels for every image mode, or refuses what the
    loader refuses (16-bit values beyond 0..255)."""
    from mmcv.transforms import Resize

    from mmcoop.datasets.transforms import LoadImageFromFileChecked
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (6, 9), np.uint8)
    if mode.startswith('I;16'):
        img = Image.fromarray(grey.astype(np.uint16) *
                              (257 if 'wide' in mode else 1))
    else:
        img = Image.fromarray(rng.integers(0, 256, (6, 9, 3), np.uint8))
        img = img.convert('L') if mode == 'LA' else img
        img = img.convert(mode) if mode == 'P' else img
        if mode in ('LA', 'RGBA'):
            img.putalpha(Image.fromarray(grey))
    path = str(tmp_path / 'x.png')
    img.save(path)
    meta = dict(preprocess=dict(
        decode=dict(exif_transpose=False),
        resize=dict(width=5, height=4, interpolation='bilinear')))
    load = LoadImageFromFileChecked()
    if 'wide' in mode:
        with pytest.raises(OSError, match='x.png.*saturate'):
            load(dict(img_path=path))
        with pytest.raises(run_onnx.DeploymentError, match='x.png.*saturate'):
            run_onnx.read_image(path, meta)
        return
    ref = Resize(scale=(5, 4), keep_ratio=False, backend='pillow',
                 interpolation='bilinear')(load(dict(img_path=path)))['img']
    np.testing.assert_array_equal(run_onnx.read_image(path, meta),
                                  ref[..., ::-1])


def test_benchmark_checks_the_test_pipeline_before_the_build(
        load_tool, tmp_path, monkeypatch, capsys):
    """A test pipeline without a fixed input size: one line before the
    model is built (before: a traceback after init_model)."""
    from _common import tiny_classifier_config
    from mmengine.config import Config
    cfg = tiny_classifier_config(dict(type='BaselineHead',
                                      classnames=['a', 'b'], in_channels=64))
    cfg['test_dataloader']['dataset']['pipeline'][1]['keep_ratio'] = True
    path = str(tmp_path / 'ratio.py')
    Config(cfg).dump(path)
    bench = load_tool('tools/deployment/benchmark.py')
    monkeypatch.setattr(bench, 'init_model', _never_built)
    with pytest.raises(SystemExit) as exc:
        bench.main([path, 'none'])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith('error: The exported model needs a fixed input '
                          'size')

# Copyright (c) mmcoop contributors. All rights reserved.
"""Bad input to the export and the runner: each a clear error, nothing of
the user's overwritten."""
import json

import numpy as np
import pytest
import torch
from _deploy_helpers import CLASSES, tiny_method_config

from mmcoop.apis import export_model, init_model
from mmcoop.deployment import ExportError, class_indices
from mmcoop.utils.paths import OutputPathError


@pytest.mark.parametrize('opset', [9, 16, 21])
def test_unsupported_opset(opset, method_models, tmp_path):
    out = tmp_path / 'm.onnx'
    with pytest.raises(ExportError, match=rf'opset {opset} .*17 to 20'):
        export_model(method_models('baseline'), str(out), opset=opset)
    assert not out.exists()


@pytest.mark.parametrize('kwargs, match', [
    (dict(format='tensorrt'), "format 'tensorrt'.*onnx, torchscript"),
    (dict(precision='int8'), "precision 'int8'.*fp32, fp16"),
    (dict(input_format='bgr'), "input format 'bgr'.*uint8, normalized"),
    (dict(thresholds=[0.5, 0.5]), 'threshold has 2 values, but the model '
     'has 5 classes'),
    (dict(thresholds=1.5), r'\[0, 1\]'),
    # as inference_model checks them (before: True stored as 1.0, a 0-d
    # array or a nested list a raw TypeError)
    (dict(thresholds=True), r'threshold must be .*got True'),
    (dict(thresholds=[[0.5] * 5]), r'array of shape \(1, 5\)'),
    (dict(thresholds=[0.2, 0.2, float('nan'), 0.2, 0.2]),
     r"got nan for class 2 \('traffic light'\)"),
    (dict(opset=17.5), r'opset 17\.5 is not supported.*17 to 20'),
    (dict(opset=True), r'opset True is not supported.*17 to 20'),
    (dict(format='torchscript', opset=18), r'opset 18 \(--opset\) is an '
     'ONNX setting; a torchscript export has none'),
])
def test_unsupported_options(kwargs, match, method_models, tmp_path):
    with pytest.raises(ExportError, match=match):
        export_model(method_models('baseline'), str(tmp_path / 'm'), **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_calibrated_thresholds_are_exported_per_exported_class(
        method_models, tmp_path):
    """``thresholds='calibrated'`` (``--threshold calibrated``): the
    training's per-class thresholds, those of the exported classes in
    their order; before, the export could only store one number."""
    import numpy as np
    model = method_models('baseline')
    names = list(model.dataset_meta['classes'])
    with pytest.raises(ExportError, match=r"thresholds='calibrated': the "
                       r"checkpoint has no meta\['calibrated_thresholds'\]"):
        export_model(model, str(tmp_path / 'a.onnx'),
                     thresholds='calibrated', verify=False)
    model.calibrated_thresholds = np.linspace(0.1, 0.9, len(names),
                                              dtype=np.float32)
    try:
        meta = export_model(model, str(tmp_path / 'b.pt'),
                            format='torchscript', thresholds='calibrated',
                            classes=[names[3], names[0]], verify=False)
    finally:
        del model.calibrated_thresholds
    assert meta['classes'] == [names[3], names[0]]
    assert meta['thresholds'] == pytest.approx(
        [float(np.float32(0.1 + 0.8 * 3 / (len(names) - 1))), 0.1])


def test_existing_output_is_kept_unless_force(method_models, tmp_path):
    out = tmp_path / 'tagger.onnx'
    out.write_bytes(b'my file')
    model = method_models('baseline')
    with pytest.raises(OutputPathError, match='already exist.*--force'):
        export_model(model, str(out))
    assert out.read_bytes() == b'my file'
    with pytest.raises(OutputPathError, match='is a folder'):
        export_model(model, str(tmp_path))
    export_model(model, str(out), force=True)
    assert out.read_bytes()[:8] != b'my file'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['tagger.onnx']


def test_unknown_class_names():
    with pytest.raises(
            ValueError,
            match=r"Unknown class name\(s\) \['dgo', "
            r"'zebra'\].*knows 5 classes: \['cat', 'dog'"):
        class_indices(CLASSES, ['cat', 'dgo', 'zebra'])
    with pytest.raises(ValueError, match="names \\['cat'\\] more than once"):
        class_indices(CLASSES, ['cat', 'CAT'])
    with pytest.raises(ValueError, match='subset is empty'):
        class_indices(CLASSES, [])
    assert class_indices(CLASSES, [' Hair_Drier', 'dog']) == [3, 1]
    with pytest.raises(ValueError, match=r"the string 'cat'; give a list"):
        class_indices(CLASSES, 'cat')  # not the letters c, a, t


def test_unsupported_test_pipeline(tmp_path):
    """A pipeline step that a deployed runtime cannot reproduce."""
    cfg = tiny_method_config('baseline')
    cfg.test_dataloader.dataset.pipeline.insert(
        2, dict(type='CenterCrop', crop_size=48))
    model = init_model(cfg)
    with pytest.raises(ExportError, match='`CenterCrop` step'):
        export_model(model, str(tmp_path / 'm.onnx'))
    cfg = tiny_method_config('baseline')
    cfg.test_dataloader.dataset.pipeline[1].update(keep_ratio=True)
    with pytest.raises(ExportError, match='fixed input size'):
        export_model(init_model(cfg), str(tmp_path / 'm.onnx'))


def test_checkpoint_that_does_not_fit_the_config(demo_checkpoint,
                                                 method_models, tmp_path,
                                                 export_tool, capsys):
    """The export tool loads through init_model's fit checks: the demo
    config (PositiveCoOp, 10 classes, 16 context tokens) takes neither a
    DualCoOp checkpoint nor a PositiveCoOp one of other classes."""
    config, _ = demo_checkpoint
    out = tmp_path / 'm.onnx'
    for method in ('dualcoop', 'positivecoop'):
        ckpt = str(tmp_path / f'{method}.pth')
        torch.save({'state_dict': method_models(method).state_dict()}, ckpt)
        assert export_tool.main([config, ckpt, '--out', str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f'error: Checkpoint {ckpt!r} does not fit')
        assert 'head.pos_prompt.ctx: checkpoint [5, 4, 64] vs model ' \
            '[10, 16, 64]' in err
    assert not out.exists()


def test_cli_errors_are_one_line(demo_checkpoint, tmp_path, export_tool,
                                 capsys):
    config, ckpt = demo_checkpoint
    out = tmp_path / 'm.onnx'
    assert export_tool.main(
        [config, ckpt, '--out',
         str(out), '--classes', 'red circle', 'zebra']) == 2
    assert "Unknown class name(s) ['zebra']" in capsys.readouterr().err
    assert export_tool.main([config, ckpt, '--out',
                             str(out), '--opset', '12']) == 2
    assert 'opset 12 is not supported' in capsys.readouterr().err
    out.write_text('keep me')
    assert export_tool.main([config, ckpt, '--out', str(out)]) == 2
    assert 'already exist' in capsys.readouterr().err
    assert out.read_text() == 'keep me'
    # never over an input, --force or not
    assert export_tool.main([config, ckpt, '--out', ckpt, '--force',
                             '--format', 'torchscript']) == 2
    assert 'refusing to overwrite an input' in capsys.readouterr().err
    # (an ONNX export over the .pth is refused for its name already)
    assert export_tool.main([config, ckpt, '--out', ckpt, '--force']) == 2
    assert 'names a torchscript file' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        export_tool.main(
            [config, ckpt, '--out',
             str(out), '--format', 'tflite'])


# ---------------------------------------------------------------------------
# the runner
# ---------------------------------------------------------------------------
@pytest.fixture(scope='module')
def exported(method_models, tmp_path_factory):
    root = tmp_path_factory.mktemp('exported')
    model = method_models('baseline')
    paths = dict(onnx=str(root / 'm.onnx'), torchscript=str(root / 'm.pt'))
    for fmt, path in paths.items():
        export_model(model, path, format=fmt)
    return paths


def test_runner_rejects_files_without_metadata(run_onnx, tmp_path):
    plain = torch.nn.Linear(3, 2)
    path = str(tmp_path / 'plain.onnx')
    torch.onnx.export(plain, (torch.zeros(1, 3), ), path, dynamo=False)
    with pytest.raises(run_onnx.DeploymentError, match="no 'mmcoop' metadata"):
        run_onnx.load_model(path)
    ts = str(tmp_path / 'plain.pt')
    torch.jit.save(torch.jit.trace(plain, torch.zeros(1, 3)), ts)
    with pytest.raises(run_onnx.DeploymentError, match='no mmcoop.json'):
        run_onnx.load_model(ts)
    with pytest.raises(run_onnx.DeploymentError, match='does not exist'):
        run_onnx.load_model(str(tmp_path / 'missing.onnx'))
    junk = tmp_path / 'junk.bin'
    junk.write_bytes(b'not a model')
    with pytest.raises(run_onnx.DeploymentError, match='neither an ONNX file'):
        run_onnx.load_model(str(junk))


def test_runner_rejects_unavailable_runtime(run_onnx, exported):
    import onnxruntime as ort
    if 'CUDAExecutionProvider' not in ort.get_available_providers():
        with pytest.raises(
                run_onnx.DeploymentError,
                match='no CUDAExecutionProvider.*available: '):
            run_onnx.load_model(exported['onnx'], device='cuda')
    if not torch.cuda.is_available():
        with pytest.raises(
                run_onnx.DeploymentError, match='torch sees no CUDA device'):
            run_onnx.load_model(exported['torchscript'], device='cuda')
    with pytest.raises(run_onnx.DeploymentError, match="device 'tpu'"):
        run_onnx.load_model(exported['onnx'], device='tpu')


def test_runner_rejects_newer_metadata_and_bad_images(run_onnx, exported,
                                                      tmp_path):
    import onnx
    proto = onnx.load(exported['onnx'])
    meta = json.loads(proto.metadata_props[0].value)
    meta['format_version'] = 99
    proto.metadata_props[0].value = json.dumps(meta)
    newer = str(tmp_path / 'newer.onnx')
    onnx.save(proto, newer)
    with pytest.raises(
            run_onnx.DeploymentError,
            match='format_version 99; this runner reads up to 1'):
        run_onnx.load_model(newer)
    run, meta = run_onnx.load_model(exported['onnx'])
    bad = tmp_path / 'bad.jpg'
    bad.write_bytes(b'\xff\xd8 truncated')
    with pytest.raises(run_onnx.DeploymentError, match='bad.jpg'):
        run_onnx.predict(run, meta, [str(bad)])
    assert run_onnx.main([exported['onnx'], str(bad)]) == 2
    assert run_onnx.main([exported['onnx']]) == 2  # no image
    scores = np.array([0.2, 0.9, 0.5, 0.1, 0.7], dtype=np.float32)
    assert run_onnx.labels(scores,
                           meta) == [('dog', pytest.approx(0.9)),
                                     ('red circle', pytest.approx(0.7)),
                                     ('traffic light', 0.5)]
    assert [n for n, _ in run_onnx.labels(scores, meta, topk=2)
            ] == ['dog', 'red circle']
    # both: the k best of those above the threshold (as image_demo.py
    # draws them; before, --threshold was ignored next to --topk)
    assert [n for n, _ in run_onnx.labels(scores, meta, threshold=0.8,
                                          topk=2)] == ['dog']


@pytest.mark.parametrize('fmt', ['onnx', 'torchscript'])
def test_a_full_disk_names_the_file_and_leaves_nothing(fmt, method_models,
                                                       tmp_path,
                                                       monkeypatch):
    """The export is made and verified in memory, then written whole
    (``atomic_open``). Before: ``torch.jit.save`` to a full disk aborted
    the process (its partial temporary file, as large as the free space,
    left for good) and the ONNX writer raised a bare ``OSError`` without
    the path. A temporary file of a killed earlier export is removed by
    the next one that succeeds."""
    import errno
    import os

    from mmcoop.utils import checkpoint
    out = tmp_path / f'm.{fmt}'
    dead = tmp_path / f'.m.{fmt}.tmp-999999999'  # no such process
    dead.write_bytes(b'x' * 10)

    def full(fd):
        raise OSError(errno.ENOSPC, 'No space left on device')

    with monkeypatch.context() as m:
        m.setattr(checkpoint.os, 'fsync', full)
        with pytest.raises(OSError) as err:
            export_model(method_models('baseline'), str(out), format=fmt)
    assert err.value.errno == errno.ENOSPC
    assert f'while saving {out}' in str(err.value)
    assert 'Fix: free space' in str(err.value)
    assert sorted(os.listdir(tmp_path)) == [dead.name]
    export_model(method_models('baseline'), str(out), format=fmt)
    assert sorted(os.listdir(tmp_path)) == [out.name]

# Copyright (c) mmcoop contributors. All rights reserved.
"""tools/deployment/export.py and run_onnx.py from the command line, on the
demo model (config + head-only checkpoint)."""
import json
import os.path as osp

import numpy as np
import pytest

from mmcoop.apis import inference_model, init_model


@pytest.fixture(scope='module')
def demo_reference(demo_checkpoint, images):
    config, ckpt = demo_checkpoint
    model = init_model(config, ckpt, strict=True)
    return model, inference_model(model, images)


def test_export_then_run_prints_the_labels(demo_checkpoint, demo_reference,
                                           images, export_tool, run_onnx,
                                           tmp_path, capsys):
    config, ckpt = demo_checkpoint
    model, reference = demo_reference
    out = str(tmp_path / 'demo.onnx')
    assert export_tool.main([config, ckpt, '--out', out]) == 0
    printed = capsys.readouterr().out
    assert ('Exported PositiveCoOpHead (10 classes, fp32, input uint8'
            in printed)
    assert out in printed

    assert run_onnx.main([out] + images) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(images)
    for line, path, ref in zip(lines, images, reference):
        name, labels = line.split(': ', 1)
        assert name == path
        # inference_model's labels at its default threshold 0.5, in order
        got = [] if labels == '(no label)' else [
            item.rsplit(' ', 1)[0] for item in labels.split(', ')
        ]
        assert got == ref['classes']

    assert run_onnx.main([out, images[0], '--json']) == 0
    row = json.loads(capsys.readouterr().out)
    assert row['image'] == images[0]
    np.testing.assert_allclose(
        [row['scores'][c] for c in model.head.classnames],
        reference[0]['scores'],
        rtol=0,
        atol=1e-4)

    assert run_onnx.main([out, '--info']) == 0
    info = json.loads(capsys.readouterr().out)
    assert info['classes'] == list(model.head.classnames)
    assert info['config'] == config.rsplit('/', 1)[-1]


def test_export_torchscript_class_subset_and_force(demo_checkpoint,
                                                   demo_reference, images,
                                                   export_tool, run_onnx,
                                                   tmp_path):
    config, ckpt = demo_checkpoint
    model, reference = demo_reference
    out = tmp_path / 'demo.pt'
    out.write_text('old')
    args = [
        config, ckpt, '--out',
        str(out), '--format', 'torchscript', '--classes', 'cyan ring',
        'Red_Circle', '--threshold', '0.3', '--force'
    ]
    assert export_tool.main(args) == 0
    run, meta = run_onnx.load_model(str(out))
    assert meta['classes'] == ['cyan ring', 'red circle']
    assert meta['thresholds'] == [0.3, 0.3]
    got = run_onnx.predict(run, meta, images)
    classes = list(model.head.classnames)
    expected = np.stack([
        r['scores'] for r in reference
    ])[:, [classes.index('cyan ring'),
           classes.index('red circle')]]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_benchmark_reports_every_path_and_the_head_cost(
        method_models, tmp_path):
    """The numbers are machine-dependent; what is checked: every path runs
    on the same images with the same scores, and the head's FLOPs are the
    two (C, D) x (D, N) products of the region aggregation."""
    from mmcoop.deployment.benchmark import PATHS, compare_speed, format_report
    model = method_models('dualcoop')
    result = compare_speed(
        model,
        str(tmp_path),
        batch_sizes=(1, 3),
        rounds=1,
        single_images=2,
        threads=1)
    assert set(result['speed']) == set(PATHS)
    assert all(v > 0 for sizes in result['speed'].values()
               for v in sizes.values())
    assert max(result['max_abs_diff'].values()) <= 1e-4
    head = result['head']
    batch, dim, positions = head['dense_shape']
    assert (batch, dim, positions) == (3, 64, 1 + (64 // 32)**2)
    # two einsums 'bdn,cd->bcn', 2 FLOPs per multiply-add
    assert head['head_flops'] == 2 * 2 * batch * 5 * dim * positions
    assert head['tower_flops'] > 100 * head['head_flops']
    report = format_report(result)
    assert '| onnxruntime |' in report and 'batch 3 (img/s)' in report


def test_runner_needs_only_onnxruntime_numpy_pillow(method_models, images,
                                                    tmp_path):
    """run_onnx.py on an .onnx file imports neither mmcoop nor torch."""
    import subprocess
    import sys

    from _deploy_helpers import ROOT

    from mmcoop.apis import export_model
    out = str(tmp_path / 'm.onnx')
    export_model(method_models('baseline'), out)
    script = osp.join(ROOT, 'tools', 'deployment', 'run_onnx.py')
    code = ('import runpy, sys; sys.argv = sys.argv[1:]\n'
            'try:\n'
            "    runpy.run_path(sys.argv[0], run_name='__main__')\n"
            'except SystemExit:\n'
            '    pass\n'
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'mmcoop', 'torch', 'mmengine', 'onnxruntime'}))")
    proc = subprocess.run(
        [sys.executable, '-c', code, script, out, images[0], '--topk', '1'],
        cwd=str(tmp_path), capture_output=True, text=True, check=True)
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith(images[0] + ': ')
    assert lines[-1] == "['onnxruntime']"

# Copyright (c) mmcoop contributors. All rights reserved.
"""tools/deployment/export.py and run_onnx.py from the command line, on the
demo model (config + head-only checkpoint)."""
import json

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
    assert 'Exported PositiveCoOpHead (10 classes, fp32, input uint8' in printed
    assert out in printed

    assert run_onnx.main([out] + images) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(images)
    for line, path, ref in zip(lines, images, reference):
        name, labels = line.split(': ', 1)
        assert name == path
        # inference_model's labels at its default threshold 0.5, in order
        got = [] if labels == '(no label)' else [
            item.rsplit(' ', 1)[0] for item in labels.split(', ')]
        assert got == ref['classes']

    assert run_onnx.main([out, images[0], '--json']) == 0
    row = json.loads(capsys.readouterr().out)
    assert row['image'] == images[0]
    np.testing.assert_allclose(
        [row['scores'][c] for c in model.head.classnames],
        reference[0]['scores'], rtol=0, atol=1e-4)

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
        config, ckpt, '--out', str(out), '--format', 'torchscript',
        '--classes', 'cyan ring', 'Red_Circle', '--threshold', '0.3',
        '--force'
    ]
    assert export_tool.main(args) == 0
    run, meta = run_onnx.load_model(str(out))
    assert meta['classes'] == ['cyan ring', 'red circle']
    assert meta['thresholds'] == [0.3, 0.3]
    got = run_onnx.predict(run, meta, images)
    classes = list(model.head.classnames)
    expected = np.stack([r['scores'] for r in reference])[
        :, [classes.index('cyan ring'), classes.index('red circle')]]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)

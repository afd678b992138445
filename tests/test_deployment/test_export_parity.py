# Copyright (c) mmcoop contributors. All rights reserved.
"""Exported models (ONNX Runtime on CPU, TorchScript) give the scores of
``mmcoop.apis.inference_model``: every method head, the demo model, class
subsets, both input layouts, dynamic batch, fp16."""
import copy
import json

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from _deploy_helpers import CLASSES, RESOLUTION

from mmcoop.apis import export_model, fold_model, inference_model
from mmcoop.deployment import TOLERANCES, FoldedRegionHead
from mmcoop.models.heads.region_aggregation import \
    class_specific_region_aggregation

FP32_TOL = TOLERANCES['fp32']  # 1e-4, the parity bound
SUFFIX = {'onnx': '.onnx', 'torchscript': '.pt'}


def reference_scores(model, paths):
    return np.stack([r['scores'] for r in inference_model(model, paths)])


def exported_scores(run_onnx, path, paths, batch_size=8):
    run, meta = run_onnx.load_model(path)
    return run_onnx.predict(run, meta, paths, batch_size), meta


def assert_exports_match(model, stem, expected, images, run_onnx, tmp_path):
    """Export ``model`` to ONNX and to TorchScript: each file's own parity
    check and its scores (batches of 3 then the rest: the batch size is
    dynamic) within ``FP32_TOL`` of ``expected``. Returns the metadata
    stored in each file."""
    stored = []
    for fmt in ('onnx', 'torchscript'):
        out = str(tmp_path / f'{stem}{SUFFIX[fmt]}')
        assert export_model(model, out, format=fmt)['max_abs_diff'] <= \
            FP32_TOL
        got, meta = exported_scores(run_onnx, out, images, batch_size=3)
        np.testing.assert_allclose(got, expected, rtol=0, atol=FP32_TOL)
        stored.append(meta)
    return stored


def assert_informative(scores):
    """Parity is only meaningful if the scores depend on the image."""
    assert np.ptp(scores, axis=0).max() > 1e-2, scores


@pytest.mark.parametrize('method', [
    'positivecoop', 'negativecoop', 'dualcoop', 'baseline',
    'positivecoop-sharedneg'
])
def test_every_head_onnx_and_torchscript_match_inference_model(
        method, method_models, images, run_onnx, tmp_path):
    model = method_models(method)
    expected = reference_scores(model, images)
    assert_informative(expected)
    for stored in assert_exports_match(model, method, expected, images,
                                       run_onnx, tmp_path):
        assert stored['classes'] == CLASSES
        assert stored['method'] == model.head.__class__.__name__


@pytest.mark.parametrize('family, size, dense_mode', [
    ('mmcoop-tiny-ViT-wide', 64, 'tokens'),  # 2 heads: PyTorch's fused MHA
    ('mmcoop-tiny-ViT-wide', 64, 'value'),
    ('mmcoop-tiny-MAP', 64, 'value'),  # timm tower, SigLIP map head
    ('mmcoop-tiny-EVA02', 56, 'tokens'),  # timm EVA, rotary embeddings
    ('mmcoop-tiny-ConvNeXt', 64, 'tokens'),
])
def test_every_clip_family_exports(family, size, dense_mode, images,
                                   run_onnx, tmp_path):
    """A PositiveCoOp model on each CLIP family exports to ONNX and
    TorchScript with the scores of ``inference_model``. A ViT with an even
    number of heads (every real CLIP ViT) runs PyTorch's fused attention
    kernel in eval mode, which ONNX cannot express: the export takes the
    composite path."""
    from _deploy_helpers import tiny_method_config, train_head

    from mmcoop.apis import init_model
    cfg = tiny_method_config('positivecoop')
    cfg.model.backbone.update(model_name=family, input_resolution=size,
                              dense_mode=dense_mode)
    cfg.model.head.text_encoder.update(model_name=family)
    for step in cfg.test_dataloader.dataset.pipeline:
        if step['type'] == 'Resize':
            step['scale'] = (size, size)
    model = train_head(init_model(cfg))
    expected = reference_scores(model, images)
    assert_informative(expected)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    assert_exports_match(model, 'model', expected, images, run_onnx,
                         tmp_path)
    assert torch.backends.mha.get_fastpath_enabled() == fastpath


def test_onnx_graph_has_no_text_encoder(method_models, tmp_path):
    """The folded DualCoOp graph holds the image tower and two (C, D)
    constants: nothing of the size of the token embedding (49408 x 64)."""
    model = method_models('dualcoop')
    out = str(tmp_path / 'dual.onnx')
    export_model(model, out)
    graph = onnx.load(out).graph
    sizes = [int(np.prod(t.dims)) for t in graph.initializer]
    text_params = sum(p.numel() for p in model.head.text_encoder.parameters())
    tower_params = sum(p.numel() for p in model.backbone.parameters())
    assert max(sizes) < 49408 * 64
    # the tower, the (C, D) features, normalisation constants: no more
    assert sum(sizes) < tower_params + 2 * len(CLASSES) * 64 + 1000
    assert sum(sizes) < text_params
    (inp, ), (out_, ) = graph.input, graph.output
    assert inp.name == 'image'
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ['batch', RESOLUTION, RESOLUTION, 3]
    assert out_.name == 'scores'


def test_folded_head_is_the_region_aggregation(method_models):
    """The folded head computes class_specific_region_aggregation with the
    head's class features, which are no longer recomputed."""
    model = method_models('positivecoop')
    folded = fold_model(model)
    assert isinstance(folded.head, FoldedRegionHead)
    neg, pos = model.head.class_features()
    dense = torch.randn(2, 64, 5)
    expected = class_specific_region_aggregation(dense, neg, pos,
                                                 model.head.feat_scale,
                                                 model.head.logit_scale)
    with torch.no_grad():
        got = folded.head((dense, ))
        torch.testing.assert_close(got, expected)
        # written out: cosines (B, C, N) of every position with every
        # class feature, weights softmax over positions of the positive
        # side, used for both sides
        cos = [
            F.cosine_similarity(dense[:, None], f[None, :, :, None], dim=2)
            for f in (neg, pos)
        ]
        weights = torch.softmax(model.head.feat_scale * cos[1], dim=-1)
        by_hand = torch.stack([
            model.head.logit_scale * model.head.feat_scale *
            (c * weights).sum(-1) for c in cos
        ], dim=1)
        torch.testing.assert_close(got, by_hand, rtol=1e-5, atol=1e-5)
        # the live (unfolded) head on the same features
        torch.testing.assert_close(got, model.head((dense, )))
    assert not any('text_encoder' in name
                   for name, _ in folded.named_parameters())


def test_zero_shot_head_exports_with_the_inference_scores(
        images, run_onnx, tmp_path):
    """A ZeroShot model (a method config with ``model.head.type=
    'ZeroShotHead'``: written prompts, nothing trained) folds its
    ensembled class features into the graph: ONNX and TorchScript give the
    scores of ``inference_model``, also for a class subset."""
    from _deploy_helpers import calibrate_batchnorm, tiny_method_config

    from mmcoop.apis import init_model
    cfg = tiny_method_config('dualcoop')
    cfg.model.head.update(
        type='ZeroShotHead',
        pos_templates=['a photo of a {}.', 'a picture of the {}.'])
    model = init_model(cfg)
    calibrate_batchnorm(model)
    expected = reference_scores(model, images)
    assert_informative(expected)
    for meta in assert_exports_match(model, 'zero', expected, images,
                                     run_onnx, tmp_path):
        assert meta['method'] == 'ZeroShotHead'
    out = str(tmp_path / 'zero_subset.onnx')
    export_model(model, out, classes=['hair drier', 'cat'])
    got, _ = exported_scores(run_onnx, out, images)
    np.testing.assert_allclose(got, expected[:, [3, 0]], rtol=0,
                               atol=FP32_TOL)


def test_bgr_trained_model_exports_with_the_inference_scores(
        images, run_onnx, tmp_path):
    """A model whose data preprocessor keeps BGR (``to_rgb=False``, its
    statistics in BGR order, here all different so that the order
    matters): the exported graph takes RGB, in both input formats, and
    gives the scores of ``inference_model``."""
    from _deploy_helpers import (calibrate_batchnorm, tiny_method_config,
                                 train_head)

    from mmcoop.apis import init_model
    cfg = tiny_method_config('positivecoop')
    cfg.model.data_preprocessor = dict(
        type='CLIPDataPreprocessor', mean=[20., 110., 200.],
        std=[40., 60., 90.], to_rgb=False)
    model = init_model(cfg)
    calibrate_batchnorm(model)
    model = train_head(model)
    assert not model.data_preprocessor.to_rgb
    expected = reference_scores(model, images)
    assert_informative(expected)
    for fmt in ('onnx', 'torchscript'):
        for input_format in ('uint8', 'normalized'):
            out = str(tmp_path / f'bgr_{input_format}{SUFFIX[fmt]}')
            export_model(model, out, format=fmt, input_format=input_format)
            got, meta = exported_scores(run_onnx, out, images, batch_size=3)
            np.testing.assert_allclose(got, expected, rtol=0, atol=FP32_TOL)
            # RGB order in the metadata: the preprocessor's, reversed
            np.testing.assert_allclose(meta['preprocess']['mean'],
                                       [200., 110., 20.])
            np.testing.assert_allclose(meta['preprocess']['std'],
                                       [90., 60., 40.])


@pytest.mark.parametrize('method', ['dualcoop', 'baseline'])
def test_class_subset_keeps_the_scores_of_those_classes(
        method, method_models, images, run_onnx, tmp_path):
    model = method_models(method)
    expected = reference_scores(model, images)
    subset = ['Traffic_Light', 'cat']  # any spelling of the names
    out = str(tmp_path / 'subset.onnx')
    export_model(model, out, classes=subset)
    got, meta = exported_scores(run_onnx, out, images)
    assert meta['classes'] == ['traffic light', 'cat']
    np.testing.assert_allclose(got, expected[:, [2, 0]], rtol=0, atol=FP32_TOL)


def test_demo_model_normalized_input_and_thresholds(demo_checkpoint, images,
                                                    run_onnx, tmp_path):
    """The demo model (tiny ViT, 96 px) with NCHW normalised input."""
    from mmcoop.apis import init_model
    config, ckpt = demo_checkpoint
    model = init_model(config, ckpt, strict=True)
    expected = reference_scores(model, images)
    assert_informative(expected)
    thresholds = np.linspace(0.1, 0.9, len(model.head.classnames))
    for fmt in ('onnx', 'torchscript'):
        out = str(tmp_path / f'demo_norm{SUFFIX[fmt]}')
        export_model(
            model,
            out,
            format=fmt,
            input_format='normalized',
            thresholds=thresholds)
        got, meta = exported_scores(run_onnx, out, images)
        np.testing.assert_allclose(got, expected, rtol=0, atol=FP32_TOL)
        assert meta['input']['layout'] == 'NCHW'
        assert meta['input']['shape'] == ['batch', 3, 96, 96]
        np.testing.assert_allclose(meta['thresholds'], thresholds)
        # the stored per-class thresholds decide the labels
        labels = run_onnx.labels(got[0], meta)
        assert [n for n, _ in labels] == [
            meta['classes'][i] for i in np.argsort(-got[0], kind='stable')
            if got[0, i] >= thresholds[i]
        ]


def test_metadata_states_the_preprocessing(method_models, tmp_path):
    model = method_models('positivecoop')
    out = str(tmp_path / 'meta.pt')
    export_model(model, out, format='torchscript')
    extra = {'mmcoop.json': ''}
    torch.jit.load(out, _extra_files=extra)
    meta = json.loads(extra['mmcoop.json'])
    pre = meta['preprocess']
    # the config's data preprocessor (CLIP statistics, 0-255, RGB)
    np.testing.assert_allclose(pre['mean'],
                               [122.770938, 116.7460125, 104.09373615])
    np.testing.assert_allclose(pre['std'],
                               [68.5005327, 66.6321579, 70.32316305])
    assert pre['resize'] == dict(
        width=RESOLUTION,
        height=RESOLUTION,
        interpolation='bilinear',
        backend='pillow')
    # LoadImageFromFileChecked ignores EXIF orientation, as the official code
    assert pre['decode'] == dict(channel_order='RGB', exif_transpose=False)
    assert meta['input']['format'] == 'uint8'
    assert meta['input']['layout'] == 'NHWC'
    assert meta['thresholds'] == [0.5] * len(CLASSES)
    assert meta['precision'] == 'fp32'


@pytest.mark.parametrize('fmt', ['onnx', 'torchscript'])
def test_fp16_export_within_stated_tolerance(fmt, demo_checkpoint, images,
                                             run_onnx, tmp_path):
    from mmcoop.apis import init_model
    config, ckpt = demo_checkpoint
    model = init_model(config, ckpt)
    expected = reference_scores(model, images)
    out = str(tmp_path / f'demo16{SUFFIX[fmt]}')
    meta = export_model(model, out, format=fmt, precision='fp16')
    assert meta['precision'] == 'fp16'
    got, _ = exported_scores(run_onnx, out, images)
    diff = np.abs(got - expected).max()
    assert diff <= TOLERANCES['fp16']
    assert diff <= 1e-2  # the demo model: ~2.5e-3 measured
    assert diff > 0  # really ran in half precision
    if fmt == 'onnx':
        assert onnx.TensorProto.FLOAT16 in graph_tensor_types(out)


def graph_tensor_types(path):
    """Element types of the weights: initializers and Constant nodes."""
    graph = onnx.load(path).graph
    types = {t.data_type for t in graph.initializer}
    types.update(a.t.data_type for n in graph.node if n.op_type == 'Constant'
                 for a in n.attribute if a.HasField('t'))
    return types


@pytest.mark.parametrize('method', ['positivecoop', 'negativecoop',
                                    'dualcoop', 'baseline'])
def test_unsaturated_scores_match(method, method_models, images, run_onnx,
                                  tmp_path):
    """With the tiny models' scores near 0 or 1 a logit error of several
    units can hide (the sigmoid flattens it): the head's logit scale
    lowered so that the scores lie away from 0 and 1, where an exported
    logit error shows at its own size."""
    model = copy.deepcopy(method_models(method))
    for _ in range(8):  # the logit scale down until most scores are flat
        expected = reference_scores(model, images)
        if ((expected > 0.02) & (expected < 0.98)).mean() >= 0.8:
            break
        model.head.logit_scale /= 4
    assert ((expected > 0.02) & (expected < 0.98)).mean() >= 0.8, expected
    assert_informative(expected)
    assert_exports_match(model, f'{method}-flat', expected, images, run_onnx,
                         tmp_path)

# Copyright (c) mmcoop contributors. All rights reserved.
"""Export a trained model as one fixed graph: ONNX or TorchScript.

>>> from mmcoop.apis import init_model, export_model
>>> model = init_model('configs/...py', 'epoch_50.pth', strict=True)
>>> meta = export_model(model, 'tagger.onnx', format='onnx')

The graph is :class:`~mmcoop.deployment.folded.FoldedTagger`: the frozen
image tower, the class features computed once, the region aggregation. No
text encoder, no tokenizer. Its input is a batch of RGB images already
resized to the model's resolution, as ``uint8`` ``(B, H, W, 3)`` (default)
or normalised float ``(B, 3, H, W)``; its output ``scores`` is ``(B, C)``
fp32 ``p(present)``, the ``pred_score`` of
:func:`mmcoop.apis.inference_model`. The batch size is dynamic.

Everything a runtime needs to use the file is stored in it as one JSON
document (:func:`deployment_metadata`): ONNX ``metadata_props['mmcoop']``,
TorchScript extra file ``mmcoop.json``. ``tools/deployment/run_onnx.py``
reads it and needs only onnxruntime (or torch), numpy and Pillow.

ONNX is written by ``torch.onnx.export`` with its TorchScript-based exporter
(``dynamo=False``; opsets 17-20, default 17): it works offline without
``onnxscript``, exports the tiny test models in about a second (the
``torch.export``-based exporter, the default of recent torch releases, took
7-13 s for the same models and needs ``onnxscript``), and it traces the
same graph as the TorchScript format.

Every export is verified: the written file is loaded back (onnxruntime on
CPU for ONNX, ``torch.jit.load`` for TorchScript) and run on the example
batch; its scores must match the PyTorch folded model within
:data:`TOLERANCES`.
"""
import io
import json
import os.path as osp
import warnings
from typing import Dict, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn

from mmcoop.utils.attention import composite_attention
from mmcoop.utils.checkpoint import atomic_open
from mmcoop.utils.paths import claim_outputs
from mmcoop.utils.value_checks import is_int
from mmcoop.version import __version__
from .folded import INPUT_FORMATS, FoldedTagger, class_indices, fold_model

#: Output formats.
FORMATS = ('onnx', 'torchscript')
#: Precisions of the image tower (the head always runs in fp32).
PRECISIONS = {'fp32': torch.float32, 'fp16': torch.float16}
#: ONNX opsets accepted (the TorchScript-based exporter of torch.onnx
#: supports up to 20); the lowest is the default.
ONNX_OPSETS = (17, 20)
#: Largest |exported - fp32 PyTorch| difference of the scores (probabilities)
#: accepted when an export is verified, per precision. With the tower in
#: half precision the dense features carry ~1e-3 relative error, and the
#: heads multiply cosines by feat_scale * logit_scale = 100, so scores near
#: 0.5 move most: by up to 4.3e-2 (tiny RN, noise images) and 2.5e-3 (demo
#: ViT) in the tests. The fp16 bound catches overflow and broken graphs,
#: not rounding.
TOLERANCES = {'fp32': 1e-4, 'fp16': 1e-1}
#: Version of the metadata layout (``format_version``).
METADATA_VERSION = 1
METADATA_KEY = 'mmcoop'
TORCHSCRIPT_METADATA_FILE = 'mmcoop.json'
INPUT_NAMES = {'uint8': 'image', 'normalized': 'input'}
OUTPUT_NAME = 'scores'


class ExportError(RuntimeError):
    """An export cannot be done as asked; the message says why and how to
    fix it."""


def pipeline_steps(cfg) -> tuple:
    """The built ``(loading, resize)`` transforms of the config's test
    pipeline; raises for steps a deployed runtime cannot reproduce."""
    from mmcv.transforms import LoadImageFromFile, Resize
    from mmpretrain.datasets.transforms import PackInputs

    from mmcoop.apis.inference import build_test_pipeline
    loading = resize = None
    for step in build_test_pipeline(cfg).transforms:
        if isinstance(step, LoadImageFromFile):
            loading = step
        elif isinstance(step, Resize) and resize is None:
            resize = step
        elif not isinstance(step, PackInputs):
            raise ExportError(
                f'The test pipeline has a `{type(step).__name__}` step. '
                'Exported models describe their preprocessing as decode -> '
                'Resize(scale, keep_ratio=False) -> normalise, which '
                'run_onnx.py and other runtimes reproduce; fix: use that '
                'test pipeline (test_dataloader.dataset.pipeline), as the '
                'mmcoop configs do.')
    if resize is None or resize.keep_ratio or resize.scale is None:
        raise ExportError(
            'The exported model needs a fixed input size: the test pipeline '
            '(test_dataloader.dataset.pipeline) must resize with '
            'dict(type="Resize", scale=(W, H), keep_ratio=False).')
    return loading, resize


def describe_preprocessing(model: nn.Module, folded: FoldedTagger) -> dict:
    """How a raw image becomes the exported model's input, from the config
    of ``model`` (its test pipeline and data preprocessor)."""
    cfg = getattr(model, 'cfg', None)
    if cfg is None:
        raise ExportError('The model carries no config; build it with '
                          'mmcoop.apis.init_model(config, checkpoint).')
    loading, resize = pipeline_steps(cfg)
    width, height = resize.scale
    # mmcv's decoders apply the EXIF orientation unless told to ignore it
    color_type = getattr(loading, 'color_type', 'color')
    if resize.backend != 'pillow':
        warnings.warn(
            f'The test pipeline resizes with the {resize.backend!r} backend; '
            'run_onnx.py resizes with Pillow, so scores of images that are '
            f'not already {width}x{height} differ slightly from '
            "inference_model. Set Resize(backend='pillow') in the config "
            'for identical preprocessing.')
    return dict(
        decode=dict(
            channel_order='RGB',
            exif_transpose='ignore_orientation' not in color_type),
        resize=dict(
            width=int(width),
            height=int(height),
            interpolation=resize.interpolation,
            backend=resize.backend),
        mean=[float(v) for v in folded.mean.flatten()],
        std=[float(v) for v in folded.std.flatten()],
        value_range='0-255')


def deployment_metadata(model: nn.Module,
                        folded: FoldedTagger,
                        fmt: str,
                        precision: str,
                        thresholds: Sequence[float],
                        opset: Optional[int] = None,
                        exporter: Optional[str] = None) -> dict:
    """The JSON document stored in an exported file."""
    pre = describe_preprocessing(model, folded)
    h, w = pre['resize']['height'], pre['resize']['width']
    if folded.input_format == 'uint8':
        inp = dict(
            layout='NHWC',
            shape=['batch', h, w, 3],
            dtype='uint8',
            description='RGB images resized to (height, width); '
            'normalised inside the model')
    else:
        inp = dict(
            layout='NCHW',
            shape=['batch', 3, h, w],
            dtype='float16' if precision == 'fp16' else 'float32',
            description='(rgb - mean) / std of RGB images resized to '
            '(height, width)')
    inp.update(
        name=INPUT_NAMES[folded.input_format], format=folded.input_format)
    cfg = model.cfg
    return dict(
        format_version=METADATA_VERSION,
        producer=f'mmcoop {__version__}',
        torch_version=torch.__version__,
        format=fmt,
        exporter=exporter,
        opset=opset,
        precision=precision,
        method=type(model.head).__name__,
        backbone=getattr(model.backbone, 'model_name', None),
        config=osp.basename(cfg.filename) if cfg.filename else None,
        classes=list(folded.classnames),
        thresholds=[float(t) for t in thresholds],
        threshold_rule='label if score >= threshold',
        input=inp,
        output=dict(
            name=OUTPUT_NAME,
            shape=['batch', len(folded.classnames)],
            dtype='float32',
            description='p(present) per class = softmax over [negative, '
            'positive] logits'),
        preprocess=pre)


#: the file name extensions of each format's files
EXTENSIONS = {'onnx': ('.onnx', ), 'torchscript': ('.pt', '.pth', '.ts')}


def _check_extension(format: str, out: Optional[str]) -> None:
    """Refuse an ``out`` named as the other format's file (a TorchScript
    archive named ``.onnx`` is refused by onnxruntime later, with the
    wrong fix)."""
    ext = osp.splitext(str(out or ''))[1].lower()
    for other, extensions in EXTENSIONS.items():
        if other != format and ext in extensions:
            raise ExportError(
                f'--out {out!r} names a{"n" if other == "onnx" else ""} '
                f'{other} file, but the format is {format} (--format). Fix: '
                f'name it *{EXTENSIONS[format][0]}, or export with --format '
                f'{other}.')


def check_export_options(format: str = 'onnx',
                         precision: str = 'fp32',
                         input_format: str = 'uint8',
                         opset: Optional[int] = None,
                         verify: bool = True,
                         out: Optional[str] = None) -> Optional[int]:
    """Check the options of :func:`export_model` without a model: the
    format, precision and input format, the ONNX opset (one of
    :data:`ONNX_OPSETS`; ``None``: the lowest, the default; none for
    TorchScript) and the packages the export needs (``onnx``, and
    ``onnxruntime`` to verify). :func:`export_model` calls it first;
    ``tools/deployment/export.py`` and ``benchmark.py`` call it before they
    build the model, so a bad option stops them at once.

    Returns:
        int | None: the opset to export with (None for TorchScript).

    Raises:
        ExportError: naming the option, the accepted values and the fix.
    """
    if format not in FORMATS:
        raise ExportError(f'Unknown export format {format!r}; supported: '
                          f'{", ".join(FORMATS)}.')
    if precision not in PRECISIONS:
        raise ExportError(f'Unknown precision {precision!r}; supported: '
                          f'{", ".join(PRECISIONS)}.')
    if input_format not in INPUT_FORMATS:
        raise ExportError(f'Unknown input format {input_format!r}; '
                          f'supported: {", ".join(INPUT_FORMATS)}.')
    if format != 'onnx':
        if opset is not None:
            raise ExportError(
                f'opset {opset!r} (--opset) is an ONNX setting; a {format} '
                'export has none. Fix: drop it, or export as onnx.')
        _check_extension(format, out)
        return None
    _check_extension(format, out)
    low, high = ONNX_OPSETS
    if opset is None:
        opset = low
    elif not is_int(opset) or not low <= opset <= high:
        raise ExportError(f'ONNX opset {opset!r} is not supported; use an '
                          f'opset from {low} to {high} (--opset).')
    _import('onnx')
    if verify:
        _import('onnxruntime')
    return int(opset)


def _calibrated(model, name: str, classnames: Sequence[str]) -> list:
    """``'calibrated'``: the per-class thresholds calibrated in training
    (``meta['calibrated_thresholds']``, set on the model by
    :func:`mmcoop.apis.init_model`), of the exported classes."""
    calibrated = getattr(model, 'calibrated_thresholds', None)
    if name != 'calibrated' or calibrated is None:
        raise ExportError(
            f"thresholds={name!r}: " + (
                "the only named thresholds are 'calibrated'" if name !=
                'calibrated' else "the checkpoint has no meta["
                "'calibrated_thresholds'] (a run of the clean protocol "
                'calibrates them on its validation split)') + '. Fix: give '
            'a number in [0, 1], one per class, or a checkpoint with '
            'calibrated thresholds.')
    all_names = list((getattr(model, 'dataset_meta', None) or {}).get(
        'classes') or classnames)
    return [float(calibrated[i])
            for i in class_indices(all_names, list(classnames))]


def _normalize_thresholds(thresholds, classes: Sequence[str]) -> list:
    """One threshold per exported class (in ``classes``' order), checked
    as inference checks them
    (:func:`mmcoop.apis.inference.check_threshold_values`)."""
    from mmcoop.apis.inference import check_threshold_values
    try:
        values = check_threshold_values(thresholds, list(classes))
    except ValueError as e:
        raise ExportError(f'thresholds: {e}') from None
    if np.ndim(values) == 0:
        return [float(values)] * len(classes)
    return [float(t) for t in values]


def example_input(folded: FoldedTagger,
                  height: int,
                  width: int,
                  batch_size: int = 2) -> torch.Tensor:
    """A deterministic example batch in the folded model's input layout."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(
        0,
        256, (batch_size, height, width, 3),
        generator=gen,
        dtype=torch.uint8)
    if folded.input_format == 'uint8':
        return images
    x = (images.permute(0, 3, 1, 2).float() - folded.mean) / folded.std
    return x.to(folded.dtype)


def _import(module: str):
    try:
        return __import__(module)
    except ImportError as e:
        raise ExportError(
            f'ONNX export needs the `{module}` package: '
            "pip install 'mmcoop[deploy]' (or pip install onnx onnxruntime"
            ').') from e


def _onnx_bytes(folded: FoldedTagger, example: torch.Tensor, opset: int,
                metadata: dict) -> bytes:
    """The ONNX file, made in memory (written once verified)."""
    onnx = _import('onnx')
    in_name = INPUT_NAMES[folded.input_format]
    buffer = io.BytesIO()
    with warnings.catch_warnings(), composite_attention():
        # (ONNX has no form of PyTorch's fused attention kernel)
        # the tracer's notes on the fixed input size / deprecations
        warnings.simplefilter('ignore')
        torch.onnx.export(
            folded, (example, ),
            buffer,
            input_names=[in_name],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamo=False,
            dynamic_axes={
                in_name: {
                    0: 'batch'
                },
                OUTPUT_NAME: {
                    0: 'batch'
                }
            })
    proto = onnx.load_from_string(buffer.getvalue())
    del proto.metadata_props[:]
    proto.metadata_props.add(key=METADATA_KEY, value=json.dumps(metadata))
    proto.doc_string = (f'mmcoop {metadata["method"]} multi-label tagger: '
                        f'{len(metadata["classes"])} classes')
    return proto.SerializeToString()


def _torchscript_bytes(folded: FoldedTagger, example: torch.Tensor,
                       metadata: dict) -> bytes:
    """The TorchScript archive, made in memory (``torch.jit.save`` to a
    full disk aborts the process, leaving its partial file)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # torch.jit deprecation notes
        traced = torch.jit.trace(folded, (example, ), check_trace=False)
        torch.jit.save(
            traced,
            buffer,
            _extra_files={TORCHSCRIPT_METADATA_FILE: json.dumps(metadata)})
    return buffer.getvalue()


def _run_exported(data: bytes, fmt: str, example: torch.Tensor,
                  precision: str) -> np.ndarray:
    if fmt == 'torchscript':
        module = torch.jit.load(io.BytesIO(data), map_location='cpu')
        with torch.no_grad():
            return module(example).numpy()
    ort = _import('onnxruntime')
    options = ort.SessionOptions()
    if precision == 'fp16':
        # onnxruntime's CPU layout optimisations (ORT_ENABLE_ALL) can crash
        # on fp16 graphs (seen with 1.32 on the tiny ViT, cf. onnxruntime
        # issue #26717); the runner does the same.
        options.graph_optimization_level = \
            ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    try:
        session = ort.InferenceSession(
            data, options, providers=['CPUExecutionProvider'])
    except Exception as e:  # noqa: BLE001 - the runtime's own message
        raise ExportError(
            f'onnxruntime {ort.__version__} cannot load the exported model '
            f'({type(e).__name__}: {e}); export with a lower --opset.') from e
    name = session.get_inputs()[0].name
    return session.run(None, {name: example.numpy()})[0]


def export_model(model: nn.Module,
                 out: str,
                 format: str = 'onnx',
                 classes: Optional[Sequence[str]] = None,
                 input_format: str = 'uint8',
                 precision: str = 'fp32',
                 opset: Optional[int] = None,
                 thresholds: Union[None, float, Sequence[float]] = None,
                 force: bool = False,
                 verify: bool = True) -> Dict:
    """Export a model from :func:`mmcoop.apis.init_model` to one file.

    Args:
        model (nn.Module): an mmcoop ``ImageClassifier`` with its config
            (``model.cfg``, set by ``init_model``).
        out (str): output file (``.onnx`` / ``.pt`` by convention).
        format (str): ``'onnx'`` or ``'torchscript'``.
        classes (Sequence[str], optional): export only these classes, in
            this order. Defaults to all.
        input_format (str): ``'uint8'`` (``(B, H, W, 3)`` RGB) or
            ``'normalized'`` (``(B, 3, H, W)`` float).
        precision (str): ``'fp32'`` or ``'fp16'`` (the image tower in half
            precision, for GPU runtimes; the head stays fp32).
        opset (int, optional): ONNX opset, 17 to 20 (:data:`ONNX_OPSETS`).
            Defaults to 17.
        thresholds (float | Sequence[float] | str, optional): label
            thresholds stored in the metadata, one or one per exported
            class, or ``'calibrated'``: those the checkpoint's training
            calibrated (clean protocol). Defaults to the config's
            ``model.head.thr``, 0.5 unless set (as
            :func:`mmcoop.apis.inference_model`).
        force (bool): replace an existing ``out`` (the output policy of
            every mmcoop tool, :func:`mmcoop.utils.paths.claim_outputs`).
        verify (bool): run the written file and compare it with PyTorch.

    Returns:
        dict: the stored metadata, plus ``max_abs_diff`` from verification.
    """
    opset = check_export_options(format, precision, input_format, opset,
                                 verify, out)
    out = str(out)
    claim_outputs([out], force=force)
    dtype = PRECISIONS[precision]
    folded = fold_model(model, classes, input_format, dtype)
    if thresholds is None:  # the config's, as inference_model labels
        from mmcoop.apis.inference import default_threshold
        thresholds = default_threshold(model)
    elif isinstance(thresholds, str):
        thresholds = _calibrated(model, thresholds, folded.classnames)
    thresholds = _normalize_thresholds(thresholds, folded.classnames)
    metadata = deployment_metadata(
        model, folded, format, precision, thresholds, opset,
        'torch.onnx.export (TorchScript-based)'
        if format == 'onnx' else 'torch.jit.trace')
    size = metadata['preprocess']['resize']
    example = example_input(folded, size['height'], size['width'])
    if format == 'onnx':
        data = _onnx_bytes(folded, example, opset, metadata)
    else:
        data = _torchscript_bytes(folded, example, metadata)
    result = dict(metadata)
    if verify:
        result['max_abs_diff'] = _verify(model, folded, data, format,
                                         example, precision)
    # written whole or not at all (a full disk: named, with the fix)
    with atomic_open(out, 'wb') as f:
        f.write(data)
    return result


def _verify(model: nn.Module, folded: FoldedTagger, data: bytes, fmt: str,
            example: torch.Tensor, precision: str) -> float:
    """Max |exported - fp32 PyTorch| of the scores on ``example``."""
    reference = folded
    if precision != 'fp32':
        reference = fold_model(model, folded.classnames, folded.input_format)
        example32 = example if folded.input_format == 'uint8' \
            else example.float()
    else:
        example32 = example
    with torch.no_grad():
        expected = reference(example32).numpy()
    got = _run_exported(data, fmt, example, precision)
    diff = float(np.abs(got.astype(np.float64) - expected).max())
    if not diff <= TOLERANCES[precision]:
        raise ExportError(
            f'The exported {fmt} model differs from PyTorch by {diff:.3g} '
            f'(> {TOLERANCES[precision]} for {precision}) on the example '
            'batch; the file was not written.')
    return diff

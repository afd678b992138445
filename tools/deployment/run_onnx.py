# Copyright (c) mmcoop contributors. All rights reserved.
"""Tag images with an exported mmcoop model; prints the labels.

    python tools/deployment/run_onnx.py MODEL IMAGE [IMAGE ...]
        [--threshold T] [--topk K] [--batch-size N] [--device cpu|cuda]
        [--json] [--info]

``MODEL`` is a file written by ``tools/deployment/export.py``: ``.onnx``
(run with onnxruntime) or a TorchScript file (run with torch). The script
depends only on that runtime, numpy and Pillow (it does not import mmcoop):
the preprocessing (decode, resize, normalisation), the class names and the
thresholds come from the metadata stored in the file. It is also a
reference for other runtimes: see docs/deployment.md.

Output, one line per image::

    dog.jpg: dog 0.97, person 0.64

``--json`` prints one JSON object per image with every class score.
"""
import argparse
import json
import os.path as osp
import sys
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageOps

#: Newest metadata layout this runner understands.
METADATA_VERSION = 1
METADATA_KEY = 'mmcoop'
TORCHSCRIPT_METADATA_FILE = 'mmcoop.json'

_RESAMPLING = getattr(Image, 'Resampling', Image)
PIL_INTERPOLATION = {
    'nearest': _RESAMPLING.NEAREST,
    'bilinear': _RESAMPLING.BILINEAR,
    'bicubic': _RESAMPLING.BICUBIC,
    'box': _RESAMPLING.BOX,
    'area': _RESAMPLING.BOX,
    'lanczos': _RESAMPLING.LANCZOS,
    'hamming': _RESAMPLING.HAMMING,
}


class DeploymentError(RuntimeError):
    """The model file, a runtime or an image cannot be used; the message
    says why and how to fix it."""


def _check_metadata(meta: dict, path: str) -> dict:
    version = meta.get('format_version')
    if not isinstance(version, int) or version > METADATA_VERSION:
        raise DeploymentError(
            f'{path!r} has metadata format_version {version!r}; this runner '
            f'reads up to {METADATA_VERSION}. Use the run_onnx.py of the '
            'mmcoop version that exported it.')
    return meta


def _load_onnx(path: str, device: str) -> Tuple[Callable, dict]:
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise DeploymentError(
            'Running an .onnx model needs onnxruntime: pip install '
            'onnxruntime (or onnxruntime-gpu).') from e
    provider = {
        'cpu': 'CPUExecutionProvider',
        'cuda': 'CUDAExecutionProvider'
    }[device]
    available = ort.get_available_providers()
    if provider not in available:
        raise DeploymentError(
            f'onnxruntime {ort.__version__} has no {provider} (available: '
            f'{", ".join(available)}); use --device cpu, or install '
            'onnxruntime-gpu for --device cuda.')

    def session(level, providers):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        try:
            return ort.InferenceSession(path, options, providers=providers)
        except Exception as e:  # noqa: BLE001 - the runtime's own message
            raise DeploymentError(
                f'onnxruntime {ort.__version__} cannot load {path!r} '
                f'({type(e).__name__}: {e}). If the opset is too new for '
                'this onnxruntime, upgrade it or export with a lower '
                '--opset.') from e

    levels = ort.GraphOptimizationLevel
    # read the metadata (on CPU, without optimising the graph)
    props = session(levels.ORT_DISABLE_ALL, ['CPUExecutionProvider'])
    props = props.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in props:
        raise DeploymentError(
            f'{path!r} has no {METADATA_KEY!r} metadata: it was not written '
            'by tools/deployment/export.py.')
    meta = _check_metadata(json.loads(props[METADATA_KEY]), path)
    level = levels.ORT_ENABLE_ALL
    if meta.get('precision') == 'fp16' and device == 'cpu':
        # the CPU layout optimisations of ORT_ENABLE_ALL can crash on fp16
        # graphs (onnxruntime 1.32, cf. onnxruntime issue #26717)
        level = levels.ORT_ENABLE_EXTENDED
    sess = session(level, [provider])
    name = sess.get_inputs()[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        return sess.run(None, {name: batch})[0]

    return run, meta


def _load_torchscript(path: str, device: str) -> Tuple[Callable, dict]:
    try:
        import torch
    except ImportError as e:
        raise DeploymentError(
            'Running a TorchScript model needs torch: pip install torch.'
        ) from e
    if device == 'cuda' and not torch.cuda.is_available():
        raise DeploymentError('--device cuda: torch sees no CUDA device; '
                              'use --device cpu.')
    extra = {TORCHSCRIPT_METADATA_FILE: ''}
    try:
        module = torch.jit.load(path, map_location=device, _extra_files=extra)
    except Exception as e:  # noqa: BLE001
        raise DeploymentError(
            f'{path!r} is neither an ONNX file (name it *.onnx) nor a '
            f'TorchScript archive ({type(e).__name__}: {e}).') from e
    if not extra[TORCHSCRIPT_METADATA_FILE]:
        raise DeploymentError(
            f'{path!r} has no {TORCHSCRIPT_METADATA_FILE} metadata: it was '
            'not written by tools/deployment/export.py.')
    meta = _check_metadata(json.loads(extra[TORCHSCRIPT_METADATA_FILE]), path)

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = module(torch.from_numpy(batch).to(device))
        return out.float().cpu().numpy()

    return run, meta


def load_model(path: str, device: str = 'cpu') -> Tuple[Callable, dict]:
    """``(run, metadata)``: ``run`` maps an input batch (numpy, the layout
    of ``metadata['input']``) to ``(B, C)`` scores."""
    if not osp.isfile(path):
        raise DeploymentError(f'Model file {path!r} does not exist.')
    if device not in ('cpu', 'cuda'):
        raise DeploymentError(f'Unknown device {device!r}: use cpu or cuda.')
    if path.lower().endswith('.onnx'):
        return _load_onnx(path, device)
    return _load_torchscript(path, device)


def _is_wide_mode(mode: str) -> bool:
    """PIL modes with more than 8 bits per value (``I;16*``, ``I``,
    ``F``), which ``convert('RGB')`` clips to 0..255 (white/black)."""
    return mode.startswith('I;16') or mode in ('I', 'F')


def _wide_to_rgb(img: Image.Image, path: str) -> Image.Image:
    """A 16-bit / 32-bit / float image as RGB if its values are 0..255
    integers; else the error of ``mmcoop.apis.inference_model`` for the
    same data as an array."""
    arr = np.asarray(img)
    name = f'Image {path!r} (PIL mode {img.mode!r})'
    if arr.dtype.kind in 'iu' and arr.size and 0 <= arr.min() and \
            arr.max() <= 255:
        return Image.fromarray(arr.astype(np.uint8)).convert('RGB')
    if arr.dtype.kind == 'f' and arr.size and np.isfinite(arr).all() and \
            0 <= arr.min() and arr.max() <= 1:
        raise DeploymentError(
            f'{name} is a {arr.dtype} array with values in [0, 1]; the '
            'model expects uint8 RGB values 0..255. Fix: save it as 8-bit, '
            '(img * 255).round().astype(np.uint8).')
    low, high = (arr.min(), arr.max()) if arr.size else (0, 0)
    raise DeploymentError(
        f'{name} is a {arr.dtype} array with values in [{low}, {high}]; the '
        'model expects uint8 RGB values 0..255 (converting would saturate '
        'it to white/black). Fix: convert it to uint8 (scaled to 0..255), '
        'e.g. save it as an 8-bit image.')


def read_image(path: str, meta: dict) -> np.ndarray:
    """Decode and resize one image as the model's config does ->
    ``(H, W, 3)`` RGB ``uint8``.

    Raises:
        DeploymentError: the file cannot be decoded, is over Pillow's pixel
            limit, or holds 16-bit / float values that are not 0..255.
    """
    pre = meta['preprocess']
    try:
        with Image.open(path) as img:
            if pre['decode'].get('exif_transpose'):
                img = ImageOps.exif_transpose(img)
            if _is_wide_mode(img.mode):
                img = _wide_to_rgb(img, path)
            else:
                img = img.convert('RGB')
    except Image.DecompressionBombError as e:
        raise DeploymentError(
            f'Cannot read image {path!r}: {e} Fix: downscale it first, or, '
            'if you trust the file, raise PIL.Image.MAX_IMAGE_PIXELS (now '
            f'{Image.MAX_IMAGE_PIXELS}) in the script that calls '
            'read_image.') from e
    except (OSError, ValueError) as e:
        raise DeploymentError(f'Cannot read image {path!r} '
                              f'({type(e).__name__}: {e}).') from e
    size = pre['resize']
    interp = size.get('interpolation', 'bilinear')
    if interp not in PIL_INTERPOLATION:
        raise DeploymentError(
            f'The model asks for {interp!r} resizing, which Pillow does not '
            f'offer ({", ".join(PIL_INTERPOLATION)}).')
    img = img.resize((size['width'], size['height']),
                     PIL_INTERPOLATION[interp])
    return np.asarray(img, dtype=np.uint8)


def to_input(images: Sequence[np.ndarray], meta: dict) -> np.ndarray:
    """``(H, W, 3)`` RGB ``uint8`` images -> the model's input batch."""
    batch = np.stack(list(images))
    if meta['input']['format'] == 'uint8':
        return np.ascontiguousarray(batch, dtype=np.uint8)
    pre = meta['preprocess']
    mean = np.asarray(pre['mean'], dtype=np.float32)
    std = np.asarray(pre['std'], dtype=np.float32)
    x = (batch.astype(np.float32) - mean) / std
    return np.ascontiguousarray(
        x.transpose(0, 3, 1, 2), dtype=meta['input']['dtype'])


def predict(run: Callable,
            meta: dict,
            paths: Sequence[str],
            batch_size: int = 8) -> np.ndarray:
    """``(N, C)`` scores of image files."""
    if isinstance(batch_size, bool) or not isinstance(
            batch_size, (int, np.integer)) or batch_size < 1:
        raise DeploymentError(
            f'batch_size must be an integer >= 1, got {batch_size!r}.')
    scores = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        scores.append(
            run(to_input([read_image(p, meta) for p in chunk], meta)))
    return np.concatenate(scores).astype(np.float32)


def labels(scores: np.ndarray,
           meta: dict,
           threshold: Optional[float] = None,
           topk: Optional[int] = None) -> List[Tuple[str, float]]:
    """``(name, score)`` of one image's labels, by decreasing score: the
    ``topk`` best (of those ``>= threshold`` when one is given, as
    ``demo/image_demo.py`` draws them), or those ``>=`` the threshold (the
    metadata's per-class thresholds unless ``threshold`` is given)."""
    classes = meta['classes']
    if topk is not None and (isinstance(topk, bool) or not isinstance(
            topk, (int, np.integer)) or topk < 1):
        raise DeploymentError(f'topk must be an integer >= 1, got {topk!r}.')
    if threshold is not None and not 0 <= threshold <= 1:  # nan too
        raise DeploymentError(
            f'threshold must be a number in [0, 1], got {threshold!r}.')
    order = np.argsort(-scores, kind='stable')
    if topk is not None:
        keep = [i for i in order[:topk]
                if threshold is None or scores[i] >= threshold]
    else:
        thr = (
            np.full(len(classes), threshold)
            if threshold is not None else np.asarray(meta['thresholds']))
        keep = [i for i in order if scores[i] >= thr[i]]
    return [(classes[i], float(scores[i])) for i in keep]


# argparse types (as mmcoop.engine.cli's; this script does not import
# mmcoop): a wrong value stops at parsing, naming the option.
def _number(text: str, kind, what: str, ok) -> float:
    try:
        value = kind(text)
    except (TypeError, ValueError):
        value = None
    if value is None or value != value or not ok(value):
        raise argparse.ArgumentTypeError(f'must be {what}, got {text!r}')
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _number(text, int, 'an integer >= 1', lambda v: v >= 1)


def fraction(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    return _number(text, float, 'a number in [0, 1]', lambda v: 0 <= v <= 1)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Tag images with an exported mmcoop model (ONNX or '
        'TorchScript).')
    parser.add_argument('model', help='.onnx or TorchScript file')
    parser.add_argument('images', nargs='*', help='image files')
    parser.add_argument(
        '--threshold',
        type=fraction,
        help='one score threshold for every class, in [0, 1] '
        '(default: the thresholds stored in the model)')
    parser.add_argument(
        '--topk',
        type=positive_int,
        help='print the k best classes instead (k >= 1; with --threshold: '
        'the k best of those above it)')
    parser.add_argument(
        '--batch-size',
        type=positive_int,
        default=8,
        help='images per run of the model (>= 1, default 8)')
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument(
        '--json',
        action='store_true',
        help='one JSON object per image, all scores')
    parser.add_argument(
        '--info',
        action='store_true',
        help='print the model metadata and exit')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        run, meta = load_model(args.model, args.device)
        if args.info:
            print(json.dumps(meta, indent=2))
            return 0
        if not args.images:
            raise DeploymentError('Give at least one image file.')
        scores = predict(run, meta, args.images, args.batch_size)
    except DeploymentError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    for path, row in zip(args.images, scores):
        found = labels(row, meta, args.threshold, args.topk)
        if args.json:
            print(
                json.dumps(
                    dict(
                        image=path,
                        labels=[name for name, _ in found],
                        scores=dict(
                            zip(meta['classes'],
                                [round(float(s), 6) for s in row])))))
        else:
            text = ', '.join(f'{name} {s:.2f}' for name, s in found)
            print(f'{path}: {text or "(no label)"}')
    return 0


if __name__ == '__main__':
    sys.exit(main())

# Copyright (c) mmcoop contributors. All rights reserved.
"""Draw multi-label predictions on an image (used by ``demo/image_demo.py``).
"""
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed bitmap font
        return ImageFont.load_default()


def threshold_text(threshold) -> str:
    """``'>= 0.5'`` for one threshold, ``'>= its class threshold'`` for
    per-class ones (e.g. the calibrated thresholds)."""
    if np.ndim(threshold):
        return '>= its class threshold'
    return f'>= {float(threshold):g}'


def draw_predictions(image: np.ndarray,
                     result: dict,
                     classes=None,
                     topk: int = 5,
                     threshold: Optional[float] = None,
                     min_side: int = 256) -> Image.Image:
    """Write the top predictions onto an image.

    Lines are ``"name: score"`` for the ``topk`` highest scores; with
    ``threshold`` (one, or one per class), only scores ``>= threshold``
    (or ``"no label >= thr"``).
    The output has the size of the input image, except that an image whose
    short side is below ``min_side`` is first enlarged (bilinear, aspect
    kept) to a short side of ``min_side`` so the text stays readable.

    Args:
        image (np.ndarray): ``HWC`` uint8 RGB image.
        result (dict): one result of :func:`mmcoop.apis.inference_model`.
        classes (list[str], optional): all class names (indexed by class).
            Defaults to the result's own ``classes`` for its ``labels``.
        topk (int): at most this many lines.
        threshold (float | np.ndarray, optional): hide scores below it (one
            number, or one per class).
        min_side (int): smallest short side of the output. Defaults to 256.

    Returns:
        PIL.Image.Image: the annotated RGB image.
    """
    img = Image.fromarray(np.ascontiguousarray(image[..., :3])).convert('RGB')
    short = min(img.size)
    if short < min_side:
        w, h = img.size
        img = img.resize((round(w * min_side / short),
                          round(h * min_side / short)), Image.BILINEAR)
    scores = np.asarray(result['scores'])
    order = np.argsort(-scores, kind='stable')[:max(0, int(topk))]
    if threshold is not None:
        above = scores >= np.broadcast_to(threshold, scores.shape)
        order = [i for i in order if above[i]]
    if classes is None:
        lookup = dict(
            zip(result.get('labels', []), result.get('classes', [])))
        names = [lookup.get(int(i), str(int(i))) for i in order]
    else:
        names = [classes[int(i)] for i in order]
    lines = [f'{n}: {scores[i]:.2f}' for n, i in zip(names, order)]
    if not lines:
        lines = [f'no label {threshold_text(threshold)}']
    size = max(10, min(img.size) // 20)
    font = _font(size)
    draw = ImageDraw.Draw(img, 'RGBA')
    pad = max(2, size // 4)
    widths = [draw.textlength(line, font=font) for line in lines]
    box_w = int(max(widths)) + 2 * pad
    box_h = len(lines) * (size + pad) + pad
    draw.rectangle([0, 0, box_w, box_h], fill=(0, 0, 0, 160))
    for k, line in enumerate(lines):
        draw.text((pad, pad + k * (size + pad)), line, fill=(255, 255, 255),
                  font=font)
    return img

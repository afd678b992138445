# Copyright (c) mmcoop contributors. All rights reserved.
"""Spatial similarity of dense CLIP features with positive / negative prompts.

The PositiveCoOp paper (WACV 2025) asks "are negative prompts truly looking
at class absence?" and shows that "a photo of a X" and "not a photo of a X"
light up the same regions. This tool draws that figure for any image:

* dense features: :class:`~mmcoop.models.backbones.FrozenCLIP` output
  ``(1, D, 1 + HW)``, the mean (or class) token dropped, reshaped to
  ``(H, W)`` positions;
* at every position, the cosine similarity with the text feature of the
  positive and of the negative prompt of ``--class``;
* prompts are hand-written (``--pos-prompt``, ``--neg-prompt``; the negative
  defaults to the positive negated by ``--negation``/``--negation-rule``)
  or, with ``--config`` and ``--checkpoint``, the trained head's own class
  features (``head.class_features()`` -> ``(neg, pos)``; for the Baseline,
  the rows of its linear layer);
* each map is upsampled bilinearly, min-max normalised (per map, or per
  class with ``--norm shared``), coloured and blended over the image.

Output: one PNG, one row per class, three panels per row
(image | positive | negative), each panel ``--panel-size`` pixels square
under a caption strip of ``max(16, panel_size // 14)`` pixels. The size is
therefore always ``width = 3 * panel_size`` and
``height = rows * (panel_size + strip)`` (448 -> 1344 x 480 for one
class), whatever the input image. The image is shown squashed to a square,
as the model sees it. It also prints, per class, the mean similarity of each
map and the Pearson correlation between the positive and negative maps
(close to 1: the negative prompt looks at the same regions).

Examples::

    python tools/visualization/similarity_map.py demo.jpg --class dog \
        --out work_dirs/dog_sim.png
    python tools/visualization/similarity_map.py demo.jpg --class dog \
        --class person --config CFG.py --checkpoint CKPT.pth
"""
import argparse
import io
import os.path as osp
import sys
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from mmcoop.datasets.transforms.rgb import ImageModeError, to_rgb
from mmcoop.engine.cli import fraction, positive_int, user_path
from mmcoop.utils.checkpoint import atomic_open
from mmcoop.utils.paths import claim_outputs, make_output_dirs
from mmcoop.utils.prompt_templates import (PAPER_P1, check_template, fill,
                                           negate_template)
from mmcoop.visualization import save_image


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Similarity maps of dense CLIP features with positive '
        'and negative prompts (image | positive | negative).')
    parser.add_argument('image', help='image file')
    parser.add_argument('--class', dest='classes', action='append',
                        required=True, metavar='NAME',
                        help='class name (repeat for several rows)')
    parser.add_argument('--model-name', default='RN101-quickgelu',
                        help='open_clip architecture (hand-written prompts)')
    parser.add_argument('--pretrained', default='openai',
                        help="open_clip tag, local file or 'none'")
    parser.add_argument('--cache-dir', default=None)
    parser.add_argument(
        '--tokenizer', default=None,
        help="folder of the model's Hugging Face tokenizer (SigLIP on a "
        "machine without the hub; default: open_clip's)")
    parser.add_argument('--input-size', type=positive_int, default=448,
                        help='model input resolution (default 448)')
    parser.add_argument('--pos-prompt', default=PAPER_P1,
                        help=f'positive template (default {PAPER_P1!r})')
    parser.add_argument('--neg-prompt', default=None,
                        help='negative template (default: the positive '
                        "negated, 'not a photo of a {}')")
    parser.add_argument('--negation', default='not')
    parser.add_argument('--negation-rule', default='prefix')
    parser.add_argument('--config', default=None,
                        help='trained mmcoop config: use its learned '
                        'prompts / embeddings and its backbone')
    parser.add_argument('--checkpoint', default=None,
                        help='checkpoint for --config')
    parser.add_argument('--panel-size', type=positive_int, default=448)
    parser.add_argument('--alpha', type=fraction, default=0.5,
                        help='heat-map opacity (default 0.5)')
    parser.add_argument('--cmap', default='jet')
    parser.add_argument('--norm', choices=['separate', 'shared'],
                        default='separate',
                        help='min-max per map or per class (default '
                        'separate)')
    parser.add_argument('--out', type=user_path, default=None,
                        help='output image; its extension picks the format '
                        '(.png, .jpg, ...; default work_dirs/similarity_map/'
                        '<image stem>.png)')
    parser.add_argument('--save-npz', action='store_true',
                        help='also save the raw (H, W) maps next to the PNG')
    parser.add_argument('--force', action='store_true',
                        help='overwrite existing output files')
    parser.add_argument('--device', default='cpu')
    return parser.parse_args(argv)


# --------------------------------------------------------------------------
# features
# --------------------------------------------------------------------------
def dense_to_grid(dense: torch.Tensor) -> torch.Tensor:
    """``(D, 1 + HW)`` dense features -> L2-normalised ``(D, H, W)``."""
    spatial = dense[:, 1:]
    hw = spatial.shape[1]
    side = int(round(hw**0.5))
    if side * side != hw:
        raise ValueError(f'{hw} spatial positions do not form a square grid.')
    spatial = spatial / spatial.norm(dim=0, keepdim=True).clamp_min(1e-12)
    return spatial.reshape(-1, side, side)


def similarity(grid: torch.Tensor, text: torch.Tensor) -> np.ndarray:
    """Cosine of ``(D, H, W)`` normalised features with a ``(D,)`` text
    feature -> ``(H, W)``."""
    text = text.float() / text.float().norm().clamp_min(1e-12)
    return torch.einsum('dhw,d->hw', grid.float(), text).cpu().numpy()


def _load_rgb(path: str) -> Image.Image:
    """The image as RGB by the rule of every loader
    (:func:`mmcoop.datasets.transforms.rgb.to_rgb`: a 16-bit image is
    refused, not saturated to white); a missing, folder or undecodable path
    stops with an error naming it and the fix."""
    if osp.isdir(path):
        raise IsADirectoryError(
            f'Image {path!r} is a folder. Fix: give one image file.')
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'Image {path!r} does not exist. Fix: check the path.')
    try:
        with Image.open(path) as img:
            return to_rgb(img).copy()  # the loaders' rule (a copy: open)
    except ImageModeError as e:  # 16-bit / float values beyond 0..255
        raise OSError(f'Cannot use image {path!r}: {e}') from e
    except Exception as e:  # noqa: BLE001 - PIL's errors vary by format
        raise OSError(f'Cannot decode image {path!r} ({type(e).__name__}: '
                      f'{e}). Fix: give an image file (JPEG, PNG, ...).') \
            from e


def check_out(out: str, save_npz: bool = False) -> str:
    """Refuse an ``--out`` that PIL cannot write as an RGB image (no or an
    unknown extension, ``.npz``), before any model is built."""
    if not out or not out.strip():
        raise ValueError('--out is empty. Fix: give an image file name such '
                         'as work_dirs/sim.png.')
    stem, ext = osp.splitext(out)
    ext = ext.lower()
    if ext == '.npz':
        raise ValueError(
            f'--out {out!r}: the figure is an image, not an .npz. Fix: give '
            f'--out {stem}.png' + ('' if save_npz else ' --save-npz') +
            f' (the raw maps go to {stem}.npz next to it).')
    formats = Image.registered_extensions()  # also loads PIL's plugins
    fmt = formats.get(ext)
    ok = fmt in Image.SAVE
    if ok:  # e.g. XBM is saved only in mode '1': try a 1-pixel image
        try:
            Image.new('RGB', (1, 1)).save(io.BytesIO(), format=fmt)
        except Exception:  # noqa: BLE001 - PIL's errors vary by format
            ok = False
    if not ok:
        what = f'extension {ext!r}' if ext else 'no extension'
        raise ValueError(
            f'--out {out!r} has {what}; the extension picks the image '
            f'format. Fix: end it with .png (or .jpg, .webp, ...), e.g. '
            f'--out {stem}.png.')
    return out


def check_args(args) -> None:
    """Refuse argument combinations that would draw something else than
    asked (before any model is built)."""
    if args.out is not None:
        check_out(args.out, args.save_npz)
    blank = [c for c in args.classes if not c.strip()]
    if blank:
        raise ValueError('--class must name a class, got an empty name.')
    dup = sorted({c for c in args.classes if args.classes.count(c) > 1})
    if dup:
        raise ValueError(f'--class {dup[0]!r} is given twice (one row per '
                         'class). Fix: give each class once.')
    if args.checkpoint and not args.config:
        raise ValueError(
            '--checkpoint is only read with --config (the learned prompts '
            'of that model); without it the maps use the hand-written '
            'prompts. Fix: add --config CFG.py, or drop --checkpoint.')
    if args.config and args.tokenizer:
        raise ValueError(
            '--tokenizer is only read with --model-name (hand-written '
            'prompts); with --config the model is the config\'s. Fix: set '
            'model.head.text_encoder.tokenizer in the config, or drop '
            '--config.')
    if args.config and not osp.isfile(args.config):
        raise FileNotFoundError(
            f'--config {args.config!r} is not a file. Fix: check the path.')
    if args.checkpoint and '://' not in args.checkpoint and not osp.isfile(
            args.checkpoint):
        raise FileNotFoundError(
            f'--checkpoint {args.checkpoint!r} is not a file. Fix: check the '
            'path (or give a URL).')
    _colormap(args.cmap)


def handwritten_maps(image: Image.Image, classes: List[str], pos_prompt: str,
                     neg_prompt: str, model_name: str,
                     pretrained: Optional[str], input_size: int = 448,
                     cache_dir: Optional[str] = None,
                     device='cpu',
                     tokenizer: Optional[str] = None) -> Dict[str, dict]:
    """Maps for hand-written prompts with a CLIP from open_clip."""
    from mmcoop.models.backbones import FrozenCLIP, FrozenCLIPTextEncoder
    from mmcoop.models.backbones.clip_loader import clip_normalization
    from mmcoop.utils.prompt_templates import encode_prompts
    if pretrained is not None and str(pretrained).lower() in ('none', ''):
        pretrained = None
    # the statistics the weights expect (SigLIP: 0.5 / 0.5, not CLIP's)
    mean, std = clip_normalization(model_name, pretrained)
    backbone = FrozenCLIP(model_name=model_name, pretrained=pretrained,
                          input_resolution=input_size,
                          cache_dir=cache_dir).to(device).eval()
    encoder = FrozenCLIPTextEncoder(model_name=model_name,
                                    pretrained=pretrained,
                                    cache_dir=cache_dir,
                                    tokenizer=tokenizer).to(device).eval()
    x = np.asarray(image.resize((input_size, input_size), Image.BILINEAR),
                   dtype=np.float32) / 255.
    x = (x - np.array(mean, np.float32)) / np.array(std, np.float32)
    x = torch.from_numpy(x).permute(2, 0, 1)[None].to(device)
    with torch.no_grad():
        grid = dense_to_grid(backbone(x)[-1][0])
    texts = [fill(pos_prompt, c) for c in classes] + [
        fill(neg_prompt, c) for c in classes
    ]
    feats = encode_prompts(encoder, texts, normalize=True).to(grid.device)
    out = {}
    for i, name in enumerate(classes):
        out[name] = dict(
            pos=similarity(grid, feats[i]),
            neg=similarity(grid, feats[len(classes) + i]),
            pos_label=f'positive: {texts[i]!r}',
            neg_label=f'negative: {texts[len(classes) + i]!r}')
    return out


def learned_class_features(head) -> Tuple[torch.Tensor, torch.Tensor, str]:
    """``(neg, pos)`` ``(C, D)`` features of a trained head and a label."""
    if hasattr(head, 'class_features'):
        with torch.no_grad():
            neg, pos = head.class_features()
        return neg.detach(), pos.detach(), type(head).__name__
    fc = getattr(head, 'fc', None)
    if isinstance(fc, torch.nn.Linear):  # BaselineHead: [neg; pos] rows
        c = head.num_classes
        w = fc.weight.detach()
        return w[:c], w[c:], f'{type(head).__name__} (linear rows)'
    raise TypeError(f'{type(head).__name__} has no class features.')


def learned_maps(image_path: str, classes: List[str], config: str,
                 checkpoint: Optional[str], device='cpu') -> Dict[str, dict]:
    """Maps for a trained model's own class features."""
    from mmengine.dataset import pseudo_collate

    from mmcoop.apis import MultiLabelInferencer, init_model
    from mmcoop.models.backbones import FrozenCLIP
    model = init_model(config, checkpoint, device=device)
    if not isinstance(model.backbone, FrozenCLIP):
        raise TypeError(
            f'--config {config!r}: the backbone is '
            f'{type(model.backbone).__name__}; similarity maps need the '
            'dense features of a FrozenCLIP image backbone. Fix: give a '
            "config with model.backbone=dict(type='FrozenCLIP', ...) (for a "
            'feature-cache config, the config it was made from).')
    inferencer = MultiLabelInferencer(model)
    names = list(model.head.classnames)
    missing = [c for c in classes if c not in names]
    if missing:
        raise KeyError(f'Classes {missing} are not in the model '
                       f'({len(names)} classes: {names[:10]}...).')
    data = pseudo_collate([inferencer.preprocess(image_path)])
    with torch.no_grad():
        inputs = model.data_preprocessor(data, False)['inputs']
        grid = dense_to_grid(model.backbone(inputs)[-1][0])
        neg, pos, kind = learned_class_features(model.head)
    out = {}
    for name in classes:
        i = names.index(name)
        out[name] = dict(
            pos=similarity(grid, pos[i].to(grid.device)),
            neg=similarity(grid, neg[i].to(grid.device)),
            pos_label=f'learned positive, {name} ({kind})',
            neg_label=f'learned negative, {name} ({kind})')
    return out


# --------------------------------------------------------------------------
# drawing
# --------------------------------------------------------------------------
def _jet(v: np.ndarray) -> np.ndarray:
    r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return (np.stack([r, g, b], -1) * 255).astype(np.uint8)


def _colormap(name: str):
    """Values in [0, 1] -> uint8 RGB with matplotlib's colormap ``name``
    (without matplotlib: ``'jet'`` only); an unknown name is refused."""
    try:
        from matplotlib import colormaps
    except ImportError:  # matplotlib missing or older than 3.5
        colormaps = None
    if colormaps is not None and name in colormaps:
        cmap = colormaps[name]
        return lambda v: (cmap(v)[..., :3] * 255).astype(np.uint8)
    if name == 'jet':
        return _jet
    known = ', '.join(sorted(colormaps)[:8]) + ', ...' if colormaps \
        else 'jet (install matplotlib for the others)'
    raise ValueError(f'--cmap {name!r} is not a matplotlib colormap. Fix: '
                     f'use one of {known}.')


def upsample(sim: np.ndarray, size: int) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(sim, dtype=np.float32))
    t = F.interpolate(t[None, None], size=(size, size), mode='bilinear',
                      align_corners=False)
    return t[0, 0].numpy()


def overlay(base: np.ndarray, sim: np.ndarray, lo: float, hi: float,
            cmap, alpha: float) -> np.ndarray:
    v = (sim - lo) / (hi - lo) if hi > lo else np.zeros_like(sim)
    heat = cmap(np.clip(v, 0, 1)).astype(np.float32)
    return (alpha * heat + (1 - alpha) * base).clip(0, 255).astype(np.uint8)


def strip_height(panel_size: int) -> int:
    return max(16, panel_size // 14)


def output_size(panel_size: int, rows: int) -> Tuple[int, int]:
    """``(width, height)`` of the PNG."""
    return 3 * panel_size, rows * (panel_size + strip_height(panel_size))


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _fit(draw, text: str, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + '...', font=font) > width:
        text = text[:-1]
    return text + '...'


def render(image: Image.Image, maps: Dict[str, dict], panel_size: int = 448,
           alpha: float = 0.5, cmap: str = 'jet',
           norm: str = 'separate') -> Image.Image:
    """Compose the figure (see the module docstring for its size)."""
    strip = strip_height(panel_size)
    width, height = output_size(panel_size, len(maps))
    canvas = Image.new('RGB', (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = _font(max(10, strip - 6))
    colour = _colormap(cmap)
    base = np.asarray(image.resize((panel_size, panel_size), Image.BILINEAR),
                      dtype=np.float32)
    for row, (name, m) in enumerate(maps.items()):
        top = row * (panel_size + strip)
        pos = upsample(m['pos'], panel_size)
        neg = upsample(m['neg'], panel_size)
        if norm == 'shared':
            lo = float(min(m['pos'].min(), m['neg'].min()))
            hi = float(max(m['pos'].max(), m['neg'].max()))
            ranges = [(lo, hi), (lo, hi)]
        else:
            ranges = [(float(m['pos'].min()), float(m['pos'].max())),
                      (float(m['neg'].min()), float(m['neg'].max()))]
        panels = [base.astype(np.uint8),
                  overlay(base, pos, *ranges[0], colour, alpha),
                  overlay(base, neg, *ranges[1], colour, alpha)]
        captions = [
            f'image ({name})',
            f"{m['pos_label']} [{m['pos'].min():.2f}, {m['pos'].max():.2f}]",
            f"{m['neg_label']} [{m['neg'].min():.2f}, {m['neg'].max():.2f}]"
        ]
        for col, (panel, text) in enumerate(zip(panels, captions)):
            left = col * panel_size
            canvas.paste(Image.fromarray(panel), (left, top + strip))
            draw.text((left + 3, top + 2),
                      _fit(draw, text, font, panel_size - 6),
                      fill=(0, 0, 0), font=font)
    return canvas


def map_stats(m: dict) -> dict:
    pos, neg = m['pos'].ravel(), m['neg'].ravel()
    if pos.std() > 0 and neg.std() > 0:
        corr = float(np.corrcoef(pos, neg)[0, 1])
    else:
        corr = float('nan')
    return dict(pos_mean=float(pos.mean()), neg_mean=float(neg.mean()),
                corr=corr)


def _prompts(args) -> Tuple[str, str]:
    """The positive and negative templates, checked; errors name the
    options."""
    try:
        pos = check_template(args.pos_prompt)
    except ValueError as e:
        raise ValueError(f'--pos-prompt: {e}') from None
    if args.neg_prompt is not None:
        try:
            return pos, check_template(args.neg_prompt)
        except ValueError as e:
            raise ValueError(f'--neg-prompt: {e}') from None
    try:
        return pos, negate_template(pos, args.negation, args.negation_rule)
    except ValueError as e:
        raise ValueError(
            f'--negation {args.negation!r} / --negation-rule '
            f'{args.negation_rule!r}: {e}') from None


def main(argv=None):
    args = parse_args(argv)
    check_args(args)
    image = _load_rgb(args.image)
    if not args.config:
        pos, neg = _prompts(args)
    out = args.out or osp.join(
        'work_dirs', 'similarity_map',
        osp.splitext(osp.basename(args.image))[0] + '.png')
    npz = osp.splitext(out)[0] + '.npz'
    outputs = [out, npz] if args.save_npz else [out]
    if args.config:  # never into the config's dataset folders
        from mmcoop.apis import load_config
        from mmcoop.engine.config_checks import check_outputs_outside_datasets
        check_outputs_outside_datasets(
            load_config(args.config),
            [('output file (--out)', path,
              "'work_dirs/similarity_map/<image>.png'") for path in outputs])
    # checked now; the folder is made only when writing (a --class missing
    # from the --config model is found once the model is built)
    claim_outputs(outputs,
                  inputs=[args.image, *filter(None, [args.config,
                                                     args.checkpoint])],
                  force=args.force, option='--out', create_dirs=False)
    if args.config:
        maps = learned_maps(args.image, args.classes, args.config,
                            args.checkpoint, args.device)
    else:
        maps = handwritten_maps(image, args.classes, pos, neg,
                                args.model_name, args.pretrained,
                                args.input_size, args.cache_dir, args.device,
                                args.tokenizer)
    fig = render(image, maps, args.panel_size, args.alpha, args.cmap,
                 args.norm)
    make_output_dirs(outputs, option='--out')
    save_image(fig, out)
    h, w = next(iter(maps.values()))['pos'].shape
    for name, m in maps.items():
        s = map_stats(m)
        print(f"{name}: mean cos positive {s['pos_mean']:.3f}, negative "
              f"{s['neg_mean']:.3f}; corr(positive, negative) "
              f"{s['corr']:.3f} over {h}x{w} positions")
    print(f'saved {out} ({fig.size[0]}x{fig.size[1]})')
    if args.save_npz:
        with atomic_open(npz) as f:
            np.savez(f, **{f'{k}/{p}': m[p] for k, m in maps.items()
                           for p in ('pos', 'neg')})
        print(f'saved {npz}')
    return out, maps


if __name__ == '__main__':
    main(sys.argv[1:])

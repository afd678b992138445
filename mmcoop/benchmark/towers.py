# Copyright (c) mmcoop contributors. All rights reserved.
"""The cost of each CLIP family's frozen towers: the measurement of
``benchmark.py --mode towers``.

For the paper's RN101 and every family of
``configs/_base_/models/clip_families/`` (or the open_clip names of
``--tower-models``), built with random weights (the cost does not
depend on them):

- ``image``: the dense forward of :class:`~mmcoop.models.FrozenCLIP` for one
  image at ``--resolution`` (what the feature cache runs once per image and
  view, and every step runs per image without it);
- ``text``: the text work of one PositiveCoOp training step: the learned
  prompts of C classes (``--num-classes``, first value; n_ctx 16, or the
  family config's ``_n_ctx`` where its text context is shorter; truncated
  where exact) through the frozen text encoder, forward and backward (the
  gradient reaches the prompt context).

A text tower whose own tokenizer cannot be loaded here (SigLIP's needs
``transformers`` and a download) is measured with a
:class:`StandInTokenizer` when its cost does not depend on the token ids:
when the encoder runs the full context for every prompt (no truncation:
no causal mask or last-position pooling, as SigLIP / SigLIP2). The row
records it (``text_tokenizer``) and the report marks it.

Each is timed (best of ``--iters``), its peak memory measured and its FLOPs
counted; the report adds the projected GPU-hours of a 50-epoch COCO
PositiveCoOp schedule from the feature cache (extraction + text work, from
the counted FLOPs: a projection, not a measurement).
"""
import glob
import math
import os.path as osp
import sys
import time
import zlib
from typing import Dict, List, Optional, Sequence

import open_clip
import torch
from open_clip.tokenizer import canonicalize_text

from .memory import PeakMemory
from .projection import SCHEDULES, gpu_hours
from .steps import autocast_kwargs, classnames, device_of
from .timing import run_configs

__all__ = [
    'StandInTokenizer', 'family_models', 'measure_tower', 'measure_towers',
    'report_towers'
]


def _family_bases(root: Optional[str] = None) -> Dict[str, dict]:
    """``{family: dict(model_name, n_ctx)}``: the paper's RN101 (its model
    config) and every family base config of ``root`` (default: the
    shipped ``configs/_base_/models/clip_families``, in the repository or
    the install); ``n_ctx`` is the family's ``_n_ctx`` where its text
    context needs fewer learned tokens than the paper's, else None."""
    from mmengine.config import Config

    from mmcoop.apis.model_zoo import model_index_root
    root = root or osp.join(model_index_root(), 'configs', '_base_',
                            'models', 'clip_families')
    paper = Config.fromfile(osp.join(osp.dirname(root),
                                     'positivecoop_clip-rn101.py'))
    out = {
        'rn101_openai':
        dict(model_name=paper.model.backbone.model_name, n_ctx=None)
    }
    for path in sorted(glob.glob(osp.join(glob.escape(root), '*.py'))):
        cfg = Config.fromfile(path)
        out[osp.splitext(osp.basename(path))[0]] = dict(
            model_name=cfg['_clip_model']['model_name'],
            n_ctx=cfg.get('_n_ctx'))
    return out


def family_models(root: Optional[str] = None) -> Dict[str, str]:
    """``{family: open_clip model name}`` of :func:`_family_bases`."""
    return {f: b['model_name'] for f, b in _family_bases(root).items()}


def measure_tower(model_name: str, opts,
                  n_ctx: Optional[int] = None) -> dict:
    """Parameters, time, peak memory and FLOPs of one family's towers (see
    the module docstring; the text work with ``n_ctx`` learned context
    tokens, None: the head's default, the paper's 16). A tower that cannot
    be built here (e.g. a tokenizer that needs a download) is reported
    with the reason."""
    from mmcoop.registry import MODELS
    from mmcoop.utils import register_all_modules
    register_all_modules()
    device = device_of(opts)
    res = opts.resolution
    num_classes = opts.num_classes[0]
    out = dict(model_name=model_name, resolution=res, classes=num_classes,
               n_ctx=n_ctx, results={}, errors={})
    configs = {}
    backbone = MODELS.build(
        dict(type='FrozenCLIP', model_name=model_name, pretrained=None,
             input_resolution=res, **autocast_kwargs(opts))).to(device)
    out['image_params'] = sum(p.numel() for p in backbone.parameters())
    x = torch.randn(1, 3, res, res, device=device)

    def image():
        with torch.no_grad():
            backbone(x)

    configs['image'] = (lambda: None, image)
    head = None

    def build_head(tokenizer=None):
        text_encoder = dict(
            type='FrozenCLIPTextEncoder', model_name=model_name,
            pretrained=None, truncate=True, tokenizer=tokenizer,
            **autocast_kwargs(opts))
        prompt = {} if n_ctx is None else dict(n_ctx=n_ctx)
        return MODELS.build(
            dict(type='PositiveCoOpHead', classnames=classnames(num_classes),
                 text_encoder=text_encoder, **prompt)).to(device)

    try:
        head = build_head()
    except Exception as e:  # noqa: BLE001
        out['errors']['text'] = f'{type(e).__name__}: {e}'.splitlines()[0]
        head, why = _with_stand_in_tokenizer(model_name, build_head)
        if head is not None:
            out['text_tokenizer'] = 'stand-in'
        elif why:
            out['errors']['text_stand_in'] = why
    if head is not None:
        out['text_params'] = sum(
            p.numel() for p in head.text_encoder.parameters())
        out['text_context'] = head.text_encoder.context_length

        def text():
            neg, pos = head.class_features()
            (pos.sum() + neg.sum()).backward()

        configs['text'] = (lambda: head.zero_grad(set_to_none=True), text)
    out['results'] = run_configs(configs, device, opts.warmup, opts.iters,
                                 PeakMemory(device))
    return out


class StandInTokenizer:
    """One id per word of SigLIP's ``canonicalize`` cleaning (a CRC32 of
    the word, in ``2 .. vocab_size - 1``), the end token 1 appended, padded
    with 0 to ``context_length``; no start token. Stands in for a tokenizer
    that cannot be loaded, to measure a text tower whose cost does not
    depend on the ids. ``N`` strings -> ``(N, context_length)`` ids."""

    def __init__(self, context_length: int, vocab_size: int):
        self.context_length = int(context_length)
        self.vocab_size = int(vocab_size)

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else texts
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for i, text in enumerate(texts):
            ids = [
                2 + zlib.crc32(word.encode()) % (self.vocab_size - 2)
                for word in canonicalize_text(text).split()
            ][:self.context_length - 1] + [1]
            out[i, :len(ids)] = torch.tensor(ids)
        return out


def _with_stand_in_tokenizer(model_name: str, build_head):
    """``build_head(tokenizer)`` with a :class:`StandInTokenizer` of the
    model's context length and vocabulary size -> ``(head, None)``
    if its text encoder runs the full context (no truncation); ``(None,
    None)`` if it truncates (its cost would depend on where the tokens
    end); ``(None, reason)`` if the head cannot be built even so."""
    text_cfg = open_clip.get_model_config(model_name)['text_cfg']
    stand_in = StandInTokenizer(
        text_cfg.get('context_length', 77), text_cfg.get('vocab_size', 49408))
    try:
        head = build_head(stand_in)
    except Exception as e:  # noqa: BLE001
        return None, f'{type(e).__name__}: {e}'.splitlines()[0]
    return (None, None) if head.text_encoder.truncate else (head, None)


def measure_towers(opts) -> List[dict]:
    """:func:`measure_tower` for ``opts.tower_models`` (default: every
    family config, in :func:`family_models` order), each in this
    process, with the family's ``n_ctx``. A family whose towers cannot be
    built or run here (e.g. a timm too old for its image tower, or the
    device's memory) is a row with the reason, and the others are still
    measured; each family's figures are printed to stderr as it ends (a
    run stopped by a time limit has them, the tables come at the end)."""
    bases = _family_bases().values()
    n_ctx = {b['model_name']: b['n_ctx'] for b in bases}
    names = opts.tower_models or [b['model_name'] for b in bases]
    out = []
    for name in names:
        t0 = time.time()
        try:
            row = measure_tower(name, opts, n_ctx.get(name))
        except Exception as e:  # noqa: BLE001 - reported in its row
            row = dict(model_name=name, resolution=opts.resolution,
                       classes=opts.num_classes[0], n_ctx=n_ctx.get(name),
                       results={}, errors=dict(
                           image=f'{type(e).__name__}: {e}'.splitlines()[0]))
        out.append(row)
        print(f'[towers] {name}: {_progress(row)} '
              f'({time.time() - t0:.0f} s)', file=sys.stderr, flush=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return out


def _progress(row: dict) -> str:
    """One family's figures on one line (or why it has none)."""
    parts = [
        f'{kind} {r["time_s"]:.4f} s, {r["flops"] / 1e9:.1f} GFLOP'
        for kind, r in row['results'].items()
    ]
    parts += [f'{kind}: {why}' for kind, why in row['errors'].items()]
    return '; '.join(parts)


def _schedule_hours(r: dict, tflops: float, util: float,
                    batch_size: int) -> Optional[float]:
    """GPU-hours of a 50-epoch COCO PositiveCoOp schedule from the feature
    cache: image tower once per train and val image, text work every
    step (the head's aggregation and the loss are left out: small)."""
    sched = SCHEDULES['COCO']
    res = r['results']
    if 'text' not in res:
        return None
    steps = sched['epochs'] * math.ceil(sched['train'] / batch_size)
    pflop = ((sched['train'] + sched['val']) * res['image']['flops'] +
             steps * res['text']['flops'] * sched['classes'] /
             r['classes']) / 1e15
    return gpu_hours(pflop, tflops, util)


def report_towers(rows: List[dict], opts) -> str:
    """Markdown table of :func:`measure_towers` (peak memory on CUDA only:
    on the CPU the warm-up's memory is reused, so the RSS growth of a call
    says nothing)."""
    util = opts.gpu_utilization
    mem = opts.device == 'cuda'
    mem_col = ' peak MiB |' if mem else ''
    lines = [
        f'### Frozen towers per family (random weights, '
        f'{rows[0]["resolution"] if rows else "-"} px, C = '
        f'{rows[0]["classes"] if rows else "-"}) on {opts.device_desc}', '',
        '| open_clip model | image params (M) | image GFLOP / image | image '
        f's / image |{mem_col.replace(" peak", " image peak")} text params '
        '(M) | text GFLOP / step (fwd+bwd) | text s / step |'
        f'{mem_col.replace(" peak", " text peak")} COCO 50 ep. PositiveCoOp, '
        f'cached: GPU-h at {util:.0%} of {opts.gpu_tflops:g} TFLOP/s '
        '(projection) |', '|---' * (8 + 2 * mem) + '|'
    ]
    for r in rows:
        img = r['results'].get('image')
        if img is None:  # not built or not run here
            lines.append(f'| `{r["model_name"]}` | n/a ('
                         f'{r["errors"]["image"][:120]}) |' +
                         ' - |' * (6 + 2 * mem))
            continue
        txt = r['results'].get('text')
        hours = _schedule_hours(r, opts.gpu_tflops, util,
                                getattr(opts, 'batch_size', 32))
        if txt:
            stand_in = ' (stand-in tokenizer*)' if r.get(
                'text_tokenizer') == 'stand-in' else ''
            text_cols = (f'{r["text_params"] / 1e6:.1f}{stand_in} | '
                         f'{txt["flops"] / 1e9:.1f} | {txt["time_s"]:.3f} |')
            text_cols += f' {txt["peak_mib"]:.0f} |' if mem else ''
        else:
            why = r['errors'].get('text', 'not measured')[:60]
            if 'text_stand_in' in r['errors']:
                why += ('; with a stand-in tokenizer: '
                        f'{r["errors"]["text_stand_in"][:90]}')
            text_cols = f'n/a ({why}) | - | - |' + (' - |' if mem else '')
        img_mem = f' {img["peak_mib"]:.0f} |' if mem else ''
        lines.append(
            f'| `{r["model_name"]}` | {r["image_params"] / 1e6:.1f} | '
            f'{img["flops"] / 1e9:.1f} | {img["time_s"]:.3f} |{img_mem} '
            f'{text_cols} {"-" if hours is None else f"{hours:.2f}"} |')
    lines += [
        '', 'Image: one image, dense features, no grad. Text: the learned '
        'prompts of all C classes (PositiveCoOp, n_ctx 16 unless noted, '
        'truncated where '
        'exact), forward + backward to the context. The GPU-hours are '
        'compute only, from the counted FLOPs: extraction of the 82,081 + '
        '40,137 images once, then 50 epochs of text work at batch '
        f'{getattr(opts, "batch_size", 32)}; no data loading, no head.'
    ]
    for r in rows:
        if r.get('n_ctx') is not None and 'text' in r['results']:
            lines += [
                '', f'`{r["model_name"]}`: n_ctx {r["n_ctx"]}, its family '
                'configs\' (the text context is '
                f'{r.get("text_context", "shorter")} tokens).'
            ]
        if r.get('text_tokenizer') == 'stand-in':
            lines += [
                '', f'\\* `{r["model_name"]}`: text tower measured with a '
                'stand-in tokenizer (one id per word, same context length '
                'and vocabulary size), as its own could not be loaded ('
                f'{r["errors"]["text"][:80]}); the tower runs its full '
                'context whatever the ids (no truncation), so the cost is '
                "its own tokenizer's."
            ]
    return '\n'.join(lines)

# Copyright (c) mmcoop contributors. All rights reserved.
"""Cosine similarity of CLIP text features: positive vs negative prompts.

Reproduces the PositiveCoOp (WACV 2025) analysis "Why is negative prompt
learning ineffective?": if CLIP put "not a photo of a dog" far from "a photo
of a dog", positive-negative (P1-N1) similarities would be much lower than
positive-positive (P1-P2) ones. Two settings:

* ``1 prompt``: per class, P1 = ``--pos-prompt`` vs N1 = ``--neg-prompt``
  (default: P1 negated by ``--negation``/``--negation-rule``), and P1 vs
  P2 = ``--pos2-prompt``; C values each.
* ``bank``: for every template t of the bank and class c, t(c) vs neg(t)(c)
  (K*C values); for P1-P2, every unordered pair of different templates of
  the same class (C*K*(K-1)/2 values). ``--reduce class|template`` averages
  before the statistics.

Prints the paper's table (``mean ± std (min, max)``; population std) and
writes ``summary.csv`` (and ``pairs.csv`` with ``--save-pairs``).

Example (the paper's setting, needs the OpenAI RN101 weights)::

    python tools/analysis/prompt_similarity.py --out-dir work_dirs/sim
    python tools/analysis/prompt_similarity.py \
        --pretrained /ckpt/open_clip_pytorch_model.bin \
        --templates my_templates.txt --negation no --negation-rule article
"""
import argparse
import csv
import os.path as osp
import sys
from typing import Dict, List, Optional

import numpy as np
import torch

from mmcoop.engine.cli import nonnegative_int, positive_int, user_path
from mmcoop.utils.checkpoint import atomic_open
from mmcoop.utils.paths import claim_outputs, make_output_dirs
from mmcoop.utils.prompt_templates import (DEFAULT_TEMPLATE_BANK, PAPER_P1,
                                           PAPER_P2, check_template,
                                           encode_prompts, fill,
                                           get_classnames, load_templates,
                                           negate_template)

#: The paper's numbers (RN101 OpenAI CLIP, 80 COCO classes), for reference.
PAPER_TABLE = {
    '1 prompt': {
        'P1-N1': (0.58, 0.06, 0.37, 0.69),
        'P1-P2': (0.53, 0.04, 0.51, 0.67)
    },
    'bank': {
        'P1-N1': (0.56, 0.06, 0.37, 0.67),
        'P1-P2': (0.61, 0.01, 0.55, 0.63)
    },
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Cosine similarity of CLIP text features for positive '
        'vs negative and positive vs positive prompts.')
    parser.add_argument(
        '--model-name', default='RN101-quickgelu',
        help='open_clip architecture (default: the paper\'s RN101-quickgelu)')
    parser.add_argument(
        '--pretrained', default='openai',
        help="open_clip tag, local weights file, or 'none' for random "
        'weights (default: openai)')
    parser.add_argument('--cache-dir', default=None,
                        help='open_clip download cache')
    parser.add_argument(
        '--tokenizer', default=None,
        help="folder of the model's Hugging Face tokenizer (SigLIP on a "
        "machine without the hub; default: open_clip's)")
    parser.add_argument(
        '--classes', default='coco',
        help="'coco' (80 names, default), 'voc' (20) or a file with one "
        'class name per line')
    parser.add_argument(
        '--templates', default=None,
        help='template bank file, one template with a {} slot per line '
        '(default: 80 CLIP ImageNet + 5 picture/image templates = 85)')
    parser.add_argument('--negation', default='not',
                        help="negation word(s) (default: 'not')")
    parser.add_argument(
        '--negation-rule', default='prefix',
        help="'prefix' ('{neg} {prompt}', default), 'article' (replace the "
        'determiner before the class slot) or a pattern with {neg} and '
        '{prompt}')
    parser.add_argument('--pos-prompt', default=PAPER_P1,
                        help=f'P1 (default {PAPER_P1!r})')
    parser.add_argument(
        '--neg-prompt', default=None,
        help='N1 (default: P1 negated by --negation/--negation-rule, i.e. '
        "'not a photo of a {}')")
    parser.add_argument('--pos2-prompt', default=PAPER_P2,
                        help=f'P2 (default {PAPER_P2!r})')
    parser.add_argument('--no-bank', action='store_true',
                        help='only the single-prompt setting')
    parser.add_argument(
        '--reduce', choices=['none', 'class', 'template'], default='none',
        help='bank setting: average per class or per template (pair) before '
        'the statistics (default: none, all pairs)')
    parser.add_argument('--batch-size', type=positive_int, default=256,
                        help='prompts per forward pass (default 256)')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--out-dir', type=user_path,
                        default='work_dirs/prompt_similarity')
    parser.add_argument('--force', action='store_true',
                        help='overwrite existing output files')
    parser.add_argument('--save-pairs', action='store_true',
                        help='also write every similarity to pairs.csv')
    parser.add_argument('--precision', type=nonnegative_int, default=2,
                        help='decimals in the printed table (default 2)')
    parser.add_argument('--no-progress', action='store_true')
    return parser.parse_args(argv)


def stats(values: np.ndarray) -> Dict[str, float]:
    """``n, mean, std (population), min, max`` of a 1-D array."""
    values = np.asarray(values, dtype=np.float64).ravel()
    return dict(
        n=int(values.size),
        mean=float(values.mean()),
        std=float(values.std()),
        min=float(values.min()),
        max=float(values.max()))


def fmt(s, precision: int = 2) -> str:
    """``mean ± std (min, max)``, the paper's format."""
    if isinstance(s, dict):
        s = (s['mean'], s['std'], s['min'], s['max'])
    p = precision
    return f'{s[0]:.{p}f} ± {s[1]:.{p}f} ({s[2]:.{p}f}, {s[3]:.{p}f})'


def build_text_encoder(model_name: str, pretrained: Optional[str],
                       cache_dir: Optional[str] = None, device='cpu',
                       tokenizer: Optional[str] = None):
    from mmcoop.models.backbones import FrozenCLIPTextEncoder
    if pretrained is not None and str(pretrained).lower() in ('none', ''):
        pretrained = None
    encoder = FrozenCLIPTextEncoder(
        model_name=model_name, pretrained=pretrained, cache_dir=cache_dir,
        tokenizer=tokenizer)
    return encoder.to(device).eval()


def single_prompt_similarity(encoder, classnames: List[str], p1: str, n1: str,
                             p2: str, batch_size: int = 256,
                             progress: bool = False) -> Dict[str, np.ndarray]:
    """Per-class cosines ``{'P1-N1': (C,), 'P1-P2': (C,)}``."""
    c = len(classnames)
    texts = [fill(t, name) for t in (p1, n1, p2) for name in classnames]
    feats = encode_prompts(encoder, texts, batch_size, progress=progress)
    f1, fn, f2 = feats[:c], feats[c:2 * c], feats[2 * c:]
    return {
        'P1-N1': (f1 * fn).sum(-1).numpy(),
        'P1-P2': (f1 * f2).sum(-1).numpy()
    }


def bank_similarity(encoder, classnames: List[str], templates: List[str],
                    neg_templates: List[str], batch_size: int = 256,
                    progress: bool = False) -> Dict[str, np.ndarray]:
    """Bank cosines.

    Returns:
        dict: ``'P1-N1'`` ``(K, C)`` (template t vs its negation, per
        class) and ``'P1-P2'`` ``(K, K, C)`` (template i vs template j, per
        class; use the ``i < j`` triangle).
    """
    k, c = len(templates), len(classnames)
    texts = [fill(t, name) for t in templates for name in classnames]
    texts += [fill(t, name) for t in neg_templates for name in classnames]
    feats = encode_prompts(encoder, texts, batch_size, progress=progress)
    pos = feats[:k * c].reshape(k, c, -1)
    neg = feats[k * c:].reshape(k, c, -1)
    pos_neg = (pos * neg).sum(-1)
    pos_pos = torch.einsum('icd,jcd->ijc', pos, pos)
    return {'P1-N1': pos_neg.numpy(), 'P1-P2': pos_pos.numpy()}


def reduce_bank(sims: Dict[str, np.ndarray], reduce: str = 'none'):
    """Flatten (or average) the bank similarities for the statistics."""
    pn, pp = sims['P1-N1'], sims['P1-P2']
    k = pn.shape[0]
    iu, ju = np.triu_indices(k, 1)
    pairs = pp[iu, ju]  # (K(K-1)/2, C)
    if reduce == 'none':
        return {'P1-N1': pn.ravel(), 'P1-P2': pairs.ravel()}
    if reduce == 'class':
        return {'P1-N1': pn.mean(0), 'P1-P2': pairs.mean(0)}
    if reduce == 'template':
        return {'P1-N1': pn.mean(1), 'P1-P2': pairs.mean(1)}
    raise ValueError(f'unknown reduce {reduce!r}')


def format_table(rows: List[dict], precision: int = 2) -> str:
    """The paper's layout: one block per setting, P1-N1 and P1-P2 columns."""
    lines = []
    for setting in dict.fromkeys(r['setting'] for r in rows):
        sub = {r['pair']: r for r in rows if r['setting'] == setting}
        first = next(iter(sub.values()))
        plural = 's' if first['n_templates'] > 1 else ''
        reduce = '' if first['reduce'] == 'none' else \
            f", reduce={first['reduce']}"
        head = (f"Cosine similarity ({first['n_classes']} cls - "
                f"{first['n_templates']} prompt{plural}{reduce})")
        labels = {p: f"{p}: {r['prompt_a']!r} vs {r['prompt_b']!r}"
                  if setting == '1 prompt' else f'{p} pairs (n={r["n"]})'
                  for p, r in sub.items()}
        width = max([len(head), len('Mean ± Std (Min, Max)'),
                     len('paper (RN101 OpenAI, 80 COCO cls)')])
        cols = {p: max(len(labels[p]), 28) for p in sub}
        lines.append(head.ljust(width) + ' | ' + ' | '.join(
            labels[p].ljust(cols[p]) for p in sub))
        lines.append('Mean ± Std (Min, Max)'.ljust(width) + ' | ' +
                     ' | '.join(fmt(sub[p], precision).ljust(cols[p])
                                for p in sub))
        paper = PAPER_TABLE.get(setting)
        if paper:
            lines.append('paper (RN101 OpenAI, 80 COCO cls)'.ljust(width) +
                         ' | ' + ' | '.join(
                             fmt(paper[p], 2).ljust(cols[p]) for p in sub))
        lines.append('')
    return '\n'.join(lines)


def _template(option: str, template: str) -> str:
    """``check_template`` with the option named in its error."""
    try:
        return check_template(template)
    except ValueError as e:
        raise ValueError(f'{option}: {e}') from None


def _negate(template: str, args) -> str:
    """``negate_template`` with the options named in its error."""
    try:
        return negate_template(template, args.negation, args.negation_rule)
    except ValueError as e:
        raise ValueError(
            f'--negation {args.negation!r} / --negation-rule '
            f'{args.negation_rule!r}: {e}') from None


def check_inputs(args) -> dict:
    """Read and check every input (classes, templates, negations) before
    any output is claimed or model built; returns them."""
    if not args.out_dir or not args.out_dir.strip():
        raise ValueError('--out-dir is empty. Fix: give a folder for '
                         'summary.csv, e.g. work_dirs/prompt_similarity.')
    classnames = get_classnames(args.classes, option='--classes')
    p1 = _template('--pos-prompt', args.pos_prompt)
    p2 = _template('--pos2-prompt', args.pos2_prompt)
    n1 = _template('--neg-prompt', args.neg_prompt) \
        if args.neg_prompt is not None else _negate(p1, args)
    if args.templates is not None:
        templates = load_templates(args.templates, option='--templates')
        if len(templates) < 2 and not args.no_bank:
            raise ValueError(
                f'--templates {args.templates!r} holds one template: the '
                'bank statistics compare pairs of different templates. Fix: '
                'give at least two, or pass --no-bank.')
    else:
        templates = list(DEFAULT_TEMPLATE_BANK)
    neg_templates = [_negate(t, args) for t in templates]
    return dict(classnames=classnames, p1=p1, p2=p2, n1=n1,
                templates=templates, neg_templates=neg_templates)


def run(args) -> List[dict]:
    """Compute, print and save; returns the summary rows."""
    inputs = check_inputs(args)
    classnames, templates = inputs['classnames'], inputs['templates']
    p1, p2, n1 = inputs['p1'], inputs['p2'], inputs['n1']
    neg_templates = inputs['neg_templates']
    summary = osp.join(args.out_dir, 'summary.csv')
    pairs = osp.join(args.out_dir, 'pairs.csv')
    outputs = [summary, pairs] if args.save_pairs else [summary]
    # checked now, the folder is made only when writing (the encoder may
    # still fail to build)
    claim_outputs(outputs, force=args.force, option='--out-dir',
                  create_dirs=False)
    encoder = build_text_encoder(args.model_name, args.pretrained,
                                 args.cache_dir, args.device, args.tokenizer)
    progress = not args.no_progress
    meta = dict(model_name=args.model_name, pretrained=args.pretrained)
    rows, pair_rows = [], []

    single = single_prompt_similarity(encoder, classnames, p1, n1, p2,
                                      args.batch_size, progress)
    for pair, (a, b) in (('P1-N1', (p1, n1)), ('P1-P2', (p1, p2))):
        rows.append(dict(setting='1 prompt', pair=pair, prompt_a=a,
                         prompt_b=b, n_classes=len(classnames), n_templates=1,
                         reduce='none', **stats(single[pair]), **meta))
        if args.save_pairs:
            pair_rows += [
                dict(setting='1 prompt', pair=pair, cls=name, template_a=a,
                     template_b=b, cosine=float(v))
                for name, v in zip(classnames, single[pair])
            ]

    if not args.no_bank:
        bank = bank_similarity(encoder, classnames, templates, neg_templates,
                               args.batch_size, progress)
        flat = reduce_bank(bank, args.reduce)
        for pair, (a, b) in (('P1-N1', ('<template>', '<negated template>')),
                             ('P1-P2', ('<template i>', '<template j>'))):
            rows.append(dict(setting='bank', pair=pair, prompt_a=a,
                             prompt_b=b, n_classes=len(classnames),
                             n_templates=len(templates), reduce=args.reduce,
                             **stats(flat[pair]), **meta))
        if args.save_pairs:
            pn, pp = bank['P1-N1'], bank['P1-P2']
            for ti, t in enumerate(templates):
                for ci, name in enumerate(classnames):
                    pair_rows.append(dict(
                        setting='bank', pair='P1-N1', cls=name, template_a=t,
                        template_b=neg_templates[ti],
                        cosine=float(pn[ti, ci])))
            for ti, tj in zip(*np.triu_indices(len(templates), 1)):
                for ci, name in enumerate(classnames):
                    pair_rows.append(dict(
                        setting='bank', pair='P1-P2', cls=name,
                        template_a=templates[ti], template_b=templates[tj],
                        cosine=float(pp[ti, tj, ci])))

    print(format_table(rows, args.precision))
    make_output_dirs(outputs, option='--out-dir')
    with atomic_open(summary, 'w', newline='', encoding='utf-8') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f'saved {summary}')
    if args.save_pairs:
        with atomic_open(pairs, 'w', newline='', encoding='utf-8') as f:
            writer = csv.DictWriter(f, fieldnames=list(pair_rows[0]))
            writer.writeheader()
            writer.writerows(pair_rows)
        print(f'saved {pairs} ({len(pair_rows)} rows)')
    return rows


def main(argv=None):
    return run(parse_args(argv))


if __name__ == '__main__':
    main(sys.argv[1:])

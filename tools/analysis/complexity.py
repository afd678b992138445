# Copyright (c) mmcoop contributors. All rights reserved.
"""Trainable parameters of PositiveCoOp, NegativeCoOp, DualCoOp and the
Baseline on COCO (C = 80) and VOC (C = 20), next to the paper's table.

The counts are measured on mmcoop's heads (``sum(p.numel())`` over the
parameters that require grad; the CLIP towers are frozen and contribute
none). They depend only on the text width W, the feature dimension D, C,
``n_ctx`` and the CSC / residual switches, so random weights are enough:
the default ``--model-name RN101-quickgelu --pretrained none`` has the
paper's D = W = 512, and so does the tiny ``mmcoop-tiny-RN-512``.

With the defaults (16 class-specific context tokens, learned residual) the
counts equal the official code's: PositiveCoOp / NegativeCoOp 737,280
(COCO) / 184,320 (VOC), DualCoOp 1,310,720 / 327,680, Baseline 82,080 /
20,520. The paper's own column (rounded: 730k/170k, 1.3M/0.3M, 80k/20k) and
its GPU hours are printed next to them, labelled as the paper's.

``--time-per-epoch`` runs ``tools/analysis/benchmark.py`` (a separate tool)
with ``--benchmark-args`` and appends its output; without that tool a note
is printed instead.

Example::

    python tools/analysis/complexity.py --out work_dirs/complexity.csv
"""
import argparse
import csv
import os.path as osp
import shlex
import subprocess
import sys
from collections import OrderedDict
from typing import Dict, List, Optional

#: Counts of the official code (D = W = 512, n_ctx = 16, CSC, residual).
OFFICIAL_COUNTS = {
    ('COCO', 'PositiveCoOp'): 737280,
    ('COCO', 'NegativeCoOp'): 737280,
    ('COCO', 'DualCoOp'): 1310720,
    ('COCO', 'Baseline'): 82080,
    ('VOC', 'PositiveCoOp'): 184320,
    ('VOC', 'NegativeCoOp'): 184320,
    ('VOC', 'DualCoOp'): 327680,
    ('VOC', 'Baseline'): 20520,
}

#: The paper's "Computation Comparison" table: (#Params, GPU hours).
PAPER_TABLE = {
    ('VOC', 'DualCoOp'): ('0.3M', 3.55),
    ('VOC', 'Baseline'): ('20k', 1.5),
    ('VOC', 'NegativeCoOp'): ('170k', 3),
    ('VOC', 'PositiveCoOp'): ('170k', 3),
    ('COCO', 'DualCoOp'): ('1.3M', 16),
    ('COCO', 'Baseline'): ('80k', 7.97),
    ('COCO', 'NegativeCoOp'): ('730k', 16),
    ('COCO', 'PositiveCoOp'): ('730k', 16),
}

METHODS = OrderedDict([('PositiveCoOp', 'PositiveCoOpHead'),
                       ('NegativeCoOp', 'NegativeCoOpHead'),
                       ('DualCoOp', 'DualCoOpHead'),
                       ('Baseline', 'BaselineHead')])
DATASETS = OrderedDict([('COCO', 'coco'), ('VOC', 'voc')])

BENCHMARK_TOOL = osp.join(osp.dirname(osp.abspath(__file__)), 'benchmark.py')


def parse_args(argv=None):
    from mmcoop.engine.cli import positive_int, user_path
    parser = argparse.ArgumentParser(
        description='Trainable parameters per method and dataset.')
    parser.add_argument(
        '--model-name', default='RN101-quickgelu',
        help='open_clip architecture giving D and W (default: the paper\'s '
        'RN101-quickgelu)')
    parser.add_argument(
        '--pretrained', default='none',
        help="CLIP weights: 'none' (default; counts do not depend on the "
        'weights), an open_clip tag or a local file')
    parser.add_argument('--methods', nargs='+', default=list(METHODS),
                        choices=list(METHODS))
    parser.add_argument('--datasets', nargs='+', default=list(DATASETS),
                        choices=list(DATASETS))
    parser.add_argument('--n-ctx', type=positive_int, default=16)
    parser.add_argument('--no-csc', action='store_true',
                        help='shared (not class-specific) contexts')
    parser.add_argument('--no-residual', action='store_true',
                        help='PositiveCoOp/NegativeCoOp without the learned '
                        'residual of the official code')
    parser.add_argument('--out', type=user_path,
                        default=None, help='write the table as CSV')
    parser.add_argument('--force', action='store_true',
                        help='overwrite existing output files')
    parser.add_argument(
        '--time-per-epoch', action='store_true',
        help='also run tools/analysis/benchmark.py (if present)')
    parser.add_argument('--benchmark-args', default='',
                        help='arguments passed to benchmark.py')
    return parser.parse_args(argv)


def head_config(method: str, classnames: List[str], model_name: str,
                pretrained: Optional[str], embed_dim: int, n_ctx: int = 16,
                class_specific: bool = True,
                use_residual: bool = True) -> dict:
    """The mmcoop head config of ``method`` (as in a training config)."""
    if method == 'Baseline':
        return dict(type='BaselineHead', classnames=classnames,
                    in_channels=embed_dim)
    cfg = dict(
        type=METHODS[method],
        classnames=classnames,
        text_encoder=dict(type='FrozenCLIPTextEncoder', model_name=model_name,
                          pretrained=pretrained),
        n_ctx=n_ctx,
        class_specific=class_specific)
    if method in ('PositiveCoOp', 'NegativeCoOp'):
        cfg['use_residual'] = use_residual
    return cfg


def count_trainable(module) -> Dict[str, int]:
    """Trainable parameters per top-level attribute (e.g. ``pos_prompt``)."""
    counts: Dict[str, int] = OrderedDict()
    for name, p in module.named_parameters():
        if p.requires_grad:
            key = name.split('.')[0]
            counts[key] = counts.get(key, 0) + p.numel()
    return counts


def embed_dim_of(model_name: str) -> int:
    import open_clip

    from mmcoop.models.backbones import register_mmcoop_clip_configs
    register_mmcoop_clip_configs()
    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        raise ValueError(f'Unknown open_clip model {model_name!r}.')
    return int(cfg['embed_dim'])


def compute(args) -> List[dict]:
    import mmcoop.models  # noqa: F401 (registers the heads)
    from mmcoop.registry import MODELS
    from mmcoop.utils.prompt_templates import get_classnames
    pretrained = None if str(args.pretrained).lower() in ('none', '') \
        else args.pretrained
    embed_dim = embed_dim_of(args.model_name)
    default = (args.n_ctx == 16 and not args.no_csc and not args.no_residual)
    rows = []
    for dataset in args.datasets:
        classnames = get_classnames(DATASETS[dataset])
        for method in args.methods:
            cfg = head_config(method, classnames, args.model_name, pretrained,
                              embed_dim, args.n_ctx, not args.no_csc,
                              not args.no_residual)
            head = MODELS.build(cfg)
            parts = count_trainable(head)
            frozen = sum(p.numel() for p in head.parameters()
                         if not p.requires_grad)
            text = getattr(head, 'text_encoder', None)
            total = sum(parts.values())
            official = OFFICIAL_COUNTS[(dataset, method)]
            paper = PAPER_TABLE[(dataset, method)]
            rows.append(OrderedDict(
                dataset=dataset,
                method=method,
                num_classes=len(classnames),
                params=total,
                breakdown=' + '.join(f'{k} {v:,}' for k, v in parts.items()),
                frozen_params=frozen,
                D=embed_dim,
                W=getattr(text, 'width', '') if text is not None else '',
                official_code=official,
                matches_official=(total == official) if default and
                embed_dim == 512 else '',
                paper_params=paper[0],
                paper_gpu_hours=paper[1]))
            del head
    return rows


def format_table(rows: List[dict]) -> str:
    cols = [('dataset', 'Dataset'), ('method', 'Method'),
            ('num_classes', 'C'), ('params', '#Params (mmcoop)'),
            ('official_code', '#Params (official code)'),
            ('paper_params', '#Params (paper)'),
            ('paper_gpu_hours', 'GPU hours (paper)'),
            ('breakdown', 'trainable tensors')]

    def cell(row, key):
        v = row[key]
        return f'{v:,}' if isinstance(v, int) and not isinstance(
            v, bool) and key != 'num_classes' else str(v)

    table = [[h for _, h in cols]] + [[cell(r, k) for k, _ in cols]
                                      for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(cols))]
    lines = []
    for i, r in enumerate(table):
        lines.append('| ' + ' | '.join(c.ljust(w) for c, w in zip(r, widths))
                     + ' |')
        if i == 0:
            lines.append('|' + '|'.join('-' * (w + 2) for w in widths) + '|')
    return '\n'.join(lines)


def run_benchmark(extra_args: str) -> str:
    """Output of ``tools/analysis/benchmark.py`` or a note if it is absent."""
    if not osp.isfile(BENCHMARK_TOOL):
        return ('note: --time-per-epoch skipped: tools/analysis/benchmark.py '
                'is not available in this checkout.')
    cmd = [sys.executable, BENCHMARK_TOOL] + shlex.split(extra_args)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        return (f'note: {" ".join(cmd)} failed (exit {proc.returncode}):\n'
                f'{proc.stderr[-2000:]}')
    return proc.stdout


def main(argv=None) -> List[dict]:
    args = parse_args(argv)
    if args.out:
        from mmcoop.utils.paths import claim_outputs
        claim_outputs([args.out], force=args.force)
    rows = compute(args)
    print(format_table(rows))
    width = next((r['W'] for r in rows if r['W'] != ''), '-')
    print(f"D = {rows[0]['D']}, W = {width}, n_ctx = "
          f'{args.n_ctx}, CSC = {not args.no_csc}, residual = '
          f'{not args.no_residual}. "paper" columns: PositiveCoOp WACV 2025, '
          'Computation Comparison (rounded; GPU model unstated).')
    mism = [r for r in rows if r['matches_official'] is False]
    if mism:
        print('WARNING: differs from the official code: ' + ', '.join(
            f"{r['dataset']}/{r['method']}" for r in mism))
    if args.out:
        from mmcoop.utils.checkpoint import atomic_open
        with atomic_open(args.out, 'w', newline='', encoding='utf-8') as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        print(f'saved {args.out}')
    if args.time_per_epoch:
        print(run_benchmark(args.benchmark_args))
    return rows


if __name__ == '__main__':
    main(sys.argv[1:])

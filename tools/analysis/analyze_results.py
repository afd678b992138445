# Copyright (c) mmcoop contributors. All rights reserved.
"""Per-class analysis of a test run: AP table, precision-recall curves and
the best / worst images of every class.

    python tools/test.py CONFIG CHECKPOINT --out results.pkl
    python tools/analysis/analyze_results.py CONFIG results.pkl \\
        --out-dir work_dirs/analysis [--topk 4] [--classes person dog]

Writes into ``--out-dir`` (existing files only with ``--force``):

* ``per_class_ap.csv`` / ``per_class_ap.txt`` (also printed) and
  ``per_class_ap.png`` (bars, mAP as a line);
* ``pr_curves/<class>.png``: precision-recall curve per class;
* ``examples/<class>.png``: the ``--topk`` highest-scored positives, the
  lowest-scored positives and the highest-scored negatives.

Class names come from the config's ``model.head.classnames``; unknown
labels (-1) are ignored, as in the metric.
"""
import argparse
import csv
import os.path as osp

import mmengine
import numpy as np

from mmcoop.apis import load_config
from mmcoop.engine.cli import SpacedDictAction, positive_int, user_path
from mmcoop.engine.config_checks import check_outputs_outside_datasets
from mmcoop.evaluation import (format_ap_table, load_predictions,  # noqa
                               per_class_rows, precision_recall,
                               ranked_examples)
from mmcoop.evaluation.metrics.multi_label import (NO_POSITIVE_MODES,
                                                   average_precision_per_class,
                                                   mean_of_ap, ranking_scores)
from mmcoop.models.heads import resolve_classnames
from mmcoop.utils.checkpoint import atomic_open
from mmcoop.utils.paths import claim_outputs
from mmcoop.visualization import (ap_bar_figure, pr_curve_figure,  # noqa
                                  ranked_examples_figure, save_figure)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Per-class AP, PR curves and best/worst images of a '
        '`tools/test.py --out` result file')
    parser.add_argument('config', help='the config of the test run')
    parser.add_argument('result', help='the pickle of tools/test.py --out')
    parser.add_argument(
        '--out-dir', type=user_path, required=True, help='output folder')
    parser.add_argument(
        '--force', action='store_true', help='overwrite existing outputs')
    parser.add_argument(
        '--topk', type=positive_int, default=4, help='images per example row')
    parser.add_argument(
        '--classes', nargs='+', help='only these classes (default: all)')
    parser.add_argument('--cfg-options', nargs='+', action=SpacedDictAction)
    return parser.parse_args(argv)


def _thumbnail(path, size=160):
    from PIL import Image
    with Image.open(path) as img:
        img = img.convert('RGB')
        img.thumbnail((size, size))
        return np.asarray(img)


def _file_name(name: str) -> str:
    return ''.join(ch if ch.isalnum() or ch in '-_' else '_' for ch in name)


_MAKE = ('Fix: make it with `python tools/test.py CONFIG CHECKPOINT '
         '--out results.pkl` (predictions, not `--out-item metrics`).')


def _load_result(path: str) -> list:
    """The samples of a ``tools/test.py --out x.pkl`` prediction dump;
    anything else stops with the argument named and how to make one."""
    def fail(why):
        raise SystemExit(f'analyze_results.py: error: argument result '
                         f'{path!r}: {why}. {_MAKE}')

    if not osp.isfile(path):
        fail('no such file' if not osp.exists(path) else 'not a file')
    try:
        data = mmengine.load(path)
    except Exception as e:  # unknown suffix, corrupt pickle, ...
        fail(f'cannot be read as a prediction dump ({type(e).__name__}: '
             f'{e})')
    if not isinstance(data, (list, tuple)) or not all(
            isinstance(r, dict) for r in data[:1]):
        what = (f'a dict with keys {sorted(data)[:5]}' if isinstance(
            data, dict) else f'a {type(data).__name__}')
        fail(f'holds {what}, not the per-sample predictions (a list of '
             'dicts); a metrics file is not enough')
    return list(data)


def no_positive_rule(cfg) -> str:
    """The ``no_positive`` rule of the config's test metric (the mAP
    ``tools/test.py`` reports): ``'zero'`` unless a metric of
    ``test_evaluator`` sets it."""
    evaluator = cfg.get('test_evaluator', None) or {}
    for metric in (evaluator if isinstance(evaluator,
                                           (list, tuple)) else [evaluator]):
        rule = metric.get('no_positive') if isinstance(metric, dict) else None
        if rule in NO_POSITIVE_MODES:
            return rule
    return 'zero'


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    # never into the config's dataset folders (a later run reads them)
    check_outputs_outside_datasets(
        cfg, [('output folder (--out-dir)', args.out_dir,
               "'work_dirs/analysis'")])
    classes = resolve_classnames(cfg.model.head.classnames)
    results = _load_result(args.result)
    scores, targets, paths = load_predictions(results, len(classes))
    # ranked as the metric ranks: by the log-odds the heads give
    ranks = ranking_scores(results, scores)
    wanted = args.classes or classes
    unknown = sorted(set(wanted) - set(classes))
    if unknown:
        raise ValueError(f'--classes {unknown} are not class names of the '
                         'config.')
    ap, num_pos = average_precision_per_class(ranks, targets)
    rows = per_class_rows(classes, ap, num_pos, targets)
    mean_ap = mean_of_ap(ap, num_pos, no_positive_rule(cfg))
    table = format_ap_table(rows)
    out = {
        name: osp.join(args.out_dir, name)
        for name in ('per_class_ap.txt', 'per_class_ap.csv',
                     'per_class_ap.png')
    }
    per_class = {(sub, name): osp.join(args.out_dir, sub,
                                       f'{_file_name(name)}.png')
                 for sub in ('pr_curves', 'examples') for name in wanted}
    claim_outputs([*out.values(), *per_class.values()],
                  inputs=[args.config, args.result], force=args.force)
    print(table)
    print(f'mAP {mean_ap:.2f} over {len(classes)} classes '
          f'(no_positive={no_positive_rule(cfg)!r}), {len(scores)} images')
    with atomic_open(out['per_class_ap.txt'], 'w') as f:
        f.write(table + '\n')
    with atomic_open(out['per_class_ap.csv'], 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    save_figure(ap_bar_figure(rows, mean_ap), out['per_class_ap.png'])

    for name in wanted:
        c = classes.index(name)
        precision, recall = precision_recall(ranks[:, c], targets[:, c])
        save_figure(
            pr_curve_figure(precision, recall, rows[c]['AP'], name,
                            rows[c]['num_pos']),
            per_class[('pr_curves', name)])
        groups = {
            group: [
                dict(image=_thumbnail(paths[i]), score=scores[i, c],
                     name=osp.basename(paths[i])) for i in indices
                if paths[i] is not None
            ]
            for group, indices in ranked_examples(
                ranks[:, c], targets[:, c], args.topk).items()
        }
        save_figure(
            ranked_examples_figure(groups, name),
            per_class[('examples', name)])
    print(f'Wrote {args.out_dir}')
    return rows


if __name__ == '__main__':
    main()

# Copyright (c) mmcoop contributors. All rights reserved.
"""Results tables and plots of label-proportion sweeps.

Statistics (the same in the table and the plot):

* a cell is the mean over seeds of one (method, proportion) and, with two
  or more seeds, ``± s`` the sample standard deviation (``ddof=1``);
* ``Avg`` is the mean of the row's cells (the paper's "Avg."). Its ``± s``
  is the standard deviation over seeds of each seed's own average across
  the proportions (only seeds that have every proportion of the row);
* a cell (or ``Avg``) over fewer seeds than its row's ``Seeds`` says
  ``(n=k)``; a cell whose runs differ in selection, epochs, commit or
  device is marked ``†`` with a note naming the values;
* paper rows hold the published single-run numbers
  (:mod:`mmcoop.experiments.paper`); their ``Avg`` is the printed one when
  the table has all nine proportions, else the mean of the cells shown.
  In a table of another protocol than ``official`` a note says that they
  were selected on the test split (the plot: ``(paper, protocol
  official)``).
"""
import csv
import math
from collections import defaultdict
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .paper import load_paper_results, paper_display_name, paper_map_row

__all__ = [
    'RESULT_FIELDS', 'read_results', 'write_results', 'mean_std',
    'summarize', 'render_markdown', 'plot_results'
]

#: columns of results.csv (one row per finished run)
RESULT_FIELDS = ('method', 'dataset', 'proportion', 'seed', 'protocol',
                 'selection', 'selected_epoch', 'epochs', 'mAP', 'CF1',
                 'OF1', 'CF1_top3', 'OF1_top3', 'CF1_calib', 'OF1_calib',
                 'wall_time_s', 'device', 'commit', 'config', 'work_dir')
_NUMERIC = {'proportion', 'mAP', 'CF1', 'OF1', 'CF1_top3', 'OF1_top3',
            'CF1_calib', 'OF1_calib', 'wall_time_s'}
_INT = {'seed', 'selected_epoch', 'epochs'}


def read_results(path: str) -> List[dict]:
    """Rows of a results.csv with numbers parsed (empty cells -> None)."""
    rows = []
    with open(path, newline='') as f:
        for row in csv.DictReader(f):
            for key in list(row):
                value = row[key]
                if value in ('', None):
                    row[key] = None
                elif key in _NUMERIC:
                    row[key] = float(value)
                elif key in _INT:
                    row[key] = int(value)
            rows.append(row)
    return rows


def write_results(path: str, rows: Iterable[dict]) -> None:
    """Write rows (dicts with :data:`RESULT_FIELDS`) as CSV, atomically
    (:func:`mmcoop.utils.checkpoint.atomic_open`: a killed sweep leaves
    the previous table, never a truncated one)."""
    from mmcoop.utils.checkpoint import atomic_open
    with atomic_open(path, 'w', newline='') as f:
        writer = csv.DictWriter(
            f, fieldnames=RESULT_FIELDS, extrasaction='ignore')
        writer.writeheader()
        for row in rows:
            writer.writerow({
                k: ('' if row.get(k) is None else row.get(k))
                for k in RESULT_FIELDS
            })


def mean_std(values: Sequence[float]) -> Tuple[float, Optional[float]]:
    """Mean and sample standard deviation (None for one value)."""
    n = len(values)
    if n == 0:
        raise ValueError('mean_std of no values')
    mean = sum(values) / n
    if n == 1:
        return mean, None
    var = sum((v - mean)**2 for v in values) / (n - 1)
    return mean, math.sqrt(var)


def _fmt(mean: float, std: Optional[float], digits: int = 2) -> str:
    if std is None:
        return f'{mean:.{digits}f}'
    return f'{mean:.{digits}f} ± {std:.{digits}f}'


def summarize(rows: Iterable[dict], metric: str = 'mAP') -> Dict:
    """``{(dataset, protocol): {method: {proportion: {seed: value}}}}``."""
    out = defaultdict(lambda: defaultdict(dict))
    for row in rows:
        value = row.get(metric)
        if value is None:
            continue
        key = (row['dataset'], row['protocol'])
        cell = out[key][row['method']].setdefault(float(row['proportion']),
                                                  {})
        cell[int(row['seed'])] = float(value)
    return out


def _row_stats(by_prop: Dict[float, Dict[int, float]],
               proportions: Sequence[float]):
    """Cells and Avg as ``(mean, std, n)``: ``n`` the seeds the std is
    over (Avg: the seeds that have every proportion)."""
    cells = {p: mean_std(list(by_prop[p].values())) + (len(by_prop[p]), )
             for p in proportions if p in by_prop}
    avg = None
    if cells and len(cells) == len(proportions):
        means = [cells[p][0] for p in proportions]
        seeds = set.intersection(*(set(by_prop[p]) for p in proportions))
        per_seed = [
            sum(by_prop[p][s] for p in proportions) / len(proportions)
            for s in sorted(seeds)
        ]
        std = mean_std(per_seed)[1] if len(per_seed) > 1 else None
        avg = (sum(means) / len(means), std, len(per_seed))
    return cells, avg


def _cell(stats, seeds: int, digits: int, mark: str = '') -> str:
    """A cell; ``(n=k)`` when it holds fewer seeds than its row's Seeds."""
    mean, std, n = stats
    return _fmt(mean, std, digits) + (f' (n={n})' if n < seeds else '') + \
        mark


#: fields of results.csv that the runs pooled into one cell should share
_SHARED = ('selection', 'epochs', 'commit', 'device')


def _mixed(rows: Sequence[dict], metric: str) -> Dict[tuple, List[str]]:
    """``{(dataset, protocol, method, proportion): ['commit: a, b', ...]}``
    for the cells whose runs differ in a field of :data:`_SHARED`."""
    seen = defaultdict(lambda: defaultdict(set))
    for row in rows:
        if row.get(metric) is None:
            continue
        key = (row['dataset'], row['protocol'], row['method'],
               float(row['proportion']))
        for field in _SHARED:
            seen[key][field].add(str(row.get(field)))
    return {
        key: [f'{f}: {", ".join(sorted(v))}' for f, v in fields.items()
              if len(v) > 1]
        for key, fields in seen.items()
        if any(len(v) > 1 for v in fields.values())
    }


def render_markdown(rows: Iterable[dict],
                    metric: str = 'mAP',
                    paper: bool = True,
                    digits: int = 2) -> str:
    """Paper-style tables (one per dataset and protocol): a row per method,
    the known-label proportions as columns, then ``Avg``; mean ± std over
    seeds; the paper's numbers in rows labelled as the paper's."""
    rows = list(rows)
    summary = summarize(rows, metric)
    mixed = _mixed(rows, metric)
    data = load_paper_results() if paper else None
    blocks = []
    for (dataset, protocol) in sorted(summary):
        methods = summary[(dataset, protocol)]
        proportions = sorted({p for m in methods.values() for p in m})
        selections = sorted({
            str(r.get('selection')) for r in rows
            if (r['dataset'], r['protocol']) == (dataset, protocol)
            and r.get('selection') is not None
        })
        selection = f', selection {" / ".join(selections)}' \
            if selections else ''
        head = ['Method', 'Source', 'Seeds'] + [
            f'{round(100 * p):d}%' for p in proportions
        ] + ['Avg']
        lines = [
            f'**{dataset}**, protocol `{protocol}`{selection}, {metric} '
            '(%), mean ± std over seeds', '',
            '| ' + ' | '.join(head) + ' |',
            '|' + '|'.join(['---'] * 3 + ['---:'] *
                           (len(proportions) + 1)) + '|'
        ]
        notes, paper_shown = [], False
        for method in sorted(methods):
            by_prop = methods[method]
            cells, avg = _row_stats(by_prop, proportions)
            seeds = len({s for p in by_prop.values() for s in p})
            shown = []
            for p in proportions:
                differ = mixed.get((dataset, protocol, method, p))
                if differ:
                    notes.append(f'† {method} {round(100 * p):d}%: its runs '
                                 f'differ in {"; ".join(differ)}.')
                shown.append(_cell(cells[p], seeds, digits, ' †' * bool(
                    differ)) if p in cells else '–')
            lines.append('| ' + ' | '.join(
                [method, 'measured (mmcoop)', str(seeds)] + shown +
                [_cell(avg, seeds, digits) if avg else '–']) + ' |')
            published = paper_map_row(dataset, method) if data else None
            if published and metric == 'mAP':
                shown = [published.get(p) for p in proportions]
                if all(v is not None for v in shown):
                    full = sorted(published) == proportions
                    p_avg = data['datasets'][dataset]['map'][method][
                        'avg'] if full else sum(shown) / len(shown)
                    lines.append('| ' + ' | '.join(
                        [f'{paper_display_name(dataset, method)} (paper)',
                         'Rawlekar et al., WACV 2025', '1'] +
                        [f'{v:.1f}' for v in shown] + [f'{p_avg:.1f}']) +
                                 ' |')
                    paper_shown = True
        if paper_shown and protocol != 'official':
            notes.append(
                '(paper): published numbers of the papers\' code, which '
                'selects the model on the test split (protocol '
                f'`official`); not measured under `{protocol}`.')
        if any('(n=' in line for line in lines):
            notes.append('(n=k): the mean and ± of k seeds, fewer than the '
                         "row's Seeds. Avg is the mean of the row's cells "
                         '(each over its own seeds); its ± and (n=k) are '
                         'over the k seeds that have every proportion.')
        if notes:
            lines += [''] + [f'* {note}' for note in notes]
        blocks.append('\n'.join(lines))
    return '\n\n'.join(blocks) + '\n'


def plot_results(rows: Iterable[dict],
                 path: str,
                 dataset: str,
                 protocol: str,
                 metric: str = 'mAP',
                 paper: bool = True) -> str:
    """PNG: ``metric`` against the known-label proportion, one line per
    method with error bars of ± one std over seeds (the table's cells),
    dashed lines for the paper's numbers of the same methods."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from mmcoop.utils.checkpoint import atomic_open

    methods = summarize(rows, metric).get((dataset, protocol), {})
    if not methods:
        raise ValueError(f'no {metric} results for dataset {dataset!r}, '
                         f'protocol {protocol!r}')
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for i, method in enumerate(sorted(methods)):
        color = f'C{i}'
        by_prop = methods[method]
        props = sorted(by_prop)
        stats = [mean_std(list(by_prop[p].values())) for p in props]
        seeds = len({s for p in by_prop.values() for s in p})
        ax.errorbar([100 * p for p in props], [m for m, _ in stats],
                    yerr=[s or 0. for _, s in stats],
                    color=color, marker='o', capsize=3,
                    label=f'{method} ({seeds} seed{"s" * (seeds > 1)})')
        published = paper_map_row(dataset, method) if paper else None
        if published and metric == 'mAP':
            ps = sorted(published)
            ax.plot([100 * p for p in ps], [published[p] for p in ps],
                    color=color, linestyle='--', alpha=0.7,
                    label=f'{paper_display_name(dataset, method)} (paper' +
                    (', protocol official)' if protocol != 'official' else
                     ')'))
    ax.set_xlabel('known labels (%)')
    ax.set_ylabel(f'{metric} (%)')
    ax.set_title(f'{dataset}, protocol {protocol}: {metric} '
                 '(mean ± std over seeds)')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_open(path) as f:
        fig.savefig(f, format='png')
    plt.close(fig)
    return path

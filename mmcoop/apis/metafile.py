# Copyright (c) mmcoop contributors. All rights reserved.
"""The model-zoo metafiles (``configs/*/metafile.yml``, mmpretrain's
model-index format): what their result fields mean, how a released run is
recorded in them, and the README tables rendered from them.

Every model entry has::

    Results:
      - Task: Multi-Label Classification
        Dataset: MS-COCO 2014            # the entry's training data
        Metrics:
          Paper mAP: 83.7                # the PositiveCoOp paper's number
          mAP: 83.52                     # measured with mmcoop (only then)
    Weights: null                        # until a checkpoint is released

``Paper mAP`` is always the paper's number, never ours; ``mAP`` appears only
when :func:`record_release` wrote it from a run's own log. The collection's
``Metadata`` holds the paper's averages over p (``Paper Average mAP``; the
paper's rounding, not the mean of the rounded values). The paper's numbers
are not typed here: :func:`with_paper_numbers` copies them from
``mmcoop/experiments/paper_results.yml`` (the one place they are written),
and ``.dev_scripts/gen_model_zoo_tables.py`` writes them into the metafiles.
"""
import glob
import json
import os.path as osp
import re
from typing import Dict, List, Optional

import yaml

TASK = 'Multi-Label Classification'
PAPER_METRIC = 'Paper mAP'
MEASURED_METRIC = 'mAP'
PAPER_AVERAGE = 'Paper Average mAP'
#: the evaluator key whose value becomes the measured ``mAP``
LOG_KEY = 'multi-label/mAP'
#: config name suffix -> (dataset in the metafile, README column label)
DATASETS = {
    'coco14': ('MS-COCO 2014', 'COCO'),
    'voc07': ('PASCAL VOC 2007', 'VOC'),
}
_NAME = re.compile(r'_(?P<data>[a-z0-9]+)-\d+px-p(?P<p>\d+)$')
TABLE_BEGIN = ('<!-- model-zoo table: generated from metafile.yml by '
               '`python .dev_scripts/gen_model_zoo_tables.py`; do not edit '
               '-->')
TABLE_END = '<!-- end of model-zoo table -->'


class _Dumper(yaml.SafeDumper):
    """Block style with indented sequences (the metafiles' layout)."""

    def increase_indent(self, flow=False, indentless=False):
        return super().increase_indent(flow, False)


def read_metafile(path: str) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def write_text(path: str, text: str) -> None:
    """Replace the text file ``path`` atomically
    (:func:`mmcoop.utils.checkpoint.atomic_open`): a run killed mid-write
    leaves the previous file whole."""
    from mmcoop.utils.checkpoint import atomic_open
    with atomic_open(path, 'w', encoding='utf-8') as f:
        f.write(text)


def write_metafile(data: dict, path: str) -> None:
    """Write ``data`` atomically (temporary file, fsync, rename:
    :func:`mmcoop.utils.checkpoint.atomic_write`)."""
    from mmcoop.utils.checkpoint import atomic_write
    text = yaml.dump(
        data,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=1000)
    payload = text.replace('\nModels:', '\n\nModels:').encode()
    atomic_write(path, lambda f: f.write(payload))


def metafile_entry(data: dict, name: str, path: str) -> dict:
    """The entry ``name`` of the metafile ``data`` (read from ``path``), or
    a ``KeyError`` naming the file and the fix."""
    for model in data.get('Models') or []:
        if model.get('Name') == name:
            return model
    raise KeyError(f'{path} has no model named {name!r}. Fix: give the '
                   'config name (the file name without .py) of an entry of '
                   'this metafile.')


def _metrics(model: dict) -> dict:
    results = model.get('Results') or [{}]
    return results[0].get('Metrics') or {}


def with_paper_numbers(data: dict, method: str) -> dict:
    """``data`` (a parsed metafile of ``configs/<method>/``) with
    ``Paper mAP`` of every entry and the collection's ``Paper Average mAP``
    taken from the paper's reference file (``paper_results.yml``)."""
    import copy

    from mmcoop.experiments.paper import load_paper_results
    paper = load_paper_results()
    data = copy.deepcopy(data)
    averages = {}
    for key, (dataset, _) in DATASETS.items():
        row = paper['datasets'][key]['map'][method]
        averages[dataset] = row['avg']
        by_p = dict(zip(paper['proportions'], row['values']))
        for model in data['Models']:
            match = _NAME.search(model['Name'])
            if match and match['data'] == key:
                _metrics(model)[PAPER_METRIC] = by_p[int(match['p']) / 100]
    for collection in data.get('Collections') or []:
        collection.setdefault('Metadata', {})[PAPER_AVERAGE] = averages
    return data


def measured_map(work_dir: str, epoch: int) -> float:
    """The ``multi-label/mAP`` that a run logged for ``epoch``.

    Reads ``<work_dir>/<timestamp>/vis_data/scalars.json`` (MMEngine's
    ``LocalVisBackend``), newest run first, and takes the validation record
    whose ``step`` is ``epoch``: the final epoch of the checkpoint being
    published (mmcoop reports the final epoch; the paper configs validate on
    the test split).
    """
    files = sorted(
        glob.glob(
            osp.join(glob.escape(work_dir), '*', 'vis_data',
                     'scalars.json')),
        reverse=True)
    for path in files:
        with open(path) as f:
            records = [json.loads(line) for line in f if line.strip()]
        for record in reversed(records):
            if LOG_KEY in record and record.get('step') == epoch:
                return float(record[LOG_KEY])
    raise ValueError(
        f'No {LOG_KEY!r} for epoch {epoch} in {work_dir}/*/vis_data/'
        'scalars.json. Fix: give the work dir of the run that trained the '
        'checkpoint (validation must have run at its final epoch, e.g. '
        '`train_cfg.val_interval` dividing `max_epochs`).')


def record_release(metafile: str,
                   name: str,
                   weights: str,
                   measured: Optional[float] = None) -> dict:
    """Set ``Weights`` and, if given, the measured ``mAP`` of entry
    ``name`` in ``metafile`` (written back); the paper's number is left as
    it is. Returns the entry."""
    data = read_metafile(metafile)
    model = metafile_entry(data, name, metafile)
    model['Weights'] = weights
    if measured is not None:
        _metrics(model)[MEASURED_METRIC] = round(float(measured), 2)
    write_metafile(data, metafile)
    return model


def _fmt(value, digits: int) -> str:
    return '' if value is None else f'{value:.{digits}f}'


def results_table(data: dict) -> List[str]:
    """Markdown rows: p | per dataset: paper mAP, measured mAP, config,
    weights; then the paper's averages."""
    rows: Dict[int, dict] = {}
    for model in data['Models']:
        match = _NAME.search(model['Name'])
        if match is None or match['data'] not in DATASETS:
            raise ValueError(f'Model name {model["Name"]!r} does not end in '
                             '_<coco14|voc07>-<size>px-p<percent>.')
        metrics = _metrics(model)
        rows.setdefault(int(match['p']), {})[match['data']] = dict(
            paper=metrics.get(PAPER_METRIC),
            ours=metrics.get(MEASURED_METRIC),
            config=osp.basename(model['Config']),
            weights=model.get('Weights'))
    header, rule = ['p'], [':-:']
    for _, label in DATASETS.values():
        header += [f'{label} paper', f'{label} ours (measured)',
                   f'{label} config', f'{label} weights']
        rule += [':-:', ':-:', ':--', ':--']
    lines = ['| ' + ' | '.join(header) + ' |', '| ' + ' | '.join(rule) + ' |']
    for p in sorted(rows):
        cells = [f'{p}%']
        for key in DATASETS:
            cell = rows[p].get(key)
            if cell is None:
                cells += ['', '', '', '']
                continue
            cells += [
                _fmt(cell['paper'], 1),
                _fmt(cell['ours'], 2), f'[config]({cell["config"]})',
                f'[model]({cell["weights"]})' if cell['weights'] else ''
            ]
        lines.append('| ' + ' | '.join(cells) + ' |')
    averages = {}
    for collection in data.get('Collections') or []:
        averages.update((collection.get('Metadata') or {}).get(
            PAPER_AVERAGE) or {})
    cells = ['avg']
    for dataset, _ in DATASETS.values():
        cells += [_fmt(averages.get(dataset), 1), '', '', '']
    lines.append('| ' + ' | '.join(cells) + ' |')
    return lines


def render_readme(readme: str, data: dict) -> str:
    """``readme`` with the text between the table markers replaced by the
    table of ``data``."""
    if TABLE_BEGIN not in readme or TABLE_END not in readme:
        raise ValueError('The README has no model-zoo table markers '
                         f'({TABLE_BEGIN!r} ... {TABLE_END!r}).')
    head, rest = readme.split(TABLE_BEGIN, 1)
    _, tail = rest.split(TABLE_END, 1)
    table = '\n'.join(results_table(data))
    return f'{head}{TABLE_BEGIN}\n{table}\n{TABLE_END}{tail}'


def update_model_zoo(config_root: str, check: bool = False) -> List[str]:
    """For every ``<config_root>/<method>/metafile.yml``: the paper's
    numbers from ``paper_results.yml`` into the metafile, then the README
    table from the metafile. Returns the files that were (with ``check``:
    would be) changed; with ``check`` nothing is written."""
    changed = []
    for metafile in sorted(
            glob.glob(osp.join(glob.escape(config_root), '*',
                               'metafile.yml'))):
        method = osp.basename(osp.dirname(metafile))
        data = read_metafile(metafile)
        synced = with_paper_numbers(data, method)
        if synced != data:
            changed.append(metafile)
            if not check:
                write_metafile(synced, metafile)
        readme = osp.join(osp.dirname(metafile), 'README.md')
        with open(readme) as f:
            old = f.read()
        new = render_readme(old, synced)
        if new != old:
            changed.append(readme)
            if not check:  # atomic: the README holds hand-written text
                write_text(readme, new)
    return changed

# Copyright (c) mmcoop contributors. All rights reserved.
"""Label-proportion sweeps: methods x datasets x proportions x seeds.

Every run is two processes, ``tools/train.py`` then ``tools/test.py`` on
the checkpoint the protocol selects (``--train-cmd`` / ``--test-cmd``
substitute launchers such as ``tools/dist_train.sh`` or ``srun``). A run
lives in ``<out>/runs/<protocol>/<dataset>/<method>/p<p>_seed<s>/`` and is
finished when its ``result.json`` exists (written last, atomically):
finished runs are never redone, an interrupted run resumes from its last
checkpoint (``--resume``). After every run ``<out>/results.csv`` is
rewritten from all ``result.json`` files; at the end the markdown table
(``results.md``) and one plot per dataset and protocol are rendered
(:mod:`mmcoop.experiments.tables`).

Seeds: run seed ``s`` sets both the partial-label mask seed
(``train_dataloader.dataset.seed``) and the training seed
(``randomness.seed``). The ``clean`` protocol's held-out split is drawn
once per dataset (``split_seed``) into ``<out>/splits/`` and shared by every
method and seed.
"""
import glob
import json
import os
import os.path as osp
import re
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Sequence

from mmcoop.datasets.utils import atomic_write_json
from .tables import plot_results, render_markdown, write_results

__all__ = [
    'DATASET_TAGS', 'Run', 'plan_runs', 'find_config', 'run_sweep',
    'collect_results', 'render_reports'
]

#: sweep dataset name -> the tag in config file names
DATASET_TAGS = {
    'coco14': 'coco14-448px',
    'voc07': 'voc07-448px',
    'demo': 'demo-shapes',
}
REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEFAULT_TRAIN_CMD = '{python} ' + osp.join('{repo}', 'tools', 'train.py') + \
    ' {config}'
DEFAULT_TEST_CMD = '{python} ' + osp.join('{repo}', 'tools', 'test.py') + \
    ' {config} {checkpoint}'
TEST_METRICS = 'test_metrics.json'
RESULT = 'result.json'


@dataclass(frozen=True)
class Run:
    """One training + test run of a sweep."""
    method: str
    dataset: str
    proportion: float
    seed: int
    protocol: str

    @property
    def name(self) -> str:
        return (f'{self.protocol}/{self.dataset}/{self.method}/'
                f'p{self.proportion:.2f}_seed{self.seed}')


def plan_runs(methods: Sequence[str], datasets: Sequence[str],
              proportions: Sequence[float], seeds: Sequence[int],
              protocol: str) -> List[Run]:
    """All runs, in the order they are executed (dataset, method,
    proportion, seed)."""
    for p in proportions:
        if not 0.0 < float(p) <= 1.0:
            raise ValueError(f'proportion {p!r} is not in (0, 1].')
    return [
        Run(m, d, float(p), int(s), protocol) for d in datasets
        for m in methods for p in proportions for s in seeds
    ]


def find_config(config_root: str, method: str, dataset: str,
                proportion: float) -> str:
    """The config of ``method`` on ``dataset``: the file named
    ``<method>_*_<tag>-p<NN>.py`` for this proportion if there is one,
    else any ``<method>_*_<tag>-p*.py`` (the sweep sets the proportion
    with ``--cfg-options`` anyway)."""
    tag = DATASET_TAGS.get(dataset, dataset)
    pattern = osp.join(config_root, '**', f'{method}_*_{tag}-p')
    exact = sorted(
        glob.glob(pattern + f'{int(round(100 * proportion)):02d}.py',
                  recursive=True))
    found = exact or sorted(glob.glob(pattern + '*.py', recursive=True))
    if not found:
        raise FileNotFoundError(
            f'No config for method {method!r} on dataset {dataset!r}: '
            f'nothing matches {pattern}*.py. Fix: check the method name '
            f'(a folder of {config_root}) and the dataset (one of '
            f'{sorted(DATASET_TAGS)} or a tag of the config file names).')
    return found[0]


def _py(value) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def run_options(run: Run, out_dir: str, split_seed: int = 0,
                val_fraction: float = 0.1, selection: str = 'best',
                feature_cache: bool = False) -> List[str]:
    """The ``--cfg-options`` of one run (before the user's extras)."""
    opts = [
        f'train_dataloader.dataset.known_proportion={run.proportion}',
        f'train_dataloader.dataset.seed={run.seed}',
        f'randomness.seed={run.seed}',
        f'protocol.name={run.protocol}',
    ]
    if run.protocol == 'clean':
        split = osp.join(
            osp.abspath(out_dir), 'splits',
            f'{run.dataset}_holdout{val_fraction:g}_seed{split_seed}.json')
        opts += [
            f'protocol.split_file={split}', f'protocol.seed={split_seed}',
            f'protocol.val_fraction={val_fraction}',
            f'protocol.selection={selection}'
        ]
    if feature_cache:
        opts.append('feature_cache.cache_root=' +
                    osp.join(osp.abspath(out_dir), 'feature_cache'))
    return opts


def _command(template: str, **fields) -> List[str]:
    fields.setdefault('python', sys.executable)
    fields.setdefault('repo', REPO_ROOT)
    return [part.format(**fields) for part in shlex.split(template)]


def selected_checkpoint(work_dir: str, selection: str) -> str:
    """``best_*.pth`` (highest epoch if several) or the last checkpoint."""
    if selection == 'best':
        found = glob.glob(osp.join(work_dir, 'best_*.pth'))
        if found:
            return max(found, key=_epoch_of)
    pointer = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(pointer):
        with open(pointer) as f:
            path = f.read().strip()
        local = osp.join(work_dir, osp.basename(path))
        if osp.isfile(local):
            return local
    found = glob.glob(osp.join(work_dir, 'epoch_*.pth'))
    if not found:
        raise FileNotFoundError(f'{work_dir}: no checkpoint to test (did '
                                'training fail? see sweep_train.log).')
    return max(found, key=_epoch_of)


def _epoch_of(path: str) -> int:
    m = re.search(r'epoch_(\d+)\.pth$', path)
    return int(m.group(1)) if m else -1


def _max_epochs(work_dir: str, config: str) -> Optional[int]:
    from mmengine.config import Config
    dumped = osp.join(work_dir, osp.basename(config))
    if not osp.isfile(dumped):
        return None
    train_cfg = Config.fromfile(dumped).get('train_cfg', None) or {}
    return train_cfg.get('max_epochs')


def device_label() -> str:
    """What this machine runs the sweep on ("cpu (N cores)" or the GPU)."""
    try:
        import torch
        if torch.cuda.is_available():
            n = torch.cuda.device_count()
            return f'{n}x {torch.cuda.get_device_name(0)}'
    except ImportError:  # pragma: no cover
        pass
    return f'cpu ({os.cpu_count()} cores)'


def code_version() -> str:
    """``git describe``-like commit of the code (``-dirty`` if modified),
    or the package version outside a git checkout."""
    try:
        sha = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'],
                             cwd=REPO_ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(
            ['git', 'status', '--porcelain', '--untracked-files=no'],
            cwd=REPO_ROOT, capture_output=True, text=True,
            check=True).stdout.strip()
        return sha + ('-dirty' if dirty else '')
    except (OSError, subprocess.CalledProcessError):
        from mmcoop.version import __version__
        return f'mmcoop {__version__}'


def _call(cmd: List[str], log_path: str, what: str) -> None:
    with open(log_path, 'a') as log:
        log.write(f'$ {shlex.join(cmd)}\n')
        log.flush()
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
    if code != 0:
        raise RuntimeError(f'{what} failed (exit code {code}); see '
                           f'{log_path}. Command: {shlex.join(cmd)}')


def run_one(run: Run, config: str, work_dir: str, options: List[str],
            selection: str, train_cmd: str, test_cmd: str,
            device: str, commit: str) -> dict:
    """Train, select, test one run; returns its ``result.json`` content."""
    os.makedirs(work_dir, exist_ok=True)
    start = time.time()
    resume = bool(glob.glob(osp.join(work_dir, 'epoch_*.pth')))
    train = _command(train_cmd, config=config) + [
        '--work-dir', work_dir
    ] + (['--resume'] if resume else []) + ['--cfg-options'] + options
    _call(train, osp.join(work_dir, 'sweep_train.log'), f'{run.name}: train')
    checkpoint = selected_checkpoint(work_dir, selection)
    metrics_file = osp.join(work_dir, TEST_METRICS)
    test = _command(test_cmd, config=config, checkpoint=checkpoint) + [
        '--work-dir', osp.join(work_dir, 'test'), '--out', metrics_file,
        '--out-item', 'metrics', '--cfg-options'
    ] + options
    _call(test, osp.join(work_dir, 'sweep_test.log'), f'{run.name}: test')
    with open(metrics_file) as f:
        metrics = json.load(f)

    def metric(key):
        value = metrics.get(f'multi-label/{key}')
        return None if value is None else round(float(value), 4)

    result = dict(asdict(run))
    result.update(
        selection=selection,
        selected_epoch=_epoch_of(checkpoint),
        epochs=_max_epochs(work_dir, config),
        **{k: metric(k) for k in ('mAP', 'CF1', 'OF1', 'CF1_top3',
                                  'OF1_top3', 'CF1_calib', 'OF1_calib')},
        wall_time_s=round(time.time() - start, 1),
        device=device,
        commit=commit,
        config=osp.relpath(config, REPO_ROOT)
        if osp.abspath(config).startswith(REPO_ROOT + os.sep) else config,
        work_dir=work_dir)
    if run.protocol == 'official':
        result['selection'] = 'best (on the test split)'
    atomic_write_json(osp.join(work_dir, RESULT), result)
    return result


def collect_results(out_dir: str) -> List[dict]:
    """Every finished run's ``result.json`` under ``out_dir/runs``."""
    rows = []
    pattern = osp.join(out_dir, 'runs', '**', RESULT)
    for path in sorted(glob.glob(pattern, recursive=True)):
        with open(path) as f:
            rows.append(json.load(f))
    rows.sort(key=lambda r: (r['protocol'], r['dataset'], r['method'],
                             r['proportion'], r['seed']))
    return rows


def render_reports(out_dir: str, paper: bool = True) -> Dict[str, str]:
    """``results.csv``, ``results.md`` and one PNG per (dataset,
    protocol) in ``out_dir``; returns their paths."""
    rows = collect_results(out_dir)
    paths = dict(csv=osp.join(out_dir, 'results.csv'))
    write_results(paths['csv'], rows)
    if not rows:
        return paths
    paths['md'] = osp.join(out_dir, 'results.md')
    with open(paths['md'], 'w') as f:
        f.write(render_markdown(rows, paper=paper))
    for dataset, protocol in sorted({(r['dataset'], r['protocol'])
                                     for r in rows}):
        png = osp.join(out_dir, f'mAP_{dataset}_{protocol}.png')
        paths[f'png:{dataset}:{protocol}'] = plot_results(
            rows, png, dataset, protocol, paper=paper)
    return paths


def run_sweep(runs: Sequence[Run],
              out_dir: str,
              config_root: str = osp.join(REPO_ROOT, 'configs'),
              cfg_options: Sequence[str] = (),
              selection: str = 'best',
              split_seed: int = 0,
              val_fraction: float = 0.1,
              feature_cache: bool = False,
              train_cmd: str = DEFAULT_TRAIN_CMD,
              test_cmd: str = DEFAULT_TEST_CMD,
              device: Optional[str] = None,
              log: Callable[[str], None] = print) -> List[dict]:
    """Run every unfinished run of ``runs`` one after the other; returns
    the rows of ``results.csv``."""
    os.makedirs(out_dir, exist_ok=True)
    device = device or device_label()
    commit = code_version()
    for i, run in enumerate(runs, 1):
        work_dir = osp.join(osp.abspath(out_dir), 'runs', run.name)
        if osp.isfile(osp.join(work_dir, RESULT)):
            log(f'[{i}/{len(runs)}] {run.name}: done, skipped')
            continue
        config = find_config(config_root, run.method, run.dataset,
                             run.proportion)
        # the official protocol always keeps the best epoch (on the test
        # split)
        chosen = 'best' if run.protocol == 'official' else selection
        options = run_options(run, out_dir, split_seed, val_fraction,
                              chosen, feature_cache) + list(cfg_options)
        log(f'[{i}/{len(runs)}] {run.name}: {osp.basename(config)}')
        result = run_one(run, config, work_dir, options, chosen,
                         train_cmd, test_cmd, device, commit)
        log(f'[{i}/{len(runs)}] {run.name}: mAP {result["mAP"]} '
            f'(epoch {result["selected_epoch"]}, '
            f'{result["wall_time_s"]} s)')
        write_results(osp.join(out_dir, 'results.csv'),
                      collect_results(out_dir))
    paths = render_reports(out_dir)
    for kind, path in paths.items():
        log(f'{kind}: {path}')
    return collect_results(out_dir)

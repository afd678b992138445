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

``jobs`` runs go at once (one thread each waits on its run's processes;
this process alone writes ``results.csv``), each job slot with its own
``CUDA_VISIBLE_DEVICES`` (``job_gpus``) and torchrun ``PORT``. With the
feature cache, the first run of a dataset goes alone: it builds the
dataset's caches, which the other runs of that dataset then read, instead
of waiting for the build's lock.

Before the first run trains, :func:`prepare_sweep` checks ``--out``, the
user's ``--cfg-options`` (none may set a key of :func:`run_option_items`),
both command templates and every run's config, and that the settings match
those recorded in ``<out>/sweep.json`` by the first invocation: one
folder's runs share their settings, so its table never pools runs made at
different ones.

Seeds: run seed ``s`` sets both the partial-label mask seed
(``train_dataloader.dataset.seed``) and the training seed
(``randomness.seed``). The ``clean`` protocol's held-out split is drawn
once per dataset (``split_seed``) into ``<out>/splits/`` and shared by every
method and seed.
"""
import argparse
import contextlib
import glob
import hashlib
import json
import math
import os
import os.path as osp
import pprint
import re
import shlex
import subprocess
import sys
import threading
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Sequence, Set

from mmcoop.datasets.utils import atomic_write_json
from mmcoop.utils.checkpoint import atomic_open
from mmcoop.utils.paths import make_output_dirs
from mmcoop.utils.signals import sigterm_as_exit
from .tables import plot_results, render_markdown, write_results

__all__ = [
    'DATASET_TAGS', 'Run', 'plan_runs', 'find_config', 'run_sweep',
    'collect_results', 'render_reports', 'SweepError', 'check_out_dir',
    'check_cfg_options', 'sweep_owned_keys', 'run_options'
]

#: sweep dataset name -> the tag in config file names
DATASET_TAGS = {
    'coco14': 'coco14-448px',
    'voc07': 'voc07-448px',
    'demo': 'demo-shapes',
}
DEFAULT_TRAIN_CMD = '{python} ' + osp.join('{repo}', 'tools', 'train.py') + \
    ' {config}'
DEFAULT_TEST_CMD = '{python} ' + osp.join('{repo}', 'tools', 'test.py') + \
    ' {config} {checkpoint}'
TEST_METRICS = 'test_metrics.json'
RESULT = 'result.json'
SETTINGS = 'sweep.json'
REPORT_FILES = ('results.csv', 'results.md')


def code_root() -> str:
    """The folder of ``configs/`` and ``tools/`` (``{repo}`` of the command
    templates, the default ``--config-root`` parent): the repository in a
    clone, ``mmcoop/.mim`` in an installed wheel (see
    :func:`mmcoop.apis.model_zoo.model_index_root`)."""
    from mmcoop.apis.model_zoo import model_index_root
    return model_index_root()


class SweepError(ValueError):
    """A sweep's inputs or its folder are wrong; the message names the
    option and the fix. Raised before any run trains."""


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
    def unique(values):  # exact repeats run once
        return list(dict.fromkeys(values))

    props = unique(float(p) for p in proportions)
    for p in props:
        if not 0.0 < p <= 1.0:
            raise SweepError(f'--proportions: {p!r} is not in (0, 1].')
    named: Dict[str, float] = {}
    for p in props:
        name = f'p{p:.2f}'
        if name in named:
            raise SweepError(
                f'--proportions {named[name]!r} and {p!r} would share the '
                f'run folder {name} (proportions are named with 2 '
                'decimals), so the second would be skipped as done. Fix: '
                'give proportions that differ in the first two decimals.')
        named[name] = p
    for s in seeds:
        if isinstance(s, bool) or int(s) != s or int(s) < 0:
            raise SweepError(f'--seeds: {s!r} is not an integer >= 0.')
    for option, names in (('--methods', methods), ('--datasets', datasets)):
        for name in names:
            # a name becomes a file pattern and a run folder
            if not re.fullmatch(r'[\w.-]+', name) or name.strip('.') == '':
                raise SweepError(
                    f'{option}: {name!r} is not a name (letters, digits, '
                    "'_', '-', '.'; no pattern or path): it names the "
                    'configs to find and the run folders. Fix: give the '
                    "names, e.g. --methods positivecoop baseline.")
    return [
        Run(m, d, p, int(s), protocol) for d in unique(datasets)
        for m in unique(methods) for p in props for s in unique(seeds)
    ]


def find_config(config_root: str, method: str, dataset: str,
                proportion: float) -> str:
    """The config of ``method`` on ``dataset``: the file named
    ``<method>_*_<tag>-p<NN>.py`` for this proportion if there is one,
    else one of ``<method>_*_<tag>-p*.py`` that differ only in the
    proportion (the sweep sets the proportion with ``--cfg-options``
    anyway).

    The folders are searched in order, the first holding a match wins:
    ``<config_root>/<method>/`` (the shipped paper configs),
    ``<config_root>/`` itself, then every folder below it. Two files that
    differ in more than the proportion at the first folder that matches
    (e.g. the paper's RN101 config and a CLIP family's, below
    ``configs/clip_families/``) are an error naming them, never a silent
    choice."""
    tag = DATASET_TAGS.get(dataset, dataset)
    name = f'{method}_*_{tag}-p'
    exact_name = f'{name}{int(round(100 * proportion)):02d}.py'
    # the folders are escaped: a path holding glob syntax ('[', '*', '?')
    # must not match a sibling folder's files
    root = glob.escape(config_root)
    tiers = [(osp.join(root, glob.escape(method)), False), (root, False),
             (osp.join(root, '**'), True)]
    for folder, recursive in tiers:
        exact = sorted(set(
            glob.glob(osp.join(folder, exact_name), recursive=recursive)))
        found = exact or sorted(set(
            glob.glob(osp.join(folder, name + '*.py'), recursive=recursive)))
        if not found:
            continue
        # the files differ only in the proportion: one config
        stems = {re.sub(r'-p\d+\.py$', '', f) for f in found}
        if len(exact) > 1 or len(stems) > 1:
            shown = '\n  '.join(found[:8]) + (
                f'\n  ... ({len(found)} files)' if len(found) > 8 else '')
            raise SweepError(
                f'Several configs for method {method!r} on dataset '
                f'{dataset!r} (proportion {proportion}) under '
                f'{config_root!r}:\n  {shown}\nThe sweep does not pick '
                'one. Fix: pass --config-root the folder of the ones to '
                f'run (e.g. {osp.dirname(found[0])!r}).')
        return found[0]
    raise FileNotFoundError(
        f'No config for method {method!r} on dataset {dataset!r}: nothing '
        f'matches {osp.join(config_root, "**", name)}*.py. Fix: check the '
        f'method name (a folder of {config_root}) and the dataset (one of '
        f'{sorted(DATASET_TAGS)} or a tag of the config file names).')


def run_option_items(run: Run, out_dir: str, split_seed: int = 0,
                     val_fraction: float = 0.1, selection: str = 'best',
                     feature_cache: bool = False) -> List[tuple]:
    """``(config key, value, sweep option that sets it)`` of one run: the
    keys the sweep owns (a user ``--cfg-options`` may not set them)."""
    items = [
        ('train_dataloader.dataset.known_proportion', run.proportion,
         '--proportions'),
        ('train_dataloader.dataset.seed', run.seed, '--seeds'),
        # each run draws its own mask (a given file would win over the
        # proportion and seed: every cell would train on one mask)
        ('train_dataloader.dataset.mask_file', None,
         '--proportions / --seeds'),
        ('randomness.seed', run.seed, '--seeds'),
        ('protocol.name', run.protocol, '--protocol'),
    ]
    if run.protocol == 'clean':
        split = osp.join(
            osp.abspath(out_dir), 'splits',
            f'{run.dataset}_holdout{val_fraction:g}_seed{split_seed}.json')
        items += [('protocol.split_file', split, '--out'),
                  ('protocol.seed', split_seed, '--split-seed'),
                  ('protocol.val_fraction', val_fraction, '--val-fraction'),
                  ('protocol.selection', selection, '--selection')]
    if feature_cache:
        items.append(('feature_cache.cache_root',
                      osp.join(osp.abspath(out_dir), 'feature_cache'),
                      '--feature-cache'))
    return items


def run_options(run: Run, out_dir: str, split_seed: int = 0,
                val_fraction: float = 0.1, selection: str = 'best',
                feature_cache: bool = False) -> List[str]:
    """The ``--cfg-options`` of one run (before the user's extras)."""
    # a path with a comma (the --out folder's) is quoted: one string
    return [
        f"{key}='{value}'" if isinstance(value, str) and ',' in value else
        f'{key}={value}' for key, value, _ in run_option_items(
            run, out_dir, split_seed, val_fraction, selection, feature_cache)
    ]


def sweep_owned_keys() -> Dict[str, str]:
    """Config key -> the sweep option that sets it, for every key a run's
    options may hold (from :func:`run_option_items`)."""
    dummy = Run('m', 'd', 0.5, 0, 'clean')
    return {
        key: option
        for key, _, option in run_option_items(dummy, '.',
                                               feature_cache=True)
    }


def _parse_cfg_options(cfg_options: Sequence[str]) -> dict:
    """``--cfg-options`` parsed as ``tools/train.py`` parses them
    (malformed values: :class:`SweepError`)."""
    from mmcoop.engine.cli import SpacedDictAction

    class Parser(argparse.ArgumentParser):

        def error(self, message):
            raise SweepError(message)

    parser = Parser(add_help=False)
    parser.add_argument('--cfg-options', nargs='+', action=SpacedDictAction)
    return parser.parse_args(['--cfg-options', *cfg_options]).cfg_options \
        if cfg_options else {}


def check_out_outside_datasets(runs: Sequence[Run], out_dir: str,
                               config_root: str,
                               cfg_options: Sequence[str]) -> None:
    """Refuse an ``--out`` inside a dataset folder of a run's config (with
    the user's ``--cfg-options``) before the sweep writes anything there
    (its lock, ``sweep.json``, the run folders): ``tools/train.py`` refuses
    each run's work dir there, but only once the sweep has written its
    files into the dataset tree. A run whose config is not found, or
    options that do not apply, or a config that does not load, are left to
    :func:`prepare_sweep` (named there)."""
    from mmengine.config import Config

    from mmcoop.engine.cli import merge_cfg_options
    from mmcoop.engine.config_checks import check_outputs_outside_datasets
    parsed = _parse_cfg_options(cfg_options)
    configs = []
    for run in runs:
        try:
            configs.append(
                find_config(config_root, run.method, run.dataset,
                            run.proportion))
        except (FileNotFoundError, SweepError):
            continue
    for config in dict.fromkeys(configs):
        try:
            cfg = Config.fromfile(config)
        except Exception:  # named by prepare_sweep ('does not load')
            continue
        try:
            cfg = merge_cfg_options(cfg, dict(parsed))
        except (ValueError, KeyError, TypeError, IndexError):
            cfg = Config.fromfile(config)  # the options: prepare_sweep
        try:
            check_outputs_outside_datasets(
                cfg, [('sweep folder (--out)', out_dir,
                       "'work_dirs/sweep'")])
        except ValueError as e:
            raise SweepError(f'{e} (the data of {config})') from None


def check_cfg_options(cfg_options: Sequence[str],
                      configs: Sequence[str] = ()) -> None:
    """Refuse user ``--cfg-options`` that set (or replace a parent of) a key
    the sweep sets per run: the table would label numbers with a
    proportion / seed / split they were not measured at; and options that
    ``tools/train.py`` would refuse for one of the ``configs`` (a value of
    another type than the config's, e.g. ``0,5`` for a number), before the
    sweep records them as its settings."""
    parsed = _parse_cfg_options(cfg_options)
    owned = sweep_owned_keys()
    for key in parsed:
        for own, option in owned.items():
            if key == own or own.startswith(key + '.') or key.startswith(
                    own + '.'):
                raise SweepError(
                    f'--cfg-options {key}=...: the sweep sets {own} for '
                    f'every run (from {option}); overriding it would label '
                    'the results with a setting they were not measured at. '
                    f'Fix: drop it from --cfg-options and use {option}.')
    if not parsed:
        return
    from mmengine.config import Config

    from mmcoop.datasets.data_path import apply_data_path
    from mmcoop.engine.cli import check_cfg_option_types, merge_cfg_options
    for config in dict.fromkeys(configs):
        try:
            cfg = Config.fromfile(config)
            check_cfg_option_types(cfg, parsed)
            if 'data_path' in parsed:  # its value, and what it rewrites
                with warnings.catch_warnings():
                    warnings.simplefilter('ignore')  # no CUDA here: the run's
                    apply_data_path(merge_cfg_options(cfg, parsed))
        except ValueError as e:
            raise SweepError(f'{e} (config {config}; every run of the '
                             'sweep gets --cfg-options)') from None


def _command(template: str, **fields) -> List[str]:
    fields.setdefault('python', sys.executable)
    if 'repo' not in fields:
        fields['repo'] = code_root()
    return [part.format(**fields) for part in shlex.split(template)]


def selected_checkpoint(work_dir: str, selection: str) -> str:
    """``best_*.pth`` (highest epoch if several) or the last checkpoint.

    With ``selection='best'`` and no ``best_*.pth`` (no validation ran, or
    the file was deleted) this raises: testing the last checkpoint instead
    would label its numbers ``selection=best``."""
    if selection == 'best':
        found = glob.glob(osp.join(glob.escape(work_dir), 'best_*.pth'))
        if found:
            return max(found, key=_epoch_of)
        raise RuntimeError(
            f'{work_dir}: no best_*.pth, so there is no best checkpoint to '
            'test (no validation ran, e.g. train_cfg.val_begin beyond '
            'max_epochs, or the file was deleted); the last one would be '
            "reported as selection 'best'. Fix: sweep into a new --out with "
            'validation (train_cfg.val_begin <= max_epochs) or with '
            '--selection last (clean protocol); if the file was deleted, '
            'delete this run folder and rerun to redo the run.')
    pointer = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(pointer):
        with open(pointer) as f:
            path = f.read().strip()
        local = osp.join(work_dir, osp.basename(path))
        if osp.isfile(local):
            return local
    found = glob.glob(osp.join(glob.escape(work_dir), 'epoch_*.pth'))
    if not found:
        raise FileNotFoundError(f'{work_dir}: no checkpoint to test (did '
                                'training fail? see sweep_train.log).')
    return max(found, key=_epoch_of)


def _epoch_of(path: str) -> int:
    m = re.search(r'epoch_(\d+)\.pth$', path)
    return int(m.group(1)) if m else -1


def last_checkpoint(work_dir: str) -> Optional[str]:
    """The run's latest ``epoch_K.pth`` (it resumes from it), or None."""
    paths = glob.glob(osp.join(glob.escape(work_dir), 'epoch_*.pth'))
    return max(paths, key=_epoch_of) if paths else None


def _max_epochs(work_dir: str, config: str) -> Optional[int]:
    from mmengine.config import Config
    dumped = osp.join(work_dir, osp.basename(config))
    if not osp.isfile(dumped):
        return None
    train_cfg = Config.fromfile(dumped).get('train_cfg', None) or {}
    return train_cfg.get('max_epochs')


def device_label(gpus: Optional[str] = None) -> str:
    """What this machine runs the sweep on ("cpu (N cores)" or the GPUs);
    ``gpus``: the ``CUDA_VISIBLE_DEVICES`` of a job slot (its GPU count).
    """
    try:
        import torch
        if torch.cuda.is_available():
            n = len(gpus.split(',')) if gpus else torch.cuda.device_count()
            return f'{n}x {torch.cuda.get_device_name(0)}'
    except ImportError:  # pragma: no cover
        pass
    return f'cpu ({os.cpu_count()} cores)'


def code_version() -> str:
    """``git describe``-like commit of the code (``-dirty`` if modified)
    when it runs from a git checkout, else the package version (an
    installed mmcoop inside another work tree, e.g. a virtualenv in a
    clone, does not take that tree's commit)."""
    def git(*args):
        return subprocess.run(['git', *args], cwd=root, capture_output=True,
                              text=True, check=True).stdout.strip()

    try:
        root = code_root()
        if osp.realpath(git('rev-parse', '--show-toplevel')) == \
                osp.realpath(root):
            dirty = git('status', '--porcelain', '--untracked-files=no')
            return git('rev-parse', '--short', 'HEAD') + ('-dirty'
                                                          if dirty else '')
    except (OSError, subprocess.CalledProcessError):
        pass
    from mmcoop.version import __version__
    return f'mmcoop {__version__}'


#: the train/test processes going (the job threads start them); stopped
#: when the sweep itself is interrupted
_CHILDREN: Set[subprocess.Popen] = set()
_CHILDREN_LOCK = threading.Lock()


def _stop_children() -> None:
    with _CHILDREN_LOCK:
        for proc in _CHILDREN:
            proc.terminate()


def _call(cmd: List[str], log_path: str, what: str,
          env: Optional[Dict[str, str]] = None) -> None:
    """Run ``cmd`` with its output appended to ``log_path``; ``env``: the
    variables set for it (a job slot's, see :func:`job_env`)."""
    with open(log_path, 'a') as log:
        shown = ''.join(f'{k}={shlex.quote(v)} '
                        for k, v in sorted((env or {}).items()))
        log.write(f'$ {shown}{shlex.join(cmd)}\n')
        log.flush()
        with subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT,
                env=dict(os.environ, **env) if env else None) as proc:
            with _CHILDREN_LOCK:
                _CHILDREN.add(proc)
            try:
                code = proc.wait()
            finally:
                with _CHILDREN_LOCK:
                    _CHILDREN.discard(proc)
    if code != 0:
        raise RuntimeError(f'{what} failed (exit code {code}); see '
                           f'{log_path}. Command: {shlex.join(cmd)}')


def run_one(run: Run, config: str, work_dir: str, options: List[str],
            selection: str, train_cmd: str, test_cmd: str,
            device: str, commit: str,
            env: Optional[Dict[str, str]] = None) -> dict:
    """Train, select, test one run; returns its ``result.json`` content.
    ``env``: variables set for both processes (a job slot's)."""
    os.makedirs(work_dir, exist_ok=True)
    start = time.time()
    resume = last_checkpoint(work_dir) is not None
    train = _command(train_cmd, config=config) + [
        '--work-dir', work_dir
    ] + (['--resume'] if resume else []) + ['--cfg-options'] + options
    _call(train, osp.join(work_dir, 'sweep_train.log'), f'{run.name}: train',
          env)
    checkpoint = selected_checkpoint(work_dir, selection)
    metrics_file = osp.join(work_dir, TEST_METRICS)
    # the metrics file belongs to the sweep: one left by a test that was
    # killed before result.json was written is stale, so it is replaced
    if osp.lexists(metrics_file):
        os.remove(metrics_file)
    test = _command(test_cmd, config=config, checkpoint=checkpoint) + [
        '--work-dir', osp.join(work_dir, 'test'), '--out', metrics_file,
        '--out-item', 'metrics', '--force', '--cfg-options'
    ] + options
    _call(test, osp.join(work_dir, 'sweep_test.log'), f'{run.name}: test',
          env)
    with open(metrics_file) as f:
        metrics = json.load(f)

    def metric(key):
        value = metrics.get(f'multi-label/{key}')
        if value is None:
            return None
        if not math.isfinite(float(value)):
            raise RuntimeError(
                f'{run.name}: the test measured {key} = {value} (not a '
                f'finite number; see {metrics_file} and the logs in '
                f'{work_dir}); no result.json was written. Fix: find why '
                'training diverged (e.g. a lower learning rate), then '
                'rerun the sweep.')
        return round(float(value), 4)

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
        config=_shown_config(config),
        work_dir=work_dir)
    if run.protocol == 'official':
        result['selection'] = 'best (on the test split)'
    atomic_write_json(osp.join(work_dir, RESULT), result)
    return result


def _shown_config(config: str) -> str:
    """``config`` relative to :func:`code_root` if inside it."""
    try:
        root = code_root()
    except FileNotFoundError:  # configs and templates given by the user
        return config
    inside = osp.abspath(config).startswith(root + os.sep)
    return osp.relpath(config, root) if inside else config


def collect_results(out_dir: str) -> List[dict]:
    """Every finished run's ``result.json`` under ``out_dir/runs``."""
    rows = []
    runs = osp.join(out_dir, 'runs')
    pattern = osp.join(glob.escape(runs), '**', RESULT)
    for path in sorted(glob.glob(pattern, recursive=True)):
        row = _read_result(path)
        # the run its folder names: a copied-in run of another folder, or
        # an edited field, would land in another cell (or replace one)
        folder = osp.relpath(osp.dirname(path), runs).replace(osp.sep, '/')
        named = Run(row['method'], row['dataset'], row['proportion'],
                    row['seed'], row['protocol']).name
        if folder != named:
            raise SweepError(
                f'{path}: its fields are the run {named!r}, but it lies in '
                f'the run folder {folder!r}: a result copied from another '
                'folder or edited, which would land in another table cell '
                'or replace that run\'s. Fix: move it to its own run folder, '
                'or delete it (the next sweep run redoes the run).')
        rows.append(row)
    rows.sort(key=lambda r: (r['protocol'], r['dataset'], r['method'],
                             r['proportion'], r['seed']))
    return rows


_REQUIRED = ('method', 'dataset', 'proportion', 'seed', 'protocol', 'mAP')
_NUMBERS = ('proportion', 'mAP', 'CF1', 'OF1', 'CF1_top3', 'OF1_top3',
            'CF1_calib', 'OF1_calib', 'wall_time_s')


def _read_result(path: str) -> dict:
    """One ``result.json``, checked: complete, finite numbers."""
    fix = ('Fix: delete it (the next sweep run with the same command '
           'redoes that run).')
    try:
        with open(path) as f:
            row = json.load(f)
    except (OSError, ValueError) as e:
        raise SweepError(f'{path}: cannot read this result ({e}). {fix}')
    if not isinstance(row, dict):
        raise SweepError(f'{path}: not a run result (a JSON object '
                         f'expected). {fix}')
    missing = [k for k in _REQUIRED if k not in row]
    if missing:
        raise SweepError(f'{path}: incomplete result, missing '
                         f'{", ".join(missing)}. {fix}')
    for key in _NUMBERS:
        value = row.get(key)
        if key not in ('proportion', 'mAP') and value is None:
            continue
        if isinstance(value, bool) or not isinstance(
                value, (int, float)) or not math.isfinite(value):
            raise SweepError(
                f'{path}: {key} = {value!r} is not a finite number, so the '
                f'table cell of that run would be meaningless. {fix}')
    if isinstance(row['seed'], bool) or not isinstance(
            row['seed'], int) or row['seed'] < 0:
        raise SweepError(f'{path}: seed = {row["seed"]!r} is not an '
                         f'integer >= 0. {fix}')
    if not 0 < row['proportion'] <= 1:
        raise SweepError(f'{path}: proportion = {row["proportion"]!r} is '
                         f'not in (0, 1]. {fix}')
    for key in _NUMBERS:  # percentages (a fraction 0.81 would read 0.81 %)
        if key not in ('proportion', 'wall_time_s') and row.get(
                key) is not None and not 0 <= row[key] <= 100:
            raise SweepError(f'{path}: {key} = {row[key]!r} is not a '
                             f'percentage in [0, 100]. {fix}')
    for key in ('method', 'dataset', 'protocol'):
        if not isinstance(row[key], str):
            raise SweepError(f'{path}: {key} = {row[key]!r} is not a '
                             f'name. {fix}')
    return row


def check_out_dir(out_dir: str, report_only: bool = False) -> None:
    """Refuse an ``--out`` that is a file, that does not exist (with
    ``--report-only``) or that is a folder of something else than a sweep
    holding files the report would overwrite."""
    if not out_dir.strip():
        raise SweepError(
            f'--out {out_dir!r} is empty: the sweep would write into the '
            'current folder. Fix: give the sweep folder, e.g. --out '
            'work_dirs/sweep_voc07.')
    from mmcoop.utils.paths import (OutputPathError, check_output_folder,
                                    dangling_link)
    if dangling_link(out_dir):  # a link to nothing: named, not 'a file'
        try:
            check_output_folder(out_dir, f'--out {out_dir!r}')
        except OutputPathError as e:
            raise SweepError(str(e)) from None
    if osp.lexists(out_dir) and not osp.isdir(out_dir):
        raise SweepError(f'--out {out_dir!r} is a file, not a sweep folder. '
                         'Fix: give a folder (new or of a sweep).')
    if report_only and not osp.isdir(out_dir):
        raise SweepError(
            f'--out {out_dir!r} does not exist, so --report-only has '
            'nothing to report. Fix: give the folder of a sweep (or run '
            'the sweep without --report-only).')
    if not osp.isdir(out_dir) or is_sweep_dir(out_dir):
        return
    mine = [
        f for f in sorted(os.listdir(out_dir))
        if f in REPORT_FILES or (f.startswith('mAP_') and f.endswith('.png'))
    ]
    if mine or report_only:
        held = (f' and holds {", ".join(mine)}, which the report would '
                'overwrite') if mine else ''
        raise SweepError(
            f'--out {out_dir!r} is not a sweep folder (no {SETTINGS} or '
            f'runs of a sweep){held}. Fix: give a new folder or the folder '
            'of a sweep as --out.')


def is_sweep_dir(out_dir: str) -> bool:
    """A folder a sweep made: its settings file, or run folders in the
    sweep's layout (``runs/<protocol>/<dataset>/<method>/<run>/`` holding a
    result or the sweep's train log). A ``runs/`` folder alone (e.g.
    TensorBoard's default) is not enough: the report would overwrite the
    folder's own ``results.csv``."""
    if osp.isfile(osp.join(out_dir, SETTINGS)):
        return True
    runs = glob.escape(osp.join(out_dir, 'runs'))
    return any(
        glob.glob(osp.join(runs, '*', '*', '*', '*', name))
        for name in (RESULT, 'sweep_train.log'))


def render_reports(out_dir: str, paper: bool = True) -> Dict[str, str]:
    """``results.csv``, ``results.md`` and one PNG per (dataset,
    protocol) in ``out_dir``; returns their paths."""
    rows = collect_results(out_dir)
    paths = dict(csv=osp.join(out_dir, 'results.csv'))
    write_results(paths['csv'], rows)
    md = osp.join(out_dir, 'results.md')
    if not rows:
        if osp.exists(md):  # never a table the CSV contradicts
            with atomic_open(md, 'w') as f:
                f.write('No finished run in this sweep folder (no '
                        'runs/**/result.json).\n')
            paths['md'] = md
        _warn_stale_plots(out_dir, set())
        return paths
    paths['md'] = md
    with atomic_open(paths['md'], 'w') as f:
        f.write(render_markdown(rows, paper=paper))
    for dataset, protocol in sorted({(r['dataset'], r['protocol'])
                                     for r in rows}):
        png = osp.join(out_dir, f'mAP_{dataset}_{protocol}.png')
        paths[f'png:{dataset}:{protocol}'] = plot_results(
            rows, png, dataset, protocol, paper=paper)
    _warn_stale_plots(out_dir, {p for k, p in paths.items()
                                if k.startswith('png:')})
    return paths


def _warn_stale_plots(out_dir: str, current: set) -> None:
    """Name the plots of an earlier report whose runs are gone (not
    removed: the folder may hold a file of the user's of that name)."""
    stale = sorted(
        p for p in glob.glob(osp.join(glob.escape(out_dir), 'mAP_*.png'))
        if p not in current)
    if stale:
        warnings.warn(
            f'{len(stale)} plot(s) of an earlier report have no finished '
            f'run now and were not redrawn: {", ".join(stale[:4])}. Delete '
            'them if they are old.')


#: sweep.json setting -> the option that sets it
_SETTING_OPTIONS = {
    'config_root': '--config-root',
    'cfg_options': '--cfg-options',
    'selection': '--selection',
    'val_fraction': '--val-fraction',
    'split_seed': '--split-seed',
    'feature_cache': '--feature-cache',
    'train_cmd': '--train-cmd',
    'test_cmd': '--test-cmd',
}


def _check_template(template: str, option: str, **fields) -> None:
    try:
        cmd = _command(template, **fields)
    except (KeyError, IndexError, AttributeError) as e:
        raise SweepError(
            f'{option} {template!r}: unknown field ({e}). Fix: '
            f'use only {", ".join("{%s}" % k for k in fields)}, '
            '{python} and {repo} (write {{ }} for literal braces).')
    except ValueError as e:
        raise SweepError(f'{option} {template!r}: {e}. Fix: check the '
                         'quotes and braces of the template.')
    if not cmd:
        raise SweepError(f'{option}: the template is empty. Fix: give a '
                         'command.')


def _sha256(path: str) -> str:
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def _config_record(config: str) -> dict:
    """What ``sweep.json`` records of a run's config: its path, the hash of
    the file, and the hash of the whole resolved config (every ``_base_``
    it inherits included, so an edit to a shared base counts as a change).
    A config that does not load is named here, before any run trains."""
    from mmengine.config import Config
    try:
        resolved = Config.fromfile(config).to_dict()
    except Exception as e:  # any parse/inheritance error of the file
        raise SweepError(f'{config}: the config does not load '
                         f'({type(e).__name__}: {e}). Fix the file (or '
                         'its _base_ files) before the sweep.') from None
    text = pprint.pformat(resolved, width=120)  # dicts sorted by key
    return dict(path=osp.abspath(config), sha256=_sha256(config),
                resolved_sha256=hashlib.sha256(text.encode()).hexdigest())


def _same_config(before: dict, now: dict) -> bool:
    """Records made by an older mmcoop lack ``resolved_sha256``: compare
    the fields both have."""
    return all(before[k] == now[k] for k in now if k in before)


def _check_finished_run_is_this_run(out_dir: str, run: Run) -> None:
    """The result in ``run``'s folder must be of ``run``'s proportion: two
    proportions that round to one folder name (``p0.12`` for 0.12 and
    0.125) would take the other's result as done."""
    path = osp.join(out_dir, 'runs', run.name, RESULT)
    if not osp.isfile(path):
        return
    done = _read_result(path)['proportion']
    if abs(done - run.proportion) > 1e-9:
        raise SweepError(
            f'--proportions {run.proportion:g}: its run folder '
            f'{osp.basename(osp.dirname(path))} holds the result of '
            f'proportion {done:g} ({path}): the two round to one folder '
            f'name, so {run.proportion:g} would be skipped as done and '
            f'the table would show {done:g}. Fix: give a new --out for '
            f'{run.proportion:g}, or ask for {done:g}.')


def _check_rows_keep_their_recipe(out_dir: str, recorded: Dict[str, dict],
                                  used: Dict[str, dict]) -> None:
    """A table row (protocol, dataset, method) whose runs were made from
    config content that is gone (the config or a shared ``_base_`` edited
    since) must not get new runs (e.g. another proportion): the row would
    mix two recipes, with nothing in the table to say so. ``recorded``,
    ``used``: ``sweep.json``'s config records and this command's, by
    ``<protocol>/<dataset>/<method>/p<proportion>``."""
    rows = {key.rsplit('/', 1)[0] for key in used}
    for key, before in recorded.items():
        if key in used or key.rsplit('/', 1)[0] not in rows or \
                not osp.isfile(before.get('path', '')):
            continue
        if not glob.glob(
                osp.join(glob.escape(out_dir), 'runs', key + '_seed*')):
            continue  # recorded, never started
        now = _config_record(before['path'])
        if not _same_config(before, now):
            raise SweepError(
                f'--out {out_dir!r}: the runs {key}_seed* were made from '
                f'{before["path"]} with other content than it has now (the '
                'config or one of its _base_ files was changed since); new '
                f'runs of {key.rsplit("/", 1)[0]} would put two recipes in '
                'one table row. Fix: give a new --out for the new recipe, '
                'or restore the old one.')


def prepare_sweep(runs: Sequence[Run], out_dir: str, config_root: str,
                  cfg_options: Sequence[str], selection: str,
                  split_seed: int, val_fraction: float, feature_cache: bool,
                  train_cmd: str, test_cmd: str,
                  log: Callable[[str], None] = print,
                  record: bool = True) -> Dict[Run, str]:
    """Everything checked before the first run trains: ``--out``, the
    user's ``--cfg-options``, both command templates, every run's config,
    and that the settings match those of the runs already in ``out_dir``
    (recorded in ``<out>/sweep.json``; ``record=False``, a dry run: checked
    only, nothing written). Returns each run's config."""
    check_out_dir(out_dir)
    collect_results(out_dir)  # a broken result.json: named now, not later
    check_cfg_options(cfg_options)
    _check_template(train_cmd, '--train-cmd', config='CONFIG')
    _check_template(test_cmd, '--test-cmd', config='CONFIG',
                    checkpoint='CHECKPOINT')
    if isinstance(split_seed, bool) or int(split_seed) != split_seed or \
            split_seed < 0:
        raise SweepError(f'--split-seed: {split_seed!r} is not an integer '
                         '>= 0.')
    if not 0.0 < float(val_fraction) < 1.0:
        raise SweepError(f'--val-fraction: {val_fraction!r} is not in '
                         '(0, 1).')
    configs: Dict[Run, str] = {}
    used: Dict[str, dict] = {}
    for run in runs:
        try:
            config = find_config(config_root, run.method, run.dataset,
                                 run.proportion)
        except FileNotFoundError as e:
            raise SweepError(f'--methods / --datasets: {e}') from None
        configs[run] = config
        used[f'{run.protocol}/{run.dataset}/{run.method}/'
             f'p{run.proportion:.2f}'] = _config_record(config)
        _check_finished_run_is_this_run(out_dir, run)
    # the option types against every config, before anything is recorded
    check_cfg_options(cfg_options, list(configs.values()))
    settings = dict(
        config_root=osp.abspath(config_root),
        cfg_options=[str(o) for o in cfg_options],
        selection=selection,
        val_fraction=float(val_fraction),
        split_seed=int(split_seed),
        feature_cache=bool(feature_cache),
        # their extra arguments (another --cfg-options, --amp, a GPU count)
        # change the runs as much as the sweep's own options
        train_cmd=str(train_cmd),
        test_cmd=str(test_cmd))
    path = osp.join(out_dir, SETTINGS)
    recorded = None
    if osp.isfile(path):
        try:
            with open(path) as f:
                recorded = json.load(f)
            recorded['settings'], recorded['configs']
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise SweepError(
                f'{path}: cannot read the recorded settings of this sweep '
                f'({e!r}). Fix: give a new --out (or restore that file).')
    elif osp.isdir(osp.join(out_dir, 'runs')):
        log(f'warning: {out_dir} has runs but no {SETTINGS} (made by an '
            'older mmcoop); recording the settings of this command for '
            'them.')
    if recorded is not None:
        old = recorded['settings']
        # a key an older mmcoop did not record is recorded now
        differ = [k for k in settings if k in old and old[k] != settings[k]]
        if differ:
            shown = '; '.join(
                f'{_SETTING_OPTIONS[k]}: {old.get(k)!r} in the sweep, '
                f'{settings[k]!r} now' for k in differ)
            raise SweepError(
                f'--out {out_dir!r} holds a sweep run with other settings '
                f'({shown}); its runs would be mixed into the same table '
                'cells. Fix: give a new --out for these settings, or rerun '
                'with the recorded ones.')
        for key, now in used.items():
            before = recorded['configs'].get(key)
            started = glob.glob(
                osp.join(glob.escape(out_dir), 'runs', key + '_seed*'))
            if before is not None and not _same_config(before, now) \
                    and started:
                raise SweepError(
                    f'--out {out_dir!r}: the runs {key}_seed* used '
                    f'{before["path"]} with other content than '
                    f'{now["path"]} has now (the config or one of its '
                    '_base_ files was changed, or another file is found). '
                    'Fix: give a new --out for the '
                    'new config, or restore the old one.')
        _check_rows_keep_their_recipe(out_dir, recorded['configs'], used)
        merged = dict(recorded['configs'])
        merged.update(used)
    else:
        merged = used
    if record:
        make_output_dirs([path], '--out')
        atomic_write_json(path, dict(settings=settings, configs=merged))
    return configs


def job_env(slot: int, jobs: int,
            job_gpus: Optional[Sequence[str]] = None) -> Dict[str, str]:
    """The variables of job slot ``slot`` (0-based) of ``jobs``: its
    ``CUDA_VISIBLE_DEVICES`` (``job_gpus[slot]``) and, with more than one
    slot, a torchrun ``PORT`` of its own (``$PORT`` or 29500, plus the
    slot), so that ``tools/dist_train.sh`` launchers of two slots do not
    share a port. One slot without GPUs: nothing."""
    env = {}
    if job_gpus:
        env['CUDA_VISIBLE_DEVICES'] = job_gpus[slot]
    if jobs > 1:
        env['PORT'] = str(int(os.environ.get('PORT', 29500)) + slot)
    return env


def visible_gpus() -> List[str]:
    """The GPU ids this process may use: ``$CUDA_VISIBLE_DEVICES`` when it
    is set, else one id a CUDA device torch finds (none without CUDA)."""
    ids = os.environ.get('CUDA_VISIBLE_DEVICES')
    if ids is not None:
        return [i for i in ids.split(',') if i.strip()]
    try:
        import torch
        return [str(i) for i in range(torch.cuda.device_count())]
    except ImportError:  # pragma: no cover
        return []


def default_job_gpus(jobs: int) -> Optional[List[str]]:
    """``--jobs`` without ``--job-gpus`` on a machine with GPUs: the
    visible GPUs in turn, one a slot (``--jobs 8`` on 8 GPUs: one GPU a
    run, not eight runs on the first GPU). None with one slot or without
    GPUs."""
    gpus = visible_gpus() if jobs > 1 else []
    return [gpus[k % len(gpus)] for k in range(jobs)] if gpus else None


def check_jobs(jobs: int, job_gpus: Optional[Sequence[str]] = None) -> None:
    """``jobs`` >= 1, one ``job_gpus`` entry (comma-separated GPU ids or
    UUIDs, no spaces) per job slot when given, and with several slots a
    ``$PORT`` (if set) that is a number (:func:`job_env`)."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise SweepError(f'--jobs: {jobs!r} is not an integer >= 1.')
    port = os.environ.get('PORT')
    if jobs > 1 and port is not None and not port.strip().isdigit():
        raise SweepError(
            f'--jobs {jobs}: the environment variable PORT={port!r} is not '
            'a port number; each job slot gets PORT + its index. Fix: unset '
            'PORT or set it to a free port (e.g. 29500).')
    if job_gpus is None:
        return
    if len(job_gpus) != jobs:
        raise SweepError(
            f'--job-gpus gives {len(job_gpus)} slot(s) but --jobs is {jobs}. '
            'Fix: one entry per job slot (e.g. --jobs 4 --job-gpus 0 1 2 3, '
            'or "0,1" "2,3" for two GPUs a run); --jobs defaults to their '
            'number.')
    for ids in job_gpus:
        if not ids or any(not part or part != part.strip()
                          for part in ids.split(',')) or ' ' in ids:
            raise SweepError(
                f'--job-gpus: {ids!r} is not a CUDA_VISIBLE_DEVICES value. '
                'Fix: GPU ids (or UUIDs) separated by commas, no spaces, '
                'e.g. 0 or 2,3.')


def run_sweep(runs: Sequence[Run],
              out_dir: str,
              config_root: Optional[str] = None,
              cfg_options: Sequence[str] = (),
              selection: str = 'best',
              split_seed: int = 0,
              val_fraction: float = 0.1,
              feature_cache: bool = False,
              train_cmd: str = DEFAULT_TRAIN_CMD,
              test_cmd: str = DEFAULT_TEST_CMD,
              device: Optional[str] = None,
              log: Callable[[str], None] = print,
              jobs: int = 1,
              job_gpus: Optional[Sequence[str]] = None,
              dry_run: bool = False) -> List[dict]:
    """Run every unfinished run of ``runs``, ``jobs`` at once, in order;
    returns the rows of ``results.csv``. ``config_root`` None: the configs
    of :func:`code_root`. ``job_gpus``: the ``CUDA_VISIBLE_DEVICES`` of
    each job slot (default: :func:`default_job_gpus`).

    A failed run stops the sweep: no run starts after it, the runs already
    going finish (and count), then its error is raised. With
    ``feature_cache`` the first run of a dataset goes alone (its processes
    build the dataset's caches).

    ``dry_run``: every check, then the plan (each run, its config, and
    whether it is done, resumes or starts), and nothing written or run;
    returns the rows of the runs already finished."""
    check_jobs(jobs, job_gpus)
    check_out_outside_datasets(
        runs, out_dir, config_root or osp.join(code_root(), 'configs'),
        cfg_options)
    # one sweep at a time in --out (a dry run writes nothing)
    with contextlib.nullcontext() if dry_run else _sweep_lock(out_dir):
        return _run_sweep(runs, out_dir, config_root, cfg_options,
                          selection, split_seed, val_fraction,
                          feature_cache, train_cmd, test_cmd, device, log,
                          jobs, job_gpus, dry_run)


@contextlib.contextmanager
def _sweep_lock(out_dir: str):
    """Hold ``<out>/mmcoop.lock`` (the work-dir lock) while a sweep runs:
    two sweeps in one ``--out`` would train the same run in one work dir,
    one over the other's checkpoints and result. A refused sweep leaves no
    folder it made."""
    from mmcoop.engine.work_dir_lock import WorkDirLock, WorkDirLockedError
    check_out_dir(out_dir)
    made = not osp.exists(out_dir)
    lock = WorkDirLock(out_dir)
    try:
        lock.acquire()
    except WorkDirLockedError as e:
        raise SweepError(
            f'--out {out_dir!r} is in use by another sweep ({e}). Fix: wait '
            'for it to finish, or give another --out.') from None
    try:
        yield
    finally:
        lock.release()
        if made and not os.listdir(out_dir):  # refused: nothing written
            os.rmdir(out_dir)


def _run_sweep(runs, out_dir, config_root, cfg_options, selection,
               split_seed, val_fraction, feature_cache, train_cmd, test_cmd,
               device, log, jobs, job_gpus, dry_run):
    """:func:`run_sweep` once ``--out`` is this process's."""
    if job_gpus is None:
        job_gpus = default_job_gpus(jobs)
    config_root = config_root or osp.join(code_root(), 'configs')
    configs = prepare_sweep(runs, out_dir, config_root, cfg_options,
                            selection, split_seed, val_fraction,
                            feature_cache, train_cmd, test_cmd, log,
                            record=not dry_run)
    commit = code_version()
    pending, cached = [], set()
    for i, run in enumerate(runs, 1):
        work_dir = osp.join(osp.abspath(out_dir), 'runs', run.name)
        if osp.isfile(osp.join(work_dir, RESULT)):
            log(f'[{i}/{len(runs)}] {run.name}: done, skipped')
            cached.add(run.dataset)  # its caches were built
        else:
            pending.append((i, run, work_dir))
            if dry_run:
                last = last_checkpoint(work_dir)
                what = (f'resumes from {osp.basename(last)}'
                        if last else 'starts')
                log(f'[{i}/{len(runs)}] {run.name}: {what} '
                    f'({osp.basename(configs[run])})')
    if dry_run:
        log(f'dry run: {len(pending)} of {len(runs)} run(s) to go, '
            f'{jobs} at a time; nothing was written.')
        return collect_results(out_dir)

    def start(pool, i, run, work_dir, slot):
        # the official protocol always keeps the best epoch (on the test
        # split)
        chosen = 'best' if run.protocol == 'official' else selection
        options = run_options(run, out_dir, split_seed, val_fraction,
                              chosen, feature_cache) + list(cfg_options)
        env = job_env(slot, jobs, job_gpus)
        where = f' (job {slot + 1}: ' + ', '.join(
            f'{k}={v}' for k, v in sorted(env.items())) + ')' if env else ''
        log(f'[{i}/{len(runs)}] {run.name}: {osp.basename(configs[run])}'
            f'{where}')
        label = device or device_label(env.get('CUDA_VISIBLE_DEVICES'))
        return pool.submit(run_one, run, configs[run], work_dir, options,
                           chosen, train_cmd, test_cmd, label, commit, env)

    going, free, building, error = {}, list(range(jobs)), set(), None
    # SIGTERM too stops the runs going (their processes would go on)
    with sigterm_as_exit(), ThreadPoolExecutor(max_workers=jobs) as pool:
        try:
            while pending or going:
                for item in list(pending):
                    if error is not None or not free:
                        break
                    dataset = item[1].dataset
                    if feature_cache and dataset not in cached:
                        if dataset in building:
                            continue  # waits for the run building them
                        building.add(dataset)
                    pending.remove(item)
                    slot = free.pop(0)
                    going[start(pool, *item, slot)] = item[:2] + (slot, )
                if not going:
                    break
                done, _ = wait(going, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: going[f][0]):
                    i, run, slot = going.pop(future)
                    free = sorted(free + [slot])
                    building.discard(run.dataset)
                    try:
                        result = future.result()
                    except Exception as e:  # noqa: BLE001 - raised below
                        log(f'[{i}/{len(runs)}] {run.name}: failed; no '
                            'further run starts' + (
                                ', the runs going finish' if going else ''))
                        error = error or e
                        continue
                    cached.add(run.dataset)
                    log(f'[{i}/{len(runs)}] {run.name}: mAP {result["mAP"]} '
                        f'(epoch {result["selected_epoch"]}, '
                        f'{result["wall_time_s"]} s)')
                    write_results(osp.join(out_dir, 'results.csv'),
                                  collect_results(out_dir))
        except BaseException:  # Ctrl-C, SIGTERM (or an error here): the
            _stop_children()  # runs going stop, to resume from their last
            # checkpoints
            raise
    if error is not None:
        raise error
    paths = render_reports(out_dir)
    for kind, path in paths.items():
        log(f'{kind}: {path}')
    return collect_results(out_dir)

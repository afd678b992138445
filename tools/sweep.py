# Copyright (c) mmcoop contributors. All rights reserved.
"""Run a label-proportion sweep and render its table and plot.

    python tools/sweep.py --methods positivecoop baseline --datasets voc07 \
        --proportions 0.1 0.5 0.9 --seeds 0 1 2 --protocol clean \
        --out work_dirs/sweep_voc07 [--feature-cache] \
        [--cfg-options train_cfg.max_epochs=20 ...] \
        [--train-cmd "bash tools/dist_train.sh {config} 8"] \
        [--test-cmd "bash tools/dist_test.sh {config} {checkpoint} 8"]
    # 8 runs at once on an 8-GPU machine, one GPU each
    python tools/sweep.py --methods positivecoop --datasets voc07 \
        --out work_dirs/sweep_voc07 --feature-cache \
        --job-gpus 0 1 2 3 4 5 6 7
    python tools/sweep.py --out work_dirs/sweep_voc07 --report-only

One ``tools/train.py`` + ``tools/test.py`` process per run, ``--jobs`` runs
at once (default 1); finished runs are skipped, so rerunning the same
command continues a killed sweep.
Writes ``results.csv``, ``results.md`` and ``mAP_<dataset>_<protocol>.png``
into ``--out``. See docs/experiments.md and
:mod:`mmcoop.experiments.sweep`.
"""
import argparse
import sys

from mmcoop.engine.cli import (nonnegative_int, positive_fraction,
                               positive_int, user_path)
from mmcoop.experiments.protocols import PROTOCOLS, SELECTIONS
from mmcoop.experiments.sweep import (DEFAULT_TEST_CMD, DEFAULT_TRAIN_CMD,
                                      SweepError, check_out_dir, plan_runs,
                                      render_reports, run_sweep)
from mmcoop.utils.paths import OutputPathError


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='mmcoop: methods x datasets x known-label proportions x '
        'seeds, one process per run, resumable; results.csv, a paper-style '
        'table and a plot')
    parser.add_argument('--out', type=user_path,
                        required=True, help='sweep directory')
    parser.add_argument('--methods', nargs='+', default=['positivecoop'],
                        help='config folder names (positivecoop, '
                        'negativecoop, dualcoop, baseline)')
    parser.add_argument('--datasets', nargs='+', default=['voc07'],
                        help='coco14, voc07, demo (or a config-name tag)')
    parser.add_argument('--proportions', nargs='+', type=positive_fraction,
                        default=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8,
                                 0.9], help='known-label proportions')
    parser.add_argument('--seeds', nargs='+', type=nonnegative_int,
                        default=[0],
                        help='mask + training seeds')
    parser.add_argument('--protocol', choices=PROTOCOLS, default='clean')
    parser.add_argument('--selection', choices=SELECTIONS, default='best',
                        help='clean protocol: best validation epoch or last')
    parser.add_argument('--val-fraction', type=positive_fraction,
                        default=0.1,
                        help='clean protocol: held-out share of train')
    parser.add_argument('--split-seed', type=nonnegative_int, default=0,
                        help='clean protocol: seed of the held-out split')
    parser.add_argument('--feature-cache', action='store_true',
                        help='share one frozen-feature cache (<out>/'
                        'feature_cache) between the runs')
    parser.add_argument('--config-root', type=user_path,
                        help='where <method>_*_<dataset>-'
                        'p*.py live (default: the configs/ of this mmcoop, '
                        'in the clone or the installed mmcoop/.mim)')
    parser.add_argument('--cfg-options', nargs='+', default=[],
                        help='extra key=value overrides for every run')
    parser.add_argument('--train-cmd', default=DEFAULT_TRAIN_CMD,
                        help='training command template ({python}, {repo},'
                        ' {config}); the sweep appends --work-dir, '
                        '--resume and --cfg-options')
    parser.add_argument('--test-cmd', default=DEFAULT_TEST_CMD,
                        help='test command template ({config}, '
                        '{checkpoint}, ...)')
    parser.add_argument(
        '--jobs', type=positive_int, default=None,
        help='runs at once (default: 1, or the number of --job-gpus); '
        'without --job-gpus the slots take the visible GPUs in turn')
    parser.add_argument(
        '--job-gpus', nargs='+', metavar='IDS',
        help='CUDA_VISIBLE_DEVICES of each job slot, e.g. 0 1 2 3 (one GPU '
        'a run) or 0,1 2,3 (two); every slot also gets its own PORT for '
        'torchrun launchers')
    parser.add_argument('--device-label', default=None,
                        help='device written to results.csv (default: '
                        'what this machine has)')
    parser.add_argument(
        '--dry-run', action='store_true',
        help='check everything and print the plan (each run: done, '
        'resumes or starts); write and run nothing')
    parser.add_argument('--report-only', action='store_true',
                        help='only re-render results.csv/.md/.png')
    args = parser.parse_args(argv)
    if args.jobs is None:
        args.jobs = len(args.job_gpus) if args.job_gpus else 1
    if args.val_fraction >= 1:
        parser.error('argument --val-fraction: must be a number in (0, 1) '
                     f'(the held-out share of train), got {args.val_fraction}')
    return parser, args


def main(argv=None):
    parser, args = parse_args(argv)
    try:
        _main(args)
    except (SweepError, OutputPathError) as e:
        parser.error(str(e))
    except RuntimeError as e:  # a run failed: its log is named
        sys.exit(f'{parser.prog}: error: {e}')


def _main(args):
    if args.report_only:
        check_out_dir(args.out, report_only=True)
        for kind, path in render_reports(args.out).items():
            print(f'{kind}: {path}')
        return
    runs = plan_runs(args.methods, args.datasets, args.proportions,
                     args.seeds, args.protocol)
    run_sweep(
        runs,
        args.out,
        config_root=args.config_root,
        cfg_options=args.cfg_options,
        selection=args.selection,
        split_seed=args.split_seed,
        val_fraction=args.val_fraction,
        feature_cache=args.feature_cache,
        train_cmd=args.train_cmd,
        test_cmd=args.test_cmd,
        device=args.device_label,
        jobs=args.jobs,
        job_gpus=args.job_gpus,
        dry_run=args.dry_run)


if __name__ == '__main__':
    main()

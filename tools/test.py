# Copyright (c) mmcoop contributors. All rights reserved.
"""Test (evaluate) a checkpoint with an mmcoop config.

    python tools/test.py CONFIG [CHECKPOINT] [--work-dir DIR] [--out FILE]
        [--out-item {metrics,pred}] [--force] [--show-dir DIR]
        [--cfg-options k=v ...]
        [--launcher {none,pytorch,slurm,mpi}]

The checkpoint (a training checkpoint such as ``work_dirs/.../epoch_50.pth``,
a published one from ``tools/model_converters/publish_model.py`` or a
converted official one) is read by ``MMCoopRunner`` with
``torch.load(weights_only=True)`` and must fit the model (see
``mmcoop.engine.checkpoint_fit``). It may be left out only for a model
without trainable parameters (the zero-shot head on the frozen CLIP, see
docs/backbones.md), or when the config sets ``load_from``. ``--out x.pkl``
dumps every sample's scores and labels (the input of
``tools/analysis/analyze_results.py``), ``--out x.json --out-item metrics``
the metrics with a ``per_class_ap`` table (``.json``, ``.yaml``/``.yml`` or
``.pkl``; predictions only ``.pkl``/``.pickle``, checked before the test
runs); an existing ``--out`` file is replaced only with ``--force``, and
it is written atomically (a killed test leaves no truncated file).
``--show-dir`` draws each test image with its scores into a new or empty
folder (with ``--force`` into any: files of the same names are replaced, so
an interrupted test can be rerun). Multi-GPU:
``bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [args]``.
"""
import argparse

import mmengine
from mmengine.config import Config
from mmengine.dist import is_main_process

from mmcoop.engine.atomic_backend import ATOMIC_BACKEND_ARGS, AtomicDumpResults
from mmcoop.engine.cli import (add_common_args, build_runner, check_out_suffix,
                               check_test_inputs_and_outputs,
                               check_test_weights, checkpoint_or_none,
                               merge_test_args, set_local_rank, user_path)
from mmcoop.evaluation import evaluator_per_class_ap
from mmcoop.utils.paths import make_output_dirs


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='mmcoop: test (and evaluate) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument(
        'checkpoint',
        nargs='?',
        type=checkpoint_or_none,
        help='checkpoint file (not needed for a model without trainable '
        'parameters, e.g. ZeroShotHead: leave it out, or write none, as '
        'tools/dist_test.sh needs an argument there)')
    parser.add_argument(
        '--out',
        type=user_path,
        help='the file to output results: predictions to a .pkl / .pickle '
        'file, or with `--out-item metrics` the metrics to a .json, .yaml, '
        '.yml, .pkl or .pickle file. An existing file is kept unless '
        '--force is given.')
    parser.add_argument(
        '--out-item',
        choices=['metrics', 'pred'],
        help='To output whether metrics or predictions. '
        'Defaults to output predictions.')
    parser.add_argument(
        '--force',
        action='store_true',
        help='overwrite an existing --out file; draw into a --show-dir '
        'that is not empty')
    parser.add_argument(
        '--show-dir',
        type=user_path,
        help='draw every test image with its top scores into this (new or '
        'empty, or with --force any) folder')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='enable automatic-mixed-precision test')
    add_common_args(parser)
    args = parser.parse_args(argv)
    set_local_rank(args)
    if args.out is None and args.out_item is not None:
        parser.error('--out-item needs --out (the file to write to).')
    check_out_suffix(parser, args)
    return args


def draw_hook(args) -> dict:
    """The ``PredictionDrawHook`` of ``--show-dir``: a new or empty folder,
    or any folder with ``--force`` (e.g. to rerun an interrupted test)."""
    return dict(
        type='PredictionDrawHook', out_dir=args.show_dir, force=args.force)


def main(argv=None):
    args = parse_args(argv)

    # load config
    cfg = Config.fromfile(args.config)

    # merge cli arguments to config
    cfg = merge_test_args(cfg, args)
    check_test_inputs_and_outputs(args, cfg)
    if args.show_dir:
        cfg.custom_hooks = [*cfg.get('custom_hooks', []), draw_hook(args)]

    # build the runner from config
    runner = build_runner(cfg)
    check_test_weights(runner.model, cfg.get('load_from'), args.config)

    if args.out:
        make_output_dirs([args.out], '--out')
    if args.out and args.out_item in ['pred', None]:
        runner.test_evaluator.metrics.append(
            AtomicDumpResults(out_file_path=args.out))

    # start testing
    metrics = runner.test()

    # the metrics and their per-class table are computed on rank 0 (the
    # other ranks get the metrics by broadcast, without the table): one
    # writer, as DumpResults for the predictions
    if args.out and args.out_item == 'metrics' and is_main_process():
        mmengine.dump(
            dict(
                metrics,
                per_class_ap=evaluator_per_class_ap(runner.test_evaluator)),
            args.out,
            backend_args=ATOMIC_BACKEND_ARGS)
    return metrics


if __name__ == '__main__':
    main()

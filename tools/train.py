# Copyright (c) mmcoop contributors. All rights reserved.
"""Train a model with an mmcoop config.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [auto|CKPT]]
        [--amp] [--auto-scale-lr] [--cfg-options k=v ...] [--strict-config]
        [--launcher {none,pytorch,slurm,mpi}]

Multi-GPU: ``bash tools/dist_train.sh CONFIG GPUS [args]`` (torchrun).
What the config means (feature cache, CPU distributed, checks) is decided
by ``MMCoopRunner.from_cfg``, so ``mim train`` and
``mmcoop.registry.RUNNERS.build(cfg)`` behave the same (MMEngine's plain
``Runner.from_cfg`` is stopped by ``RunnerCheckHook``). Runs the installed
mmcoop, as every mmcoop tool (``bash tools/install.sh`` installs the clone
in editable mode).
"""
import argparse

from mmengine.config import Config

from mmcoop.engine.cli import (add_common_args, build_runner, check_amp_device,
                               merge_train_args, set_local_rank, user_path)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train an mmcoop model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=user_path,
        const='auto',
        help='If specify checkpoint path, resume from it, while if not '
        'specify, try to auto resume from the latest checkpoint '
        'in the work directory (without one, the run starts from the '
        "config's load_from, if any).")
    parser.add_argument(
        '--amp',
        action='store_true',
        help='enable automatic-mixed-precision training')
    parser.add_argument(
        '--no-validate',
        action='store_true',
        help='whether not to evaluate the checkpoint during training')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='whether to auto scale the learning rate according to the '
        'actual batch size and the original batch size.')
    parser.add_argument(
        '--no-persistent-workers',
        action='store_true',
        help='whether to disable the persistent_workers option in dataloaders.'
    )
    add_common_args(parser)
    args = parser.parse_args(argv)
    set_local_rank(args)
    return args


def main(argv=None):
    args = parse_args(argv)
    check_amp_device(args)

    # load config
    cfg = Config.fromfile(args.config)

    # merge cli arguments to config
    cfg = merge_train_args(cfg, args)

    # build the runner from config (its runner_type, else MMCoopRunner)
    runner = build_runner(cfg)

    # start training
    runner.train()
    return runner


if __name__ == '__main__':
    main()

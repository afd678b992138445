# Copyright (c) mmcoop contributors. All rights reserved.
"""Images/s on CPU of the PyTorch inference path, the folded PyTorch model,
ONNX Runtime and TorchScript: same model, same images, one run, alternating.

    python tools/deployment/benchmark.py CONFIG CHECKPOINT|none
        [--batch-sizes 1 32] [--rounds 3] [--single-images 4]
        [--threads 2] [--work-dir DIR [--force]] [--cfg-options k=v ...]

``none`` keeps the head's initial weights (speed does not depend on them).
``--work-dir`` keeps the exported ``benchmark.onnx`` / ``benchmark.pt``
there; files of these names are replaced only with ``--force``.
Prints Markdown tables (see docs/deployment.md); the numbers depend on the
machine.
"""
import argparse
import sys
import tempfile

from mmcoop.apis import inference_config, init_model, load_config
from mmcoop.deployment import ExportError, check_export_options, pipeline_steps
from mmcoop.deployment.benchmark import (benchmark_files, compare_speed,
                                         format_report)
from mmcoop.engine.cli import (SpacedDictAction, checkpoint_or_none,
                               positive_int, user_path)
from mmcoop.engine.config_checks import check_outputs_outside_datasets
from mmcoop.utils.checkpoint import CheckpointReadError, UnsafeCheckpointError
from mmcoop.utils.paths import claim_outputs, make_output_dirs


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='CPU speed of the PyTorch and exported mmcoop models')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', type=checkpoint_or_none,
                        help="checkpoint, or 'none'")
    parser.add_argument(
        '--batch-sizes',
        type=positive_int,
        nargs='+',
        default=[1, 32],
        help='batch sizes to time (each >= 1)')
    parser.add_argument(
        '--rounds',
        type=positive_int,
        default=3,
        help='timed rounds after the warm-up (>= 1)')
    parser.add_argument(
        '--single-images',
        type=positive_int,
        default=4,
        help='images timed one by one for batch size 1 (>= 1)')
    parser.add_argument(
        '--threads',
        type=positive_int,
        default=2,
        help='intra-op threads of torch and onnxruntime (>= 1)')
    parser.add_argument(
        '--work-dir',
        type=user_path,
        help='keep the exported files (benchmark.onnx, benchmark.pt) here '
        '(default: a temporary folder)')
    parser.add_argument(
        '--force',
        action='store_true',
        help='replace benchmark.onnx / benchmark.pt in --work-dir')
    parser.add_argument('--cfg-options', nargs='+', action=SpacedDictAction)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    checkpoint = args.checkpoint
    try:
        # before the model is built, a refused run is quick: the packages
        # of the ONNX path (export and onnxruntime), the test pipeline (a
        # fixed input size) and the work dir
        check_export_options('onnx')
        if args.work_dir:
            claim_outputs(
                benchmark_files(args.work_dir),
                inputs=[args.config] + ([checkpoint] if checkpoint else []),
                force=args.force,
                option='--work-dir',
                create_dirs=False)
            # never into the config's dataset folders
            check_outputs_outside_datasets(
                load_config(args.config, args.cfg_options),
                [('output folder (--work-dir)', args.work_dir,
                  "'work_dirs/benchmark'")])
        pipeline_steps(inference_config(args.config, args.cfg_options))
        model = init_model(args.config, checkpoint, 'cpu', args.cfg_options)
    except (ExportError, ValueError, KeyError, CheckpointReadError,
            UnsafeCheckpointError, OSError) as e:
        print(f'error: {e}', file=sys.stderr)
        raise SystemExit(2) from None
    with tempfile.TemporaryDirectory() as tmp:
        work_dir = args.work_dir or tmp
        make_output_dirs(benchmark_files(work_dir), '--work-dir')
        result = compare_speed(model, work_dir, args.batch_sizes, args.rounds,
                               args.single_images, args.threads)
    print(format_report(result))
    return result


if __name__ == '__main__':
    main()

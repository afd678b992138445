# Copyright (c) mmcoop contributors. All rights reserved.
"""Export a trained mmcoop model as one fixed graph (ONNX or TorchScript).

    python tools/deployment/export.py CONFIG CHECKPOINT --out FILE
        [--format {onnx,torchscript}] [--classes NAME ...]
        [--input-format {uint8,normalized}] [--fp16]
        [--opset N]
        [--threshold T] [--force] [--cfg-options k=v ...]

The class features are computed once and stored in the graph: the exported
model has no text encoder. Run it with ``tools/deployment/run_onnx.py FILE
IMAGE...``; see docs/deployment.md for the input/output contract and the
metadata stored in the file.
"""
import argparse
import os
import sys

from mmcoop.apis import (config_classnames, export_model, init_model,
                         load_config)
from mmcoop.deployment import (FORMATS, INPUT_FORMATS, ONNX_OPSETS,
                               ExportError, check_export_options,
                               class_indices)
from mmcoop.engine.cli import (SpacedDictAction, checkpoint_or_none, fraction,
                               user_path)
from mmcoop.engine.config_checks import check_outputs_outside_datasets
from mmcoop.utils.checkpoint import CheckpointReadError, UnsafeCheckpointError
from mmcoop.utils.paths import claim_outputs, make_output_dirs, missing_folders


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Export an mmcoop model (ONNX / TorchScript)')
    parser.add_argument('config', help='config file')
    parser.add_argument(
        'checkpoint',
        type=checkpoint_or_none,
        help="trained checkpoint, or 'none' for a model with nothing learned "
        '(ZeroShotHead)')
    parser.add_argument('--out', type=user_path,
                        required=True, help='output file')
    parser.add_argument('--format', default='onnx', choices=FORMATS)
    parser.add_argument(
        '--classes',
        nargs='+',
        metavar='NAME',
        help='export only these classes (quote names with spaces)')
    parser.add_argument(
        '--input-format',
        default='uint8',
        choices=INPUT_FORMATS,
        help='uint8: (B, H, W, 3) RGB images, normalised inside the model; '
        'normalized: (B, 3, H, W) float, (rgb - mean) / std')
    parser.add_argument(
        '--fp16',
        action='store_true',
        help='image tower in half precision (for GPU runtimes)')
    parser.add_argument(
        '--opset',
        type=int,
        help='ONNX opset, {} to {} (default {})'.format(
            *ONNX_OPSETS, ONNX_OPSETS[0]))
    parser.add_argument(
        '--threshold',
        type=lambda v: v if v == 'calibrated' else fraction(v),
        default=None,
        help='label threshold stored in the model metadata, in [0, 1] '
        '(default: the config\'s model.head.thr, 0.5 unless set), or '
        '`calibrated`: the per-class thresholds the checkpoint\'s training '
        'calibrated (clean protocol)')
    parser.add_argument(
        '--force', action='store_true', help='replace an existing --out')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=SpacedDictAction,
        help='override config settings, key=value')
    return parser.parse_args(argv)


def check_classes(args) -> None:
    """``--classes`` against the class names of the config, before the
    model is built (:func:`mmcoop.deployment.class_indices`, the check
    :func:`export_model` applies to the built model)."""
    if args.classes is None:
        return
    classnames = config_classnames(args.config, args.cfg_options)
    if classnames is not None:
        try:
            class_indices(classnames, args.classes)
        except ValueError as e:
            raise ValueError(f'--classes: {e}') from e


def main(argv=None) -> int:
    args = parse_args(argv)
    precision = 'fp16' if args.fp16 else 'fp32'
    checkpoint = args.checkpoint
    created = []
    try:
        # every option, and the class subset, before the model is built
        check_export_options(args.format, precision, args.input_format,
                             args.opset, out=args.out)
        check_classes(args)
        # never into the config's dataset folders (a later run reads them)
        check_outputs_outside_datasets(
            load_config(args.config, args.cfg_options),
            [('exported model (--out)', args.out,
              "'work_dirs/export/model.onnx'")])
        # before the model build, folders only checked: a run that fails
        # leaves nothing behind (export_model applies the same policy)
        claim_outputs([args.out],
                      inputs=[args.config] + ([checkpoint]
                                              if checkpoint else []),
                      force=args.force,
                      option='--out',
                      create_dirs=False)
        model = init_model(
            args.config,
            checkpoint,
            device='cpu',
            cfg_options=args.cfg_options,
            strict=True)
        created = missing_folders(args.out)
        make_output_dirs([args.out], '--out')
        meta = export_model(
            model,
            args.out,
            format=args.format,
            classes=args.classes,
            input_format=args.input_format,
            precision=precision,
            opset=args.opset,
            thresholds=args.threshold,
            force=args.force)
        if getattr(model, 'calibrated_thresholds', None) is not None and \
                args.threshold != 'calibrated':
            print('note: the checkpoint has per-class thresholds calibrated '
                  'in training; --threshold calibrated stores them instead '
                  f'of {meta["thresholds"][0]:g}.', file=sys.stderr)
    except (ExportError, ValueError, CheckpointReadError,
            UnsafeCheckpointError, OSError) as e:  # OSError: a full disk
        for folder in created:  # the folders this run made, if still empty
            try:
                os.rmdir(folder)
            except OSError:
                break
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(f'Exported {meta["method"]} ({len(meta["classes"])} classes, '
          f'{meta["precision"]}, input {meta["input"]["format"]} '
          f'{meta["input"]["shape"]}) to {args.out}; max |exported - '
          f'PyTorch| on the check batch: {meta["max_abs_diff"]:.2g}')
    return 0


if __name__ == '__main__':
    sys.exit(main())

# Copyright (c) mmcoop contributors. All rights reserved.
"""Multi-label prediction for one or more images.

    python demo/image_demo.py IMAGE [IMAGE ...] CONFIG CHECKPOINT \
        [--threshold 0.5] [--topk 5] [--show-dir DIR [--force]] \
        [--device cpu] [--batch-size N]

Prints, per image, the labels with ``score >= threshold`` (by decreasing
score); ``--threshold calibrated`` labels with the per-class thresholds
that a clean-protocol checkpoint stores. With ``--show-dir`` it saves
``DIR/<image stem>.png``: the image with the top ``--topk`` labels above
the threshold written in the upper-left corner, at the image's own size
(images with a short side below 256 px are enlarged to 256, aspect kept).
Existing files are overwritten only with ``--force``; two images with the
same stem (``a/x.jpg``, ``b/x.png``) are refused rather than written to
one file. The output folders are made only
once the model has loaded and the images have run.
"""
import argparse
import os.path as osp
import sys

import numpy as np
from PIL import Image

from mmcoop.apis import (draw_predictions, inference_model, init_model,
                         load_config, resolve_threshold)
from mmcoop.apis.model_zoo import check_checkpoint_path, is_url
from mmcoop.apis.visualization import threshold_text
from mmcoop.engine.cli import (SpacedDictAction, checkpoint_or_none, fraction,
                               positive_int, torch_device, user_path)
from mmcoop.engine.config_checks import check_outputs_outside_datasets
from mmcoop.utils.paths import claim_outputs, make_output_dirs
from mmcoop.visualization import save_image


def fraction_or_calibrated(text: str):
    """argparse type: a number in [0, 1], or ``calibrated``."""
    return text if text == 'calibrated' else fraction(text)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='mmcoop multi-label image demo')
    parser.add_argument('images', nargs='+', metavar='IMAGE',
                        help='image file(s)')
    parser.add_argument('config', help='config file')
    parser.add_argument(
        'checkpoint',
        type=checkpoint_or_none,
        help="checkpoint file, or 'none' for a model with nothing learned "
        '(ZeroShotHead)')
    parser.add_argument('--threshold', type=fraction_or_calibrated,
                        default=None,
                        help="score threshold in [0, 1], or 'calibrated' "
                        "(the per-class thresholds of a clean-protocol "
                        "checkpoint; default: the config's model.head.thr, "
                        '0.5 unless set)')
    parser.add_argument('--topk', type=positive_int, default=5,
                        help='at most this many labels drawn (>= 1, '
                        'default 5)')
    parser.add_argument('--show-dir', type=user_path, default=None,
                        help='save visualisations here (created if missing)')
    parser.add_argument('--force', action='store_true',
                        help='overwrite existing files in --show-dir')
    parser.add_argument('--device', default='cpu', type=torch_device,
                        help='cpu (default), cuda or cuda:N')
    parser.add_argument('--batch-size', type=positive_int, default=1,
                        help='images per forward pass (>= 1)')
    parser.add_argument('--cfg-options', nargs='+', action=SpacedDictAction,
                        metavar='KEY=VALUE',
                        help='config overrides, e.g. model.head.thr=0.3')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    for path in args.images:
        if osp.isdir(path):
            raise SystemExit(
                f'IMAGE {path!r} is a folder, not an image. Fix: pass the '
                f'files inside it, e.g. {osp.join(path, "*.jpg")}.')
        if not osp.isfile(path):
            raise SystemExit(f'IMAGE {path!r} does not exist.')
    checkpoint = args.checkpoint
    if checkpoint is not None and not is_url(checkpoint):
        try:  # a folder (work dir) is named with the file to pass instead
            check_checkpoint_path(checkpoint, 'CHECKPOINT')
        except OSError as e:
            raise SystemExit(str(e)) from None
    outputs = {}
    if args.show_dir:
        # never into the config's dataset folders (a later run reads them)
        cfg = load_config(args.config, args.cfg_options)
        try:
            check_outputs_outside_datasets(
                cfg, [('drawing folder (--show-dir)', args.show_dir,
                       "'work_dirs/show'")])
        except ValueError as e:
            raise SystemExit(str(e)) from None
        names = [
            osp.join(args.show_dir,
                     osp.splitext(osp.basename(p))[0] + '.png')
            for p in args.images
        ]
        # folders only checked here: they are made once the model has
        # loaded and the images have run (a failure leaves nothing behind)
        claim_outputs(
            names,
            sources=args.images,
            inputs=[*args.images, args.config] + ([checkpoint]
                                                  if checkpoint else []),
            force=args.force,
            option='--show-dir',
            create_dirs=False)
        outputs = dict(zip(args.images, names))
    model = init_model(args.config, checkpoint, device=args.device,
                       cfg_options=args.cfg_options)
    try:
        threshold = resolve_threshold(model, args.threshold)
    except ValueError as e:  # named with its fix: no traceback
        raise SystemExit(f'--threshold: {e}') from None
    classes = model.dataset_meta.get('classes')
    results, saved, failed = [], [], []
    # batch by batch: each image's labels are printed as soon as they are
    # known, and an image that cannot be read is named without losing the
    # others
    size = args.batch_size
    for start in range(0, len(args.images), size):
        batch = args.images[start:start + size]
        try:
            batch_results = inference_model(
                model, batch, batch_size=size, threshold=threshold)
        except Exception as e:  # noqa: BLE001 - named, the others go on
            print(f'error: {", ".join(batch)}: {e}', file=sys.stderr)
            failed.extend(batch)
            continue
        results.extend(batch_results)
        _report(args, batch, batch_results, classes, threshold, outputs,
                saved)
    if failed:
        raise SystemExit(f'error: {len(failed)} of {len(args.images)} '
                         f'image(s) could not be scored: {failed[:5]}')
    return results, saved


def _report(args, paths, results, classes, threshold, outputs, saved):
    """Print (and with --show-dir draw) the labels of ``paths``."""
    if outputs:
        make_output_dirs([outputs[p] for p in paths], '--show-dir')
    for path, result in zip(paths, results):
        print(f'{path}:')
        if not result['labels']:
            top = int(np.argmax(result['scores']))
            print(f'  no label {threshold_text(threshold)} (best: '
                  f"{classes[top] if classes else top} "
                  f"{result['scores'][top]:.4f})")
        for label, name in zip(result['labels'], result['classes']):
            print(f"  {name}: {result['scores'][label]:.4f}")
        if args.show_dir:
            rgb = np.asarray(Image.open(path).convert('RGB'))
            vis = draw_predictions(rgb, result, classes, topk=args.topk,
                                   threshold=threshold)
            out = outputs[path]
            save_image(vis, out)
            saved.append(out)
            print(f'  saved {out}')


if __name__ == '__main__':
    main(sys.argv[1:])

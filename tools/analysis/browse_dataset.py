# Copyright (c) mmcoop contributors. All rights reserved.
"""Look at a config's data as the model gets it: each image after the
pipeline with its labels, the partial-label mask included.

    python tools/analysis/browse_dataset.py CONFIG --output-dir DIR \\
        [--phase {train,val,test}] [--show-number 8] [--cfg-options ...]

One PNG per sample in ``--output-dir`` (``00000.png``, ...; existing files
only with ``--force``): the image after the
pipeline (augmentations included, as the loss sees it), the known
positives, the unknown labels and the number of known negatives, and a
strip of every class coloured by its state (green positive, red negative,
grey unknown). For a partial-label training set a second strip shows the
complete labels, and the positives that the mask hides are listed.
"""
import argparse
import os.path as osp

from mmcoop.apis import load_config
from mmcoop.datasets.inspection import build_dataset_of, sample_view  # noqa
from mmcoop.datasets.utils import check_outside_dataset
from mmcoop.datasets.wrapper import dataset_dirs
from mmcoop.engine.cli import SpacedDictAction, positive_int, user_path
from mmcoop.utils.paths import claim_outputs
from mmcoop.visualization import label_state_figure, save_figure  # noqa


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Draw samples of a config after its pipeline, with '
        'their known / unknown / negative labels')
    parser.add_argument('config', help='config file')
    parser.add_argument(
        '--output-dir', type=user_path, required=True, help='output folder')
    parser.add_argument(
        '--force', action='store_true', help='overwrite existing outputs')
    parser.add_argument(
        '--phase', default='train', choices=['train', 'val', 'test'])
    parser.add_argument(
        '--show-number', type=positive_int, default=8,
        help='number of samples')
    parser.add_argument('--cfg-options', nargs='+', action=SpacedDictAction)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    dataset = build_dataset_of(cfg, args.phase)
    classes = list(dataset.metainfo['classes'])
    # never into the dataset tree (a later run would read the figures)
    check_outside_dataset(args.output_dir, dataset_dirs(dataset),
                          'output folder (--output-dir)',
                          example="'work_dirs/browse'")
    outputs = claim_outputs([
        osp.join(args.output_dir, f'{idx:05d}.png')
        for idx in range(min(args.show_number, len(dataset)))
    ], inputs=[args.config], force=args.force)
    written = []
    for idx, path in enumerate(outputs):
        view = sample_view(dataset, idx)
        fig = label_state_figure(
            view['image'], view['targets'], classes, view['complete'],
            title=f'{args.phase} #{idx}: {osp.basename(view["img_path"])}')
        written.append(save_figure(fig, path))
    print(f'Wrote {len(written)} images to {args.output_dir}')
    return written


if __name__ == '__main__':
    main()

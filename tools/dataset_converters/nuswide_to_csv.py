# Copyright (c) mmcoop contributors. All rights reserved.
"""Write a NUS-WIDE split as a ``MultiLabelCSVDataset`` table.

Reads the official files (``Concepts81.txt``, ``ImageList/*Imagelist.txt``,
``Groundtruth/TrainTestLabels``) with ``NUSWIDEMultiLabel`` and writes
``image,labels`` rows (image relative to ``<root>/Flickr``, concepts joined
by ``;``) plus a ``classes.txt``. With ``--present-only`` the images missing
on disk are left out -- the usual case, as not every Flickr image can still
be downloaded -- and their number is printed. Nothing is written inside the
dataset folder, no existing file is overwritten without ``--force``, and
each file is written atomically (an interrupted run leaves no truncated
table for a dataset to read). A ``classes.txt`` that already lists the
concepts in order is kept as it is, so the second split can be written
next to the first without ``--force``.

Example::

    python tools/dataset_converters/nuswide_to_csv.py data/nus-wide train \\
        data/nus-wide-csv/train.csv --present-only
    python tools/dataset_converters/nuswide_to_csv.py data/nus-wide test \\
        data/nus-wide-csv/test.csv --present-only
    # then (ann_file and data_prefix are relative to data_root):
    # MultiLabelCSVDataset(data_root='data', ann_file='nus-wide-csv/train.csv',
    #   data_prefix='nus-wide/Flickr', classes='data/nus-wide-csv/classes.txt')
"""
import argparse
import csv
import os.path as osp

from mmcoop.datasets import NUSWIDEMultiLabel
from mmcoop.datasets.tri_state import missing_images
from mmcoop.datasets.utils import check_outside_dataset
from mmcoop.utils.checkpoint import atomic_open
from mmcoop.utils.paths import claim_outputs


def _lists(path, names) -> bool:
    """Whether the file ``path`` exists and lists ``names``, one a line."""
    try:
        with open(path) as f:
            return f.read().splitlines() == list(names)
    except (OSError, UnicodeDecodeError):
        return False


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('root', help='the NUS-WIDE folder')
    parser.add_argument('split', choices=('train', 'test'))
    parser.add_argument(
        'out', help='the CSV to write (classes.txt goes '
        'next to it)')
    parser.add_argument(
        '--empty',
        choices=('drop', 'keep'),
        default='drop',
        help='images without a label (default: drop)')
    parser.add_argument(
        '--present-only',
        action='store_true',
        help='leave out the images missing on disk')
    parser.add_argument(
        '--force', action='store_true', help='overwrite existing output files')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    classes_file = osp.join(osp.dirname(osp.abspath(args.out)), 'classes.txt')
    for path in (args.out, classes_file):
        check_outside_dataset(path, [args.root], 'converted table',
                              "'data/nus-wide-csv/train.csv'")
    ds = NUSWIDEMultiLabel(
        args.root, split=args.split, empty=args.empty, check_images=False)
    names = ds.CLASSES
    outputs = [args.out]
    if not _lists(classes_file, names):  # the other split's is kept
        outputs.append(classes_file)
    claim_outputs(outputs, force=args.force)
    infos = [ds.get_data_info_raw(i) for i in range(len(ds))]
    missing = set()
    if args.present_only:
        missing = set(missing_images(i['img_path'] for i in infos)[0])
    with atomic_open(args.out, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['image', 'labels'])
        for info in infos:
            if info['img_path'] not in missing:
                writer.writerow([
                    info['img_id'],
                    ';'.join(names[k] for k in info['gt_label'])
                ])
    if classes_file in outputs:
        with atomic_open(classes_file, 'w') as f:
            f.writelines(c + '\n' for c in names)
    print(f'{args.out}: {len(infos) - len(missing)} images of {len(infos)} '
          f'({len(missing)} missing on disk left out, {ds.num_dropped} '
          f'without a label dropped); {classes_file}: {len(names)} classes'
          + ('.' if classes_file in outputs else ' (kept: it lists them).'))


if __name__ == '__main__':
    main()

# Copyright (c) mmcoop contributors. All rights reserved.
"""Benchmark loading an Open Images human-verified image-level labels CSV.

Writes a synthetic ``ImageID,Source,LabelName,Confidence`` file of the
given number of rows (16-hex-digit ImageIDs, ~5 rows per image, sorted by
ImageID as the official files; 600 label ids, a class-descriptions CSV),
then loads it with :func:`mmcoop.datasets.load_open_images_labels` in a
fresh subprocess and reports wall time and peak resident memory above the
peak after the imports.

Example::

    python tools/analysis/bench_open_images_labels.py /tmp/oi_bench \\
        --rows 9000000
"""
import argparse
import os
import os.path as osp
import resource
import subprocess
import sys
import time

import numpy as np


def _peak_mb() -> float:
    """Peak resident memory of this process so far (Linux: kB -> MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generate(folder: str,
             rows: int,
             num_classes: int = 600,
             rows_per_image: float = 5.2,
             seed: int = 0) -> str:
    """Write ``labels.csv`` and ``descriptions.csv`` into ``folder``
    (each atomically: an interrupted run leaves no truncated file)."""
    from mmcoop.utils.checkpoint import atomic_open
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    mids = [f'/m/0{k:05x}' for k in range(num_classes)]
    with atomic_open(osp.join(folder, 'descriptions.csv'), 'w') as f:
        f.write('LabelName,DisplayName\n')
        f.writelines(f'{m},class {k}\n' for k, m in enumerate(mids))
    num_images = max(1, int(rows / rows_per_image))
    keys = np.sort(rng.integers(0, 2**63, size=num_images, dtype=np.int64))
    per_image = rng.multinomial(rows - num_images,
                                np.full(num_images, 1 / num_images)) + 1
    sources = ('verification', 'crowdsource-verification')
    path = osp.join(folder, 'labels.csv')
    with atomic_open(path, 'w') as f:
        f.write('ImageID,Source,LabelName,Confidence\n')
        chunk = 200_000
        for s in range(0, num_images, chunk):
            lines = []
            for key, n in zip(keys[s:s + chunk], per_image[s:s + chunk]):
                iid = f'{int(key):016x}'
                for c in rng.choice(num_classes, size=n, replace=False):
                    lines.append(f'{iid},{sources[c & 1]},{mids[c]},'
                                 f'{int(c % 3 != 0)}\n')
            f.writelines(lines)
    return path


def measure(folder: str) -> dict:
    """Load in this process (call it in a fresh one)."""
    from mmcoop.datasets.open_images import (load_open_images_labels,
                                             read_class_descriptions)
    base = _peak_mb()  # the imports' peak
    t0 = time.perf_counter()
    names = read_class_descriptions(osp.join(folder, 'descriptions.csv'))
    labels = load_open_images_labels(
        osp.join(folder, 'labels.csv'), {
            m: k
            for k, m in enumerate(names)
        }, names)
    seconds = time.perf_counter() - t0
    held = sum(
        a.nbytes for a in (labels.image_keys, labels.offsets, labels.classes,
                           labels.values)) / 2**20
    return dict(
        rows=labels.num_rows,
        images=len(labels.image_keys),
        seconds=round(seconds, 1),
        peak_rss_above_imports_mb=round(_peak_mb() - base, 1),
        arrays_held_mb=round(held, 1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('folder', help='where the synthetic files go')
    parser.add_argument('--rows', type=int, default=9_000_000)
    parser.add_argument(
        '--measure-only', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_only:
        print(measure(args.folder))
        return
    path = osp.join(args.folder, 'labels.csv')
    existing = [
        p for p in (path, osp.join(args.folder, 'descriptions.csv'))
        if osp.lexists(p)
    ]
    if existing:
        sys.exit(f'{", ".join(existing)} exist(s); nothing was written. '
                 'Fix: give a new or empty folder (nothing is overwritten).')
    t0 = time.perf_counter()
    generate(args.folder, args.rows)
    print(f'generated {args.rows} rows, {osp.getsize(path) / 2**20:.0f} MB '
          f'in {time.perf_counter() - t0:.0f} s')
    out = subprocess.run(
        [sys.executable, __file__, args.folder, '--measure-only'],
        check=True,
        capture_output=True,
        text=True)
    print(out.stdout.strip())


if __name__ == '__main__':
    main()

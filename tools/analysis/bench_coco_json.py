# Copyright (c) mmcoop contributors. All rights reserved.
"""Benchmark loading a COCO-2014-sized ``instances_train2014.json``.

Writes a synthetic annotation file with the structure and size of the real
one (images with urls/dates, polygon and RLE segmentations, bbox, area...),
then loads it in a fresh subprocess per method and reports wall time and
peak resident memory:

- ``mmcoop``: :func:`mmcoop.datasets.load_coco_multilabel` (field-dropping
  JSON object hook, what ``COCO2014MultiLabel`` uses);
- ``dataset``: the whole ``COCO2014MultiLabel(...)`` construction (parse +
  per-image ``gt_score`` + mmengine serialisation);
- ``json``: plain ``json.load`` of the full file plus label extraction;
- ``pycocotools``: ``COCO(ann_file)`` (index building only), if installed.

Example::

    python tools/analysis/bench_coco_json.py /tmp/coco_bench \\
        --num-images 82783 --num-annotations 604907 --target-mb 450
"""
import argparse
import json
import os
import os.path as osp
import resource
import subprocess
import sys
import time

import numpy as np

METHODS = ('mmcoop', 'dataset', 'json', 'pycocotools')


def _rss_mb() -> float:
    with open('/proc/self/statm') as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf('SC_PAGE_SIZE') / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generate(ann_file: str,
             num_images: int,
             num_annotations: int,
             target_mb: float,
             seed: int = 0) -> dict:
    """Write a synthetic COCO instances file of about ``target_mb`` MB
    (atomically: an interrupted run leaves no truncated file that the next
    run would reuse)."""
    from mmcoop.datasets import COCO2014_CATEGORIES, COCO2014_CATEGORY_IDS
    from mmcoop.utils.checkpoint import atomic_open
    rng = np.random.default_rng(seed)
    os.makedirs(osp.dirname(osp.abspath(ann_file)), exist_ok=True)
    image_ids = np.sort(rng.choice(581929, size=num_images, replace=False))
    image_ids += 1
    heights = rng.choice([480, 427, 640, 375, 500], size=num_images)
    # ~1% crowd annotations (RLE), the rest polygons; calibrate the polygon
    # length so that the file reaches the target size
    fixed_img = 260
    fixed_ann = 150
    budget = target_mb * 2**20 - num_images * fixed_img - \
        num_annotations * fixed_ann
    mean_numbers = max(6, budget / num_annotations / 7.0)
    pool = []
    for _ in range(4096):
        n = int(np.clip(rng.gamma(1.5, mean_numbers / 1.5), 6, 2000))
        n -= n % 2
        pts = rng.uniform(0, 640, size=n)
        pool.append('[[' + ','.join(f'{v:.2f}' for v in pts) + ']]')
    rle_pool = []
    for _ in range(64):
        counts = rng.integers(0, 2000, size=int(rng.integers(50, 600)))
        rle_pool.append('{"counts":[' + ','.join(map(str, counts)) +
                        '],"size":[480,640]}')
    cats = np.array(COCO2014_CATEGORY_IDS)
    ann_img = rng.choice(
        image_ids[:int(num_images * 0.992)],
        size=num_annotations)  # ~0.8% images unannotated
    ann_cat = cats[rng.integers(0, 80, size=num_annotations)]
    crowd = rng.random(num_annotations) < 0.01
    seg_idx = rng.integers(0, len(pool), size=num_annotations)
    boxes = rng.uniform(0, 400, size=(num_annotations, 4))
    areas = rng.uniform(10, 200000, size=num_annotations)

    with atomic_open(ann_file, 'w') as f:
        f.write('{"info":{"description":"synthetic COCO 2014 (mmcoop '
                'bench)","url":"http://cocodataset.org","version":"1.0",'
                '"year":2014,"contributor":"mmcoop","date_created":'
                '"2017/09/01"},"licenses":[{"url":"http://creativecommons.'
                'org/licenses/by-nc-sa/2.0/","id":1,"name":"Attribution-'
                'NonCommercial-ShareAlike License"}],"images":[')
        chunk = []
        for k, (iid,
                h) in enumerate(zip(image_ids.tolist(), heights.tolist())):
            name = f'COCO_train2014_{iid:012d}.jpg'
            chunk.append(
                f'{{"license":{k % 8 + 1},"file_name":"{name}","coco_url":'
                f'"http://images.cocodataset.org/train2014/{name}",'
                f'"height":{h},"width":640,"date_captured":"2013-11-14 '
                f'16:28:13","flickr_url":"http://farm4.staticflickr.com/'
                f'3153/{iid}_164f0c0b83_z.jpg","id":{iid}}}')
        f.write(','.join(chunk))
        f.write('],"annotations":[')
        for start in range(0, num_annotations, 20000):
            chunk = []
            for i in range(start, min(start + 20000, num_annotations)):
                seg = rle_pool[i % 64] if crowd[i] else pool[seg_idx[i]]
                b = boxes[i]
                chunk.append(
                    f'{{"segmentation":{seg},"area":{areas[i]:.4f},'
                    f'"iscrowd":{int(crowd[i])},"image_id":{ann_img[i]},'
                    f'"bbox":[{b[0]:.2f},{b[1]:.2f},{b[2]:.2f},{b[3]:.2f}],'
                    f'"category_id":{ann_cat[i]},"id":{i + 1}}}')
            if start:
                f.write(',')
            f.write(','.join(chunk))
        f.write('],"categories":[')
        f.write(','.join(
            f'{{"supercategory":"thing","id":{cid},"name":"{name}"}}'
            for cid, name in zip(COCO2014_CATEGORY_IDS, COCO2014_CATEGORIES)))
        f.write(']}')
    return dict(
        size_mb=osp.getsize(ann_file) / 2**20,
        num_images=num_images,
        num_annotations=num_annotations)


def worker(method: str, ann_file: str) -> dict:
    """Load ``ann_file`` with ``method``; runs in a fresh process."""
    if method == 'mmcoop':
        from mmcoop.datasets import load_coco_multilabel
    elif method == 'dataset':
        from mmcoop.datasets import COCO2014MultiLabel
    elif method == 'pycocotools':
        from pycocotools.coco import COCO
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    if method == 'mmcoop':
        n = len(load_coco_multilabel(ann_file).images)
    elif method == 'dataset':
        root = osp.dirname(osp.dirname(osp.abspath(ann_file)))
        n = len(COCO2014MultiLabel(root, split='train'))
    elif method == 'json':
        with open(ann_file) as f:
            data = json.load(f)
        labels = {}
        for a in data['annotations']:
            labels.setdefault(a['image_id'], set()).add(a['category_id'])
        n = len(labels)
    elif method == 'pycocotools':
        import contextlib
        import io
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(ann_file)
        n = len(coco.imgToAnns)
    else:
        raise ValueError(method)
    seconds = time.perf_counter() - t0
    return dict(
        method=method,
        seconds=round(seconds, 2),
        images=n,
        rss_before_mb=round(rss0),
        peak_rss_mb=round(_peak_mb()),
        peak_increase_mb=round(_peak_mb() - rss0))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        'root',
        help='folder for annotations/'
        'instances_train2014.json (created if missing)')
    parser.add_argument('--num-images', type=int, default=82783)
    parser.add_argument('--num-annotations', type=int, default=604907)
    parser.add_argument('--target-mb', type=float, default=450)
    parser.add_argument('--methods', default=','.join(METHODS))
    parser.add_argument('--regenerate', action='store_true')
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    args = parser.parse_args()
    ann_file = osp.join(args.root, 'annotations', 'instances_train2014.json')
    if args.worker:
        print(json.dumps(worker(args.worker, ann_file)))
        return
    if args.regenerate or not osp.exists(ann_file):
        t0 = time.perf_counter()
        info = generate(ann_file, args.num_images, args.num_annotations,
                        args.target_mb)
        print(f'generated {ann_file}: {info["size_mb"]:.0f} MB, '
              f'{info["num_images"]} images, {info["num_annotations"]} '
              f'annotations in {time.perf_counter() - t0:.1f} s')
    size = osp.getsize(ann_file) / 2**20
    print(f'file: {ann_file} ({size:.0f} MB)')
    print('| method | time (s) | peak RSS (MB) | peak increase (MB) | '
          'images |')
    print('|---|---|---|---|---|')
    for method in args.methods.split(','):
        proc = subprocess.run(
            [sys.executable, __file__, args.root, '--worker', method],
            capture_output=True,
            text=True)
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-1:]
            print(f'| {method} | failed: {tail} | | | |')
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f'| {r["method"]} | {r["seconds"]} | {r["peak_rss_mb"]} | '
              f'{r["peak_increase_mb"]} | {r["images"]} |')


if __name__ == '__main__':
    main()

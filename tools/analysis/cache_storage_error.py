# Copyright (c) mmcoop contributors. All rights reserved.
"""How much a feature-cache storage dtype changes a model's outputs.

    python tools/analysis/cache_storage_error.py CONFIG --cache-root DIR
        [--dtypes float16 int8] [--num-images N] [--cfg-options k=v ...]

Caches the config's val dataset as float32 and as each dtype under
``DIR`` (reused on a second run) and prints, per dtype, the largest
difference of the logits and scores of one model (built once) against the
float32 cache. The numbers in docs/benchmarks.md come from this tool.
"""
import argparse
import json
import os.path as osp

from mmcoop.apis import load_config
from mmcoop.benchmark.cache_storage import storage_error
from mmcoop.datasets.feature_cache.store import DTYPES
from mmcoop.engine.cli import SpacedDictAction, positive_int, user_path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='mmcoop: logit/score error of feature-cache dtypes')
    parser.add_argument('config', help='config file path')
    parser.add_argument(
        '--cache-root', type=user_path,
        required=True, help='folder for the caches')
    parser.add_argument(
        '--dtypes',
        nargs='+',
        default=['float16', 'int8'],
        choices=sorted(DTYPES),
        help='storage dtypes compared with float32')
    parser.add_argument(
        '--num-images',
        type=positive_int,
        help='score the first N val images only')
    parser.add_argument('--cfg-options', nargs='+', action=SpacedDictAction)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if osp.exists(args.cache_root) and not osp.isdir(args.cache_root):
        raise NotADirectoryError(
            f'--cache-root {args.cache_root!r} is a file. Fix: give a folder '
            '(created if missing; the caches are built below it).')
    cfg = load_config(args.config, args.cfg_options)
    res = storage_error(cfg, args.cache_root, args.dtypes, args.num_images)
    print(json.dumps(res, indent=1))
    return res


if __name__ == '__main__':
    main()

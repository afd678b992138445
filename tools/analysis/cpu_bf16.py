# Copyright (c) mmcoop contributors. All rights reserved.
"""What bf16 autocast of the frozen towers on CPU does to a model.

    python tools/analysis/cpu_bf16.py CONFIG [--num-images N]
        [--batch-size B] [--iters K] [--cfg-options k=v ...]

Builds the config's model twice with seed 0, fp32 and with
``autocast_dtype='bf16', autocast_cpu=True`` on its towers (the image
tower, and the text tower of a prompt head), and prints the
largest logit and score differences on the val images and the
forward+backward step time of each (alternating). The numbers in
docs/benchmarks.md come from this tool.
"""
import argparse
import json

from mmcoop.apis import load_config
from mmcoop.benchmark.autocast_error import cpu_bf16_error
from mmcoop.engine.cli import SpacedDictAction, positive_int


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='mmcoop: logit error and step time of CPU bf16 towers')
    parser.add_argument('config', help='config file path')
    parser.add_argument(
        '--num-images',
        type=positive_int,
        help='score the first N val images only')
    parser.add_argument('--batch-size', type=positive_int, default=16)
    parser.add_argument('--iters', type=positive_int, default=5)
    parser.add_argument('--cfg-options', nargs='+', action=SpacedDictAction)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    res = cpu_bf16_error(
        cfg, args.num_images, args.batch_size, iters=args.iters)
    print(json.dumps(res, indent=1))
    return res


if __name__ == '__main__':
    main()

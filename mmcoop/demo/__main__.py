# Copyright (c) mmcoop contributors. All rights reserved.
"""``python -m mmcoop.demo ROOT``: write the demo tree and print its
chance-level mAP."""
import argparse
from typing import Dict, Optional, Sequence

from mmcoop.engine.cli import nonnegative_int, positive_int
from .shapes import chance_level_map, generate_demo_coco, read_manifest


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    """Command line entry point."""
    parser = argparse.ArgumentParser(
        prog='python -m mmcoop.demo',
        description='Write a small COCO-2014-format multi-label demo set.')
    parser.add_argument('root', help='output folder')
    parser.add_argument('--num-train', type=positive_int, default=256)
    parser.add_argument('--num-val', type=positive_int, default=128)
    parser.add_argument('--image-size', type=positive_int, default=112)
    parser.add_argument('--num-classes', type=positive_int, default=10)
    parser.add_argument('--seed', type=nonnegative_int, default=0)
    parser.add_argument(
        '--num-draws',
        type=positive_int,
        default=200,
        help='random score draws for the chance-level mAP')
    args = parser.parse_args(argv)
    try:  # the generator's own range checks (e.g. --image-size >= 32) and
        # its refusal of a folder it did not make, as option errors
        root = generate_demo_coco(args.root, args.num_train, args.num_val,
                                  args.seed, args.image_size,
                                  args.num_classes)
    except (ValueError, FileExistsError) as e:
        parser.error(str(e))
    manifest = read_manifest(root)
    chance = chance_level_map(root, 'val', args.num_draws, args.seed)
    print(f'demo dataset: {root}')
    print(f'classes ({len(manifest["classes"])}): '
          f'{", ".join(manifest["classes"])}')
    for split, c in manifest['counts'].items():
        print(f'{split}: {c["images"]} images ({c["images_with_objects"]} '
              f'with objects), {c["annotations"]} annotations')
    print(f'chance-level val mAP (random scores, {args.num_draws} draws): '
          f'{chance:.2f}')
    return dict(root=root, chance_map=chance, **manifest)


if __name__ == '__main__':
    main()

# Copyright (c) mmcoop contributors. All rights reserved.
"""Write the paper's numbers (``mmcoop/experiments/paper_results.yml``) into
every ``configs/<method>/metafile.yml`` and the results table of every
``configs/<method>/README.md`` from its metafile (nothing in those tables
is typed by hand).

    python .dev_scripts/gen_model_zoo_tables.py [--check]

``--check`` writes nothing and exits 1 if a file is out of date (the
tests run it). The format: :mod:`mmcoop.apis.metafile`.
"""
import argparse
import os.path as osp
import sys

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)

from mmcoop.apis.metafile import update_model_zoo  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        '--check',
        action='store_true',
        help='only report files that are out of date')
    args = parser.parse_args(argv)
    changed = update_model_zoo(osp.join(REPO, 'configs'), check=args.check)
    for path in changed:
        print(f'{"out of date" if args.check else "updated"}: '
              f'{osp.relpath(path, REPO)}')
    if args.check and changed:
        print('Fix: python .dev_scripts/gen_model_zoo_tables.py')
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())

# Copyright (c) mmcoop contributors. All rights reserved.
"""Metadata lives in setup.cfg; this file only adds the ``.mim`` extension.

As mmpretrain does (``add_mim_extension`` in its ``setup.py``), the
configs, the tools and ``model-index.yml`` are put into ``mmcoop/.mim`` so
that an installed mmcoop (wheel, ``pip install .``) carries them and
``mim train/test/search/list/download mmcoop`` find them: copies for a
wheel or sdist, symbolic links for an editable install. ``MANIFEST.in``
lists what of ``mmcoop/.mim`` goes into the distributions.
"""
import os
import os.path as osp
import platform
import shutil
import sys

from setuptools import setup

# what mim looks for in <package>/.mim
MIM_FILES = ('configs', 'tools', 'model-index.yml')


def add_mim_extension():
    """Fill ``mmcoop/.mim`` with ``MIM_FILES`` (only ``mmcoop/.mim`` is
    written; it is generated, listed in ``.gitignore``)."""
    if 'develop' in sys.argv or 'editable_wheel' in sys.argv:
        # `pip install -e .`: links keep the installed extension in sync
        mode = 'copy' if platform.system() == 'Windows' else 'symlink'
    elif ('sdist' in sys.argv or 'bdist_wheel' in sys.argv
          or platform.system() == 'Windows'):
        mode = 'copy'
    else:
        return
    repo_path = osp.dirname(osp.abspath(__file__))
    mim_path = osp.join(repo_path, 'mmcoop', '.mim')
    os.makedirs(mim_path, exist_ok=True)
    for filename in MIM_FILES:
        src_path = osp.join(repo_path, filename)
        if not osp.exists(src_path):
            continue
        tar_path = osp.join(mim_path, filename)
        if osp.isfile(tar_path) or osp.islink(tar_path):
            os.remove(tar_path)
        elif osp.isdir(tar_path):
            shutil.rmtree(tar_path)
        if mode == 'symlink':
            os.symlink(osp.relpath(src_path, mim_path), tar_path)
        elif osp.isfile(src_path):
            shutil.copyfile(src_path, tar_path)
        else:
            shutil.copytree(
                src_path,
                tar_path,
                ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))


if __name__ == '__main__':
    add_mim_extension()
    setup()

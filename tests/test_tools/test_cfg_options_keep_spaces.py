# Copyright (c) mmcoop contributors. All rights reserved.
"""Every script that takes ``--cfg-options`` keeps spaces inside values
(class names such as ``traffic light``), as tools/train.py and
tools/test.py do (MMEngine's own ``DictAction`` would delete them), or
forwards the option verbatim to a script that does."""
import argparse
import glob
import os.path as osp

import pytest
from mmengine.config import DictAction

from _common import ROOT, load_tool

SCRIPTS = sorted(
    osp.relpath(p, ROOT)
    for pattern in ('tools/**/*.py', 'demo/*.py')
    for p in glob.glob(osp.join(ROOT, pattern), recursive=True)
    if '--cfg-options' in open(p).read())


class _Parsed(Exception):
    pass


def _parser_of(relpath, monkeypatch):
    """The argparse parser a script builds in ``parse_args``."""
    module = load_tool(relpath)
    seen = {}

    def capture(self, *args, **kwargs):
        seen['parser'] = self
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, 'parse_args', capture)
    with pytest.raises(_Parsed):
        module.parse_args([])
    return seen['parser']


def test_the_scripts_are_found():
    assert {'tools/train.py', 'tools/test.py', 'demo/image_demo.py',
            'tools/deployment/export.py'} <= set(SCRIPTS)


@pytest.mark.parametrize('relpath', SCRIPTS)
def test_cfg_options_keep_spaces(relpath, monkeypatch):
    parser = _parser_of(relpath, monkeypatch)
    action, = [a for a in parser._actions if '--cfg-options' in
               a.option_strings]
    option = 'model.head.classnames=[traffic light,stop sign]'
    namespace = argparse.Namespace()
    action(parser, namespace, [option])
    if isinstance(action, DictAction):  # parsed here
        assert getattr(namespace, action.dest) == {
            'model.head.classnames': ['traffic light', 'stop sign']
        }
    else:  # forwarded verbatim to tools/train.py (tools/sweep.py)
        assert getattr(namespace, action.dest) == [option]

# Copyright (c) mmcoop contributors. All rights reserved.
"""The checkpoint named on the command line wins over a ``load_from`` in
``--cfg-options`` (e.g. a sweep's initial weights, passed to both tools):
tools/test.py tests its CHECKPOINT argument, ``tools/train.py --resume``
continues from the work dir's latest checkpoint (or the path given)."""
import os.path as osp
import sys

from _common import load_tool
from mmengine.config import Config

from mmcoop.engine.cli import merge_test_args, merge_train_args

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import _tool_helpers as H  # noqa: E402

train_tool = load_tool('tools/train.py', 'mmcoop_tools_train_ckpt_args')
test_tool = load_tool('tools/test.py', 'mmcoop_tools_test_ckpt_args')


def _test_cfg(*argv):
    args = test_tool.parse_args([H.DEMO_CONFIG, *argv])
    return merge_test_args(Config.fromfile(H.DEMO_CONFIG), args)


def _train_cfg(*argv):
    args = train_tool.parse_args([H.DEMO_CONFIG, *argv])
    return merge_train_args(Config.fromfile(H.DEMO_CONFIG), args)


def test_test_checkpoint_wins_over_cfg_options_load_from():
    cfg = _test_cfg('best_epoch_3.pth', '--cfg-options', 'load_from=i.pth')
    assert (cfg.load_from, cfg.resume) == ('best_epoch_3.pth', False)
    # without a checkpoint argument the config's load_from is tested
    assert _test_cfg('--cfg-options', 'load_from=a.pth').load_from == \
        'a.pth'


def test_resume_wins_over_cfg_options_load_from():
    # the work dir's latest checkpoint, else load_from (MMCoopRunner.
    # load_or_resume; before: load_from was dropped)
    cfg = _train_cfg('--resume', '--cfg-options', 'load_from=init.pth')
    assert (cfg.resume, cfg.load_from) == ('auto', 'init.pth')
    cfg = _train_cfg('--resume', 'epoch_2.pth', '--cfg-options',
                     'load_from=init.pth')
    assert (cfg.resume, cfg.load_from) == (True, 'epoch_2.pth')
    # no --resume: load_from is the initial weights of the run
    cfg = _train_cfg('--cfg-options', 'load_from=init.pth')
    assert (cfg.resume, cfg.load_from) == (False, 'init.pth')

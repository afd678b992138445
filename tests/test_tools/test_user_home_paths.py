# Copyright (c) mmcoop contributors. All rights reserved.
"""``~`` in the tools' path options is the user's home, as for the config's
``data_root``: the shell leaves it alone in a quoted word and after ``=``
(``--work-dir=~/wd``), and the tools made a folder named ``~`` in the
current folder or did not find ``~/e1.pth``."""
import os
import os.path as osp

import pytest
from _common import load_tool
from mmengine.config import Config

from mmcoop.engine.cli import (check_test_inputs_and_outputs, merge_test_args,
                               merge_train_args)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO_CONFIG = osp.join(
    REPO, 'configs', 'demo',
    'positivecoop_clip-tiny-vit_1xb16-coslr-20e_demo-shapes-p50.py')

train_tool = load_tool('tools/train.py', 'mmcoop_tools_train_user_home')
test_tool = load_tool('tools/test.py', 'mmcoop_tools_test_user_home')


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / 'home'
    home.mkdir()
    monkeypatch.setenv('HOME', str(home))
    cwd = tmp_path / 'cwd'
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return str(home)


def test_test_tool_expands_home(home):
    """Before: ``~/e1.pth`` 'does not exist'; ``--out``, ``--show-dir``
    and ``--work-dir`` went to ``./~/``."""
    with open(osp.join(home, 'e1.pth'), 'wb') as f:
        f.write(b'not read by the checks')
    args = test_tool.parse_args([
        DEMO_CONFIG, '~/e1.pth', '--work-dir=~/wd', '--out=~/r.pkl',
        '--show-dir', '~/show'
    ])
    assert args.checkpoint == osp.join(home, 'e1.pth')
    assert args.out == osp.join(home, 'r.pkl')
    assert args.show_dir == osp.join(home, 'show')
    cfg = merge_test_args(Config.fromfile(DEMO_CONFIG), args)
    assert cfg.work_dir == osp.join(home, 'wd')
    assert cfg.load_from == osp.join(home, 'e1.pth')
    check_test_inputs_and_outputs(args, cfg)  # the checkpoint is found
    assert os.listdir('.') == []  # no './~'


def test_train_tool_expands_home(home):
    args = train_tool.parse_args(
        [DEMO_CONFIG, '--work-dir=~/wd', '--resume', '~/wd/epoch_1.pth'])
    assert args.work_dir == osp.join(home, 'wd')
    cfg = merge_train_args(Config.fromfile(DEMO_CONFIG), args)
    assert cfg.work_dir == osp.join(home, 'wd')
    assert cfg.load_from == osp.join(home, 'wd', 'epoch_1.pth')
    # the config's own work_dir (or one set with --cfg-options)
    args = train_tool.parse_args(
        [DEMO_CONFIG, '--cfg-options', 'work_dir=~/from_options'])
    assert merge_train_args(Config.fromfile(DEMO_CONFIG),
                            args).work_dir == osp.join(home, 'from_options')
    args = train_tool.parse_args([DEMO_CONFIG])
    cfg = Config.fromfile(DEMO_CONFIG)
    cfg.work_dir = '~/from_cfg'
    assert merge_train_args(cfg, args).work_dir == osp.join(
        home, 'from_cfg')
    # '--resume' alone still resumes from the work dir
    assert train_tool.parse_args([DEMO_CONFIG, '--resume']).resume == 'auto'


@pytest.mark.parametrize('script, argv, dest', [
    ('tools/sweep.py', ['--out', '~/sweep'], 'out'),
    ('tools/analysis/analyze_results.py',
     [DEMO_CONFIG, 'r.pkl', '--out-dir', '~/a'], 'out_dir'),
    ('tools/analysis/browse_dataset.py',
     [DEMO_CONFIG, '--output-dir', '~/b'], 'output_dir'),
    ('tools/deployment/export.py',
     [DEMO_CONFIG, '~/e1.pth', '--out', '~/m.onnx'], 'out'),
    ('tools/deployment/benchmark.py',
     [DEMO_CONFIG, 'none', '--work-dir', '~/bench'], 'work_dir'),
    ('demo/image_demo.py',
     ['i.png', DEMO_CONFIG, '~/e1.pth', '--show-dir', '~/show'], 'show_dir'),
])
def test_output_options_of_the_other_tools_expand_home(home, script, argv,
                                                       dest):
    parsed = load_tool(script).parse_args(argv)
    args = parsed[1] if isinstance(parsed, tuple) else parsed  # sweep
    assert getattr(args, dest).startswith(home + os.sep)
    if getattr(args, 'checkpoint', None):
        assert args.checkpoint == osp.join(home, 'e1.pth')


def test_a_home_that_cannot_be_expanded_is_named(home, capsys):
    with pytest.raises(SystemExit):
        test_tool.parse_args(
            [DEMO_CONFIG, 'none', '--out', '~no_such_user_mmcoop/r.pkl'])
    err = capsys.readouterr().err
    assert '--out' in err and 'cannot be expanded' in err


def test_the_python_api_expands_home(home):
    """``init_model('~/exp.py', '~/e1.pth')`` as the tools: the config
    (:func:`load_config`) and the checkpoint (:func:`fetch_checkpoint`,
    which ``init_model`` reads them with) are found in the home (before:
    'not a file' and 'does not exist')."""
    import torch

    from mmcoop.apis import fetch_checkpoint
    from mmcoop.apis.inference import load_config
    path = osp.join(home, 'e1.pth')
    torch.save({'state_dict': {}}, path)
    assert fetch_checkpoint('~/e1.pth') == path
    cfg = load_config(DEMO_CONFIG)
    cfg.dump(osp.join(home, 'exp.py'))
    assert load_config('~/exp.py').model.head.type == cfg.model.head.type

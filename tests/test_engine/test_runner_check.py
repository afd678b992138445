# Copyright (c) mmcoop contributors. All rights reserved.
"""MMEngine's plain ``Runner.from_cfg`` ignores ``runner_type`` and with it
every key ``MMCoopRunner.from_cfg`` interprets: the ``RunnerCheckHook``
every mmcoop config carries stops such a run before anything loads or
trains; under ``MMCoopRunner`` it does nothing."""
import os
import os.path as osp

import pytest
import torch
from _common import toy_runtime_cfg
from mmengine.config import Config
from mmengine.runner import Runner

from mmcoop.engine import MMCoopRunner
from mmcoop.engine.hooks import RunnerTypeError

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
RUNTIME = osp.join(REPO, 'configs', '_base_', 'default_runtime.py')


def _cfg(work_dir):
    """The shipped runtime (its default hooks) around the toy model, with
    an mmcoop key a plain runner would drop."""
    return toy_runtime_cfg(work_dir)


def test_plain_runner_is_stopped_before_training(tmp_path):
    assert Config.fromfile(RUNTIME).default_hooks.mmcoop_runner == dict(
        type='RunnerCheckHook')
    cfg = _cfg(tmp_path / 'plain')
    torch.manual_seed(0)
    runner = Runner.from_cfg(cfg)
    before = runner.model.linear.weight.detach().clone()
    with pytest.raises(RunnerTypeError) as info:
        runner.train()
    message = str(info.value)
    for words in ("['checkpoint_check']", 'mmcoop.registry import RUNNERS',
                  'MMCoopRunner.from_cfg(cfg)', "default_hooks['mmcoop_"):
        assert words in message, message
    torch.testing.assert_close(runner.model.linear.weight, before)
    assert not [f for f in os.listdir(tmp_path / 'plain')
                if f.endswith('.pth')]


def test_mmcoop_runner_passes_the_check(tmp_path):
    cfg = _cfg(tmp_path / 'mmcoop')
    runner = MMCoopRunner.from_cfg(cfg)
    assert any(type(h).__name__ == 'RunnerCheckHook' for h in runner.hooks)
    runner.train()
    assert osp.isfile(tmp_path / 'mmcoop' / 'epoch_1.pth')


def test_get_started_notebook_call_builds_the_mmcoop_runner(tmp_path):
    """The Python snippet of docs/get_started.md builds an MMCoopRunner
    from the demo config (built here, not trained)."""
    with open(osp.join(REPO, 'docs', 'get_started.md')) as f:
        text = f.read()
    snippet = text.split('```python\n', 1)[1].split('```', 1)[0]
    assert 'from mmcoop.registry import RUNNERS' in snippet
    config = snippet.split("Config.fromfile('", 1)[1].split("'", 1)[0]
    from mmcoop.registry import RUNNERS
    cfg = Config.fromfile(osp.join(REPO, config))
    cfg.work_dir = str(tmp_path / 'notebook')
    runner = RUNNERS.build(cfg)
    assert isinstance(runner, MMCoopRunner)


@pytest.mark.parametrize('scope', ['mmengine', 'mmpretrain', 'mmcoop'])
def test_every_runner_registry_builds_the_mmcoop_runner(tmp_path, scope):
    """mmpretrain's tools/train.py and tools/test.py build with MMEngine's
    root ``RUNNERS``: ``runner_type`` must name ``MMCoopRunner`` so that
    every registry finds it (a bare name was a KeyError there)."""
    import importlib
    registry = importlib.import_module(f'{scope}.registry').RUNNERS
    runner = registry.build(_cfg(tmp_path / scope))
    assert type(runner) is MMCoopRunner


def test_tools_build_mmcoop_runner_without_runner_type(tmp_path):
    """tools/train.py and tools/test.py build through ``build_runner``: a
    config that does not inherit default_runtime.py (no ``runner_type``)
    still gets MMCoopRunner, which interprets mmcoop's keys (MMEngine's
    default Runner dropped them); a ``runner_type`` of the config wins."""
    from mmcoop.engine.cli import build_runner
    cfg = _cfg(tmp_path / 'bare')
    cfg.pop('runner_type')
    assert type(build_runner(cfg)) is MMCoopRunner
    for tool in ('train.py', 'test.py'):
        with open(osp.join(REPO, 'tools', tool)) as f:
            source = f.read()
        assert 'build_runner(cfg)' in source and 'Runner.from_cfg' not in \
            source.split('"""', 2)[2], tool

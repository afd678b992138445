# Copyright (c) mmcoop contributors. All rights reserved.
"""FormatOnceConfig: the runner's config text is formatted by yapf once,
not at every checkpoint save, and always equals Config.pretty_text."""
import mmengine.config.config as config_module
import torch
from mmengine.config import Config

from mmcoop.engine.config_text import FormatOnceConfig


def _count_yapf(monkeypatch):
    calls = []
    original = config_module.FormatCode

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(config_module, 'FormatCode', counting)
    return calls


def test_pretty_text_is_memoised_and_exact(monkeypatch):
    cfg = Config(dict(model=dict(type='A', depth=[1, 2]), lr=0.1, name='x'))
    expected = cfg.pretty_text
    calls = _count_yapf(monkeypatch)
    memo = FormatOnceConfig.from_config(cfg)
    assert [memo.pretty_text for _ in range(5)] == [expected] * 5
    assert len(calls) == 1
    # a changed config is formatted again, never served stale
    memo.lr = 0.2
    assert memo.pretty_text == Config(memo.to_dict()).pretty_text
    assert 'lr = 0.2' in memo.pretty_text
    assert len(calls) == 3  # once for memo, once for the reference Config
    assert memo.dump() == memo.pretty_text


def test_runner_formats_the_config_once(tmp_path, monkeypatch):
    from _common import toy_runner
    cfg = Config(dict(model=dict(type='ToyModel'), note='config text'))
    calls = _count_yapf(monkeypatch)
    runner = toy_runner(tmp_path / 'work', max_epochs=3, cfg=cfg)
    assert isinstance(runner.cfg, FormatOnceConfig)
    runner.train()
    # dump + log + runtime info + 3 checkpoint saves: one yapf run
    assert len(calls) == 1
    ckpt = torch.load(tmp_path / 'work' / 'epoch_3.pth', weights_only=False)
    assert ckpt['meta']['cfg'] == cfg.pretty_text
    assert "note = 'config text'" in ckpt['meta']['cfg']

# Copyright (c) mmcoop contributors. All rights reserved.
"""DemoShapesDataset writes the demo tree only where the demo lives, and
DemoResultHook reports chance level only for the demo tree."""
import os
import os.path as osp
import re
from types import SimpleNamespace

import pytest
from mmengine.logging import MMLogger

from mmcoop.datasets import COCO2014MultiLabel, PartialLabelDataset
from mmcoop.demo import (DEMO_ROOT, MANIFEST, DemoResultHook,
                         DemoShapesDataset, chance_level_map,
                         generate_demo_coco)
from mmcoop.registry import DATASETS, HOOKS

SMALL = dict(num_train=16, num_val=8, image_size=48)


def listing(root):
    return sorted(
        osp.relpath(osp.join(d, f), root) for d, _, fs in os.walk(root)
        for f in fs)


def test_generated_at_the_default_root_on_first_use(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ds = DATASETS.build(dict(type='DemoShapesDataset', split='val', **SMALL))
    assert ds.is_demo_tree and 0 < len(ds) <= 8
    assert osp.isfile(osp.join(tmp_path, DEMO_ROOT, MANIFEST))
    # the same tree as by hand
    ref = generate_demo_coco(str(tmp_path / 'by_hand'), **SMALL)
    assert listing(osp.join(tmp_path, DEMO_ROOT)) == listing(ref)


def test_other_data_root_is_read_not_written(tmp_path):
    """A config inheriting the demo config with data_root pointing at the
    user's data: nothing is generated into it."""
    with pytest.raises(FileNotFoundError, match='annotation file'):
        DemoShapesDataset(str(tmp_path / 'my_coco'), split='val', **SMALL)
    assert not osp.exists(tmp_path / 'my_coco')
    # an existing COCO tree of the user's is read as COCO-2014
    user = generate_demo_coco(str(tmp_path / 'user'), **SMALL)
    os.remove(osp.join(user, MANIFEST))  # now it is just a COCO tree
    before = listing(user)
    ds = DemoShapesDataset(user, split='val', **SMALL)
    assert len(ds) == len(COCO2014MultiLabel(user, split='val'))
    assert not ds.is_demo_tree and listing(user) == before
    # explicit opt-in elsewhere
    other = DemoShapesDataset(
        str(tmp_path / 'demo'), split='train', generate=True, **SMALL)
    assert other.is_demo_tree


def _run_hook(val_dataset, rank=0, mAP=41.5):
    hook = HOOKS.build(dict(type='DemoResultHook', num_draws=50))
    logged = []
    logger = SimpleNamespace(info=logged.append)
    runner = SimpleNamespace(
        rank=rank, logger=logger,
        val_loop=SimpleNamespace(
            dataloader=SimpleNamespace(dataset=val_dataset)))
    hook.after_val_epoch(runner, {'multi-label/mAP': 12.0})
    hook.after_val_epoch(runner, {'multi-label/mAP': mAP})
    hook.after_train(runner)
    return logged


def test_hook_reports_chance_level_of_the_demo_only(tmp_path):
    MMLogger.get_instance('mmcoop-test')
    root = generate_demo_coco(str(tmp_path / 'demo'), **SMALL)
    val = DemoShapesDataset(root, split='val', **SMALL)
    chance = chance_level_map(root, 'val', num_draws=50)
    logged = _run_hook(val)
    assert logged == [f'[mmcoop demo] final val mAP 41.50 | chance level '
                      f'(random scores) {chance:.2f}']
    # through a wrapper too (the train-side wrapper type)
    wrapped = PartialLabelDataset(
        dict(type='DemoShapesDataset', data_root=root, split='val',
             **SMALL), known_proportion=0.5)
    assert len(_run_hook(wrapped)) == 1
    # silent: other ranks, another dataset type, a non-demo tree
    assert _run_hook(val, rank=1) == []
    assert _run_hook(COCO2014MultiLabel(root, split='val')) == []
    os.remove(osp.join(root, MANIFEST))
    assert _run_hook(val) == []
    assert isinstance(HOOKS.build(dict(type='DemoResultHook')),
                      DemoResultHook)


@pytest.mark.parametrize('argv,match', [
    (['--num-draws', '0'], r'argument --num-draws: must be an integer >= 1'),
    (['--num-train', '0'], r'argument --num-train: must be an integer >= 1'),
    (['--image-size', '4'], r'image_size must be >= 32, got 4'),
])
def test_demo_cli_options_are_checked(tmp_path, capsys, argv, match):
    """Before: --num-draws 0 printed a nan chance level; the generator's
    range errors were tracebacks."""
    from mmcoop.demo.__main__ import main
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path / 'demo')] + argv)
    assert exit_.value.code == 2
    assert re.search(match, capsys.readouterr().err)

# Copyright (c) mmcoop contributors. All rights reserved.
"""Protocol presets: the config each one produces, and the clean protocol
end to end (validation on the held-out part of train only during
training; the test split evaluated once by tools/test.py)."""
import glob
import json
import os.path as osp
import sys
import uuid

import pytest
import torch
from _common import load_tool
from mmengine.config import Config
from mmengine.evaluator import Evaluator
from mmengine.runner import TestLoop

from mmcoop.experiments import apply_protocol

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import _tool_helpers as H  # noqa: E402

train_tool = load_tool('tools/train.py', 'mmcoop_tools_train_proto')
test_tool = load_tool('tools/test.py', 'mmcoop_tools_test_proto')
VOC_CONFIG = osp.join(
    H.REPO, 'configs', 'positivecoop',
    'positivecoop_clip-rn101_openai-pre_1xb32-coslr-50e_voc07-448px-p50.py')


def test_official_preset_validates_on_test():
    cfg = Config.fromfile(VOC_CONFIG)
    cfg.protocol = dict(name='official')
    cfg.val_dataloader.dataset.split = 'trainval'  # apply_protocol fixes it
    cfg.val_dataloader.dataset.difficult_as = 'ignore'
    apply_protocol(cfg)
    assert cfg.val_dataloader.dataset == cfg.test_dataloader.dataset
    assert cfg.val_dataloader.dataset.split == 'test'
    assert cfg.train_dataloader.dataset.dataset.difficult_as == 'negative'
    assert cfg.train_cfg.val_interval == 1
    assert cfg.default_hooks.checkpoint.save_best == 'multi-label/mAP'
    assert cfg.val_evaluator.topk == 3
    assert 'calibrate' not in cfg.val_evaluator  # never on the test split
    # thresholds fitted on the test split would be reported on it
    cfg = Config.fromfile(VOC_CONFIG)
    cfg.protocol = dict(name='official')
    cfg.test_evaluator.calibrate = True
    with pytest.raises(ValueError, match='test_evaluator.*clean'):
        apply_protocol(cfg)


def test_clean_preset_config(tmp_path):
    cfg = Config.fromfile(VOC_CONFIG)
    cfg.work_dir = str(tmp_path / 'work_dirs' / 'exp')
    cfg.protocol = dict(name='clean', selection='last')
    apply_protocol(cfg)
    train = cfg.train_dataloader.dataset.dataset
    val = cfg.val_dataloader.dataset
    split_file = str(tmp_path / 'work_dirs' / 'splits' /
                     'voc2007multilabel_trainval_holdout0.1_seed0.json')
    assert (train.type, train.part, train.split_file) == ('HeldOutSplit',
                                                          'train',
                                                          split_file)
    assert (val.type, val.part, val.split_file) == ('HeldOutSplit', 'val',
                                                    split_file)
    assert val.dataset.split == 'trainval' and val.dataset.test_mode
    assert val.dataset.pipeline == cfg.test_dataloader.dataset.pipeline
    assert cfg.test_dataloader.dataset.split == 'test'
    assert cfg.val_evaluator.calibrate and 'calibrate' not in \
        cfg.test_evaluator
    assert 'save_best' not in cfg.default_hooks.checkpoint  # 'last'
    assert any(h['type'] == 'ThresholdCalibrationHook'
               for h in cfg.custom_hooks)
    with pytest.raises(ValueError, match="protocol: unknown keys.*'seeds'"):
        apply_protocol(Config(dict(protocol=dict(name='clean', seeds=1))))


@pytest.mark.parametrize('options, match', [
    # before: 0.7 became seed 0 (the split file of seed 0 reused), '1'
    # became 1, 'abc' failed as "could not convert string to float"
    (dict(seed=0.7), r'protocol: seed must be an int >= 0, got 0\.7'),
    (dict(seed='1'), r"protocol: seed must be an int >= 0, got '1'"),
    (dict(val_fraction='abc'),
     r"protocol\.val_fraction must be a number in \(0, 1\).*got 'abc'"),
    (dict(val_fraction=1), r'protocol\.val_fraction must be a number in'),
])
def test_clean_options_are_checked_not_converted(tmp_path, options, match):
    cfg = Config.fromfile(VOC_CONFIG)
    cfg.work_dir = str(tmp_path / 'work_dirs' / 'exp')
    cfg.protocol = dict(name='clean', **options)
    with pytest.raises(ValueError, match=match):
        apply_protocol(cfg)


@pytest.mark.parametrize('validate', [True, False])
def test_clean_saves_the_mask_without_the_hook_in_the_config(
        tmp_path, validate):
    """docs/experiments.md: under `clean` the partial-label mask is saved
    in <work_dir>/partial_labels/, also for a config whose custom_hooks
    leave PartialLabelMaskHook out (once, where they list it)."""
    for hooks in ([], [dict(type='PartialLabelMaskHook', subdir='m')]):
        cfg = Config.fromfile(VOC_CONFIG)
        cfg.work_dir = str(tmp_path / 'work_dirs' / 'exp')
        cfg.custom_hooks = hooks
        if not validate:  # --no-validate
            cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
        cfg.protocol = dict(name='clean', selection='last')
        apply_protocol(cfg)
        masks = [h for h in cfg.custom_hooks
                 if h['type'] == 'PartialLabelMaskHook']
        assert masks == (hooks or [dict(type='PartialLabelMaskHook')])


def test_clean_never_evaluates_the_test_split_in_training(
        tmp_path, monkeypatch):
    data = H.make_demo_data(str(tmp_path / 'demo'))
    cfg = H.write_config(
        str(tmp_path / 'baseline.py'),
        H.METHOD_CONFIGS['baseline'],
        data,
        max_epochs=2,
        val_interval=1,
        text_encoder=False,
        extra="protocol = dict(name='clean', val_fraction=0.25)\n")
    evaluated, tests = [], []
    process = Evaluator.process

    def spy_process(self, data_samples, data_batch=None):
        evaluated.extend(s.img_path for s in data_samples)
        return process(self, data_samples, data_batch)

    run = TestLoop.run

    def spy_test(self):
        tests.append(len(self.dataloader.dataset))
        return run(self)

    monkeypatch.setattr(Evaluator, 'process', spy_process)
    monkeypatch.setattr(TestLoop, 'run', spy_test)
    work_dir = str(tmp_path / 'work' / 'run')
    runner = train_tool.main([
        cfg, '--work-dir', work_dir, '--cfg-options',
        f'experiment_name=p-{uuid.uuid4().hex[:8]}'
    ])
    # <work_dirs>/splits/<dataset type>_<split>_holdout0.25_seed0.json
    split_files = glob.glob(str(tmp_path / 'work' / 'splits' / '*.json'))
    assert [osp.basename(f).split('_', 1)[1] for f in split_files] == \
        ['train_holdout0.25_seed0.json']
    with open(split_files[0]) as f:
        held_out = set(json.load(f)['val'])
    assert tests == []  # no test loop ran
    assert len(evaluated) == 2 * len(held_out)  # 2 validations
    assert {osp.basename(p) for p in evaluated} == held_out
    assert all(osp.basename(osp.dirname(p)) == 'train2014'
               for p in evaluated)
    best = runner.message_hub.get_info('best_ckpt')
    assert osp.isfile(best)
    # every checkpoint carries the thresholds calibrated on the held-out
    # split with its own weights (epoch_2.pth is written before its
    # validation: re-saved after it unless the best update re-saved it)
    for epoch in (1, 2):
        meta = torch.load(osp.join(work_dir, f'epoch_{epoch}.pth'),
                          weights_only=False)['meta']  # files just written
        stored = meta['calibrated_thresholds']
        assert stored['epoch'] == meta['epoch'] == epoch
        assert len(stored['thresholds']) == len(H.DEMO_CLASSES)

    # tools/test.py: the test split, once, with the validation thresholds
    evaluated.clear()
    metrics = test_tool.main([
        cfg, best, '--work-dir', str(tmp_path / 'test'), '--cfg-options',
        f'experiment_name=t-{uuid.uuid4().hex[:8]}'
    ])
    assert len(tests) == 1 and len(evaluated) == tests[0]
    assert all(osp.basename(osp.dirname(p)) == 'val2014' for p in evaluated)
    assert {'multi-label/CF1_calib', 'multi-label/CF1_top3'} <= set(metrics)


def test_clean_protocol_with_feature_cache(tmp_path):
    """protocol=clean + feature_cache: the held-out split (a builder
    registered as HeldOutSplit, not a class) is cached like any dataset;
    the validation cache holds the held-out images only."""
    from mmcoop.datasets.feature_cache import CachedFeatureDataset
    data = H.make_demo_data(str(tmp_path / 'demo'))
    cache_root = str(tmp_path / 'cache')
    cfg = H.write_config(
        str(tmp_path / 'baseline.py'),
        H.METHOD_CONFIGS['baseline'],
        data,
        max_epochs=1,
        text_encoder=False,
        extra=("protocol = dict(name='clean', val_fraction=0.25)\n"
               f'feature_cache = dict(cache_root={cache_root!r})\n'))
    runner = train_tool.main([
        cfg, '--work-dir', str(tmp_path / 'work' / 'run'), '--cfg-options',
        f'experiment_name=c-{uuid.uuid4().hex[:8]}'
    ])
    train_set = runner.train_dataloader.dataset
    val_set = runner.val_loop.dataloader.dataset
    assert isinstance(val_set, CachedFeatureDataset)
    split_file, = glob.glob(str(tmp_path / 'work' / 'splits' / '*.json'))
    with open(split_file) as f:
        split = json.load(f)
    assert isinstance(train_set, CachedFeatureDataset)
    assert len(val_set) == len(split['val'])
    assert len(train_set) + len(val_set) == split['num_images']
    assert sorted(glob.glob(osp.join(cache_root, 'HeldOutSplit_*'))) == \
        sorted([train_set.cache_dir, val_set.cache_dir])


def test_checkpoint_of_another_protocol_is_named(tmp_path):
    """A checkpoint records its protocol: tested with a config of another
    protocol, the log names both; resumed under another one, the run stops
    (its best score was measured under the first)."""
    data = H.make_demo_data(str(tmp_path / 'demo'))

    def config(name, extra=''):
        return H.write_config(
            str(tmp_path / name),
            H.METHOD_CONFIGS['baseline'],
            data,
            max_epochs=1,
            text_encoder=False,
            num_train=16,
            num_val=8,
            extra=extra)

    cfg = config('baseline.py', "protocol = dict(name='official')\n")
    work_dir = str(tmp_path / 'work' / 'run')
    train_tool.main([
        cfg, '--work-dir', work_dir, '--cfg-options',
        f'experiment_name=o-{uuid.uuid4().hex[:8]}'
    ])
    best, = glob.glob(osp.join(work_dir, 'best_*.pth'))
    meta = torch.load(best, weights_only=False)['meta']
    assert meta['protocol'] == dict(name='official', selection='best')

    test_dir = tmp_path / 'test'
    test_tool.main([
        cfg, best, '--work-dir', str(test_dir), '--cfg-options',
        'protocol.name=clean', f'experiment_name=t-{uuid.uuid4().hex[:8]}'
    ])
    log, = glob.glob(str(test_dir / '*' / '*.log'))
    with open(log) as f:
        text = f.read()
    assert "trained and selected under protocol 'official'" in text
    assert "config of protocol 'clean'" in text and best in text

    # named by the checkpoint resumed (the runner's loading_checkpoint)
    with pytest.raises(ValueError, match=r'epoch_\d+\.pth: trained under '
                       'protocol .* resumed with protocol'):
        train_tool.main([
            cfg, '--work-dir', work_dir, '--resume', '--cfg-options',
            'protocol.name=clean', 'protocol.selection=last',
            'train_cfg.max_epochs=2',
            f'experiment_name=r-{uuid.uuid4().hex[:8]}'
        ])

    # a config that sets no protocol (as the shipped paper configs): the
    # test log says so (before: nothing), a resume stops
    plain = config('plain.py')
    plain_dir = tmp_path / 'test_plain'
    test_tool.main([
        plain, best, '--work-dir', str(plain_dir), '--cfg-options',
        f'experiment_name=p-{uuid.uuid4().hex[:8]}'
    ])
    log, = glob.glob(str(plain_dir / '*' / '*.log'))
    with open(log) as f:
        text = f.read()
    assert ("trained and selected under protocol 'official' (selection "
            "'best'), loaded with a config that sets no protocol") in text
    with pytest.raises(ValueError, match=r"trained under protocol .*"
                       'resumed with a config that sets no protocol'):
        train_tool.main([
            plain, '--work-dir', work_dir, '--resume', '--cfg-options',
            'train_cfg.max_epochs=2',
            f'experiment_name=r-{uuid.uuid4().hex[:8]}'
        ])


@pytest.mark.parametrize('name', ['official', 'clean'])
def test_protocols_refuse_a_zero_shot_evaluation(name):
    """Before: the run trained and validated an epoch, then MMEngine's
    checkpoint hook stopped with KeyError: 'multi-label/mAP' (the zero-shot
    metric's keys are zsl/...); under clean the held-out training images
    carried the labels of the classes hidden in training."""
    cfg = Config.fromfile(osp.join(
        H.REPO, 'configs', 'zero_shot',
        'positivecoop-sharedneg_clip-rn101_coco14-48-17.py'))
    cfg.protocol = dict(name=name)
    with pytest.raises(ValueError, match=rf"protocol='{name}' selects the "
                       r'best epoch on multi-label/mAP.*is an '
                       r'UnseenClassMetric.*Fix: drop `protocol`'):
        apply_protocol(cfg)


def test_a_checkpoint_from_before_the_protocol_record(tmp_path):
    """A checkpoint from before ``meta['protocol']`` carries its config's
    applied protocol in ``meta['cfg']`` (read without running it): resumed
    with a config that sets none, it stops as a recorded one does. Before:
    resumed, after an unrelated mask-file error, under the official
    protocol's selection."""
    from types import SimpleNamespace

    from mmengine.logging import MMLogger

    from mmcoop.engine.hooks.protocol_check_hook import ProtocolCheckHook
    ran = tmp_path / 'ran'
    text = (f'open({str(ran)!r}, "w")\n' + Config(dict(protocol=dict(
        name='clean', selection='best', val_fraction=0.1,
        seed=0))).pretty_text)
    runner = SimpleNamespace(
        cfg=Config(dict(load_from=None)), work_dir=str(tmp_path),
        resuming=True, logger=MMLogger.get_current_instance())
    with pytest.raises(ValueError, match=r"trained under protocol .*'clean'"
                       '.*resumed with a config that sets no protocol'):
        ProtocolCheckHook().after_load_checkpoint(
            runner, dict(meta=dict(cfg=text)))
    assert not ran.exists()  # parsed, never run
    # a checkpoint whose config sets none, or an unreadable one: no word
    for meta in (dict(cfg='x = 1'), dict(cfg='x = ('), dict()):
        ProtocolCheckHook().after_load_checkpoint(runner, dict(meta=meta))


def test_protocol_messages_name_the_checkpoint_being_loaded(tmp_path):
    """An auto-resume loads the work dir's checkpoint and ignores
    ``load_from`` (which may no longer exist): the refusal names the
    resumed file (before: the unused ``load_from``)."""
    from types import SimpleNamespace

    from mmengine.logging import MMLogger

    from mmcoop.engine.hooks.protocol_check_hook import ProtocolCheckHook
    resumed = str(tmp_path / 'work' / 'epoch_3.pth')
    runner = SimpleNamespace(
        cfg=Config(dict(load_from='/gone/pretrained.pth')),
        work_dir=str(tmp_path / 'work'), resuming=True,
        loading_checkpoint=resumed, logger=MMLogger.get_current_instance())
    meta = dict(protocol=dict(name='clean', selection='best',
                              val_fraction=0.1, seed=0))
    with pytest.raises(ValueError) as err:
        ProtocolCheckHook().after_load_checkpoint(runner, dict(meta=meta))
    assert str(err.value).startswith(f'{resumed}: trained under protocol')
    assert 'pretrained' not in str(err.value)

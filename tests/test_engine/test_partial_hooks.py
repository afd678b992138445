# Copyright (c) mmcoop contributors. All rights reserved.
import os
import os.path as osp
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.dataset import ConcatDataset, RepeatDataset
from mmengine.logging import MMLogger
from mmengine.model import BaseModel
from mmengine.runner import Runner

from mmcoop.datasets import PartialLabelDataset
from mmcoop.demo import generate_demo_coco
from mmcoop.engine import PartialLabelMaskHook
from mmcoop.engine.hooks.partial_label_mask_hook import \
    find_partial_label_datasets
from mmcoop.registry import HOOKS

PIPELINE = [
    dict(type='LoadImageFromFileChecked'),
    dict(
        type='Resize',
        scale=(32, 32),
        keep_ratio=False,
        backend='pillow',
        interpolation='bilinear'),
    dict(type='PackInputs'),
]


@pytest.fixture(scope='module')
def demo_root(tmp_path_factory):
    return generate_demo_coco(
        str(tmp_path_factory.mktemp('hook') / 'demo'),
        num_train=16,
        num_val=8,
        image_size=48)


def partial_cfg(root, **kw):
    return dict(
        type='PartialLabelDataset',
        dataset=dict(
            type='COCO2014MultiLabel',
            data_root=root,
            split='train',
            pipeline=PIPELINE),
        known_proportion=0.5,
        **kw)


def fake_runner(dataset, work_dir):
    return SimpleNamespace(
        train_dataloader=SimpleNamespace(dataset=dataset),
        work_dir=str(work_dir),
        logger=MMLogger.get_current_instance())


class ToyModel(BaseModel):
    """Checks that the tri-state targets reach the model unchanged."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 10)
        self.seen = []

    def forward(self, inputs, data_samples=None, mode='tensor'):
        x = torch.stack(inputs).float().mean((2, 3)) / 255.
        logits = self.fc(x)
        target = torch.stack([s.gt_score for s in data_samples])
        self.seen.append(target.clone())
        known = target >= 0
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits[known], target[known])
        return dict(loss=loss)


def test_hook_with_runner_and_resume(demo_root, tmp_path):
    work_dir = tmp_path / 'work'
    cfg = dict(
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=partial_cfg(demo_root, seed=3),
            sampler=dict(type='DefaultSampler', shuffle=False),
            batch_size=4,
            num_workers=0),
        train_cfg=dict(by_epoch=False, max_iters=2),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        custom_hooks=[dict(type='PartialLabelMaskHook')],
        default_hooks=dict(checkpoint=None),
        default_scope='mmcoop')
    model = ToyModel()
    runner = Runner(model=model, **cfg)
    runner.train()
    dataset = runner.train_dataloader.dataset
    path = work_dir / 'partial_labels' / 'mask_p0.50_seed3.npy'
    saved = np.load(path)
    assert saved.dtype == np.bool_ and np.array_equal(saved,
                                                      dataset.known_mask)
    # the model saw the partial targets of the first 8 samples
    seen = torch.cat(model.seen).numpy()
    expect = np.stack([dataset.get_data_info(i)['gt_score'] for i in range(8)])
    assert np.array_equal(seen, expect) and (seen == -1).any()
    # resume in the same work dir: same seed -> same mask, file kept
    mtime = os.stat(path).st_mtime_ns
    cfg2 = dict(cfg, experiment_name='resumed')
    runner2 = Runner(model=ToyModel(), **cfg2)
    runner2.train()
    assert os.stat(path).st_mtime_ns == mtime
    assert np.array_equal(runner2.train_dataloader.dataset.known_mask, saved)


def test_resume_on_another_mask_is_refused(demo_root, tmp_path):
    """Each mask has a file of its own (p and seed in its name), so a
    resume with another known_proportion drew a new mask, saved it beside
    the first, and trained the rest of the run on other labels, silently.
    The checkpoint records the mask (settings and SHA-256); the same
    settings resume, others are refused before a step."""
    from mmcoop.engine.runner import MMCoopRunner
    work_dir = tmp_path / 'work'

    def cfg(p, iters, **kw):
        return dict(
            work_dir=str(work_dir),
            train_dataloader=dict(
                dataset=partial_cfg(demo_root, seed=3) | dict(
                    known_proportion=p),
                sampler=dict(type='DefaultSampler', shuffle=False),
                batch_size=4, num_workers=0),
            train_cfg=dict(by_epoch=False, max_iters=iters),
            optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
            custom_hooks=[dict(type='PartialLabelMaskHook')],
            default_hooks=dict(checkpoint=dict(
                type='CheckpointHook', by_epoch=False, interval=2)),
            default_scope='mmcoop', **kw)

    MMCoopRunner(model=ToyModel(), **cfg(0.5, 2)).train()
    ckpt = torch.load(work_dir / 'iter_2.pth', weights_only=False)
    [record] = ckpt['meta']['partial_label_masks']
    assert (record['known_proportion'], record['seed']) == (0.5, 3)
    other = MMCoopRunner(
        model=ToyModel(), **cfg(0.3, 4, resume=True, experiment_name='p03'))
    with pytest.raises(ValueError, match=r'checkpoint was trained on the '
                       r'partial-label mask\(s\) \[bernoulli p=0.5 seed=3\], '
                       r'this config draws \[bernoulli p=0.3 seed=3\].*Fix'):
        other.train()
    assert not (work_dir / 'iter_4.pth').exists()
    same = MMCoopRunner(
        model=ToyModel(), **cfg(0.5, 4, resume=True, experiment_name='p05'))
    same.train()
    assert (work_dir / 'iter_4.pth').exists()


def test_resume_of_a_checkpoint_without_the_mask_record(demo_root, tmp_path):
    """A checkpoint from before the mask record (an earlier mmcoop) is
    checked by the settings of the config it carries (``meta['cfg']``):
    another known_proportion is refused, the same settings (a relative
    or ``~`` mask_file included) resume. Before: not checked at all."""
    from mmengine.config import Config

    from mmcoop.engine.hooks.partial_label_mask_hook import settings_in_config
    ds = PartialLabelDataset(**{
        k: v
        for k, v in partial_cfg(demo_root, seed=3).items() if k != 'type'
    })

    def old_checkpoint(p):
        text = Config(dict(train_dataloader=dict(dataset=dict(
            type='CachedFeatureDataset', dataset=partial_cfg(
                demo_root, seed=3) | dict(known_proportion=p))))).pretty_text
        return dict(meta=dict(cfg=text))

    assert settings_in_config(old_checkpoint(0.3)['meta']['cfg']) == [
        dict(mode='bernoulli', known_proportion=0.3, seed=3, mask_file=None)]
    runner = fake_runner(ds, tmp_path)
    runner.resuming = True
    hook = HOOKS.build(dict(type='PartialLabelMaskHook'))
    hook.after_load_checkpoint(runner, old_checkpoint(0.3))
    with pytest.raises(ValueError, match=r'mask\(s\) \[bernoulli p=0.3 '
                       r'seed=3\] \(read from the config the checkpoint '
                       r'carries.*this config draws \[bernoulli p=0.5'):
        hook.before_train(runner)
    # the stored text is parsed, never run (a checkpoint from elsewhere)
    ran = tmp_path / 'ran'
    code = f'open({str(ran)!r}, "w")\n' + old_checkpoint(0.3)['meta']['cfg']
    assert settings_in_config(code)[0]['known_proportion'] == 0.3
    assert not ran.exists()
    for checkpoint in (old_checkpoint(0.5), dict(meta=dict(cfg='x = (')),
                       dict(meta=dict())):  # same; unreadable; none
        hook = HOOKS.build(dict(type='PartialLabelMaskHook'))
        hook.after_load_checkpoint(runner, checkpoint)
        hook.before_train(runner)


def test_hook_refuses_to_overwrite(demo_root, tmp_path):
    ds = PartialLabelDataset(**{
        k: v
        for k, v in partial_cfg(demo_root, seed=0).items() if k != 'type'
    })
    path = tmp_path / 'partial_labels' / 'mask_p0.50_seed0.npy'
    os.makedirs(path.parent)
    other = ~ds.known_mask
    np.save(path, other)
    hook = HOOKS.build(dict(type='PartialLabelMaskHook'))
    with pytest.raises(FileExistsError, match='mask_p0.50_seed0.npy'):
        hook.before_train(fake_runner(ds, tmp_path))
    assert np.array_equal(np.load(path), other)


def test_hook_mask_file_and_modes(demo_root, tmp_path):
    mask_file = str(tmp_path / 'given.npy')
    ds = PartialLabelDataset(
        **{
            k: v
            for k, v in partial_cfg(demo_root, mask_file=mask_file).items()
            if k != 'type'
        })
    hook = PartialLabelMaskHook()
    hook.before_train(fake_runner(ds, tmp_path / 'w1'))
    assert hook.saved_paths == [mask_file]
    assert not osp.exists(tmp_path / 'w1')  # nothing else written
    ds2 = PartialLabelDataset(
        **{
            k: v
            for k, v in partial_cfg(demo_root, mode='per_image_count',
                                    seed=2).items() if k != 'type'
        })
    # found inside mmengine wrappers (it is a BaseDataset for them)
    assert list(find_partial_label_datasets(ConcatDataset([ds2,
                                                           ds]))) == [ds2, ds]
    wrapped = RepeatDataset(ds2, times=2)
    assert len(wrapped) == 2 * len(ds2)
    assert np.array_equal(
        wrapped.get_data_info(len(ds2))['gt_score'],
        ds2.get_data_info(0)['gt_score'])
    assert list(find_partial_label_datasets(wrapped)) == [ds2]
    # with a mode suffix
    hook = PartialLabelMaskHook()
    hook.before_train(fake_runner(wrapped, tmp_path / 'w2'))
    expected = tmp_path / 'w2' / 'partial_labels' / \
        'mask_p0.50_seed2_per_image_count.npy'
    assert hook.saved_paths == [str(expected)]
    assert np.array_equal(np.load(expected), ds2.known_mask)
    # not a partial-label set: nothing happens
    PartialLabelMaskHook().before_train(fake_runner(object(), tmp_path / 'w3'))
    assert not osp.exists(tmp_path / 'w3')

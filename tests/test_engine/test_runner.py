# Copyright (c) mmcoop contributors. All rights reserved.
"""MMCoopRunner: resume and ``load_from`` through the safe loader (the
run's own checkpoints included), atomic checkpoint writes."""
import os
import os.path as osp
import shutil

import numpy as np
import pytest
import torch
from _common import ToyDataset, WritesFile, toy_runner

from mmcoop.utils import UnsafeCheckpointError


def test_resume_own_checkpoint_matches_uninterrupted(tmp_path):
    full = toy_runner(tmp_path / 'full', 3)
    full.train()
    expected = full.model.linear.weight.detach().clone()

    part = toy_runner(tmp_path / 'part', 2)
    part.train()
    # the resume checkpoint holds mmengine runtime state (HistoryBuffer),
    # which torch>=2.6 refuses under weights_only=True
    resumed = toy_runner(tmp_path / 'part', 3, resume=True)
    resumed.train()
    assert resumed.train_loop.epoch == 3
    torch.testing.assert_close(resumed.model.linear.weight, expected)


def test_load_from_elsewhere_is_weights_only(tmp_path):
    src = toy_runner(tmp_path / 'src', 1)
    src.train()
    foreign = tmp_path / 'downloaded.pth'
    shutil.copy(tmp_path / 'src' / 'epoch_1.pth', foreign)
    # an MMEngine training checkpoint (HistoryBuffer, numpy arrays) from
    # elsewhere is read by torch's restricted weights_only unpickler ...
    runner = toy_runner(tmp_path / 'other2', 1)
    runner.load_checkpoint(str(foreign))
    torch.testing.assert_close(runner.model.linear.weight,
                               src.model.linear.weight)
    # ... and one that pickles anything else is refused without running it,
    # for load_from and for resume
    marker = tmp_path / 'pwned.txt'
    evil = tmp_path / 'evil.pth'
    ckpt = torch.load(foreign, weights_only=False)
    torch.save(dict(ckpt, extra=WritesFile(str(marker))), evil)
    with pytest.raises(UnsafeCheckpointError, match='evil.pth'):
        runner.load_checkpoint(str(evil))
    resumer = toy_runner(
        tmp_path / 'other', 2, load_from=str(evil), resume=True)
    with pytest.raises(UnsafeCheckpointError, match='evil.pth'):
        resumer.train()
    assert not marker.exists()
    # a stripped checkpoint (tensors + plain meta) loads fine
    stripped = tmp_path / 'stripped.pth'
    torch.save({'state_dict': ckpt['state_dict'], 'meta': {'epoch': 1}},
               stripped)
    runner.load_checkpoint(str(stripped))
    torch.testing.assert_close(runner.model.linear.weight,
                               src.model.linear.weight)


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    runner = toy_runner(tmp_path / 'atomic', 1)
    runner.train()
    work = tmp_path / 'atomic'
    before = (work / 'epoch_1.pth').read_bytes()
    names = set(os.listdir(work))

    def crash(obj, f, *args, **kwargs):
        f.write(b'half a checkpoint')
        raise RuntimeError('disk full')

    monkeypatch.setattr(torch, 'save', crash)
    with pytest.raises(RuntimeError, match='disk full'):
        runner.save_checkpoint(str(work), 'epoch_1.pth')
    monkeypatch.undo()
    assert (work / 'epoch_1.pth').read_bytes() == before
    assert set(os.listdir(work)) == names  # no temp files left
    with open(work / 'last_checkpoint') as f:
        assert f.read().strip().endswith('epoch_1.pth')


def test_checkpoints_go_through_the_atomic_file_backend(
        tmp_path, monkeypatch):
    """The bytes reach the disk through `AtomicLocalBackend.put` (selected by
    `default_hooks.checkpoint.backend_args` in default_runtime.py, and by
    `MMCoopRunner.save_checkpoint` without backend_args); a failure after
    the bytes were written (here `fsync`: disk full) keeps the old file."""
    from mmengine.config import Config
    from mmengine.fileio import get_file_backend

    from mmcoop.engine.atomic_backend import AtomicLocalBackend
    runtime = Config.fromfile(
        osp.join(osp.dirname(__file__), '..', '..', 'configs', '_base_',
                 'default_runtime.py'))
    args = runtime.default_hooks.checkpoint.backend_args
    assert isinstance(get_file_backend(str(tmp_path), backend_args=args),
                      AtomicLocalBackend)
    runner = toy_runner(tmp_path / 'fsync', 1)  # CheckpointHook, no args
    puts = []
    original = AtomicLocalBackend.put
    monkeypatch.setattr(AtomicLocalBackend, 'put',
                        lambda self, obj, path: puts.append(path) or
                        original(self, obj, path))
    runner.train()
    assert [osp.basename(p) for p in puts] == ['epoch_1.pth']
    work = tmp_path / 'fsync'
    before = (work / 'epoch_1.pth').read_bytes()
    names = set(os.listdir(work))

    def full(fd):
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(os, 'fsync', full)
    with pytest.raises(OSError) as err:
        runner.save_checkpoint(str(work), 'epoch_1.pth')
    monkeypatch.undo()
    # the message of the atomic writer: the disk, nothing lost, what to use
    assert err.value.errno == 28
    assert 'No space left on' in str(err.value)
    assert 'Nothing was lost: the previous epoch_1.pth is intact' in str(
        err.value)
    assert 'last good checkpoint is' in str(err.value) and str(
        work / 'epoch_1.pth') in str(err.value)
    assert (work / 'epoch_1.pth').read_bytes() == before
    assert set(os.listdir(work)) == names  # the temporary file is gone
    assert len(puts) == 2  # the direct call used the atomic backend too


class NaNAfterTwoIters(ToyDataset):

    def __getitem__(self, idx):
        item = super().__getitem__(idx)
        if idx >= 4:  # second batch of each epoch (batch size 4)
            item['inputs'] = torch.tensor([float('nan'), 1.])
        return item


def test_finite_check_hook_stops_before_nan_checkpoint(tmp_path):
    from mmcoop.engine.hooks import NonFiniteError
    work = tmp_path / 'nan'
    runner = toy_runner(work, 2, custom_hooks=[dict(type='FiniteCheckHook')])
    runner.train_dataloader.dataset.__class__ = NaNAfterTwoIters
    with pytest.raises(NonFiniteError) as err:
        runner.train()
    msg = str(err.value)
    assert 'epoch 1, iteration 2' in msg and 'loss' in msg
    assert 'train again (the run had written no checkpoint yet)' in msg
    assert not any(n.endswith('.pth') for n in os.listdir(work))


def test_finite_check_hook_checks_before_every_save(tmp_path):
    """With ``interval`` > 1 a checkpoint save can fall between two checks:
    the parameters are checked before every save. Before: ``interval=3``
    with 2 iterations per epoch wrote ``epoch_1.pth`` with NaN weights,
    and the stop at iteration 3 then said no checkpoint was written and
    named it as the one to start again from."""
    from mmcoop.engine.hooks import NonFiniteError
    work = tmp_path / 'nan'
    runner = toy_runner(work, 2, custom_hooks=[
        dict(type='FiniteCheckHook', interval=3)])
    runner.train_dataloader.dataset.__class__ = NaNAfterTwoIters
    with pytest.raises(NonFiniteError, match=(
            r'^Parameter linear\.\w+ has NaN/Inf values at the checkpoint '
            r'save in epoch 1 \(iteration 2\) \(checked before every save; '
            r'FiniteCheckHook\(interval=3, check_params=True\) checks the '
            r'iterations\)\. No checkpoint was written')):
        runner.train()
    assert not any(n.endswith('.pth') for n in os.listdir(work))


def test_the_save_check_names_the_save_as_the_checkpoint_records_it():
    """An iteration-based run's save is named by its iteration (before:
    'in epoch 1' for any save of such a run), an epoch-based one's by the
    epoch it ends, as the checkpoint's meta records them."""
    from types import SimpleNamespace

    from mmcoop.engine.hooks import FiniteCheckHook, NonFiniteError
    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.bias[0] = float('nan')
    runner = SimpleNamespace(model=model, epoch=0, iter=4999, work_dir=None)
    hook = FiniteCheckHook()
    for meta, said in ((dict(epoch=0, iter=5000), 'at iteration 5000'),
                       (dict(epoch=3, iter=60), r'in epoch 3 \(iteration '
                        r'60\)'), ({}, 'in epoch 1')):
        with pytest.raises(NonFiniteError, match=(
                rf'^Parameter bias has NaN/Inf values at the checkpoint '
                rf'save {said} \(checked before every save')):
            hook.before_save_checkpoint(runner, dict(meta=meta))


def test_finite_check_hook_reads_the_device_once_per_check():
    """The loss and every trainable parameter are checked with one read
    back from the device (it was one per tensor: each a wait); a NaN
    parameter is still named."""
    from types import SimpleNamespace

    from torch.overrides import TorchFunctionMode

    from mmcoop.engine.hooks import FiniteCheckHook, NonFiniteError

    class Reads(TorchFunctionMode):
        count = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            Reads.count += getattr(func, '__name__', '') in (
                'tolist', 'item', '__bool__', '__float__', '__int__')
            return func(*args, **(kwargs or {}))

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    model[0].bias.requires_grad_(False)
    runner = SimpleNamespace(model=model, epoch=0, iter=6)
    hook = FiniteCheckHook()
    outputs = dict(loss=torch.tensor(0.5), acc=torch.tensor([1., 2.]))
    with Reads():
        hook.after_train_iter(runner, 6, outputs=outputs)
    assert Reads.count == 1
    with torch.no_grad():
        model[1].weight[0, 1] = float('nan')
    with pytest.raises(NonFiniteError, match='Parameter 1.weight has NaN'):
        hook.after_train_iter(runner, 6, outputs=outputs)
    with pytest.raises(NonFiniteError, match='acc became inf at epoch 1, '
                       'iteration 7'):
        hook.after_train_iter(
            runner, 6, outputs=dict(acc=torch.tensor([1., float('inf')])))


def test_finite_check_hook_names_the_way_back_and_reads_any_output(tmp_path):
    """The stop names the run's last checkpoint and a new run from it
    (``load_from``, another work dir): ``--resume`` restores the
    checkpoint's learning rate and repeats the same steps, so the advice
    it gave (lower the lr and resume) diverged again. Outputs that are not
    tensors are checked when numeric (a NaN in a NumPy array stops the
    run) and skipped otherwise (before: ``float()`` of a list or a string
    stopped the run with a ``TypeError``)."""
    from types import SimpleNamespace

    from mmcoop.engine.hooks import FiniteCheckHook, NonFiniteError
    model = torch.nn.Linear(3, 2)
    runner = SimpleNamespace(model=model, epoch=1, iter=9,
                             work_dir=str(tmp_path))
    hook = FiniteCheckHook()
    nan = dict(loss=torch.tensor(float('nan')))
    with pytest.raises(NonFiniteError, match=r'loss became nan at epoch 2.*'
                       r'and train again \(the run had written no checkpoint '
                       r'yet\)\.$'):
        hook.after_train_iter(runner, 1, outputs=nan)
    last = tmp_path / 'epoch_1.pth'
    last.write_bytes(b'x')
    (tmp_path / 'last_checkpoint').write_text(str(last))
    with pytest.raises(NonFiniteError) as err:
        hook.after_train_iter(runner, 1, outputs=nan)
    assert (f'start a new run from the last checkpoint, {last}, with '
            f'--cfg-options load_from={last} and another --work-dir (not '
            "--resume: it restores the checkpoint's learning rate") in str(
                err.value)
    hook.after_train_iter(runner, 1, outputs=dict(
        loss=torch.tensor(1.), names=['a', 'b'], note='text', none=None,
        acc=np.array([1., 2.]), n=3))
    with pytest.raises(NonFiniteError, match=r'^acc became inf at epoch 2'):
        hook.after_train_iter(runner, 1, outputs=dict(
            names=['a'], acc=np.array([1., np.inf])))


def test_cpu_distributed_applies_the_dist_timeout(monkeypatch):
    """``launcher='pytorch'`` without CUDA: the gloo process group gets
    ``env_cfg.dist_cfg.timeout`` (seconds), as MMEngine's ``init_dist``
    gives it on GPUs (it was dropped: gloo's default of 30 min, e.g. for
    the ranks waiting while rank 0 builds a feature cache)."""
    import datetime

    import torch.distributed as dist
    from mmengine.config import Config

    from mmcoop.engine.runner import setup_cpu_distributed
    calls = []
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(dist, 'is_initialized', lambda: False)
    monkeypatch.setattr(dist, 'init_process_group',
                        lambda **kwargs: calls.append(kwargs))

    def cfg(**dist_cfg):
        return Config(
            dict(launcher='pytorch', env_cfg=dict(dist_cfg=dist_cfg)))

    setup_cpu_distributed(cfg(timeout=7200))
    assert calls == [
        dict(backend='gloo', timeout=datetime.timedelta(seconds=7200))
    ]
    setup_cpu_distributed(cfg())
    assert calls[-1] == dict(backend='gloo')  # torch's default
    for bad in (0, -5, 'long', True, float('inf')):
        with pytest.raises(ValueError, match='env_cfg.dist_cfg.timeout'):
            setup_cpu_distributed(cfg(timeout=bad))


def test_config_kept_in_its_work_dir_is_not_replaced_by_the_dump(tmp_path):
    """``tools/train.py work_dirs/exp/exp.py`` (default work dir
    work_dirs/exp): MMEngine dumped the resolved config over the user's own
    file (comments and ``_base_`` lost); it now goes beside it."""
    from mmengine.config import Config
    text = '# my notes: lr found by hand\nlr = 0.1  # do not change\n'
    work = tmp_path / 'exp'
    work.mkdir()
    mine = work / 'exp.py'
    mine.write_text(text)
    toy_runner(work, 1, cfg=Config.fromfile(str(mine))).train()
    assert mine.read_text() == text
    assert Config.fromfile(str(work / 'exp_resolved.py')).lr == 0.1
    # a config elsewhere: dumped under its own name, as by MMEngine
    other = tmp_path / 'other.py'
    other.write_text(text)
    toy_runner(tmp_path / 'run', 1, cfg=Config.fromfile(str(other))).train()
    assert Config.fromfile(str(tmp_path / 'run' / 'other.py')).lr == 0.1
    assert not [n for n in os.listdir(tmp_path / 'run') if '.tmp-' in n]


def test_a_users_file_of_the_dumps_name_is_never_replaced(tmp_path):
    """``tools/train.py mine/exp.py --work-dir other``, where other/exp.py
    is the user's (the ``_base_`` of mine/exp.py, or an edited copy):
    MMEngine's dump replaced it with the child's resolved config, changing
    every experiment that inherits it. The run now stops before anything is
    trained; a file an earlier run dumped (marked, or in a work dir with
    that run's record) is replaced as before."""
    from mmengine.config import Config

    from mmcoop.engine.runner import DUMP_MARK
    from mmcoop.utils.paths import OutputPathError
    base_text = '# my base experiment\nlr = 0.1\n'
    other = tmp_path / 'other'
    other.mkdir()
    (other / 'exp.py').write_text(base_text)
    mine = tmp_path / 'mine'
    mine.mkdir()
    (mine / 'exp.py').write_text("_base_ = '../other/exp.py'\nlr = 0.25\n")
    cfg = Config.fromfile(str(mine / 'exp.py'))
    with pytest.raises(OutputPathError) as err:
        toy_runner(other, 1, cfg=cfg).train()
    msg = str(err.value)
    assert str(other / 'exp.py') in msg and 'Fix: use another' in msg
    assert (other / 'exp.py').read_text() == base_text
    assert not [n for n in os.listdir(other) if n.endswith('.pth')]
    # the run's own dump, marked: replaced when the run goes on
    work = tmp_path / 'run'
    toy_runner(work, 1, cfg=cfg).train()
    dump = (work / 'exp.py').read_text()
    assert dump.startswith(DUMP_MARK + '\n')
    assert Config.fromfile(str(work / 'exp.py')).lr == 0.25
    (work / 'exp.py').write_text(dump[len(DUMP_MARK) + 1:])  # an old dump
    toy_runner(work, 2, cfg=Config.fromfile(str(mine / 'exp.py')),
               resume=True).train()
    assert (work / 'exp.py').read_text().startswith(DUMP_MARK)


def test_a_test_run_keeps_the_trainings_config_dump(tmp_path):
    """tools/test.py CONFIG work_dirs/<cfg>/epoch_N.pth runs in the
    training's work dir by default: its dump replaced the training's record
    of what it trained (another lr, max_epochs). It now goes beside the
    test's log."""
    from mmengine.config import Config
    from mmengine.evaluator import BaseMetric

    class Count(BaseMetric):

        def process(self, data_batch, data_samples):
            self.results.append(len(data_samples))

        def compute_metrics(self, results):
            return dict(n=sum(results))

    config = tmp_path / 'exp.py'
    config.write_text('lr = 0.1\n')
    work = tmp_path / 'work'
    toy_runner(work, 1, cfg=Config.fromfile(str(config))).train()
    trained = (work / 'exp.py').read_text()
    config.write_text('lr = 0.5\n')  # edited since
    loader = dict(dataset=ToyDataset(),
                  sampler=dict(type='DefaultSampler', shuffle=False),
                  batch_size=4, num_workers=0,
                  collate_fn=dict(type='default_collate'))
    tester = toy_runner(work, 1, cfg=Config.fromfile(str(config)),
                        test_dataloader=loader, test_cfg=dict(),
                        test_evaluator=[Count()],
                        load_from=str(work / 'epoch_1.pth'))
    tester.test()
    assert (work / 'exp.py').read_text() == trained
    assert Config.fromfile(
        osp.join(tester.log_dir, 'exp.py')).lr == 0.5


def test_mmengine_compile_trains_as_eager_with_param_groups(tmp_path):
    """MMEngine's ``compile`` config key (``torch.compile`` of the whole
    ``train_step``, optimizer step included) with mmcoop's optimizer
    constructor and ``paramwise_cfg``: the param groups are plain dicts
    (a ConfigDict group stops dynamo in ``optimizer.step``), and the
    compiled run trains the eager run's weights."""
    from mmengine.config import ConfigDict
    from torch._dynamo import register_backend  # torch's custom backends
    graphs = []

    @register_backend(name='mmcoop_test_counting')
    def backend(gm, example_inputs):  # counts the graphs, runs them eager
        graphs.append(gm)
        return gm.forward

    optim = ConfigDict(  # as read from a config file
        constructor='TrainableParamsOptimWrapperConstructor',
        optimizer=dict(type='SGD', lr=0.1, momentum=0.9),
        paramwise_cfg=dict(custom_keys={'linear.bias': dict(lr_mult=0.5)}))
    weights = []
    for compile_cfg in (None, dict(backend='mmcoop_test_counting')):
        runner = toy_runner(
            tmp_path / str(bool(compile_cfg)), 2, optim_wrapper=optim,
            cfg=dict(compile=compile_cfg), default_hooks=dict(
                checkpoint=dict(type='CheckpointHook', interval=0)))
        runner.train()
        groups = runner.optim_wrapper.optimizer.param_groups
        assert [type(g) for g in groups] == [dict, dict]
        weights.append({k: v.clone()
                        for k, v in runner.model.state_dict().items()})
    assert graphs  # compiled
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        torch.testing.assert_close(weights[1][key], weights[0][key])


def test_a_refused_dump_target_stops_every_rank(tmp_path, monkeypatch):
    """Rank 0 checks the dump's target; a refusal is broadcast, so the
    other ranks stop too instead of waiting for rank 0 in the first
    collective."""
    from mmcoop.engine import runner as runner_module
    from mmcoop.utils.paths import OutputPathError
    sent = []

    def broadcast(box):
        sent.append(list(box))
        box[0] = 'the message of rank 0'

    monkeypatch.setattr(runner_module, 'is_distributed', lambda: True)
    monkeypatch.setattr(runner_module, 'is_main_process', lambda: False)
    monkeypatch.setattr(runner_module, 'broadcast_object_list', broadcast)
    (tmp_path / 'exp.py').write_text('lr = 1\n')
    with pytest.raises(OutputPathError, match='the message of rank 0'):
        runner_module.check_dump_target_on_every_rank(
            str(tmp_path / 'exp.py'), str(tmp_path), 'now')
    assert sent == [[None]]  # this rank did not check: rank 0's word

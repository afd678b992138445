# Copyright (c) mmcoop contributors. All rights reserved.
"""Two gloo processes on CPU (tools/dist_train.sh -> torchrun ->
tools/train.py --launcher pytorch -> MMEngine's MMDistributedDataParallel)
train exactly like one process with the same global batch.

The official loss is a *sum* over the batch while DDP averages gradients
over the processes; mmcoop's loss sums over the *global* batch (each rank's
sum is scaled by the world size), so N processes reproduce the
single-process updates with no change to ``loss_weight`` or the learning
rate (docs/get_started.md, "Multi-GPU"). This test runs the real recipe
(sum, partial labels at p = 0.5, SGD lr 0.5 with the per-tensor
multipliers, warm-up then cosine) with the recipe's ``loss_weight`` in both
runs.
"""
import json
import os
import os.path as osp
import socket
import sys
import uuid

import pytest
import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import _tool_helpers as H  # noqa: E402

HOOK_MODULE = '''
import json, os
from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmcoop.registry import HOOKS


@HOOKS.register_module()
class LossRecorderHook(Hook):
    """Append every rank's training loss to losses_rank{r}.jsonl."""

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        path = os.path.join(runner.work_dir,
                            f'losses_rank{get_rank()}.jsonl')
        with open(path, 'a') as f:
            f.write(json.dumps(dict(
                iter=runner.iter, world_size=get_world_size(),
                batch=len(data_batch['data_samples']),
                loss=float(outputs['loss']))) + '\\n')
'''


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _losses(work_dir, rank):
    with open(osp.join(work_dir, f'losses_rank{rank}.jsonl')) as f:
        return [json.loads(line) for line in f]


def _state(work_dir, epoch):
    # our own freshly written checkpoints: trusted load
    ckpt = torch.load(
        osp.join(work_dir, f'epoch_{epoch}.pth'),
        map_location='cpu',
        weights_only=False)
    return ckpt['state_dict']


def test_two_gloo_processes_equal_one_process(tmp_path, monkeypatch):
    data_root = str(tmp_path / 'data')
    clip = H.make_tiny_clip(str(tmp_path / 'tiny_clip.pt'))
    (tmp_path / 'mods').mkdir()
    (tmp_path / 'mods' / 'loss_recorder.py').write_text(HOOK_MODULE)
    global_batch, epochs, world_size = 32, 2, 2
    loss_weight = 0.03  # the recipe's (sum over the batch)
    extra = """
custom_imports = dict(
    imports=['mmcoop.models', 'mmcoop.datasets', 'mmcoop.evaluation',
             'mmcoop.engine', 'loss_recorder'],
    allow_failed_imports=False)
custom_hooks = [dict(type='PartialLabelMaskHook'),
                dict(type='LossRecorderHook')]
model['head']['loss'] = dict(reduction='sum', loss_weight={})
"""

    def config(name, batch, weight):
        return H.write_config(
            str(tmp_path / name),
            H.DEMO_CONFIG,
            data_root,
            clip=clip,
            batch_size=batch,
            num_train=64,
            num_val=16,
            max_epochs=epochs,
            val_interval=epochs,
            shuffle=False,
            extra=extra.format(weight))

    single_dir = str(tmp_path / 'single')
    ddp_dir = str(tmp_path / 'ddp')
    env = dict(
        PYTHONPATH=str(tmp_path / 'mods'),
        OMP_NUM_THREADS='1',
        PYTHON=H.PYTHON,
        PORT=str(_free_port()))

    # 2 processes x 16 images (torchrun, gloo on CPU)
    proc = H.run([
        'bash',
        osp.join(H.REPO, 'tools', 'dist_train.sh'),
        config('ddp.py', global_batch // world_size, loss_weight),
        str(world_size), '--work-dir', ddp_dir
    ],
                 env=env,
                 timeout=170)
    assert proc.returncode == 0, proc.stdout[-15000:]

    # 1 process x 32 images, same code path
    proc1 = H.run([
        H.PYTHON,
        osp.join(H.REPO, 'tools', 'train.py'),
        config('single.py', global_batch, loss_weight), '--work-dir',
        single_dir
    ],
                  env=dict(
                      PYTHONPATH=str(tmp_path / 'mods'), OMP_NUM_THREADS='1'),
                  timeout=120)
    assert proc1.returncode == 0, proc1.stdout[-5000:]

    # the DDP run really had 2 ranks of 16 images and used gloo
    rank0, rank1 = _losses(ddp_dir, 0), _losses(ddp_dir, 1)
    single = _losses(single_dir, 0)
    iters = epochs * 64 // global_batch
    assert len(rank0) == len(rank1) == len(single) == iters
    assert {r['world_size'] for r in rank0 + rank1} == {2}
    assert {r['batch'] for r in rank0 + rank1} == {global_batch // 2}
    assert {r['batch'] for r in single} == {global_batch}
    assert not osp.exists(osp.join(single_dir, 'losses_rank1.jsonl'))

    # same loss at every iteration: each rank's sum is scaled by the world
    # size (the loss sums over the global batch), so the ranks' losses
    # average to the single process' sum
    for a, b, s in zip(rank0, rank1, single):
        assert a['iter'] == b['iter'] == s['iter']
        assert abs(a['loss'] - b['loss']) > 1e-6  # different data per rank
        assert (a['loss'] + b['loss']) / world_size == pytest.approx(
            s['loss'], rel=1e-5, abs=1e-7)

    # same parameters after training (and they did move)
    ddp_state, single_state = _state(ddp_dir,
                                     epochs), _state(single_dir, epochs)
    assert set(ddp_state) == set(single_state) == {
        'head.pos_prompt.ctx', 'head.neg_embedding', 'head.pos_residual'
    }
    ddp_first = _state(ddp_dir, 1)
    # (float reassociation of 2 x 16 vs 32 summands over the run: ~1e-6 on
    # values ~1e-2; a 1/N gradient would differ by tens of percent)
    for key in single_state:
        torch.testing.assert_close(
            ddp_state[key], single_state[key], rtol=1e-4, atol=1e-5)
        assert not torch.allclose(ddp_state[key], ddp_first[key])

    # distributed evaluation gathers all 16 images: same mAP
    assert H.val_map(ddp_dir) == pytest.approx(H.val_map(single_dir), abs=1e-3)


DUMP_RECORDER = '''
import json
import mmengine
from mmengine.dist import get_rank

_dump = mmengine.dump


def dump(obj, file=None, *args, **kwargs):
    """Record which rank writes which keys to `file`, then write it."""
    if isinstance(file, str):
        with open(f'{file}.rank{get_rank()}', 'a') as f:
            f.write(json.dumps({k: v is not None for k, v in obj.items()}))
    return _dump(obj, file, *args, **kwargs)


mmengine.dump = dump
'''


def test_dist_test_writes_the_metrics_file_once(tmp_path, load_tool):
    """``dist_test.sh ... --out m.json --out-item metrics`` on 2 ranks with
    15 test images (not divisible by the world size): rank 0 alone writes
    the file, with the per-class table, and the metrics are those of one
    process. (Every rank wrote it; rank 1's had ``per_class_ap: null``, and
    whichever finished last won.)"""
    clip = H.make_tiny_clip(str(tmp_path / 'tiny_clip.pt'))
    (tmp_path / 'mods').mkdir()
    (tmp_path / 'mods' / 'dump_recorder.py').write_text(DUMP_RECORDER)

    def config(name, extra=''):
        return H.write_config(
            str(tmp_path / name),
            H.DEMO_CONFIG,
            str(tmp_path / 'data'),
            clip=clip,
            num_train=16,
            num_val=15,
            max_epochs=1,
            extra=extra)

    # one process, in this one: train one epoch, test it
    plain = config('plain.py')
    name = f'experiment_name=dist-out-{uuid.uuid4().hex[:8]}'
    load_tool('tools/train.py').main([
        plain, '--work-dir',
        str(tmp_path / 'train'), '--cfg-options', name + '-train'
    ])
    ckpt = str(tmp_path / 'train' / 'epoch_1.pth')
    out1, out2 = str(tmp_path / 'single.json'), str(tmp_path / 'ddp.json')
    load_tool('tools/test.py').main([
        plain, ckpt, '--work-dir',
        str(tmp_path / 'test1'), '--out', out1, '--out-item', 'metrics',
        '--cfg-options', name + '-test'
    ])

    # 2 processes, each recording its mmengine.dump calls
    recorded = config(
        'recorded.py', """
custom_imports = dict(
    imports=['mmcoop.models', 'mmcoop.datasets', 'mmcoop.evaluation',
             'mmcoop.engine', 'dump_recorder'],
    allow_failed_imports=False)
""")
    proc = H.run([
        'bash',
        osp.join(H.REPO, 'tools', 'dist_test.sh'), recorded, ckpt, '2',
        '--work-dir',
        str(tmp_path / 'test2'), '--out', out2, '--out-item', 'metrics'
    ],
                 env=dict(
                     PYTHONPATH=f"{tmp_path / 'mods'}{os.pathsep}{H.REPO}",
                     OMP_NUM_THREADS='1',
                     PYTHON=H.PYTHON,
                     PORT=str(_free_port())),
                 timeout=120)
    assert proc.returncode == 0, proc.stdout[-15000:]

    assert osp.exists(out2 + '.rank0')
    assert not osp.exists(out2 + '.rank1')  # written once, by rank 0
    with open(out1) as f:
        single = json.load(f)
    with open(out2) as f:
        ddp = json.load(f)
    assert ddp['per_class_ap'] and len(ddp['per_class_ap']) == 10
    assert ddp == single  # all 15 images, each once: the same numbers


def test_pytorch_launcher_without_torchrun_is_named(tmp_path, load_tool,
                                                    monkeypatch):
    """``python tools/train.py CONFIG --launcher pytorch`` (no torchrun):
    before, torch's "environment variable RANK expected, but not set"."""
    for var in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR',
                'MASTER_PORT'):
        monkeypatch.delenv(var, raising=False)
    cfg = H.write_config(str(tmp_path / 'cfg.py'), H.DEMO_CONFIG,
                         str(tmp_path / 'data'), num_train=4, num_val=4)
    work = tmp_path / 'work'
    with pytest.raises(ValueError, match=(
            r'--launcher pytorch .*not started by torchrun, which sets '
            r'RANK, WORLD_SIZE, .*MASTER_PORT\. '
            r'Fix: bash tools/dist_train\.sh CONFIG N')):
        load_tool('tools/train.py').main(
            [cfg, '--work-dir', str(work), '--launcher', 'pytorch'])
    assert not work.exists()


def test_dist_test_of_a_zero_shot_model(tmp_path, load_tool):
    """A ZeroShotHead learns nothing: ``dist_test.sh CONFIG none 2`` (the
    script needs an argument in the checkpoint's place) gives the metrics
    of one process. Before: "Checkpoint 'none' does not exist", and
    without a checkpoint torch's "DistributedDataParallel is not needed
    when a module doesn't have any parameter that requires a gradient"."""
    cfg = H.write_config(
        str(tmp_path / 'cfg.py'),
        H.METHOD_CONFIGS['positivecoop'],
        str(tmp_path / 'data'),
        num_val=9)
    options = ['--cfg-options', 'model.head.type=ZeroShotHead']
    out1, out2 = str(tmp_path / 'single.json'), str(tmp_path / 'ddp.json')
    load_tool('tools/test.py').main([
        cfg, 'none', '--work-dir',
        str(tmp_path / 'test1'), '--out', out1, '--out-item', 'metrics',
        *options, f'experiment_name=zs-{uuid.uuid4().hex[:8]}'
    ])
    proc = H.run([
        'bash',
        osp.join(H.REPO, 'tools', 'dist_test.sh'), cfg, 'none', '2',
        '--work-dir',
        str(tmp_path / 'test2'), '--out', out2, '--out-item', 'metrics',
        *options
    ],
                 env=dict(
                     PYTHONPATH=H.REPO,
                     OMP_NUM_THREADS='1',
                     PYTHON=H.PYTHON,
                     PORT=str(_free_port())),
                 timeout=120)
    assert proc.returncode == 0, proc.stdout[-15000:]
    with open(out1) as f:
        single = json.load(f)
    with open(out2) as f:
        ddp = json.load(f)
    assert 0 < single['multi-label/mAP'] <= 100
    assert ddp == single


# (GPUS or CHECKPOINT left out: an option where GPUS belongs)
@pytest.mark.parametrize('script, args, bad', [
    ('dist_train.sh', ['CFG', '0'], '0'),
    ('dist_train.sh', ['CFG', '-1'], '-1'),
    ('dist_train.sh', ['CFG', '--work-dir', 'w'], '--work-dir'),
    ('dist_test.sh', ['CFG', 'CKPT', '0'], '0'),
    ('dist_test.sh', ['CFG', '2', '--out', 'x.pkl'], '--out'),
])
def test_dist_scripts_refuse_a_bad_process_count(script, args, bad, tmp_path):
    """A process count of 0 stopped torchrun with a bare AssertionError; an
    option in its place with a traceback."""
    proc = H.run(['bash', osp.join(H.REPO, 'tools', script), *args],
                 cwd=str(tmp_path),
                 env=dict(PYTHON=H.PYTHON),
                 timeout=60)
    assert proc.returncode == 1
    assert 'Traceback' not in proc.stdout
    assert 'GPUS (the' in proc.stdout and f"got '{bad}'" in proc.stdout
    assert 'must be the number of processes' in proc.stdout
    assert f'Usage: {osp.join(H.REPO, "tools", script)} CONFIG' \
        in proc.stdout

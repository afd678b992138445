# Copyright (c) mmcoop contributors. All rights reserved.
"""tools/train.py, tools/test.py and tools/model_converters/publish_model.py
end to end on generated data with a tiny CLIP: every method trains with the
recipe of its real config, resume continues exactly, published checkpoints
load with weights_only=True and test to the same mAP."""
import glob
import hashlib
import json
import os
import os.path as osp
import pickle
import re
import sys
import uuid

import pytest
import torch
from _common import load_tool

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import _tool_helpers as H  # noqa: E402

train_tool = load_tool('tools/train.py')
test_tool = load_tool('tools/test.py')
publish_tool = load_tool('tools/model_converters/publish_model.py')

TRAINABLE = {
    'positivecoop':
    {'head.pos_prompt.ctx', 'head.neg_embedding', 'head.pos_residual'},
    'negativecoop':
    {'head.neg_prompt.ctx', 'head.pos_embedding', 'head.neg_residual'},
    'dualcoop': {'head.pos_prompt.ctx', 'head.neg_prompt.ctx'},
    'baseline': {'head.fc.weight', 'head.fc.bias'},
}
# (warm-up lr of every group, lr of the first trained group in epoch 2)
LOGGED_LR = {
    'positivecoop': (5e-3, 0.5),  # head.neg_embedding at lr
    'negativecoop': (5e-3, 0.5),  # head.pos_embedding at lr
    'dualcoop': (1e-5, 0.002),  # one group
    'baseline': (5e-3, 0.005),  # head.fc at 0.01 x lr
}


@pytest.fixture(scope='module')
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp('assets')
    return dict(
        root=root,
        data=str(root / 'demo_data'),
        clip=H.make_tiny_clip(str(root / 'tiny_clip.pt')))


def _train(cfg_path, work_dir, *extra):
    name = f'run-{uuid.uuid4().hex[:8]}'  # unique logger/visualizer names
    return train_tool.main([
        cfg_path, '--work-dir', work_dir, '--no-pin-memory', *extra,
        '--cfg-options', f'experiment_name={name}'
    ])


def _ckpt(work_dir, epoch):
    # files these tests just wrote: trusted load
    return torch.load(
        osp.join(work_dir, f'epoch_{epoch}.pth'),
        map_location='cpu',
        weights_only=False)


@pytest.mark.parametrize('method', sorted(TRAINABLE))
def test_train_every_method_with_its_recipe(method, assets, tmp_path):
    cfg = H.write_config(
        str(tmp_path / f'{method}.py'),
        H.METHOD_CONFIGS[method],
        assets['data'],
        clip=assets['clip'],
        batch_size=16,
        num_train=32,
        num_val=16,
        max_epochs=2,
        val_interval=2,
        augment=True,  # the paper's Cutout + RandAugment
        text_encoder=method != 'baseline')
    work_dir = str(tmp_path / 'work')
    runner = _train(cfg, work_dir)
    assert (runner.epoch, runner.iter) == (2, 4)

    # checkpoints: only the trained tensors, and they moved in epoch 2
    ckpt1, ckpt2 = _ckpt(work_dir, 1), _ckpt(work_dir, 2)
    assert set(ckpt2['state_dict']) == TRAINABLE[method]
    assert (ckpt2['meta']['epoch'], ckpt2['meta']['iter']) == (2, 4)
    assert ckpt2['meta']['seed'] == 0
    for key, value in ckpt2['state_dict'].items():
        assert torch.isfinite(value).all()
        assert not torch.equal(value, ckpt1['state_dict'][key]), key
    # the partial-label mask went to the work dir
    assert osp.isfile(
        osp.join(work_dir, 'partial_labels', 'mask_p0.50_seed0.npy'))

    # lrs actually applied: warm-up in epoch 1, base lr in epoch 2
    rows = H.read_scalars(work_dir)
    train_rows = [r for r in rows if 'loss' in r]
    assert [r['step'] for r in train_rows] == [1, 2, 3, 4]
    warm, base = LOGGED_LR[method]
    assert [r['lr']
            for r in train_rows] == pytest.approx([warm, warm, base, base],
                                                  rel=1e-9)
    assert all(0 < r['loss'] < 1e3 for r in train_rows)
    val = [r for r in rows if 'multi-label/mAP' in r]
    assert len(val) == 1 and 0 < val[0]['multi-label/mAP'] <= 100

    # DemoResultHook on the demo tree: the final mAP next to chance level
    import glob
    import re
    log = ''.join(
        open(f).read()
        for f in glob.glob(osp.join(work_dir, '*', '*.log')))
    found = re.findall(
        r'\[mmcoop demo\] final val mAP ([\d.]+) \| chance level '
        r'\(random scores\) ([\d.]+)', log)
    assert len(found) == 1
    assert float(found[0][0]) == pytest.approx(
        val[0]['multi-label/mAP'], abs=5e-3)
    assert 0 < float(found[0][1]) < 100


def _small_config(assets, path, max_epochs, val_interval):
    """A PositiveCoOp config on the generated data: 32 train / 16 val."""
    return H.write_config(
        str(path),
        H.METHOD_CONFIGS['positivecoop'],
        assets['data'],
        clip=assets['clip'],
        batch_size=16,
        num_train=32,
        num_val=16,
        max_epochs=max_epochs,
        val_interval=val_interval)


def _resume_config(assets, tmp_path):
    return _small_config(assets, tmp_path / 'resume.py', 3, 3)


@pytest.fixture(scope='module')
def trained(assets, tmp_path_factory):
    """A 3-epoch run, and the same run interrupted after 2 epochs and
    resumed with --resume."""
    tmp = tmp_path_factory.mktemp('resume')
    cfg = _resume_config(assets, tmp)
    full_dir, resumed_dir = str(tmp / 'full'), str(tmp / 'resumed')
    _train(cfg, full_dir)
    _train(cfg, resumed_dir, '--cfg-options', 'train_cfg.max_epochs=2')
    first_runs = set(os.listdir(resumed_dir))
    runner = _train(cfg, resumed_dir, '--resume')
    new_run = (set(os.listdir(resumed_dir)) - first_runs -
               {'epoch_3.pth'}).pop()
    return dict(
        cfg=cfg,
        full_dir=full_dir,
        resumed_dir=resumed_dir,
        resumed_runner=runner,
        new_run=new_run,
        tmp=tmp)


def test_resume_continues_from_the_last_checkpoint(trained):
    runner = trained['resumed_runner']
    assert (runner.epoch, runner.iter) == (3, 6)
    resumed = _ckpt(trained['resumed_dir'], 3)
    full = _ckpt(trained['full_dir'], 3)
    assert (resumed['meta']['epoch'], resumed['meta']['iter']) == (3, 6)
    # the resumed invocation trained epoch 3 only (iterations 5 and 6)
    with open(
            osp.join(trained['resumed_dir'], trained['new_run'], 'vis_data',
                     'scalars.json')) as f:
        steps = [json.loads(line)['step'] for line in f if '"loss"' in line]
    assert steps == [5, 6]
    # ... and ends exactly where the uninterrupted run ends
    assert set(resumed['state_dict']) == set(full['state_dict'])
    for key in full['state_dict']:
        torch.testing.assert_close(
            resumed['state_dict'][key],
            full['state_dict'][key],
            rtol=1e-5,
            atol=1e-7)
    # optimizer and scheduler state came back too
    assert resumed['param_schedulers'][1]['last_step'] == full[
        'param_schedulers'][1]['last_step'] == 2


def test_resume_and_amp_flags_map_to_the_config(tmp_path, monkeypatch):
    import mmcoop.engine.train_checks as train_checks

    # --amp maps to AmpOptimWrapper; on a machine without an accelerator
    # the merge refuses it (tests/test_engine/test_train_config_checks.py)
    monkeypatch.setattr(train_checks, 'amp_device_available', lambda: True)
    cfg_path = H.METHOD_CONFIGS['dualcoop']
    from mmengine.config import Config

    from mmcoop.engine.cli import merge_train_args

    def merged(*argv):
        args = train_tool.parse_args([cfg_path, *argv])
        return merge_train_args(Config.fromfile(cfg_path), args)

    cfg = merged('--resume')
    assert cfg.resume == 'auto' and cfg.load_from is None
    cfg = merged('--resume', 'work_dirs/x/epoch_3.pth')
    assert cfg.resume is True and cfg.load_from == 'work_dirs/x/epoch_3.pth'
    cfg = merged('--amp', '--auto-scale-lr', '--work-dir', 'wd')
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'
    assert cfg.auto_scale_lr == dict(base_batch_size=32, enable=True)
    assert cfg.work_dir == 'wd' and cfg.launcher == 'none'
    cfg = merged('--cfg-options', 'train_dataloader.num_workers=0')
    assert cfg.train_dataloader.persistent_workers is False
    cfg = merged('--no-validate')
    assert cfg.val_dataloader is None and cfg.val_cfg is None
    cfg = merged()
    assert cfg.work_dir == osp.join('./work_dirs', osp.basename(cfg_path)[:-3])


def test_publish_then_test(trained, tmp_path):
    raw = osp.join(trained['full_dir'], 'epoch_3.pth')
    # a training checkpoint pickles runtime state: weights_only refuses it
    with pytest.raises(pickle.UnpicklingError):
        torch.load(raw, map_location='cpu', weights_only=True)
    assert 'mmengine.logging.history_buffer.HistoryBuffer' in \
        torch.serialization.get_unsafe_globals_in_checkpoint(raw)

    out_dir = tmp_path / 'publish'
    out_dir.mkdir()
    final = publish_tool.main([raw, str(out_dir / 'positivecoop_demo.pth')])
    m = re.fullmatch(r'positivecoop_demo_(\d{8})-([0-9a-f]{8})\.pth',
                     osp.basename(final))
    assert m, final
    with open(final, 'rb') as f:
        assert hashlib.sha256(f.read()).hexdigest()[:8] == m[2]
    assert glob.glob(str(out_dir / '*')) == [final]  # no temp files left

    published = torch.load(final, map_location='cpu', weights_only=True)
    original = _ckpt(trained['full_dir'], 3)
    assert set(published) == {'state_dict', 'meta'}
    assert set(published['state_dict']) == set(original['state_dict'])
    for key, value in original['state_dict'].items():
        assert torch.equal(published['state_dict'][key], value)
    meta = published['meta']
    import mmcoop
    assert meta['mmcoop_version'] == mmcoop.__version__
    assert meta['dataset_meta']['classes'] == H.DEMO_CLASSES
    assert 'PositiveCoOpHead' in meta['config']
    assert (meta['epoch'], meta['iter'], meta['seed']) == (3, 6, 0)
    # the towers the load policy compares travel with the release
    assert meta['clip_towers'] == original['meta']['clip_towers']
    assert set(meta['clip_towers']) == {'backbone', 'head.text_encoder'}
    assert torch.serialization.get_unsafe_globals_in_checkpoint(final) == []

    # --no-date: OUT-{sha8}.pth
    final2 = publish_tool.main([raw, str(out_dir / 'again.pth'), '--no-date'])
    assert re.fullmatch(r'again-[0-9a-f]{8}\.pth', osp.basename(final2))

    # testing the published file reproduces the last validation exactly
    metrics_file = str(tmp_path / 'metrics.json')
    metrics = test_tool.main([
        trained['cfg'], final, '--no-pin-memory', '--work-dir',
        str(tmp_path / 'test'), '--out', metrics_file, '--out-item', 'metrics',
        '--cfg-options', f'experiment_name=t-{uuid.uuid4().hex}'
    ])
    expected = H.val_map(trained['full_dir'])
    assert metrics['multi-label/mAP'] == pytest.approx(expected, abs=1e-9)
    with open(metrics_file) as f:
        assert json.load(f)['multi-label/mAP'] == pytest.approx(expected)

    # the raw training checkpoint gives the same result (MMCoopRunner reads
    # its runtime state without unpickling code)
    metrics = test_tool.main([
        trained['cfg'], raw, '--no-pin-memory', '--work-dir',
        str(tmp_path / 'test2'), '--cfg-options',
        f'experiment_name=t-{uuid.uuid4().hex}'
    ])
    assert metrics['multi-label/mAP'] == pytest.approx(expected, abs=1e-9)


def test_publish_refuses_unexpected_globals(tmp_path):
    import datetime
    path = str(tmp_path / 'odd.pth')
    torch.save(
        dict(
            state_dict={'head.fc.weight': torch.ones(2, 2)},
            meta=dict(when=datetime.date(2024, 1, 1), epoch=1)), path)
    from mmcoop.utils import UnsafeCheckpointError
    with pytest.raises(UnsafeCheckpointError, match='--trust-source'):
        publish_tool.main([path, str(tmp_path / 'out.pth')])
    assert not glob.glob(str(tmp_path / 'out*'))
    final = publish_tool.main([
        path,
        str(tmp_path / 'out.pth'), '--trust-source', '--dataset-type',
        'VOC2007MultiLabel'
    ])
    meta = torch.load(final, weights_only=True)['meta']
    assert 'when' not in meta and meta['epoch'] == 1
    assert len(meta['dataset_meta']['classes']) == 20


def test_tools_run_without_pythonpath(tmp_path):
    """From another working directory, no PYTHONPATH: --help works."""
    for tool in ('tools/train.py', 'tools/test.py',
                 'tools/model_converters/publish_model.py'):
        proc = H.run([H.PYTHON, osp.join(H.REPO, tool), '--help'],
                     cwd=str(tmp_path),
                     timeout=120)
        assert proc.returncode == 0, proc.stdout[-3000:]
        assert 'usage:' in proc.stdout
    for script, nargs in (('dist_train.sh', 2), ('dist_test.sh', 3),
                          ('slurm_train.sh', 4), ('slurm_test.sh', 4)):
        proc = H.run(['bash', osp.join(H.REPO, 'tools', script)],
                     cwd=str(tmp_path))
        assert proc.returncode == 1 and 'usage:' in proc.stdout, script


def test_train_and_test_tools_use_the_feature_cache(assets, tmp_path):
    """`feature_cache=...` (here from the command line) switches both tools
    to cached features; the test tool reuses the train run's cache."""
    cfg = _small_config(assets, tmp_path / 'cached.py', 1, 1)
    cache_root = str(tmp_path / 'cache')
    work_dir = str(tmp_path / 'work')
    runner = train_tool.main([
        cfg, '--work-dir', work_dir, '--no-pin-memory', '--cfg-options',
        f'experiment_name=run-{uuid.uuid4().hex[:8]}',
        f'feature_cache.cache_root={cache_root}',
        'feature_cache.dtype=float32'
    ])
    assert type(runner.model.backbone).__name__ == 'PrecomputedFeatures'
    manifests = glob.glob(osp.join(cache_root, '*', 'manifest.json'))
    assert len(manifests) == 2  # train and val splits
    mtimes = {m: os.stat(m).st_mtime_ns for m in manifests}
    val_map = H.read_scalars(work_dir)[-1]['multi-label/mAP']
    metrics = test_tool.main([
        cfg,
        osp.join(work_dir, 'epoch_1.pth'), '--work-dir',
        str(tmp_path / 'test'), '--cfg-options',
        f'experiment_name=run-{uuid.uuid4().hex[:8]}',
        f'feature_cache.cache_root={cache_root}',
        'feature_cache.dtype=float32'
    ])
    # same features, same weights: the test tool reproduces the last val
    assert metrics['multi-label/mAP'] == pytest.approx(val_map, abs=1e-4)
    # the val cache was reused, not rebuilt
    assert {m: os.stat(m).st_mtime_ns for m in manifests} == mtimes


def test_train_tool_on_the_device_path(assets, tmp_path):
    """``--cfg-options data_path=device``: tools/train.py reads the files in
    the loader and decodes, resizes and augments in the model's data
    preprocessor (here on the CPU), with the same draws: the training
    losses and the validation mAP are the CPU pipeline's."""
    import warnings
    cfg = H.write_config(
        str(tmp_path / 'aug.py'), H.METHOD_CONFIGS['positivecoop'],
        assets['data'], clip=assets['clip'], batch_size=16, num_train=32,
        num_val=16, max_epochs=1, val_interval=1, augment=True)
    runs = {}
    for path in ('cpu', 'device'):
        work_dir = str(tmp_path / path)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # device path without CUDA
            runner = _train(cfg, work_dir, '--cfg-options',
                            f'data_path={path}')
        runs[path] = H.read_scalars(work_dir)
        pre = type(runner.model.data_preprocessor).__name__
        assert pre == {'cpu': 'CLIPDataPreprocessor',
                       'device': 'DeviceAugmentPreprocessor'}[path]
    losses = {k: [r['loss'] for r in v if 'loss' in r]
              for k, v in runs.items()}
    assert len(losses['cpu']) == 2
    # the same draws and pixels
    assert losses['device'] == pytest.approx(losses['cpu'], rel=1e-4)
    maps = {k: [r['multi-label/mAP'] for r in v if 'multi-label/mAP' in r]
            for k, v in runs.items()}
    # the test resize within a grey level of PIL's: equal mAP measured
    assert maps['device'] == pytest.approx(maps['cpu'], abs=0.5)


def _mmpretrain_tool(monkeypatch, name, *argv):
    """One of mmpretrain's own tools, as ``mim run mmpretrain`` finds it
    (``mmpretrain/.mim/tools``), run in this process."""
    import runpy

    import mmpretrain
    path = osp.join(osp.dirname(mmpretrain.__file__), '.mim', 'tools', name)
    monkeypatch.setattr(sys, 'argv', [path, *map(str, argv)])
    runpy.run_path(path, run_name='__main__')


def test_mmpretrain_tools_read_mmcoop_runs(trained, tmp_path, monkeypatch,
                                           capsys):
    """docs/analysis.md: mmpretrain's analyze_logs, print_config,
    eval_metric and vis_scheduler on an mmcoop run, its config and its
    tools/test.py --out."""
    from mmpretrain.utils import load_json_log
    full_dir = trained['full_dir']
    log, = glob.glob(osp.join(full_dir, '*', 'vis_data', '2*.json'))
    # analyze_logs' reader finds the losses and the validation mAP
    logs = load_json_log(log)
    scalars = H.read_scalars(full_dir)
    assert [r['loss'] for r in logs['train']] == [
        r['loss'] for r in scalars if 'loss' in r]
    assert [r['multi-label/mAP'] for r in logs['val']] == [
        H.val_map(full_dir)]
    png = tmp_path / 'curves.png'
    _mmpretrain_tool(monkeypatch, 'analysis_tools/analyze_logs.py',
                     'plot_curve', log, '--keys', 'loss', 'multi-label/mAP',
                     '--out', png)
    with open(png, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    # print_config: the config with mmcoop's runner and head
    capsys.readouterr()
    _mmpretrain_tool(monkeypatch, 'misc/print_config.py', trained['cfg'])
    printed = capsys.readouterr().out
    assert "runner_type = 'mmcoop.engine.MMCoopRunner'" in printed
    assert "type='PositiveCoOpHead'" in printed
    # eval_metric: the predictions of tools/test.py --out, scored again
    # offline with mmcoop's metric (its scope named in the type)
    pkl = tmp_path / 'pred.pkl'
    metrics = test_tool.main([
        trained['cfg'],
        osp.join(full_dir, 'epoch_3.pth'), '--work-dir',
        str(tmp_path / 'test'), '--out',
        str(pkl), '--no-pin-memory'
    ])
    capsys.readouterr()
    _mmpretrain_tool(monkeypatch, 'analysis_tools/eval_metric.py', pkl,
                     '--metric', 'type=mmcoop.PartialMultiLabelMetric')
    printed = capsys.readouterr().out
    offline = float(re.search(r"'multi-label/mAP': ([0-9.]+)",
                              printed).group(1))
    assert offline == pytest.approx(metrics['multi-label/mAP'], abs=1e-6)
    # vis_scheduler: its simulation of the config's schedule gives the
    # learning rate the run logged at every iteration (2 per epoch)
    import runpy
    from unittest.mock import MagicMock

    import mmpretrain
    from mmengine.config import Config
    tool = runpy.run_path(osp.join(osp.dirname(mmpretrain.__file__), '.mim',
                                   'tools', 'visualization',
                                   'vis_scheduler.py'))

    class FakeDataloader(list):  # as the tool's main makes it
        dataset = MagicMock(metainfo=None)

    cfg = Config.fromfile(trained['cfg'])
    cfg.work_dir = str(tmp_path / 'vis_scheduler')
    simulated = tool['simulate_train'](FakeDataloader(range(2)), cfg, True)
    assert simulated['lr'] == [r['lr'] for r in scalars if 'lr' in r]
    assert len(simulated['lr']) == 6

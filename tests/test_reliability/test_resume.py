# Copyright (c) mmcoop contributors. All rights reserved.
"""Issue #6.1 / #4 (dataset untouched): a training run SIGKILLed in the middle
of an epoch and resumed with ``tools/train.py --resume`` ends with the same
parameters, optimizer and scheduler state, per-iteration losses and learning
rates and validation metrics as an uninterrupted run; ``tools/test.py`` then
reproduces the final metrics; no run writes into the dataset folder.

All runs are real ``tools/train.py`` / ``tools/test.py`` subprocesses on a
tiny CLIP (saved weights, so every run has the same frozen towers) with the
paper's train pipeline (LoadImageTensor + TensorCutout +
TensorRandAugment, which draw from NumPy's global RNG) and
``randomness=dict(seed=0, deterministic=True)``.
"""
import os.path as osp
import shutil

import numpy as np
import pytest
import torch
from _common import load_tool
from _helpers import (base_cfg, finish, load_ckpt, make_data, save_tiny_clip,
                      tool, train_records, train_until_killed,
                      tree_fingerprint, val_metrics, write_config)

EPOCHS = 3
ITERS = 12  # 48 images / batch 4


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('resume')
    data_root, classes = make_data(tmp / 'data')
    before = tree_fingerprint(data_root)
    clip = save_tiny_clip(tmp / 'tiny_clip.pt')
    settings = base_cfg(data_root, clip, classes, max_epochs=EPOCHS)
    settings['custom_hooks'] = settings['custom_hooks'] + [
        dict(type='KillPointHook', epoch=2, batch=5)
    ]
    cfg = write_config(tmp / 'cfg.py', settings, extra_imports=['_killpoint'])
    full, killed, no_rng = tmp / 'full', tmp / 'killed', tmp / 'no_rng'
    marker = tmp / 'parked'
    logs = {
        k: str(tmp / f'{k}.log')
        for k in ('full', 'killed', 'resumed', 'no_rng')
    }

    p_full = tool('train', cfg, '--work-dir', full, log=logs['full'])
    files_at_kill = train_until_killed(cfg, killed, logs['killed'], marker)
    shutil.copytree(killed, no_rng)

    p_res = tool(
        'train', cfg, '--work-dir', killed, '--resume', log=logs['resumed'])
    # control: the same resume without restoring the RNG states
    p_norng = tool(
        'train',
        cfg,
        '--work-dir',
        no_rng,
        '--resume',
        '--cfg-options',
        'mmcoop_hooks.rng_state=False',
        log=logs['no_rng'])
    results = {}
    for name, proc in (('full', p_full), ('resumed', p_res), ('no_rng',
                                                              p_norng)):
        rc, text = finish(proc, logs[name], timeout=180)
        assert rc == 0, f'{name} run failed:\n{text[-3000:]}'
        results[name] = text
    # tools/test.py in this process (keeps the test fast; deterministic
    # algorithms stay off in the pytest process)
    test_tool = load_tool('tools/test.py')
    test_tool.main([
        cfg,
        str(full / f'epoch_{EPOCHS}.pth'), '--work-dir',
        str(tmp / 'test_out'), '--out',
        str(tmp / 'metrics.json'), '--out-item', 'metrics', '--cfg-options',
        'randomness.deterministic=False'
    ])
    return dict(
        tmp=tmp,
        full=full,
        killed=killed,
        no_rng=no_rng,
        files_at_kill=files_at_kill,
        logs=results,
        data_root=data_root,
        before=before,
        metrics_file=tmp / 'metrics.json')


def _state(path):
    return load_ckpt(path)


def test_killed_mid_epoch_after_a_checkpoint(runs):
    names = runs['files_at_kill']
    assert 'epoch_1.pth' in names and 'epoch_2.pth' not in names
    assert not any('.tmp' in n for n in names)
    log = runs['logs']['resumed']
    assert 'resumed epoch: 1' in log
    assert 'Restored the Python/NumPy/torch RNG states' in log


def test_resumed_run_equals_uninterrupted_run(runs):
    full = _state(runs['full'] / f'epoch_{EPOCHS}.pth')
    resumed = _state(runs['killed'] / f'epoch_{EPOCHS}.pth')
    assert full['meta']['epoch'] == resumed['meta']['epoch'] == EPOCHS
    assert full['meta']['iter'] == resumed['meta']['iter'] == EPOCHS * ITERS
    assert full['state_dict'].keys() == resumed['state_dict'].keys()
    for key, value in full['state_dict'].items():
        assert torch.equal(value, resumed['state_dict'][key]), key
    # optimizer (momentum buffers, lrs) and scheduler state
    f_opt, r_opt = full['optimizer'], resumed['optimizer']
    assert f_opt['param_groups'] == r_opt['param_groups']
    for k, st in f_opt['state'].items():
        for name, t in st.items():
            assert torch.equal(
                torch.as_tensor(t), torch.as_tensor(r_opt['state'][k][name]))
    assert full['param_schedulers'] == resumed['param_schedulers']
    # every logged iteration of epochs 2-3: same loss and learning rate
    f_rec, r_rec = train_records(runs['full']), train_records(runs['killed'])
    later = [s for s in f_rec if s > ITERS]
    assert len(later) == (EPOCHS - 1) * ITERS
    for step in later:
        assert f_rec[step] == r_rec[step], step
    # the lr schedule went on: warm-up lr in epoch 1, cosine afterwards
    assert f_rec[1][1] == pytest.approx(5e-3)
    assert r_rec[ITERS + 1][1] == pytest.approx(0.5)
    assert r_rec[2 * ITERS + 1][1] == pytest.approx(0.375)
    # final validation metrics
    f_val, r_val = val_metrics(runs['full']), val_metrics(runs['killed'])
    assert f_val[EPOCHS] == r_val[EPOCHS]
    assert set(f_val) == set(r_val) == {1, 2, 3}


def test_rng_state_matters(runs):
    """Control: without restoring the RNG states the augmentations after
    the resume differ, so the final parameters differ."""
    full = _state(runs['full'] / f'epoch_{EPOCHS}.pth')['state_dict']
    other = _state(runs['no_rng'] / f'epoch_{EPOCHS}.pth')['state_dict']
    assert any(not torch.equal(v, other[k]) for k, v in full.items())
    assert 'Restored the Python/NumPy/torch RNG' not in runs['logs']['no_rng']


def test_partial_label_mask_survives(runs):
    name = osp.join('partial_labels', 'mask_p0.50_seed0.npy')
    a = np.load(runs['full'] / name)
    b = np.load(runs['killed'] / name)
    assert a.dtype == np.bool_ and np.array_equal(a, b)
    assert 'kept' in runs['logs']['resumed']  # the resume re-used the file


def test_tools_test_reproduces_final_metrics(runs):
    import json
    with open(runs['metrics_file']) as f:
        metrics = json.load(f)
    final = val_metrics(runs['full'])[EPOCHS]
    for key, value in final.items():
        assert metrics[key] == pytest.approx(value, abs=1e-4), key


def test_dataset_folder_untouched(runs):
    """Nothing in the dataset tree (names, sizes, mtimes, contents) is
    changed by four training runs, a kill, two resumes and a test run."""
    assert tree_fingerprint(runs['data_root']) == runs['before']

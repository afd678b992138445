# Copyright (c) mmcoop contributors. All rights reserved.
"""Bit-exact resume *with dataloader workers*: with ``EpochSeededSampler``
the augmentations (TensorCutout + TensorRandAugment) are a function of
(seed, epoch, index), so a run with 2 persistent workers, SIGKILLed mid
epoch and resumed with ``tools/train.py --resume``, ends exactly like the
uninterrupted run (MMEngine's own worker seeding restarts the worker
streams on resume; see docs/reliability.md)."""

import torch
from _helpers import (base_cfg, finish, load_ckpt, make_data, save_tiny_clip,
                      tool, train_records, train_until_killed, val_metrics,
                      write_config)

EPOCHS = 3
ITERS = 12  # 48 images / batch 4


def test_resume_with_workers_is_exact(tmp_path):
    data_root, classes = make_data(tmp_path / 'data')
    clip = save_tiny_clip(tmp_path / 'tiny_clip.pt')
    settings = base_cfg(
        data_root, clip, classes, max_epochs=EPOCHS, num_workers=2)
    settings['train_dataloader']['sampler'] = dict(
        type='EpochSeededSampler', shuffle=True)
    settings['custom_hooks'] = settings['custom_hooks'] + [
        dict(type='KillPointHook', epoch=2, batch=5)
    ]
    cfg = write_config(
        tmp_path / 'cfg.py', settings, extra_imports=['_killpoint'])
    full, killed = tmp_path / 'full', tmp_path / 'killed'
    marker = tmp_path / 'parked'
    logs = {k: str(tmp_path / f'{k}.log') for k in ('full', 'killed', 'res')}
    p_full = tool('train', cfg, '--work-dir', full, log=logs['full'])
    train_until_killed(cfg, killed, logs['killed'], marker, timeout=120)
    p_res = tool('train', cfg, '--work-dir', killed, '--resume',
                 log=logs['res'])
    for name, proc in (('full', p_full), ('res', p_res)):
        rc, text = finish(proc, logs[name], timeout=240)
        assert rc == 0, f'{name} run failed:\n{text[-3000:]}'

    a = load_ckpt(full / f'epoch_{EPOCHS}.pth')['state_dict']
    b = load_ckpt(killed / f'epoch_{EPOCHS}.pth')['state_dict']
    assert a.keys() == b.keys() and a
    for key, value in a.items():
        assert torch.equal(value, b[key]), key
    f_rec, r_rec = train_records(full), train_records(killed)
    later = [s for s in f_rec if s > ITERS]
    assert len(later) == (EPOCHS - 1) * ITERS
    for step in later:
        assert f_rec[step] == r_rec[step], step
    assert val_metrics(full)[EPOCHS] == val_metrics(killed)[EPOCHS]

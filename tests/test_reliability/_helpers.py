# Copyright (c) mmcoop contributors. All rights reserved.
"""Shared helpers of the reliability tests: tiny CLIP weights, generated
COCO-format data, configs for ``tools/train.py`` / ``tools/test.py`` and
subprocess plumbing."""
import glob
import hashlib
import json
import os
import os.path as osp
import pprint
import signal
import subprocess
import sys
import time

import torch

HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(osp.dirname(HERE))
PYTHON = sys.executable
TINY = 'mmcoop-tiny-RN'


def save_tiny_clip(path, seed=0):
    """Random ``mmcoop-tiny-RN`` weights with non-trivial BatchNorm
    statistics (a fresh open_clip ResNet maps every image to nearly the same
    feature), saved as a plain state dict."""
    from _common import make_clip_state_dict
    with torch.random.fork_rng(devices=[]):
        state_dict = make_clip_state_dict(TINY, seed)
    torch.save(state_dict, str(path))
    return str(path)


def make_data(root, num_train=48, num_val=16, image_size=48, num_classes=8):
    """A generated COCO-2014 tree; returns (root, classes)."""
    from mmcoop.demo import generate_demo_coco
    root = generate_demo_coco(
        str(root),
        num_train=num_train,
        num_val=num_val,
        image_size=image_size,
        num_classes=num_classes)
    with open(osp.join(root, 'demo_manifest.json')) as f:
        classes = json.load(f)['classes']
    return root, classes


def tree_fingerprint(root):
    """Sorted (path, size, mtime_ns, sha256) of every entry below root."""
    out = []
    for d, dirs, files in os.walk(root):
        for name in sorted(dirs):
            st = os.stat(osp.join(d, name))
            out.append((osp.relpath(osp.join(d, name), root) + '/', 0,
                        st.st_mtime_ns, ''))
        for name in sorted(files):
            p = osp.join(d, name)
            st = os.stat(p)
            with open(p, 'rb') as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            out.append((osp.relpath(p,
                                    root), st.st_size, st.st_mtime_ns, digest))
    return sorted(out)


def pipelines(size=64, augment=True):
    """``(train, test)`` pipelines of the paper configs at ``size`` px
    (configs/_base_/datasets/pipelines/official_recipe_448.py)."""
    aug = [
        dict(type='TensorCutout', cutout_factor=0.5),
        dict(type='TensorRandAugment')
    ] if augment else []
    train = [dict(type='LoadImageTensor', scale=(size, size))] + aug
    test = [
        dict(type='LoadImageFromFileChecked'),
        dict(
            type='Resize',
            scale=(size, size),
            keep_ratio=False,
            backend='pillow',
            interpolation='bilinear')
    ]
    pack = [dict(type='PackInputs')]
    return train + pack, test + pack


def model_cfg(clip, classes, size=64, head='PositiveCoOpHead'):
    head_cfg = dict(
        type=head,
        classnames=list(classes),
        n_ctx=4,
        text_encoder=dict(
            type='FrozenCLIPTextEncoder', model_name=TINY, pretrained=clip),
        loss=dict(
            type='PartialAsymmetricLoss',
            gamma_neg=2,
            gamma_pos=1,
            clip=0.05,
            loss_weight=0.03))
    return dict(
        type='ImageClassifier',
        data_preprocessor=dict(type='CLIPDataPreprocessor'),
        backbone=dict(
            type='FrozenCLIP',
            model_name=TINY,
            pretrained=clip,
            input_resolution=size),
        head=head_cfg)


def base_cfg(data_root,
             clip,
             classes,
             max_epochs=3,
             batch_size=4,
             num_workers=0,
             augment=True,
             size=64,
             val_interval=1):
    """Settings on top of ``configs/_base_/default_runtime.py``."""
    train_pipeline, test_pipeline = pipelines(size, augment)
    loader = dict(
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=False)
    val_loader = dict(
        batch_size=8,
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dict(
            type='COCO2014MultiLabel',
            data_root=data_root,
            split='val',
            classes=list(classes),
            test_mode=True,
            pipeline=test_pipeline),
        **loader)
    return dict(
        model=model_cfg(clip, classes, size),
        train_dataloader=dict(
            batch_size=batch_size,
            sampler=dict(type='DefaultSampler', shuffle=True),
            dataset=dict(
                type='PartialLabelDataset',
                known_proportion=0.5,
                seed=0,
                dataset=dict(
                    type='COCO2014MultiLabel',
                    data_root=data_root,
                    split='train',
                    classes=list(classes),
                    pipeline=train_pipeline)),
            **loader),
        val_dataloader=val_loader,
        test_dataloader=val_loader,
        val_evaluator=dict(type='PartialMultiLabelMetric', thr=0.5),
        test_evaluator=dict(type='PartialMultiLabelMetric', thr=0.5),
        optim_wrapper=dict(
            type='OptimWrapper',
            optimizer=dict(type='SGD', lr=0.5, momentum=0.9)),
        param_scheduler=[
            dict(
                type='ConstantAbsoluteLR',
                value=5e-3,
                begin=0,
                end=1,
                by_epoch=True)
        ] + ([
            dict(
                type='CosineAnnealingLR',
                T_max=max_epochs,
                eta_min=0.,
                begin=1,
                end=max_epochs,
                by_epoch=True)
        ] if max_epochs > 1 else []),
        train_cfg=dict(
            by_epoch=True, max_epochs=max_epochs, val_interval=val_interval),
        val_cfg=dict(),
        test_cfg=dict(),
        default_hooks=dict(
            logger=dict(type='LoggerHook', interval=1),
            checkpoint=dict(
                type='CheckpointHook', interval=1, max_keep_ckpts=3)),
        custom_hooks=[dict(type='PartialLabelMaskHook')],
        randomness=dict(seed=0, deterministic=True))


def write_config(path, settings, extra_imports=()):
    """A config file inheriting mmcoop's ``default_runtime.py``."""
    runtime = osp.join(ROOT, 'configs', '_base_', 'default_runtime.py')
    lines = [f'_base_ = [{runtime!r}]']
    if extra_imports:
        imports = [
            'mmcoop.models', 'mmcoop.datasets', 'mmcoop.evaluation',
            'mmcoop.engine'
        ] + list(extra_imports)
        lines.append(
            'custom_imports = ' +
            pprint.pformat(dict(imports=imports, allow_failed_imports=False)))
    for key, value in settings.items():
        lines.append(f'{key} = ' + pprint.pformat(value, width=100))
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return str(path)


def env(**extra):
    e = dict(os.environ)
    e['PYTHONPATH'] = os.pathsep.join([HERE, ROOT] +
                                      [p for p in [e.get('PYTHONPATH')] if p])
    e.setdefault('OMP_NUM_THREADS', '1')
    e.update({k: str(v) for k, v in extra.items()})
    return e


def tool(name, *args, log=None, **env_extra):
    """Start ``tools/<name>.py`` in a subprocess (a Popen)."""
    out = open(log, 'w') if log else subprocess.DEVNULL
    return subprocess.Popen(
        [PYTHON,
         osp.join(ROOT, 'tools', f'{name}.py'), *map(str, args)],
        cwd=ROOT,
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env(**env_extra),
        start_new_session=True)


def finish(proc, log=None, timeout=120):
    rc = proc.wait(timeout=timeout)
    text = open(log).read() if log and osp.exists(log) else ''
    return rc, text


def wait_for(path, proc, timeout=60):
    start = time.time()
    while not osp.exists(path):
        if proc.poll() is not None:
            raise AssertionError(f'process ended (rc={proc.returncode}) '
                                 f'before {path} appeared')
        if time.time() - start > timeout:
            raise AssertionError(f'{path} did not appear in {timeout}s')
        time.sleep(0.05)


def train_until_killed(cfg, work_dir, log, marker, timeout=90):
    """Run ``tools/train.py`` until the test-only ``KillPointHook`` parks it
    (it creates ``marker``), then ``SIGKILL`` it. Returns the names in
    ``work_dir`` at that moment."""
    proc = tool(
        'train', cfg, '--work-dir', work_dir, log=log,
        MMCOOP_KILL_MARKER=marker)
    wait_for(str(marker), proc, timeout=timeout)
    names = sorted(os.listdir(work_dir))
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    return names


def scalars(work_dir):
    """All scalar records of all runs in ``work_dir`` (run order)."""
    records = []
    for run in sorted(
            glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))):
        with open(run) as f:
            records.extend(json.loads(line) for line in f if line.strip())
    return records


def train_records(work_dir):
    """{step: (loss, lr)} of the training iterations (last write wins)."""
    out = {}
    for r in scalars(work_dir):
        if 'loss' in r and 'lr' in r:
            out[r['step']] = (r['loss'], r['lr'])
    return out


def val_metrics(work_dir):
    """{epoch: metrics} of the validation runs (last write wins)."""
    out = {}
    for r in scalars(work_dir):
        if 'multi-label/mAP' in r:
            out[r['step']] = {k: v for k, v in r.items() if '/' in k}
    return out


def load_ckpt(path):
    from mmcoop.utils.checkpoint import safe_torch_load
    return safe_torch_load(str(path), runtime_state=True)

# Copyright (c) mmcoop contributors. All rights reserved.
"""tools/analysis/benchmark.py: the FLOP accounting and the projections
(no timing assertions: times are the tool's output, not the test's)."""
import importlib.util
import math
import os.path as osp

import pytest
import torch
import torch.nn.functional as F

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@pytest.fixture(scope='module')
def bench():
    spec = importlib.util.spec_from_file_location(
        'mmcoop_tool_benchmark', osp.join(ROOT, 'tools/analysis/benchmark.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_count_flops_matmul_and_cpu_attention(bench):
    a, b = torch.randn(3, 5), torch.randn(5, 7)
    assert bench.count_flops(lambda: a @ b) == 2 * 3 * 5 * 7
    # (B, H, L, d): QK^T and AV, 2 FLOPs per multiply-add each
    q, k, v = (torch.randn(2, 4, 6, 8) for _ in range(3))
    assert bench.count_flops(
        lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)) \
        == 2 * (2 * 2 * 4 * 6 * 6 * 8)
    # the backward is counted too: it recomputes QK^T and forms dV, dP, dQ
    # and dK (5 matmuls: 2.5x the forward, torch's sdpa_backward formula)
    q.requires_grad_(True)
    total = bench.count_flops(
        lambda: F.scaled_dot_product_attention(q, k, v).sum().backward())
    fwd = 2 * (2 * 2 * 4 * 6 * 6 * 8)
    assert total == fwd + 5 * fwd // 2


def test_steps_flops_decompose_and_project(bench):
    args = bench.parse_args([
        '--mode', 'steps', '--methods', 'positivecoop', '--num-classes',
        '6', '--model-name', 'mmcoop-tiny-RN-512', '--resolution', '64',
        '--batch-size', '3', '--iters', '1', '--warmup', '0', '--no-isolate'
    ])
    res = bench.measure_steps('positivecoop', 6, args)
    r = {k: v['flops'] for k, v in res['results'].items()}
    image = r['extract']  # image tower, one (eval = train) batch
    assert image > 0
    # the cache removes exactly the image tower, in training and in eval
    assert r['T1'] - r['T2'] == image
    assert r['E2'] - r['E3'] == image
    # eval text cache: E1 re-encodes the prompts, E2 does not
    text_fwd = r['E4'] - r['E3']
    assert text_fwd > 0 and r['E1'] - r['E2'] == text_fwd
    # truncation: fewer FLOPs in training and eval (22 of 77 positions)
    assert r['T0'] > 2 * r['T1'] - image
    assert r['E0'] - r['E2'] > 3 * text_fwd
    for v in res['results'].values():
        assert v['peak_mib'] >= 0 and math.isfinite(v['time_s'])

    sched = dict(train=10, val=7, epochs=2, classes=6)
    p = bench.project_flops(res, sched, args)
    steps, val_batches = math.ceil(10 / 3), math.ceil(7 / 3)
    extraction = image / 3 * (10 + 7)
    assert p['extraction'] == pytest.approx(extraction / 1e15)
    assert p['feature_cache'] == pytest.approx(
        (2 * (steps * r['T2'] + val_batches * r['E3']) + extraction) / 1e15)
    assert p['straightforward'] == pytest.approx(
        2 * (steps * r['T0'] + val_batches * r['E0']) / 1e15)
    # 989 PFLOP at 989 TFLOP/s is 1000 s
    assert bench.gpu_hours(989.0, 989.0) == pytest.approx(1000 / 3600)
    assert bench.gpu_hours(989.0, 989.0, 0.5) == pytest.approx(2000 / 3600)

    args.device_desc = 'test CPU'
    report = bench.report_steps([res], args)
    assert 'Projected GPU-hours for 50 epochs from the counted FLOPs' in report
    assert 'PROJECTIONS, not measured' in report


def test_report_saved_run(bench, tmp_path):
    """--report re-renders a saved --json run with the saved settings."""
    flops = dict(T0=8e12, T1=4e12, T2=1e12, E0=5e12, E1=3.5e12, E2=3e12,
                 E3=1e9, E4=0.5e12, extract=3.2e12)
    results = {k: dict(time_s=1.0, median_s=1.0, times=[1.0], peak_mib=1.0,
                       flops=v) for k, v in flops.items()}
    saved = dict(
        device='some CPU',
        command='python tools/analysis/benchmark.py --mode steps '
        '--batch-size 32 --eval-batch-size 32',
        steps=[dict(method='positivecoop', num_classes=80, results=results)])
    path = tmp_path / 'run.json'
    path.write_text(__import__('json').dumps(saved))
    args = bench.parse_args(['--report', str(path), '--gpu-tflops', '100',
                             '--gpu-utilization', '0.5'])
    text = bench.report_saved(str(path), args)
    assert 'some CPU (saved run)' in text
    # feature cache: 50 x (2566 x 1 TF + 1255 x 0.001 TF) = 128.36 PF,
    # + extraction 0.1 TF/img x (82081 + 40137) = 12.22 PF -> 140.58 PF;
    # at 100 TFLOP/s: 0.3905 h, at 50 %: 0.781 h
    row = [line for line in text.splitlines()
           if line.startswith('| COCO | positivecoop') and ' / ' in line][0]
    cells = [c.strip() for c in row.split('|')]
    assert cells[6] == '140.6 / 0.391 / 0.781'


def test_epoch_mode_train_and_val(bench):
    """The epoch mode runs a train epoch and a validation pass both ways
    (image path and fp16 cache); checks the bookkeeping and the fp16 error,
    not the times."""
    args = bench.parse_args([
        '--mode', 'epoch', '--model-name', 'mmcoop-tiny-RN-512',
        '--epoch-images', '4', '--epoch-resolution', '64', '--batch-size',
        '2', '--workers', '0', '--epoch-methods', 'positivecoop',
        '--no-isolate'
    ])
    r = bench.measure_epoch(args)
    assert r['images'] == 4 and r['val_images'] == 2  # COCO val/train ratio
    e = r['positivecoop']
    for key in ('uncached_epoch_s', 'cached_epoch_s', 'uncached_val_s',
                'cached_val_s', 'uncached_supply_s', 'cached_supply_s'):
        assert e[key] > 0, key
    assert e['train_val_speedup'] == pytest.approx(
        (e['uncached_epoch_s'] + e['uncached_val_s']) /
        (e['cached_epoch_s'] + e['cached_val_s']))
    assert r['fp16_rel_err_features'] < 1e-3
    assert e['fp16_max_abs_logit_diff'] < 1e-2
    args.device_desc = 'test CPU'
    text = bench.report_epoch(r, args)
    assert '+ validation on 2 images' in text and '| positivecoop |' in text

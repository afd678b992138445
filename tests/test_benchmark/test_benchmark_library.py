# Copyright (c) mmcoop contributors. All rights reserved.
"""mmcoop.benchmark: FLOP accounting, peak memory, the projection and the
step/epoch measurements' bookkeeping (no timing assertions: times are the
tool's output, not the test's)."""
import math
import re
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from mmcoop.benchmark import PeakMemory, count_flops, gpu_hours, project
from mmcoop.benchmark.epoch import measure_epoch
from mmcoop.benchmark.report import report_epoch, report_steps
from mmcoop.benchmark.steps import measure_steps
from mmcoop.benchmark.vocab import VOCAB_VARIANTS, measure_vocab, report_vocab

TINY = dict(model_name='mmcoop-tiny-RN-512', pretrained=None, autocast=None,
            channels_last=False, device='cpu', gpu_tflops=989.0,
            gpu_utilization=0.3, device_desc='test CPU')


def test_count_flops_sees_the_attention_of_a_vit_tower():
    """Without gradients PyTorch runs a ViT block with an even number of
    heads as one fused kernel, which FlopCounterMode does not count; the
    count is the one of the same forward with gradients (where the fused
    kernel cannot run), and the kernel's setting is left as it was."""
    from mmcoop.models import FrozenCLIP
    tower = FrozenCLIP('mmcoop-tiny-ViT-wide', input_resolution=64)
    assert tower.visual.transformer.resblocks[0].attn.num_heads == 2
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        fused = count_flops(lambda: tower(x))
    assert torch.backends.mha.get_fastpath_enabled()
    x.requires_grad_(True)
    assert fused == count_flops(lambda: tower(x))
    # the attention: 2 blocks x (QKV + out projections and QK^T, AV) of
    # 2 x 17 tokens, width 32: at least the 4 projections are in the count
    assert fused > 2 * 2 * (4 * 2 * 17 * 32 * 32)


def test_count_flops_matmul_and_cpu_attention():
    a, b = torch.randn(3, 5), torch.randn(5, 7)
    assert count_flops(lambda: a @ b) == 2 * 3 * 5 * 7
    # (B, H, L, d): QK^T and AV, 2 FLOPs per multiply-add each
    q, k, v = (torch.randn(2, 4, 6, 8) for _ in range(3))
    assert count_flops(
        lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)) \
        == 2 * (2 * 2 * 4 * 6 * 6 * 8)
    # the backward is counted too: it recomputes QK^T and forms dV, dP, dQ
    # and dK (5 matmuls: 2.5x the forward, torch's sdpa_backward formula)
    q.requires_grad_(True)
    total = count_flops(
        lambda: F.scaled_dot_product_attention(q, k, v).sum().backward())
    fwd = 2 * (2 * 2 * 4 * 6 * 6 * 8)
    assert total == fwd + 5 * fwd // 2


def test_peak_memory_cpu_counts_what_the_call_creates():
    memory = PeakMemory(torch.device('cpu'))
    kept = torch.ones(16 * 2**20 // 4)  # exists before: not counted

    def make(mib):
        def fn():
            x = torch.ones(mib * 2**20 // 4)  # touched, so resident
            return float(x.sum()) + float(kept[0])
        return fn

    peak = memory.measure(make(64))
    assert 60 <= peak <= 64 + 40, peak
    assert memory.measure(make(0)) < 20


def test_peak_memory_cpu_counts_memory_the_allocator_kept():
    """Earlier work left 80 MiB free but resident in the C heap (forced
    here with glibc's mallopt, in a subprocess): the call's 64 MiB still
    count, because the free heap is returned to the system first."""
    import subprocess
    import sys
    code = (
        'import ctypes, torch\n'
        'from mmcoop.benchmark.memory import PeakMemory\n'
        'libc = ctypes.CDLL(None)\n'
        'libc.mallopt(-3, 512 * 2**20)  # M_MMAP_THRESHOLD: heap blocks\n'
        'x = torch.ones(80 * 2**20 // 4); del x  # freed, resident\n'
        'fn = lambda: float(torch.ones(64 * 2**20 // 4).sum())\n'
        'print(PeakMemory(torch.device("cpu")).measure(fn))\n')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, check=True).stdout
    assert 60 <= float(out.split()[-1]) <= 64 + 40, out


def test_projection_one_arithmetic_for_seconds_and_flops():
    step = {k: dict(time_s=t, flops=f) for k, t, f in (
        ('T0', 8., 8e12), ('T1', 4., 4e12), ('T2', 1., 1e12),
        ('E0', 5., 5e12), ('E1', 3.5, 3.5e12), ('E2', 3., 3e12),
        ('E3', .001, 1e9), ('extract', 3.2, 3.2e12))}
    sched = dict(train=10, val=7, epochs=2)
    for quantity, unit in (('time_s', 1.), ('flops', 1e12)):
        p = project(step, sched, quantity, 3, 3)
        extraction = 3.2 * unit / 3 * (10 + 7)
        assert p['extraction'] == pytest.approx(extraction)
        # 2 x (4 x 1 + 3 x 0.001) + extraction
        assert p['feature_cache'] == pytest.approx(
            2 * (4 * unit + 3 * 1e-3 * unit) + extraction)
        assert p['straightforward'] == pytest.approx(
            2 * (4 * 8 + 3 * 5) * unit)
        assert p['truncation_evalcache'] == pytest.approx(
            2 * (4 * 4 + 3 * 3) * unit)
    # two views: the train images go through the tower twice
    assert project(step, sched, 'time_s', 3, 3, num_views=2)['extraction'] \
        == pytest.approx(3.2 / 3 * (20 + 7))
    # 989 PFLOP at 989 TFLOP/s is 1000 s
    assert gpu_hours(989.0, 989.0) == pytest.approx(1000 / 3600)
    assert gpu_hours(989.0, 989.0, 0.5) == pytest.approx(2000 / 3600)


def test_steps_flops_decompose_and_project():
    opts = SimpleNamespace(**TINY, resolution=64, batch_size=3,
                           eval_batch_size=3, iters=1, warmup=0)
    res = measure_steps('positivecoop', 6, opts)
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
    p = project(res['results'], sched, 'flops', 3, 3)
    steps, val_batches = math.ceil(10 / 3), math.ceil(7 / 3)
    extraction = image / 3 * (10 + 7)
    assert p['extraction'] == pytest.approx(extraction)
    assert p['feature_cache'] == pytest.approx(
        2 * (steps * r['T2'] + val_batches * r['E3']) + extraction)
    assert p['straightforward'] == pytest.approx(
        2 * (steps * r['T0'] + val_batches * r['E0']))

    report = report_steps([res], opts)
    assert 'Projected GPU-hours for 50 epochs from the counted FLOPs' in report
    assert 'PROJECTIONS, not measured' in report


@pytest.mark.parametrize('pipeline', ['tensor', 'device'])
def test_epoch_mode_train_and_val(pipeline):
    """The epoch measurement runs a train epoch and a validation pass both
    ways (image path and fp16 cache); checks the bookkeeping and the fp16
    error, not the times. ``device``: the device data path (here on CPU
    tensors), its cache included."""
    opts = SimpleNamespace(
        **TINY, epoch_images=4, epoch_val_images=None, epoch_resolution=64,
        epoch_classes=20, batch_size=2, eval_batch_size=2, workers=0,
        epoch_methods=['positivecoop'], epoch_pipeline=pipeline)
    r = measure_epoch(opts)
    assert r['pipeline'] == pipeline
    assert r['images'] == 4 and r['val_images'] == 2  # COCO val/train ratio
    e = r['positivecoop']
    for key in ('uncached_epoch_s', 'cached_epoch_s', 'uncached_val_s',
                'cached_val_s', 'uncached_supply_s', 'cached_supply_s'):
        assert e[key] > 0, key
    assert e['uncached_images_per_s'] == pytest.approx(
        4 / e['uncached_epoch_s'])
    assert e['train_val_speedup'] == pytest.approx(
        (e['uncached_epoch_s'] + e['uncached_val_s']) /
        (e['cached_epoch_s'] + e['cached_val_s']))
    assert r['fp16_rel_err_features'] < 1e-3
    assert e['fp16_max_abs_logit_diff'] < 1e-2
    text = report_epoch(r, opts)
    assert '+ validation on 2 images' in text and '| positivecoop |' in text


def test_vocab_mode_counts_the_work_of_each_variant():
    """Chunks recompute the text forward in training and change nothing in
    evaluation; the class subset encodes K of C classes."""
    opts = SimpleNamespace(**dict(TINY, model_name='mmcoop-tiny-RN'),
                           resolution=64, batch_size=2, iters=1, warmup=0,
                           text_chunk_size=5, subset_classes=4,
                           known_per_image=1)
    rows = [measure_vocab('dualcoop', 12, v, opts) for v in VOCAB_VARIANTS]
    res = {row['variant']: row['results'] for row in rows}
    flops = {v: {k: r[k]['flops'] for k in r} for v, r in res.items()}
    full, chunked = flops['full'], flops['chunked']
    # evaluation: the same prompts, truncated per chunk (never longer)
    assert chunked['eval_text'] <= full['eval_text']
    # training: with chunks the text forward is recomputed in the backward
    # pass (one more forward; per-chunk truncation saves a few per cent)
    assert chunked['train'] - full['train'] == pytest.approx(
        chunked['eval_text'], rel=0.1)
    # 4 of the 12 classes per step (the batch knows 2 of them)
    assert flops['subset']['train'] == pytest.approx(
        chunked['train'] / 3, rel=0.05)
    assert flops['subset']['eval_text'] == chunked['eval_text']
    assert rows[2]['known_classes'] == 2
    assert '| dualcoop | 12 | 2 | subset |' in report_vocab(rows, opts)
    for r in res.values():
        assert all(v['peak_mib'] >= 0 for v in r.values())


def test_data_paths_run_and_report():
    """Every CPU data path turns a generated JPEG into a training input of
    the requested size; the report names the paths (no speed asserted)."""
    import os
    import tempfile

    from mmcoop.benchmark.data import (PIPELINES, build_path, make_images,
                                       measure_data, report_data)
    tmp = tempfile.mkdtemp()
    make_images(tmp, 1, 20)
    path = os.path.join(tmp, '000000.jpg')
    for name in PIPELINES:
        out = build_path(name, 96)(path)
        img = out['inputs'] if isinstance(out, dict) else out
        if name == 'bytes':  # the device path's CPU side: the file, a draw
            with open(path, 'rb') as f:
                assert img.tolist() == list(f.read())
            aug = out['data_samples'].device_aug
            assert aug['size'] == (96, 96) and 'randaugment' in aug
            continue
        assert tuple(img.shape) == (3, 96, 96), name
        if name == 'device':  # decoded and resized as the tensor path, RGB
            assert 'randaugment' in out['data_samples'].device_aug
            from mmcoop.datasets.transforms import LoadImageTensor
            bgr = LoadImageTensor(scale=96)(dict(img_path=path))['img']
            assert torch.equal(img, bgr.flip(0))
    # the measured 'tensor' path is the configs' train pipeline
    from _common import ROOT
    from mmengine.config import Config

    from mmcoop.benchmark.data import pipeline_cfg
    shipped = Config.fromfile(
        os.path.join(ROOT, 'configs/_base_/datasets/pipelines/'
                     'official_recipe_448.py')).train_pipeline
    ours = pipeline_cfg('tensor', 448)

    def unscoped(pipeline):
        return [dict(t, type=t['type'].split('.')[-1]) for t in pipeline]

    assert unscoped(shipped) == unscoped(ours)
    opts = SimpleNamespace(**TINY, data_images=2, data_resolution=64,
                           data_cores=[1], data_rounds=1,
                           data_pipelines=['official', 'tensor', 'bytes'],
                           batch_size=2)
    threads = torch.get_num_threads()
    r = measure_data(opts)
    assert torch.get_num_threads() == threads  # the caller's, restored
    assert set(r['results']) == {'official@1', 'tensor@1', 'bytes@1'}
    text = report_data(r, opts)
    assert '| official | 1 |' in text and '1.00x' in text
    # the device path's CPU side has no ratio to a decoding path
    assert re.search(r'\| bytes \| 1 \| [\d.]+ \| [\d.]+ \| [\d.]+ \| n/a \|',
                     text)
    assert "`bytes` is `data_path='device-decode'`'s CPU side only" in text
    # where the time goes: every transform of the mmcoop path, timed
    assert list(r['stages_ms']) == ['tensor', 'bytes']
    assert list(r['stages_ms']['bytes']) == ['LoadImageBytes', 'PackInputs']
    assert list(r['stages_ms']['tensor']) == [
        'LoadImageTensor', 'TensorCutout', 'TensorRandAugment', 'PackInputs']
    assert all(v > 0 for v in r['stages_ms']['tensor'].values())
    assert '| tensor | LoadImageTensor |' in text
    from mmcoop.datasets.transforms.tensor_augment import RANDAUG_OPS

    # every op's cost per call, PIL's and mmcoop's (the CPU tensor ops)
    assert list(r['pil_op_ms']) == list(r['tensor_op_ms']) == list(
        RANDAUG_OPS)
    assert all(v > 0 for v in r['tensor_op_ms'].values())
    assert 'The official RandAugment ops, ms per call' in text
    assert re.search(r'\| PIL \(official\) \|( [\d.]+ \|){15}$', text, re.M)
    assert re.search(r'\| mmcoop \(`TensorRandAugment` on the CPU\) \|'
                     r'( [\d.]+ \|){15}$', text, re.M)
    # the GPU path's code (batch decode, resize, grouped ops) on the CPU
    from mmcoop.benchmark.data import device_path, device_stage_times
    assert device_path([path] * 3, 64, 2, torch.device('cpu')) == 3
    # and where its time goes, stage by stage, as the report shows it
    stages = device_stage_times([path] * 3, 64, 2, torch.device('cpu'))
    assert list(stages) == ['read + draw (CPU)', 'decode', 'resize',
                            'augment', 'normalise']
    assert all(v > 0 for v in stages.values())
    text = report_data(dict(r, device_stages_ms=stages), opts)
    assert 'Where the time goes on the device path' in text
    assert re.search(r'^\| decode \| [\d.]+ \|$', text, re.M)


@pytest.mark.parametrize('autocast', [None, 'bf16'])
def test_amp_mode_on_cpu_measures_fp32_and_bf16(autocast):
    """Whatever ``--autocast`` the command gives (``bf16``: as
    ``tools/analysis/gpu/check.sh`` runs the amp mode), each configuration
    has its own."""
    from mmcoop.benchmark.steps import measure_amp
    opts = SimpleNamespace(**dict(TINY, autocast=autocast), resolution=64,
                           amp_batch_size=2, warmup=0, iters=1)
    out = measure_amp(opts)
    # CPU: fp32 and bf16 with autocast_cpu, each with and without
    # channels_last (fp16 and CUDA-only bf16 would be fp32 here)
    assert list(out) == [
        'autocast=None,channels_last=False',
        'autocast=None,channels_last=True',
        'autocast=bf16,channels_last=False,autocast_cpu=True',
        'autocast=bf16,channels_last=True,autocast_cpu=True'
    ]
    diffs = [r['max_rel_diff_vs_fp32'] for r in out.values()]
    assert diffs[0] == 0 and diffs[1] < 1e-5  # same function, fp32
    assert all(1e-4 < d < 2e-2 for d in diffs[2:])  # bf16 really ran


def test_steps_bf16_on_cpu_autocasts_the_towers():
    """``--autocast bf16`` on the CPU builds both towers with
    ``autocast_cpu=True`` (without it they would silently run fp32)."""
    from mmcoop.benchmark.steps import backbone_cfg, head_cfg
    for device, expect in (('cpu', True), ('cuda', None)):
        opts = SimpleNamespace(
            **dict(TINY, device=device, autocast='bf16'), resolution=64)
        cfgs = (backbone_cfg(opts),
                head_cfg('positivecoop', 4, opts, 512)['text_encoder'])
        for cfg in cfgs:
            assert cfg['autocast_dtype'] == 'bf16'
            assert cfg.get('autocast_cpu') is expect
    opts = SimpleNamespace(**TINY, resolution=64)
    assert 'autocast_cpu' not in backbone_cfg(opts)


def test_text_mode_times_the_compiled_tower_as_a_third_configuration(
        monkeypatch):
    """``--compile MODE``: both towers get ``compile`` in the step configs,
    and the text mode adds the truncated tower compiled, with the same
    FLOPs and (to rounding) the same features and prompt gradient."""
    from mmcoop.benchmark import steps
    from mmcoop.benchmark.report import report_text
    opts = SimpleNamespace(**TINY, resolution=64, warmup=1, iters=1,
                           compile='reduce-overhead')
    assert steps.backbone_cfg(opts)['compile'] == dict(
        mode='reduce-overhead')
    assert steps.head_cfg('positivecoop', 4, opts, 512)['text_encoder'][
        'compile'] == dict(mode='reduce-overhead')
    assert steps.compile_options(SimpleNamespace(compile='default')) == {}
    assert 'compile' not in steps.backbone_cfg(
        SimpleNamespace(**TINY, resolution=64))
    # eager kernels through dynamo and AOTAutograd (inductor: seconds more)
    monkeypatch.setattr(steps, 'compile_options',
                        lambda opts: dict(backend='aot_eager'))
    out = steps.measure_text('positivecoop', 4, opts)
    res = out['results']
    assert list(res) == ['full', 'truncated', 'compiled']
    assert res['compiled']['flops'] == res['truncated']['flops'] > 0
    assert out['compile'] == dict(backend='aot_eager')
    assert out['rel_diff_output_compiled'] < 1e-6
    assert out['rel_diff_input_grad_compiled'] < 1e-6
    assert out['speedup_compiled'] > 0
    table = report_text([out], opts)
    assert '| compiled (peak MiB) | speed-up vs truncated |' in table
    assert "compile={'backend': 'aot_eager'}" in table


def test_towers_mode_measures_each_family_tower():
    """Every family config names its open_clip model; the towers mode
    counts the image tower's FLOPs for one image and the text work of one
    PositiveCoOp step, which grows with the number of classes."""
    from mmcoop.benchmark.towers import (_schedule_hours, family_models,
                                         measure_tower, report_towers)
    families = family_models()
    assert len(families) == 19
    assert families['rn101_openai'] == 'RN101-quickgelu'
    assert families['vit-l-14-336_openai'] == 'ViT-L-14-336-quickgelu'
    # the text work uses the family configs' n_ctx (SigLIP So400m: a
    # 16-token context, 8 learned tokens)
    from mmcoop.benchmark.towers import _family_bases
    n_ctx = {f: b['n_ctx'] for f, b in _family_bases().items()}
    assert n_ctx.pop('vit-so400m-14-siglip_webli') == 8
    assert set(n_ctx.values()) == {None}  # the head's (the paper's) 16
    short = measure_tower(
        'mmcoop-tiny-ViT',
        SimpleNamespace(**TINY, resolution=64, num_classes=[4], iters=1,
                        warmup=0), n_ctx=4)
    assert short['n_ctx'] == 4
    assert 'n_ctx 4' in report_towers([short],
                                      SimpleNamespace(**TINY, batch_size=32))
    rows = []
    for c in (4, 8):
        opts = SimpleNamespace(**TINY, resolution=64, num_classes=[c],
                               iters=1, warmup=0)
        rows.append(measure_tower('mmcoop-tiny-ViT', opts))
    small, large = rows
    assert small['image_params'] == large['image_params'] > 0
    # the image tower's parameters, counted on open_clip's own model
    import open_clip

    from mmcoop.models.backbones import register_mmcoop_clip_configs
    register_mmcoop_clip_configs()
    visual = open_clip.create_model('mmcoop-tiny-ViT', pretrained=None).visual
    assert small['image_params'] == sum(p.numel() for p in visual.parameters())
    assert small['results']['image']['flops'] == \
        large['results']['image']['flops'] > 0
    ratio = large['results']['text']['flops'] / small['results']['text'][
        'flops']
    assert 1.6 < ratio <= 2.0  # C prompts (truncated to the longest one)
    # the projection, by hand: COCO's 82,081 + 40,137 images through the
    # image tower once (1 GFLOP each), then 50 epochs x 2,566 steps of text
    # work (2 TFLOP at C = 8, scaled to COCO's 80 classes); at 1 PFLOP/s:
    # 122,218e9 + 128,300 x 20e12 FLOP = 2,566.122218 s
    row = dict(classes=8, results=dict(image=dict(flops=1e9),
                                       text=dict(flops=2e12)))
    assert _schedule_hours(row, 1000., 1.0, 32) == pytest.approx(
        2566.122218 / 3600)
    assert _schedule_hours(dict(row, results=dict(image=dict(flops=1e9))),
                           1000., 1.0, 32) is None  # no text tower measured
    text = report_towers(rows, SimpleNamespace(**TINY, batch_size=32))
    assert text.count('| `mmcoop-tiny-ViT` |') == 2 and 'projection' in text


@pytest.mark.parametrize('device', ['cpu', 'cuda'])
def test_towers_mode_goes_on_past_a_family_it_cannot_build(
        device, capsys, monkeypatch):
    """A family that cannot be built here is a row with the reason, the
    next families are still measured, and each family's figures are on
    stderr as it ends (before: the first failure ended the mode, and a run
    stopped by check.sh's time limit had no figure at all). The report's
    row has the table's columns (with the CUDA peak-memory ones too)."""
    from mmcoop.benchmark.towers import measure_towers, report_towers
    opts = SimpleNamespace(**TINY, resolution=64, num_classes=[4], iters=1,
                           warmup=0,
                           tower_models=['no-such-model', 'mmcoop-tiny-ViT'])
    rows = measure_towers(opts)
    assert [r['model_name'] for r in rows] == opts.tower_models
    assert rows[0]['results'] == {} and 'no-such-model' in rows[0][
        'errors']['image']
    assert set(rows[1]['results']) == {'image', 'text'}
    err = capsys.readouterr().err
    assert re.search(r'^\[towers\] no-such-model: image: .*no-such-model',
                     err, re.M)
    assert re.search(r'^\[towers\] mmcoop-tiny-ViT: image [\d.]+ s, '
                     r'[\d.]+ GFLOP; text [\d.]+ s', err, re.M)
    monkeypatch.setattr(opts, 'device', device)
    for r in rows[1]['results'].values():  # the peak memory CUDA reports
        r.setdefault('peak_mib', 1.0)
    table = report_towers(rows, SimpleNamespace(**vars(opts), batch_size=32))
    lines = [ln for ln in table.splitlines() if ln.startswith('|')]
    assert len({ln.count('|') for ln in lines}) == 1, lines
    assert any(ln.startswith('| `no-such-model` | n/a (') for ln in lines)


def test_towers_stand_in_tokenizer_only_where_the_ids_do_not_matter(
        tmp_path):
    """A text tower whose tokenizer cannot be loaded: without truncation
    (SigLIP layout) it is measured with the stand-in tokenizer and costs
    exactly what it costs with its own; a truncating one stays n/a."""
    import json

    import open_clip

    from mmcoop.benchmark.towers import (StandInTokenizer, measure_tower,
                                         report_towers)
    from mmcoop.models.backbones import register_mmcoop_clip_configs
    register_mmcoop_clip_configs()
    for name, suffix, length in [('mmcoop-tiny-MAP', '', None),
                                 ('mmcoop-tiny-ViT', '', None),
                                 ('mmcoop-tiny-MAP', '-short', 8)]:
        cfg = open_clip.get_model_config(name)
        cfg['text_cfg']['hf_tokenizer_name'] = str(tmp_path / 'missing')
        if length:
            cfg['text_cfg']['context_length'] = length
        path = tmp_path / f'{name}-unloadable-tokenizer{suffix}.json'
        path.write_text(json.dumps(cfg))
        open_clip.add_model_config(path)
    opts = SimpleNamespace(**TINY, resolution=64, num_classes=[4], iters=1,
                           warmup=0)
    own = measure_tower('mmcoop-tiny-MAP', opts)
    stand_in = measure_tower('mmcoop-tiny-MAP-unloadable-tokenizer', opts)
    assert 'text_tokenizer' not in own
    assert stand_in['text_tokenizer'] == 'stand-in'
    assert stand_in['errors']['text']  # why its own was not used
    assert stand_in['text_params'] == own['text_params']
    assert stand_in['results']['text']['flops'] == \
        own['results']['text']['flops'] > 0
    causal = measure_tower('mmcoop-tiny-ViT-unloadable-tokenizer', opts)
    assert 'text' not in causal['results'] and 'text_tokenizer' not in causal
    text = report_towers([own, stand_in, causal],
                         SimpleNamespace(**TINY, batch_size=32))
    assert text.count('(stand-in tokenizer*)') == 1
    assert '* `mmcoop-tiny-MAP-unloadable-tokenizer`: text tower measured ' \
        'with a stand-in tokenizer' in text
    assert '| `mmcoop-tiny-ViT-unloadable-tokenizer` |' in text
    assert 'n/a (' in text
    # a head that cannot be built even so: the reason is reported
    short = measure_tower('mmcoop-tiny-MAP-unloadable-tokenizer-short',
                          opts)
    assert 'text' not in short['results']
    error = short['errors']['text_stand_in']
    assert error.startswith("ValueError: The prompt 'X X X")
    assert 'does not fit the text context length of ' \
        "'mmcoop-tiny-MAP-unloadable-tokenizer-short' (8 tokens)" in error
    assert 'n_ctx=16' in error
    assert 'with a stand-in tokenizer: ValueError: The prompt' \
        in report_towers([short], SimpleNamespace(**TINY, batch_size=32))
    # one id per cleaned word, below the vocabulary size; end token 1
    ids = StandInTokenizer(8, 100)(['A photo, of a Photo!', ''])
    assert ids.shape == (2, 8)
    assert ids[0, 5:].tolist() == [1, 0, 0]
    assert ids[1].tolist() == [1] + [0] * 7
    assert ids[0, 0] == ids[0, 3] and ids[0, 1] == ids[0, 4]
    assert ((ids[0, :5] >= 2) & (ids[0, :5] < 100)).all()
    assert len(set(ids[0, :3].tolist())) == 3


def test_shared_mode_runs_the_processes_together_and_names_a_failure():
    """``--mode shared``: K spawned processes train their cached step at
    the same time (one barrier), the steps/s of all K are K x iters over
    the span from the first start to the last end; a worker's error is
    raised with its traceback and no worker is left behind."""
    import multiprocessing

    from mmcoop.benchmark.shared import measure_shared, report_shared
    opts = SimpleNamespace(**dict(TINY, model_name='mmcoop-tiny-RN'),
                           resolution=64, batch_size=2, num_classes=[4],
                           methods=['positivecoop'], shared_procs=[2, 1],
                           shared_rounds=1, iters=2, warmup=1, threads=1,
                           compile=None)
    [res] = measure_shared(opts)
    assert res['procs'] == [1, 2] and res['base'] == 1
    [rnd] = res['rounds']
    for k in (1, 2):
        r = rnd[str(k)]
        assert r['steps_per_s'] == pytest.approx(k * 2 / r['span_s'])
        assert len(r['step_s']) == len(r['loss']) == k
        assert all(0 < s <= r['span_s'] / 2 for s in r['step_s'])
        assert 0 <= r['start_spread_s'] < 1.0  # started together
        assert all(math.isfinite(loss) for loss in r['loss'])
    # the steps train: worker 0 ran k=1 first, then two more SGD steps on
    # its batch with k=2, so its loss went down
    assert rnd['2']['loss'][0] < rnd['1']['loss'][0]
    assert res['results']['1']['vs_base'] == 1.0
    assert res['results']['2']['vs_base'] == pytest.approx(
        rnd['2']['steps_per_s'] / rnd['1']['steps_per_s'])
    text = report_shared([res], SimpleNamespace(**vars(opts)))
    assert '| positivecoop | 4 | 2 |' in text and 'vs 1 process |' in text
    assert not multiprocessing.active_children()

    opts.num_classes, opts.shared_procs = [0], [1]  # no classes: refused
    with pytest.raises(RuntimeError, match=r'(?s)worker 0 failed while '
                       r'building the models:.*classnames'):
        measure_shared(opts)
    assert not multiprocessing.active_children()

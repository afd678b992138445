# Copyright (c) mmcoop contributors. All rights reserved.
"""Markdown tables of the benchmark results (what docs/benchmarks.md
shows). Each ``report_*`` takes a result and the command's options
(``opts``, with ``device_desc`` set)."""
from typing import List

from .memory import PeakMemory
from .projection import (PAPER_HOURS, PATHS, SCHEDULES, gpu_hours,
                         project_totals)

__all__ = [
    'memory_desc', 'report_steps', 'report_text', 'report_epoch', 'report_amp'
]


def _projection_table(title, results, opts, unit, fmt) -> List[str]:
    """Rows of projected 50-epoch totals (``unit``: ``hours`` or
    ``pflop``, see :func:`project_totals`) per schedule and method."""
    lines = [
        '', title, '',
        '| schedule | method | straightforward (T0/E0) | + truncation '
        '(T1/E1) | + eval text cache (T1/E2) | + feature cache (T2/E3 '
        '+ extraction) | of which extraction | paper (GPU h) |',
        '|---|---|---|---|---|---|---|---|'
    ]
    for name, sched in SCHEDULES.items():
        for res in results:
            if res['num_classes'] != sched['classes']:
                continue
            p = project_totals(res, sched, opts.batch_size,
                               opts.eval_batch_size)[unit]
            lines.append(f'| {name} | {res["method"]} | ' + ' | '.join(
                fmt(p[k]) for k in (*PATHS, 'extraction')) +
                         f' | {PAPER_HOURS[name][res["method"]]} |')
    return lines


def memory_desc(opts) -> str:
    """What the peak-memory figures are: ``opts.memory_desc`` for a saved
    run, else what :class:`PeakMemory` measures now."""
    return getattr(opts, 'memory_desc', None) or PeakMemory(opts.device).what


def report_steps(results: List[dict], opts) -> str:
    dev = opts.device_desc
    lines = [
        f'### Step times (s, best of {opts.iters}, interleaved) and peak '
        'memory (MiB) '
        f'on {dev}', '',
        f'batch {opts.batch_size} (eval {opts.eval_batch_size}), '
        f'{opts.model_name} @ {opts.resolution} px, '
        f'autocast={opts.autocast}, channels_last={opts.channels_last}, '
        f'compile={getattr(opts, "compile", None)}. '
        f'Peak memory: {memory_desc(opts)}.', '',
        '| method | C | T0 train full | T1 train trunc | T2 train cache '
        '| E0 eval full | E1 eval trunc | E2 eval text-cache '
        '| E3 eval feat+text cache | E4 eval feat, text per batch '
        '| extract/img |', '|---|---|---|---|---|---|---|---|---|---|---|'
    ]
    for res in results:
        r = res['results']

        def cell(k):
            return f'{r[k]["time_s"]:.3f} ({r[k]["peak_mib"]:.0f})'

        lines.append(
            f'| {res["method"]} | {res["num_classes"]} | ' + ' | '.join(
                cell(k)
                for k in ('T0', 'T1', 'T2', 'E0', 'E1', 'E2', 'E3', 'E4')) +
            f' | {r["extract"]["time_s"] / opts.eval_batch_size:.4f} |')
    unit = 'GPU-hours' if opts.device == 'cuda' else \
        'hours on this CPU (not GPU-hours)'
    lines += _projection_table(
        f'### Projected {unit} for 50 epochs (PROJECTIONS from the step '
        'times above; compute only, no data loading)', results, opts,
        'hours', lambda v: f'{v:.3f}')
    lines += [
        '', '### Counted FLOPs per step (GFLOP; matmuls, convolutions and '
        'attention, 2 per multiply-add; independent of the device)', '',
        '| method | C | T0 | T1 | T2 | E0 | E1 | E2 | E3 | E4 | extract/img |',
        '|---|---|---|---|---|---|---|---|---|---|---|'
    ]
    for res in results:
        r = res['results']
        lines.append(
            f'| {res["method"]} | {res["num_classes"]} | ' + ' | '.join(
                f'{r[k]["flops"] / 1e9:.1f}'
                for k in ('T0', 'T1', 'T2', 'E0', 'E1', 'E2', 'E3', 'E4')) +
            f' | {r["extract"]["flops"] / opts.eval_batch_size / 1e9:.2f} |')
    peak, util = opts.gpu_tflops, opts.gpu_utilization
    lines += _projection_table(
        '### Projected GPU-hours for 50 epochs from the counted FLOPs '
        f'(PROJECTIONS, not measured: PFLOP / {peak:g} TFLOP/s '
        'x utilization; compute only, no data loading, no per-step '
        'latency). Each cell: PFLOP / hours at 100 % / hours at '
        f'{util:.0%} of {peak:g} TFLOP/s', results, opts, 'pflop',
        lambda v: f'{v:.1f} / {gpu_hours(v, peak):.3f} / '
        f'{gpu_hours(v, peak, util):.3f}')
    return '\n'.join(lines)


def report_text(results: List[dict], opts) -> str:
    compiled = any('compile' in r for r in results)
    lines = [
        f'### Text encoder forward+backward (s, best of {opts.iters}, '
        f'interleaved) on '
        f'{opts.device_desc}', '',
        '| method | C | prompts | tokens full -> truncated | full (peak MiB)'
        ' | truncated (peak MiB) | speed-up | rel. diff output | '
        'rel. diff input grad |' +
        (' compiled (peak MiB) | speed-up vs truncated | rel. diff output '
         '| rel. diff input grad |' if compiled else ''),
        '|---|---|---|---|---|---|---|---|---|' +
        ('---|---|---|---|' if compiled else '')
    ]
    for r in results:
        f, t = r['results']['full'], r['results']['truncated']
        line = (
            f'| {r["method"]} | {r["num_classes"]} | {r["prompts"]} | '
            f'{r["length_full"]} -> {r["length_truncated"]} | '
            f'{f["time_s"]:.3f} ({f["peak_mib"]:.0f}) | {t["time_s"]:.3f} '
            f'({t["peak_mib"]:.0f}) | {r["speedup"]:.2f}x | '
            f'{r["rel_diff_output"]:.1e} | {r["rel_diff_input_grad"]:.1e} |')
        if 'compile' in r:
            c = r['results']['compiled']
            line += (f' {c["time_s"]:.3f} ({c["peak_mib"]:.0f}) | '
                     f'{r["speedup_compiled"]:.2f}x | '
                     f'{r["rel_diff_output_compiled"]:.1e} | '
                     f'{r["rel_diff_input_grad_compiled"]:.1e} |')
        lines.append(line)
    if compiled:
        lines += ['', f'compiled: the truncated text tower with compile='
                  f'{results[0].get("compile")} (`--compile`).']
    return '\n'.join(lines)


def report_epoch(r: dict, opts) -> str:
    lines = [
        f'### One epoch: {r["images"]} generated 640x480 JPEGs at '
        f'{r["resolution"]} px, train pipeline '
        f'{r.get("pipeline", "resize only")}, batch {r["batch_size"]}, '
        f'{r["workers"]} loader workers, C={r["num_classes"]}, on '
        f'{opts.device_desc}', '',
        f'One-off extraction: train {r["extract_float16_s"]:.2f} s (fp16), '
        f'{r["extract_float32_s"]:.2f} s (fp32)' +
        (f'; val {r["extract_val_float16_s"]:.2f} s (fp16)'
         if 'extract_val_float16_s' in r else '') + '. fp16 storage error: '
        f'{r["fp16_rel_err_features"]:.1e} relative (norm) on the features.',
        '', '| method | train epoch uncached (s) | cached (s) | speed-up | '
        'train images/s uncached | cached | '
        f'+ validation on {r.get("val_images", "n/a")} images: uncached (s) '
        '| cached (s) | train+val speed-up | '
        'feature supply uncached (s) | cached (s) | speed-up | '
        'fp16 vs fp32 cache: max abs logit diff | max abs score diff |',
        '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|'
    ]

    def opt(e, key, fmt):
        return format(e[key], fmt) if key in e else 'n/a'

    for m in opts.epoch_methods:
        e = r[m]
        lines.append(
            f'| {m} | {e["uncached_epoch_s"]:.2f} | {e["cached_epoch_s"]:.3f}'
            f' | {e["epoch_speedup"]:.1f}x | '
            f'{opt(e, "uncached_images_per_s", ".1f")} | '
            f'{opt(e, "cached_images_per_s", ".1f")} | '
            f'{opt(e, "uncached_val_s", ".2f")}'
            f' | {opt(e, "cached_val_s", ".3f")} | '
            f'{opt(e, "train_val_speedup", ".1f")}x | '
            f'{e["uncached_supply_s"]:.2f} | '
            f'{e["cached_supply_s"]:.3f} | {e["supply_speedup"]:.0f}x | '
            f'{e["fp16_max_abs_logit_diff"]:.1e} | '
            f'{e["fp16_max_abs_score_diff"]:.1e} |')
    return '\n'.join(lines)


def report_amp(r: dict, opts) -> str:
    lines = [
        f'### Image encoder forward, batch {opts.amp_batch_size} @ '
        f'{opts.resolution} px, on {opts.device_desc}', '',
        '| option | time (s) | peak MiB | max rel. diff vs fp32 |',
        '|---|---|---|---|'
    ]
    for k, v in r.items():
        lines.append(f'| {k} | {v["time_s"]:.3f} | {v["peak_mib"]:.0f} | '
                     f'{v["max_rel_diff_vs_fp32"]:.1e} |')
    return '\n'.join(lines)


# --------------------------------------------------------------------------
# driver

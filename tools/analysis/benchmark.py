# Copyright (c) mmcoop contributors. All rights reserved.
"""Speed and memory of PositiveCoOp / NegativeCoOp / DualCoOp / Baseline,
with and without mmcoop's exact optimisations, and projected schedule hours.

Modes (``--mode``, default ``all``; the measurements live in
``mmcoop.benchmark``):

* ``steps``: train/eval step time, peak memory and counted FLOPs of each
  method and class count (C=80 ~ COCO, C=20 ~ VOC) for the paths T0-T2 /
  E0-E4 (``mmcoop.benchmark.steps``), and the projected 50-epoch hours:
  on this device from the step times, as GPU-hours from the FLOPs
  (``mmcoop.benchmark.projection``; compute only, no data loading).
* ``text``: text-encoder forward+backward, 77 tokens vs exact truncation
  (and the truncated tower compiled, with ``--compile MODE``).
* ``epoch``: one training epoch over generated JPEGs (decode + resize +
  image encoder + head) against the same epoch from a feature cache.
* ``amp``: image-encoder forward with the ``autocast_dtype`` and
  ``channels_last`` options (on CPU: fp32 and bf16 with ``autocast_cpu``),
  the configurations alternating.
* ``vocab`` (not in ``all``): large vocabularies, a prompt head's training
  step and eval class features at each ``--num-classes``, full vs
  ``--text-chunk-size`` vs ``--subset-classes`` (``mmcoop.benchmark.vocab``).
* ``towers`` (not in ``all``): the frozen towers of every CLIP family
  (``configs/_base_/models/clip_families/``, or ``--tower-models``) with
  random weights: parameters, seconds, peak memory and FLOPs of the image
  tower (one image) and of one PositiveCoOp step's text work, and the
  projected GPU-hours of a cached COCO schedule (``mmcoop.benchmark.towers``).
* ``shared`` (not in ``all``): cached training runs sharing one device:
  K processes, each training its own model from cached features, at the
  same time, for each K of ``--shared-procs``; their steps/s together
  against one process alone (``mmcoop.benchmark.shared``; what ``--jobs``
  of ``tools/sweep.py`` gains on one GPU).
* ``data``: images/s per core of the training data paths (the official PIL
  transform, mmcoop's mmcv pipeline, the uint8 tensor path; with
  ``--device cuda`` the GPU decode + augmentation path) on generated
  COCO-like JPEGs (``mmcoop.benchmark.data``).

Each method is measured in a fresh subprocess (``--no-isolate`` to stay in
one process). Peak memory: see ``mmcoop.benchmark.memory``.

Examples::

    # the figures of docs/benchmarks.md (this CPU, paper settings)
    python tools/analysis/benchmark.py --mode steps --iters 1 --warmup 1
    # a quick CPU run
    python tools/analysis/benchmark.py --resolution 224 --batch-size 8 \\
        --methods positivecoop baseline --num-classes 20
    # on a GPU
    python tools/analysis/benchmark.py --device cuda --autocast fp16 \\
        --channels-last --iters 20 --warmup 5
    # the tables of a saved run
    python tools/analysis/benchmark.py --report run.json
"""
import argparse
import json
import os
import os.path as osp
import platform
import re
import shlex
import subprocess
import sys
import time
from typing import Dict

from mmcoop.benchmark.data import PIPELINES, measure_data, report_data
from mmcoop.benchmark.epoch import EPOCH_PIPELINES, measure_epoch
from mmcoop.benchmark.report import (memory_desc, report_amp, report_epoch,
                                     report_steps, report_text)
from mmcoop.benchmark.shared import measure_shared, report_shared
from mmcoop.benchmark.steps import (METHODS, measure_amp, measure_steps,
                                    measure_text)
from mmcoop.benchmark.towers import measure_towers, report_towers
from mmcoop.benchmark.vocab import VOCAB_VARIANTS, measure_vocab, report_vocab
from mmcoop.engine.cli import (nonnegative_int, positive_float,
                               positive_fraction, positive_int, user_path)

REPORTS = dict(text=report_text, steps=report_steps, epoch=report_epoch,
               amp=report_amp, data=report_data, vocab=report_vocab,
               towers=report_towers, shared=report_shared)
JOBS = dict(steps=measure_steps, text=measure_text, vocab=measure_vocab)


def report_saved(path: str, args) -> str:
    """The tables of a saved ``--json`` run, rendered again."""
    try:
        with open(path) as f:
            saved = json.load(f)
        command, device = saved['command'], saved['device']
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SystemExit(
            f'--report {path!r}: not a readable saved run ({type(e).__name__}'
            f': {e}). Fix: give a file written by this tool with --json.')
    try:
        run = parse_args(shlex.split(command)[2:])
    except SystemExit:  # argparse has printed what it refused
        raise SystemExit(
            f'--report {path!r}: its command takes options this version of '
            f'the tool does not ({command!r}). Fix: render it with the '
            'version that wrote it.') from None
    run.device_desc = device
    # runs saved before `peak_memory` was recorded used the PyTorch
    # profiler's memory timeline (tensors created during the step)
    run.memory_desc = saved.get(
        'peak_memory', 'tensors created during the step (weights and '
        'inputs excluded; PyTorch profiler memory timeline)')
    run.gpu_tflops, run.gpu_utilization = args.gpu_tflops, args.gpu_utilization
    parts = [f'# mmcoop benchmark on {saved["device"]} (saved run)',
             f'# {saved["command"]}', '']
    for key, fn in REPORTS.items():
        if key in saved:
            parts += [fn(saved[key], run), '']
    return '\n'.join(parts)


def _device_desc(args) -> str:
    import torch
    if args.device == 'cuda':
        return torch.cuda.get_device_name()
    model = platform.processor() or 'CPU'
    try:
        with open('/proc/cpuinfo') as f:
            m = re.search(r'model name\s*:\s*(.+)', f.read())
            model = m.group(1).strip() if m else model
    except OSError:
        pass
    return (f'{model}, {os.cpu_count()} logical CPUs, '
            f'{torch.get_num_threads()} torch threads')


def _loadavg() -> str:
    try:
        return ' '.join(f'{v:.2f}' for v in os.getloadavg())
    except OSError:
        return 'n/a'


def _run_job(kind: str, args, *job_args):
    """Run a measurement in a fresh subprocess (own peak memory)."""
    if not args.isolate:
        return JOBS[kind](*job_args, args)
    cmd = [
        sys.executable,
        osp.abspath(__file__), '--_job',
        json.dumps([kind, list(job_args)])
    ] + args._argv
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.stderr.write(proc.stderr[-5000:])
        raise SystemExit(f'benchmark job {kind} {job_args} failed')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _check_model_names(args) -> None:
    """Refuse an unknown ``--model-name`` / ``--tower-models`` before any
    measurement (instead of in each measuring subprocess)."""
    from mmcoop.models.backbones.clip_loader import check_model_name
    if set(args.mode) - {'data', 'towers'}:
        check_model_name(args.model_name, '--model-name')
    if 'towers' in args.mode:
        for name in args.tower_models or ():
            check_model_name(name, '--tower-models')


def _check_options(args) -> None:
    """Refuse, before any measurement, a device that is not there and an
    option that does nothing for the modes and methods asked (the run would
    end with exit code 0 and without the figure the option was for)."""
    import torch
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda: no CUDA device is available here. '
                         'Fix: run on a machine with a GPU, or --device cpu.')
    if args.compile is not None and not args.compile.strip():
        raise SystemExit(
            f'--compile {args.compile!r} is empty (it would run eager). Fix: '
            'give a torch.compile mode or backend, e.g. `default`, '
            '`reduce-overhead` or `cudagraphs`, or drop --compile.')
    if args.compile is not None and not set(args.mode) - {'data'}:
        raise SystemExit(
            f'--compile {args.compile}: --mode data measures the data paths '
            'only, no tower. Fix: drop --compile, or add a mode that runs '
            'the towers (steps, text, ...).')
    if set(args.mode) <= {'text', 'vocab'} and set(args.methods) <= {
            'baseline'}:
        raise SystemExit(
            f'--mode {" ".join(args.mode)} measures the text tower, and the '
            'Baseline has none: nothing would be measured. Fix: add a '
            'prompt method to --methods (e.g. positivecoop).')
    if args.tower_models and 'towers' not in args.mode:
        raise SystemExit(
            '--tower-models is read by --mode towers only. Fix: add towers '
            'to --mode, or drop --tower-models.')


def _check_compile(args) -> None:
    """Refuse a ``--compile`` mode torch.compile does not take, at once."""
    if args.compile is not None:
        from mmcoop.benchmark.steps import compile_options
        from mmcoop.models.backbones.tower_compile import parse_compile
        try:
            parse_compile('the towers', compile_options(args))
        except ValueError as e:
            raise SystemExit(
                f'--compile {args.compile}: torch.compile refuses it '
                f'({e.__cause__}). Fix: give a torch.compile mode or '
                'backend, e.g. `default`, `reduce-overhead` or `cudagraphs`.')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        '--mode',
        nargs='+',
        default=['all'],
        choices=[
            'all', 'steps', 'text', 'epoch', 'amp', 'data', 'vocab', 'towers',
            'shared'
        ])
    parser.add_argument(
        '--methods', nargs='+', default=list(METHODS), choices=METHODS)
    parser.add_argument(
        '--num-classes',
        nargs='+',
        type=positive_int,
        default=[80, 20],
        help='80 = COCO names, 20 = VOC names, other = synthetic')
    parser.add_argument('--resolution', type=positive_int, default=448)
    parser.add_argument('--batch-size', type=positive_int, default=32)
    parser.add_argument(
        '--eval-batch-size',
        type=positive_int,
        default=None,
        help='defaults to --batch-size (the official val batch is 100)')
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--iters', type=positive_int, default=3)
    parser.add_argument('--warmup', type=nonnegative_int, default=1)
    parser.add_argument('--model-name', default='RN101-quickgelu')
    parser.add_argument(
        '--pretrained',
        default=None,
        help='CLIP weights (tag or file); random weights if omitted')
    parser.add_argument(
        '--autocast',
        default=None,
        type=lambda v: None if v.lower() == 'none' else v,
        choices=[None, 'fp16', 'bf16'])
    parser.add_argument('--channels-last', action='store_true')
    parser.add_argument(
        '--compile',
        default=None,
        metavar='MODE',
        help='torch.compile the frozen towers (their `compile` option) '
        'with this mode (`default`, `reduce-overhead`: CUDA graphs, '
        '`max-autotune`, ...) or backend (`cudagraphs`: CUDA graphs without '
        'inductor); the text mode then times the compiled text tower as a '
        'third configuration')
    parser.add_argument(
        '--amp-batch-size',
        type=positive_int,
        default=8,
        help='amp mode: batch of the image-encoder forward')
    parser.add_argument(
        '--gpu-tflops',
        type=positive_float,
        default=989.0,
        help='GPU throughput for the FLOP-based projection (default: H100 '
        'SXM dense fp16/bf16 peak, 989 TFLOP/s)')
    parser.add_argument(
        '--gpu-utilization',
        type=positive_fraction,
        default=0.3,
        help='assumed fraction of --gpu-tflops reached (the "est." figure '
        'of the FLOP-based projection); "peak" assumes 1.0')
    parser.add_argument(
        '--threads',
        type=positive_int,
        default=None,
        help='torch CPU threads (shared mode: per process, default 1)')
    parser.add_argument(
        '--text-chunk-size', type=positive_int, default=256, help='vocab mode')
    parser.add_argument(
        '--subset-classes', type=positive_int, default=256, help='vocab mode')
    parser.add_argument(
        '--known-per-image',
        type=positive_int,
        default=8,
        help='vocab mode: known (1/0) labels per image')
    parser.add_argument(
        '--tower-models', nargs='+', default=None,
        help='towers mode: open_clip model names (default: every family of '
        'configs/_base_/models/clip_families)')
    parser.add_argument(
        '--shared-procs',
        nargs='+',
        type=positive_int,
        default=[1, 2, 4],
        help='shared mode: numbers of processes training at once')
    parser.add_argument(
        '--shared-rounds',
        type=positive_int,
        default=3,
        help='shared mode: rounds (each runs every process count)')
    parser.add_argument(
        '--epoch-images',
        type=positive_int,
        default=64,
        help='epoch mode: images')
    parser.add_argument(
        '--epoch-val-images',
        type=positive_int,
        default=None,
        help='epoch mode: validation images (default: --epoch-images x '
        'COCO val/train = 0.49)')
    parser.add_argument(
        '--epoch-resolution', type=positive_int, default=224)
    parser.add_argument('--epoch-classes', type=positive_int, default=20)
    parser.add_argument(
        '--epoch-methods',
        nargs='+',
        default=['baseline', 'positivecoop'],
        choices=METHODS)
    parser.add_argument(
        '--workers',
        type=nonnegative_int,
        default=2,
        help='epoch mode: loader workers')
    parser.add_argument(
        '--epoch-pipeline', default='tensor', choices=list(EPOCH_PIPELINES),
        help='epoch mode: the train data path (with Cutout + RandAugment; '
        'device: decoded and augmented on the model\'s device)')
    parser.add_argument(
        '--data-images',
        type=positive_int,
        default=64,
        help='data mode: images')
    parser.add_argument(
        '--data-resolution', type=positive_int, default=448)
    parser.add_argument(
        '--data-cores', nargs='+', type=positive_int, default=[1, 2],
        help='data mode: worker processes (one thread each)')
    parser.add_argument('--data-rounds', type=positive_int, default=3)
    parser.add_argument(
        '--data-pipelines', nargs='+', default=list(PIPELINES),
        choices=PIPELINES)
    parser.add_argument(
        '--no-isolate',
        dest='isolate',
        action='store_false',
        help='measure every method in this process')
    parser.add_argument('--json', type=user_path,
                        default=None, help='write all results')
    parser.add_argument(
        '--force', action='store_true', help='overwrite an existing --json')
    parser.add_argument(
        '--report',
        default=None,
        metavar='JSON',
        help='print the tables of a saved --json run (with this run\'s '
        '--gpu-tflops / --gpu-utilization) instead of measuring')
    parser.add_argument('--_job', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args._argv = list(argv if argv is not None else sys.argv[1:])
    args.eval_batch_size = args.eval_batch_size or args.batch_size
    if str(args.pretrained).lower() == 'none':
        args.pretrained = None
    if 'all' in args.mode:
        args.mode = ['steps', 'text', 'epoch', 'amp', 'data']
    return args


def main(argv=None):
    args = parse_args(argv)
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    from mmengine.logging import MMLogger
    MMLogger.get_instance('mmengine', log_level='ERROR')
    if args._job is not None:
        kind, job_args = json.loads(args._job)
        print(json.dumps(JOBS[kind](*job_args, args)))
        return
    if args.report:
        print(report_saved(args.report, args))
        return
    if args.json:  # before the (long) measurements
        from mmcoop.utils.paths import claim_outputs
        claim_outputs([args.json], force=args.force)
    _check_options(args)
    _check_model_names(args)
    _check_compile(args)
    args.device_desc = _device_desc(args)
    out: Dict[str, object] = dict(
        device=args.device_desc,
        command=' '.join(['python', 'tools/analysis/benchmark.py'] +
                         args._argv),
        torch=torch.__version__,
        date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
        peak_memory=memory_desc(args))
    print(f'# mmcoop benchmark on {args.device_desc}')
    print(f'# {out["command"]}')
    print(f'# {out["date"]}, torch {out["torch"]}')
    print(f'# load average at start: {_loadavg()}\n', flush=True)
    for mode in ('text', 'steps', 'shared', 'epoch', 'amp', 'data', 'vocab',
                 'towers'):
        if mode not in args.mode:
            continue
        if mode in JOBS:  # per method and class count, each isolated
            res = []
            for method in args.methods:
                if mode in ('text', 'vocab') and method == 'baseline':
                    continue  # no text encoder
                variants = VOCAB_VARIANTS if mode == 'vocab' else [None]
                for c in args.num_classes:
                    for v in variants:
                        t0 = time.time()
                        job = (method, c) if v is None else (method, c, v)
                        res.append(_run_job(mode, args, *job))
                        print(f'[{mode}] {job}: {time.time() - t0:.0f} s',
                              file=sys.stderr)
        else:
            res = dict(epoch=measure_epoch, amp=measure_amp,
                       data=measure_data, towers=measure_towers,
                       shared=measure_shared)[mode](args)
        out[mode] = res
        print(REPORTS[mode](res, args) + '\n', flush=True)
    out['loadavg_end'] = _loadavg()
    print(f'# load average at end: {out["loadavg_end"]}')
    if args.json:
        from mmcoop.utils.checkpoint import atomic_open
        with atomic_open(args.json, 'w') as f:
            json.dump(out, f, indent=1)


if __name__ == '__main__':
    main()

# Copyright (c) mmcoop contributors. All rights reserved.
"""Test (evaluate) a checkpoint with an mmcoop config.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE]
        [--out-item {metrics,pred}] [--show-dir DIR] [--cfg-options k=v ...]
        [--launcher {none,pytorch,slurm,mpi}]

The checkpoint (a training checkpoint such as ``work_dirs/.../epoch_50.pth``,
a published one from ``tools/model_converters/publish_model.py`` or a
converted official one) is read by ``MMCoopRunner`` with
``torch.load(weights_only=True)``. ``--out x.pkl`` dumps every sample's
scores and labels (the input of ``tools/analysis/analyze_results.py``);
``--out x.json --out-item metrics`` the metrics plus a ``per_class_ap``
table; ``--show-dir`` draws each test image with its scores. Multi-GPU:
``bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [args]``.
"""
import argparse
import os
import os.path as osp
import sys
from copy import deepcopy

try:
    import mmcoop  # noqa: F401
except ImportError:  # run from a clone without `pip install -e .`
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
    import mmcoop  # noqa: F401

import mmengine
import torch
from mmengine.config import Config, ConfigDict, DictAction
from mmengine.evaluator import DumpResults
from mmengine.runner import Runner

from mmcoop.datasets.feature_cache import apply_feature_cache
from mmcoop.evaluation import evaluator_per_class_ap
from mmcoop.registry import RUNNERS


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='mmcoop: test (and evaluate) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir',
        help='the directory to save the file containing evaluation metrics')
    parser.add_argument('--out', help='the file to output results.')
    parser.add_argument(
        '--out-item',
        choices=['metrics', 'pred'],
        help='To output whether metrics or predictions. '
        'Defaults to output predictions.')
    parser.add_argument(
        '--show-dir',
        help='draw every test image with its top scores into this (new or '
        'empty) folder')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override some settings in the used config, the key-value pair '
        'in xxx=yyy format will be merged into config file. If the value to '
        'be overwritten is a list, it should be like key="[a,b]" or key=a,b '
        'It also allows nested list/tuple values, e.g. key="[(a,b),(c,d)]" '
        'Note that the quotation marks are necessary and that no white space '
        'is allowed.')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='enable automatic-mixed-precision test')
    parser.add_argument(
        '--no-pin-memory',
        action='store_true',
        help='whether to disable the pin_memory option in dataloaders.')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    # torch.distributed.launch passes `--local-rank` (torch >= 2.0) or
    # `--local_rank`; torchrun sets the LOCAL_RANK environment variable.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    if args.out is None and args.out_item is not None:
        parser.error('--out-item needs --out (the file to write to).')
    return args


def merge_args(cfg, args):
    """Merge CLI arguments to config."""
    cfg.launcher = args.launcher

    # work_dir is determined in this priority: CLI > segment in file > filename
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])

    cfg.load_from = args.checkpoint
    # testing loads weights only, it never resumes training state
    cfg.resume = False

    # enable automatic-mixed-precision test
    if args.amp:
        cfg.test_cfg = cfg.get('test_cfg', None) or ConfigDict()
        cfg.test_cfg.fp16 = True

    default_dataloader_cfg = ConfigDict(
        pin_memory=True,
    )

    def set_default_dataloader_cfg(cfg, field):
        if cfg.get(field, None) is None:
            return
        dataloader_cfg = deepcopy(default_dataloader_cfg)
        dataloader_cfg.update(cfg[field])
        cfg[field] = dataloader_cfg
        if args.no_pin_memory:
            cfg[field]['pin_memory'] = False

    set_default_dataloader_cfg(cfg, 'test_dataloader')

    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)

    if getattr(args, 'show_dir', None):
        cfg.custom_hooks = list(cfg.get('custom_hooks', None) or []) + [
            dict(type='PredictionDrawHook', out_dir=args.show_dir)
        ]

    loader = cfg.get('test_dataloader', None)
    if loader is not None and not loader.get('num_workers', 0):
        loader['persistent_workers'] = False
    return cfg


def prepare_demo_data(cfg) -> None:
    """Generate the synthetic demo dataset a config asks for (if missing)."""
    demo = cfg.get('demo_data', None)
    if not demo:
        return
    from mmcoop.datasets.demo_shapes import generate_demo_coco
    kwargs = dict(demo)
    root = kwargs.pop('root')
    if int(os.environ.get('RANK', '0')) == 0:
        generate_demo_coco(root, **kwargs)
    else:
        import time
        for _ in range(600):
            if osp.isfile(osp.join(root, 'demo_manifest.json')):
                break
            time.sleep(0.5)
        generate_demo_coco(root, **kwargs)


def setup_cpu_distributed(cfg) -> None:
    """``--launcher pytorch`` without CUDA: gloo process group and a DDP
    wrapper without ``device_ids`` (see tools/train.py)."""
    if cfg.launcher != 'pytorch' or torch.cuda.is_available():
        return
    import torch.distributed as dist
    cfg.setdefault('env_cfg', ConfigDict())
    cfg.env_cfg.setdefault('dist_cfg', ConfigDict())
    cfg.env_cfg.dist_cfg.backend = 'gloo'
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')
    wrapper = cfg.get('model_wrapper_cfg', None) or ConfigDict(
        type='MMDistributedDataParallel', broadcast_buffers=False)
    wrapper.setdefault('device_ids', None)
    cfg.model_wrapper_cfg = wrapper


def build_runner(cfg):
    """Build the runner from the config (respects ``runner_type``)."""
    if 'runner_type' not in cfg:
        return Runner.from_cfg(cfg)
    return RUNNERS.build(cfg)


def main(argv=None):
    args = parse_args(argv)

    if not osp.isfile(args.checkpoint) and '://' not in args.checkpoint:
        raise FileNotFoundError(
            f'checkpoint {args.checkpoint!r} does not exist.')

    # load config
    cfg = Config.fromfile(args.config)

    # merge cli arguments to config
    cfg = merge_args(cfg, args)

    # opt-in frozen-feature cache (`feature_cache = dict(...)`): the image
    # tower runs once per image, heads train/validate from cached features
    cfg = apply_feature_cache(cfg)

    setup_cpu_distributed(cfg)
    prepare_demo_data(cfg)

    # build the runner from config
    runner = build_runner(cfg)

    if args.out and args.out_item in ['pred', None]:
        runner.test_evaluator.metrics.append(
            DumpResults(out_file_path=args.out))

    # start testing
    metrics = runner.test()

    if args.out and args.out_item == 'metrics':
        mmengine.dump(
            dict(metrics,
                 per_class_ap=evaluator_per_class_ap(runner.test_evaluator)),
            args.out)
    return metrics


if __name__ == '__main__':
    main()

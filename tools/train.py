# Copyright (c) mmcoop contributors. All rights reserved.
"""Train a model with an mmcoop config.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [auto|CKPT]]
        [--amp] [--auto-scale-lr] [--cfg-options k=v ...]
        [--launcher {none,pytorch,slurm,mpi}]

Multi-GPU: ``bash tools/dist_train.sh CONFIG GPUS [args]`` (torchrun).
Works from a clone without installing mmcoop (the repository root is put on
``sys.path`` when ``import mmcoop`` fails) and with an installed mmcoop.
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

import torch
from mmengine.config import Config, ConfigDict, DictAction
from mmengine.runner import Runner

from mmcoop.datasets.feature_cache import apply_feature_cache
from mmcoop.experiments import apply_protocol
from mmcoop.registry import RUNNERS


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train an mmcoop model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='If specify checkpoint path, resume from it, while if not '
        'specify, try to auto resume from the latest checkpoint '
        'in the work directory.')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='enable automatic-mixed-precision training')
    parser.add_argument(
        '--no-validate',
        action='store_true',
        help='whether not to evaluate the checkpoint during training')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='whether to auto scale the learning rate according to the '
        'actual batch size and the original batch size.')
    parser.add_argument(
        '--no-pin-memory',
        action='store_true',
        help='whether to disable the pin_memory option in dataloaders.')
    parser.add_argument(
        '--no-persistent-workers',
        action='store_true',
        help='whether to disable the persistent_workers option in dataloaders.'
    )
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
    return args


def merge_args(cfg, args):
    """Merge CLI arguments to config."""
    if args.no_validate:
        cfg.val_cfg = None
        cfg.val_dataloader = None
        cfg.val_evaluator = None

    cfg.launcher = args.launcher

    # work_dir is determined in this priority: CLI > segment in file > filename
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])

    # enable automatic-mixed-precision training
    if args.amp is True:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')

    # resume training
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    # enable auto scale learning rate
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg:
            raise ValueError(
                '--auto-scale-lr needs `auto_scale_lr = dict(base_batch_size='
                '...)` in the config (mmcoop schedules set 32).')
        cfg.auto_scale_lr.enable = True

    # set dataloader args
    default_dataloader_cfg = ConfigDict(
        pin_memory=True,
        persistent_workers=True,
    )

    def set_default_dataloader_cfg(cfg, field):
        if cfg.get(field, None) is None:
            return
        dataloader_cfg = deepcopy(default_dataloader_cfg)
        dataloader_cfg.update(cfg[field])
        cfg[field] = dataloader_cfg
        if args.no_pin_memory:
            cfg[field]['pin_memory'] = False
        if args.no_persistent_workers:
            cfg[field]['persistent_workers'] = False

    set_default_dataloader_cfg(cfg, 'train_dataloader')
    set_default_dataloader_cfg(cfg, 'val_dataloader')
    set_default_dataloader_cfg(cfg, 'test_dataloader')

    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)

    # persistent workers need workers
    for field in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(field, None)
        if loader is not None and not loader.get('num_workers', 0):
            loader['persistent_workers'] = False
    return cfg


def prepare_demo_data(cfg) -> None:
    """Generate the synthetic demo dataset a config asks for (if missing).

    A config with ``demo_data = dict(root=..., **kwargs)`` trains on the
    procedurally drawn COCO-format tree of
    :func:`mmcoop.datasets.demo_shapes.generate_demo_coco`; it is written
    on first use (idempotent; rank 0 writes, the others wait).
    """
    demo = cfg.get('demo_data', None)
    if not demo:
        return
    from mmcoop.datasets.demo_shapes import generate_demo_coco
    kwargs = dict(demo)
    root = kwargs.pop('root')
    if int(os.environ.get('RANK', '0')) == 0:
        generate_demo_coco(root, **kwargs)
    else:  # wait for rank 0 (the tree is renamed into place when complete)
        import time
        manifest = osp.join(root, 'demo_manifest.json')
        for _ in range(600):
            if osp.isfile(manifest):
                break
            time.sleep(0.5)
        generate_demo_coco(root, **kwargs)  # validates / reuses the tree


def setup_cpu_distributed(cfg) -> None:
    """Make ``--launcher pytorch`` work on machines without CUDA.

    MMEngine's ``init_dist`` calls ``torch.cuda.set_device`` and wraps the
    model with ``device_ids=[LOCAL_RANK]``; both fail without a GPU. Here
    the process group is created with the gloo backend (``env://``, as set
    by torchrun) and the DDP wrapper gets ``device_ids=None``. Used for
    debugging and for the CPU distributed test; GPU runs are untouched.
    """
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
    wrapper.setdefault('find_unused_parameters',
                       cfg.get('find_unused_parameters', False))
    cfg.model_wrapper_cfg = wrapper


def build_runner(cfg):
    """Build the runner from the config (respects ``runner_type``).

    ``runner_type`` is looked up in mmcoop's runner registry, whose parents
    hold mmpretrain's and MMEngine's runners.
    """
    if 'runner_type' not in cfg:
        return Runner.from_cfg(cfg)
    return RUNNERS.build(cfg)


def main(argv=None):
    args = parse_args(argv)

    # load config
    cfg = Config.fromfile(args.config)

    # merge cli arguments to config
    cfg = merge_args(cfg, args)

    # evaluation protocol (`protocol = dict(name='official' | 'clean')`):
    # validation split, model selection, thresholds; before the cache
    cfg = apply_protocol(cfg)

    # opt-in frozen-feature cache (`feature_cache = dict(...)`): the image
    # tower runs once per image, heads train/validate from cached features
    cfg = apply_feature_cache(cfg)

    setup_cpu_distributed(cfg)
    prepare_demo_data(cfg)

    # build the runner from config
    runner = build_runner(cfg)

    # start training
    runner.train()
    report_demo_result(cfg, runner)
    return runner


def report_demo_result(cfg, runner) -> None:
    """For the offline demo, print the final mAP next to the chance level
    (the expected mAP of random scores on the same val split)."""
    demo = cfg.get('demo_data', None)
    if not demo or runner.rank != 0:
        return
    from mmcoop.datasets.demo_shapes import chance_level_map
    try:
        final = runner.message_hub.get_scalar(
            'val/multi-label/mAP').current()
    except KeyError:
        final = float('nan')
    chance = chance_level_map(demo['root'], 'val')
    runner.logger.info(
        f'[mmcoop demo] final val mAP {final:.2f} | chance level (random '
        f'scores) {chance:.2f}')


if __name__ == '__main__':
    main()

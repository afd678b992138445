# Runtime settings shared by every mmcoop config.
# Vendored base (relative `_base_` inheritance only): `mmpretrain::` bases
# need pkg_resources (setuptools<82) with mmengine 0.10.x and stamp
# `_scope_='mmpretrain'` on inherited dicts, which hides mmcoop types.
default_scope = 'mmcoop'
custom_imports = dict(
    imports=[
        'mmcoop.models', 'mmcoop.datasets', 'mmcoop.evaluation',
        'mmcoop.engine'
    ],
    allow_failed_imports=False)

# `MMCoopRunner` reads every checkpoint with `weights_only=True`, checks that
# it fits and interprets mmcoop's config keys (docs/architecture.md). Named
# by its import path, so that every runner registry finds it: mmcoop's, and
# MMEngine's root registry that mmpretrain's tools/train.py / tools/test.py
# build with (a plain or `mmcoop.`-scoped name is not found there).
runner_type = 'mmcoop.engine.MMCoopRunner'

# configure default hooks
default_hooks = dict(
    # record the time of every iteration.
    timer=dict(type='IterTimerHook'),
    # print log every 50 iterations.
    logger=dict(type='LoggerHook', interval=50),
    # enable the parameter scheduler.
    param_scheduler=dict(type='ParamSchedulerHook'),
    # save a checkpoint every epoch and keep the last 3 (the frozen CLIP
    # towers are not part of `state_dict()`: checkpoints hold the trained
    # parameters, optimizer and scheduler state and the run's meta only).
    # Files are written atomically (temporary file + rename) through
    # mmcoop's file backend `atomic_local` (mmcoop/engine/atomic_backend.py).
    checkpoint=dict(
        type='CheckpointHook',
        interval=1,
        max_keep_ckpts=3,
        backend_args=dict(backend='atomic_local')),
    # set sampler seed in distributed evrionment.
    sampler_seed=dict(type='DistSamplerSeedHook'),
    # stops a run by MMEngine's plain `Runner.from_cfg(cfg)`, which ignores
    # `runner_type` and so every key MMCoopRunner interprets (build with
    # `mmcoop.registry.RUNNERS.build(cfg)` or `MMCoopRunner.from_cfg(cfg)`)
    mmcoop_runner=dict(type='RunnerCheckHook'),
)

# configure environment
env_cfg = dict(
    # whether to enable cudnn benchmark
    cudnn_benchmark=False,
    # set multi process parameters
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    # set distributed parameters (MMCoopRunner.from_cfg switches to gloo on
    # machines without CUDA)
    dist_cfg=dict(backend='nccl'),
)

# set visualizer
vis_backends = [
    dict(type='LocalVisBackend'),
    # TensorBoard (pip install tensorboard):
    # dict(type='TensorboardVisBackend'),
]
# (mmengine's Visualizer: scalars of the log go to every backend)
visualizer = dict(type='Visualizer', vis_backends=vis_backends)

# set log level
log_level = 'INFO'

# load from which checkpoint
load_from = None

# whether to resume training from the loaded checkpoint
resume = False

# The seed is recorded in the log and in every checkpoint's meta. The
# official code sets no seed at all; the partial-label mask has its own
# seed (`train_dataloader.dataset.seed`).
randomness = dict(seed=0, deterministic=False)

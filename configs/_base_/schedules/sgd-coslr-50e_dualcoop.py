# Training recipe of the official DualCoOp (sunxm2357/DualCoOp, 49e71d7).
# Sources: train.py:L46-78, configs/models/rn101_ep50.yaml:L1-27, README.md
# L66,L75, Dassl defaults (dassl/config/defaults.py:L150-185,
# dassl/optim/lr_scheduler.py).
#
# * SGD, one parameter group (the prompt context vectors, train.py:L50),
#   momentum 0.9, dampening 0, no Nesterov, weight decay 5e-4 (Dassl
#   defaults; train.py:L72-76), batch 32 (yaml L3).
# * lr 0.002 for MS-COCO (yaml L22, README L66/L75); the VOC configs set
#   0.001 (README L66).
# * 50 epochs, cosine (T_max = 50), 1 warm-up epoch at a constant 1e-5
#   (yaml L23-27), stepped once per epoch (utils/trainers.py:L182).
optim_wrapper = dict(
    type='OptimWrapper',
    # only the trainable tensors enter the optimizer (the frozen CLIP
    # towers are skipped without a warning per tensor)
    constructor='TrainableParamsOptimWrapperConstructor',
    optimizer=dict(
        type='SGD',
        lr=0.002,
        momentum=0.9,
        dampening=0,
        nesterov=False,
        weight_decay=5e-4),
)

# Dassl ConstantWarmupScheduler: absolute lr 1e-5 in epoch 1, then the base
# lr comes back and the cosine runs over epochs 2..50 with T_max = 50.
# If you change max_epochs, change `end` and `T_max` too.
param_scheduler = [
    dict(type='ConstantAbsoluteLR', value=1e-5, begin=0, end=1, by_epoch=True),
    dict(
        type='CosineAnnealingLR',
        T_max=50,
        eta_min=0.,
        begin=1,
        end=50,
        by_epoch=True),
]

# train for 50 epochs; validate (on the test split, monitoring only) every 5
# epochs and after the last one. Set val_interval=1 to log every epoch as
# the official code does.
train_cfg = dict(by_epoch=True, max_epochs=50, val_interval=5)
val_cfg = dict()
test_cfg = dict()

# For `--auto-scale-lr` (mmengine scales lr by total batch / 32). Note that
# the official loss is a *sum* over the batch, so its gradient already
# grows with the batch size: do not combine the two without thought.
auto_scale_lr = dict(base_batch_size=32)

# Training recipe of the official PositiveCoOp fork (SamyakR99/PositiveCoOp),
# used for PositiveCoOp, NegativeCoOp and the Baseline. Sources (HEAD
# 58c9c51): train.py:L47-99, configs/models/rn101_ep50.yaml:L1-27, Dassl
# defaults (dassl/config/defaults.py, dassl/optim/lr_scheduler.py).
#
# * SGD, momentum 0.9, dampening 0, no Nesterov (Dassl defaults), weight
#   decay 0 (train.py:L97 "for coco made it 0"), batch 32 (yaml L3).
# * Base lr 0.5: the fork's README example (README.md:L43 `--lr 0.5`); the
#   README text "0.001 for VOC2007 and 0.002 for MS-COCO" (L34) is copied
#   from DualCoOp. 0.5 is the value that fits the fork's warm-up: 0.01 x 0.5
#   = 5e-3 = WARMUP_CONS_LR (yaml L27), i.e. the warm-up runs the prompt
#   context at its own base lr. See configs/positivecoop/README.md.
# * Parameter groups (train.py:L53-72): prompt context `ctx` at 0.01 x lr
#   ("prompt_learner" params), feature-space embeddings and residuals
#   ("txt_prompt*" params) at lr; the Baseline's linear layer
#   ("linear_layer", weight and bias) at 0.01 x lr (train.py:L47-55).
# * 50 epochs (yaml L23), cosine (T_max = 50), 1 warm-up epoch at an
#   absolute lr of 5e-3 for every group (yaml L25-27, Dassl
#   ConstantWarmupScheduler), stepped once per epoch
#   (utils/trainers.py:L182).
optim_wrapper = dict(
    type='OptimWrapper',
    # only the trainable tensors enter the optimizer (the frozen CLIP
    # towers are skipped without a warning per tensor)
    constructor='TrainableParamsOptimWrapperConstructor',
    optimizer=dict(
        type='SGD',
        lr=0.5,
        momentum=0.9,
        dampening=0,
        nesterov=False,
        weight_decay=0.),
    # matched (as substrings) against the model's parameter names
    paramwise_cfg=dict(
        custom_keys={
            # CoOp prompt context vectors: 0.01 x lr
            'head.pos_prompt.ctx': dict(lr_mult=0.01),
            'head.neg_prompt.ctx': dict(lr_mult=0.01),
            # feature-space class embeddings and residuals: lr
            'head.neg_embedding': dict(lr_mult=1.0),
            'head.pos_embedding': dict(lr_mult=1.0),
            'head.pos_residual': dict(lr_mult=1.0),
            'head.neg_residual': dict(lr_mult=1.0),
            # Baseline Linear(512, 2C): 0.01 x lr
            'head.fc': dict(lr_mult=0.01),
        }),
)

# Dassl's constant warm-up sets every group to the same absolute lr, which
# mmengine's ConstantLR (a factor) cannot express for groups with different
# lrs: `ConstantAbsoluteLR` (mmcoop.engine.optim) does, and gives every
# group its base lr back at the end of epoch 1. The cosine then runs over
# epochs 2..50 with T_max = 50 as Dassl's successor (WARMUP_RECOUNT=True):
# lr_e = base * (1 + cos(pi * (e - 1) / 50)) / 2 for 0-based epoch e >= 1.
# If you change max_epochs, change `end` and `T_max` too.
param_scheduler = [
    dict(type='ConstantAbsoluteLR', value=5e-3, begin=0, end=1, by_epoch=True),
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

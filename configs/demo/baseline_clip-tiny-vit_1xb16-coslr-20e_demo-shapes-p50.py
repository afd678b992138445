# Offline, CPU-only demo of the Baseline (Linear(D, 2C) on the frozen dense
# features) on the same drawn shapes, tiny random CLIP and recipe as the
# PositiveCoOp demo next to it; used by the demo sweep of
# docs/experiments.md (tools/sweep.py --datasets demo).
_base_ = './positivecoop_clip-tiny-vit_1xb16-coslr-20e_demo-shapes-p50.py'

model = dict(
    head=dict(
        _delete_=True,
        type='BaselineHead',
        classnames={{_base_.classes}},
        # embed_dim of mmcoop-tiny-ViT
        in_channels=64,
        logit_scale=5.,
        # the same ASL as the prompt heads
        loss={{_base_.model.head.loss}}))

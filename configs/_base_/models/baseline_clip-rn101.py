# The vision-only Baseline of PositiveCoOp (WACV 2025) on a frozen CLIP
# RN101 at 448 px: Linear(512, 2C) on the dense features, one spatial
# softmax per output channel, no text encoder (official
# SamyakR99/PositiveCoOp models/baseline.py).
_base_ = ['./clip-rn101_frozen.py']

model = dict(head=dict(type='BaselineHead', in_channels=512, logit_scale=5.))

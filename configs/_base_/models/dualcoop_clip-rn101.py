# DualCoOp (NeurIPS 2022) on a frozen CLIP RN101 at 448 px: learned positive
# and negative prompts (16 class-specific context tokens each) through the
# frozen text encoder (official sunxm2357/DualCoOp models/dualcoop.py).
_base_ = ['./clip-rn101_frozen.py']

model = dict(
    head=dict(
        type='DualCoOpHead',
        text_encoder=dict(
            type='FrozenCLIPTextEncoder',
            model_name='RN101-quickgelu',
            pretrained='openai'),
        n_ctx=16,
        class_specific=True))

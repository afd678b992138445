# PositiveCoOp (WACV 2025) on a frozen CLIP RN101 at 448 px.
# Presence: a learned CoOp prompt (16 class-specific context tokens) through
# the frozen text encoder plus a learned (C, 512) residual; absence: a
# learned (C, 512) embedding in feature space (official
# SamyakR99/PositiveCoOp models/positivecoop.py).
_base_ = ['./clip-rn101_frozen.py']

model = dict(
    head=dict(
        type='PositiveCoOpHead',
        text_encoder=dict(
            type='FrozenCLIPTextEncoder',
            model_name='RN101-quickgelu',
            pretrained='openai'),
        n_ctx=16,
        class_specific=True,
        use_residual=True))

# NegativeCoOp (ablation in PositiveCoOp, WACV 2025) on a frozen CLIP RN101
# at 448 px.
# Absence: a learned CoOp prompt (16 class-specific context tokens) through
# the frozen text encoder plus a learned (C, 512) residual; presence: a
# learned (C, 512) embedding in feature space (official
# SamyakR99/PositiveCoOp models/negativecoop.py).
model = dict(
    # build in the mmcoop scope whoever builds it (mmpretrain's get_model
    # and ImageClassificationInferencer build in the mmpretrain scope)
    _scope_='mmcoop',
    type='ImageClassifier',
    # CLIP normalisation (its defaults: CLIP mean/std, BGR -> RGB)
    data_preprocessor=dict(type='CLIPDataPreprocessor'),
    backbone=dict(
        type='FrozenCLIP',
        model_name='RN101-quickgelu',
        pretrained='openai',
        input_resolution=448),
    head=dict(
        type='NegativeCoOpHead',
        # class names for the prompts: a list, a class file (one name a
        # line) or a registered dataset type
        classnames='COCO2014MultiLabel',
        text_encoder=dict(
            type='FrozenCLIPTextEncoder',
            model_name='RN101-quickgelu',
            pretrained='openai'),
        n_ctx=16,
        class_specific=True,
        use_residual=True,
        # ASL on the 2-way softmax, unknown (-1) labels ignored; sum over
        # the batch times the official `--loss_w` (0.03, see README).
        loss=dict(
            type='PartialAsymmetricLoss',
            gamma_neg=2,
            gamma_pos=1,
            clip=0.05,
            loss_weight=0.03)),
)

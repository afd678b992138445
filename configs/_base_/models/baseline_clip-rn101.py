# The vision-only Baseline of PositiveCoOp (WACV 2025) on a frozen CLIP
# RN101 at 448 px: Linear(512, 2C) on the dense features, one spatial
# softmax per output channel, no text encoder (official
# SamyakR99/PositiveCoOp models/baseline.py).
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
        type='BaselineHead',
        classnames='COCO2014MultiLabel',
        in_channels=512,
        logit_scale=5.,
        # ASL on the 2-way softmax, unknown (-1) labels ignored; sum over
        # the batch times the official `--loss_w` (0.03, see README).
        loss=dict(
            type='PartialAsymmetricLoss',
            gamma_neg=2,
            gamma_pos=1,
            clip=0.05,
            loss_weight=0.03)),
)

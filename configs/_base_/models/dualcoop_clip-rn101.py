# DualCoOp (NeurIPS 2022) on a frozen CLIP RN101 at 448 px: learned positive
# and negative prompts (16 class-specific context tokens each) through the
# frozen text encoder (official sunxm2357/DualCoOp models/dualcoop.py).
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
        type='DualCoOpHead',
        classnames='COCO2014MultiLabel',
        text_encoder=dict(
            type='FrozenCLIPTextEncoder',
            model_name='RN101-quickgelu',
            pretrained='openai'),
        n_ctx=16,
        class_specific=True,
        # ASL on the 2-way softmax, unknown (-1) labels ignored; sum over
        # the batch times the official `--loss_w` (0.03, see README).
        loss=dict(
            type='PartialAsymmetricLoss',
            gamma_neg=2,
            gamma_pos=1,
            clip=0.05,
            loss_weight=0.03)),
)

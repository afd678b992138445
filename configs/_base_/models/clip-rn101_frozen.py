# What every method's model shares: an mmpretrain ImageClassifier on the
# frozen CLIP RN101 image tower at 448 px, CLIP normalisation, the COCO
# class names and the official loss. The method configs of this folder add
# the head (its type and fields).
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
        # class names for the prompts: a list, a class file (one name a
        # line) or a registered dataset type
        classnames='COCO2014MultiLabel',
        # ASL on the 2-way softmax, unknown (-1) labels ignored; sum over
        # the batch times the official `--loss_w` (0.03, see README).
        loss=dict(
            type='PartialAsymmetricLoss',
            gamma_neg=2,
            gamma_pos=1,
            clip=0.05,
            loss_weight=0.03)),
)

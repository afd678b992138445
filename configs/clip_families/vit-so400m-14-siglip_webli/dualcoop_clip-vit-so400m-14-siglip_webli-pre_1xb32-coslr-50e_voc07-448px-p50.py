# DualCoOp on PASCAL VOC 2007, 50% of the training labels known, with SigLIP
# So400m/14 (timm tower, map head) at 448 px instead of RN101; the recipe
# (schedule, loss, data) is that of the RN101 config; 8 learned context
# tokens instead of 16 (a 16-token text context).
_base_ = [
    '../../dualcoop/'
    'dualcoop_clip-rn101_openai-pre_1xb32-coslr-50e_voc07-448px-p50.py',
    '../../_base_/models/clip_families/vit-so400m-14-siglip_webli.py',
]

model = dict(
    data_preprocessor={{_base_._clip_data_preprocessor}},
    backbone={{_base_._clip_model}},
    head=dict(
        n_ctx={{_base_._n_ctx}}, text_encoder={{_base_._clip_model}}))

# PositiveCoOp on PASCAL VOC 2007, 50% of the training labels known, with
# OpenAI CLIP ViT-B/16 at 448 px instead of RN101; the recipe (schedule, loss,
# data) is that of the RN101 config.
_base_ = [
    '../../positivecoop/'
    'positivecoop_clip-rn101_openai-pre_1xb32-coslr-50e_voc07-448px-p50.py',
    '../../_base_/models/clip_families/vit-b-16_openai.py',
]

model = dict(
    backbone={{_base_._clip_model}},
    head=dict(text_encoder={{_base_._clip_model}}))

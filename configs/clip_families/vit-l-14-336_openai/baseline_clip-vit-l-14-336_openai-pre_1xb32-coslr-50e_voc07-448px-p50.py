# Baseline on PASCAL VOC 2007, 50% of the training labels known, with OpenAI
# CLIP ViT-L/14-336 at 448 px instead of RN101; the recipe (schedule, loss,
# data) is that of the RN101 config.
_base_ = [
    '../../baseline/'
    'baseline_clip-rn101_openai-pre_1xb32-coslr-50e_voc07-448px-p50.py',
    '../../_base_/models/clip_families/vit-l-14-336_openai.py',
]

model = dict(
    backbone={{_base_._clip_model}},
    head=dict(in_channels={{_base_._clip_embed_dim}}))

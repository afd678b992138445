# MetaCLIP ViT-H/14 (2.5B): open_clip 'ViT-H-14-quickgelu' with the
# 'metaclip_fullcc' weights. Joint embedding width 1024 (negative embeddings,
# Baseline Linear), text width 1024 (prompt context). Read by the configs of
# configs/clip_families/vit-h-14_metaclip/.
_clip_model = dict(
    model_name='ViT-H-14-quickgelu', pretrained='metaclip_fullcc')
_clip_embed_dim = 1024

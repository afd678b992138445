# OpenCLIP ConvNeXt-Base-W (timm tower): open_clip 'convnext_base_w' with the
# 'laion2b_s13b_b82k' weights. Joint embedding width 640 (negative embeddings,
# Baseline Linear), text width 640 (prompt context). Read by the configs of
# configs/clip_families/convnext-base-w_laion2b/.
_clip_model = dict(
    model_name='convnext_base_w', pretrained='laion2b_s13b_b82k')
_clip_embed_dim = 640

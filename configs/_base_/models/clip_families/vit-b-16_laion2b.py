# OpenCLIP ViT-B/16 trained on LAION-2B: open_clip 'ViT-B-16' with the
# 'laion2b_s34b_b88k' weights. Joint embedding width 512 (negative embeddings,
# Baseline Linear), text width 512 (prompt context). Read by the configs of
# configs/clip_families/vit-b-16_laion2b/.
_clip_model = dict(model_name='ViT-B-16', pretrained='laion2b_s34b_b88k')
_clip_embed_dim = 512

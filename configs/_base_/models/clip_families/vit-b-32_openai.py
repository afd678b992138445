# OpenAI CLIP ViT-B/32: open_clip 'ViT-B-32-quickgelu' with the 'openai'
# weights. Joint embedding width 512 (negative embeddings, Baseline Linear),
# text width 512 (prompt context). Read by the configs of
# configs/clip_families/vit-b-32_openai/.
_clip_model = dict(model_name='ViT-B-32-quickgelu', pretrained='openai')
_clip_embed_dim = 512

# OpenAI CLIP ViT-B/16: open_clip 'ViT-B-16-quickgelu' with the 'openai'
# weights. Joint embedding width 512 (negative embeddings, Baseline Linear),
# text width 512 (prompt context). Read by the configs of
# configs/clip_families/vit-b-16_openai/.
_clip_model = dict(model_name='ViT-B-16-quickgelu', pretrained='openai')
_clip_embed_dim = 512

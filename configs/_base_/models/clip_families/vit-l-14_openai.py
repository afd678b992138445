# OpenAI CLIP ViT-L/14: open_clip 'ViT-L-14-quickgelu' with the 'openai'
# weights. Joint embedding width 768 (negative embeddings, Baseline Linear),
# text width 768 (prompt context). Read by the configs of
# configs/clip_families/vit-l-14_openai/.
_clip_model = dict(model_name='ViT-L-14-quickgelu', pretrained='openai')
_clip_embed_dim = 768

# OpenAI CLIP RN50: open_clip 'RN50-quickgelu' with the 'openai' weights. Joint
# embedding width 1024 (negative embeddings, Baseline Linear), text width 512
# (prompt context). Read by the configs of configs/clip_families/rn50_openai/.
_clip_model = dict(model_name='RN50-quickgelu', pretrained='openai')
_clip_embed_dim = 1024

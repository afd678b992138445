# OpenAI CLIP RN50x64: open_clip 'RN50x64-quickgelu' with the 'openai' weights.
# Joint embedding width 1024 (negative embeddings, Baseline Linear), text width
# 1024 (prompt context). Read by the configs of
# configs/clip_families/rn50x64_openai/.
_clip_model = dict(model_name='RN50x64-quickgelu', pretrained='openai')
_clip_embed_dim = 1024

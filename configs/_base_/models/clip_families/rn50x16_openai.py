# OpenAI CLIP RN50x16: open_clip 'RN50x16-quickgelu' with the 'openai' weights.
# Joint embedding width 768 (negative embeddings, Baseline Linear), text width
# 768 (prompt context). Read by the configs of
# configs/clip_families/rn50x16_openai/.
_clip_model = dict(model_name='RN50x16-quickgelu', pretrained='openai')
_clip_embed_dim = 768

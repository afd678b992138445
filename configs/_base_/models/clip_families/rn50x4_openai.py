# OpenAI CLIP RN50x4: open_clip 'RN50x4-quickgelu' with the 'openai' weights.
# Joint embedding width 640 (negative embeddings, Baseline Linear), text width
# 640 (prompt context). Read by the configs of
# configs/clip_families/rn50x4_openai/.
_clip_model = dict(model_name='RN50x4-quickgelu', pretrained='openai')
_clip_embed_dim = 640

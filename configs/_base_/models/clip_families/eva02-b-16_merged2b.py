# EVA02-CLIP-B/16 (timm tower): open_clip 'EVA02-B-16' with the
# 'merged2b_s8b_b131k' weights. Joint embedding width 512 (negative embeddings,
# Baseline Linear), text width 512 (prompt context). Read by the configs of
# configs/clip_families/eva02-b-16_merged2b/.
_clip_model = dict(model_name='EVA02-B-16', pretrained='merged2b_s8b_b131k')
_clip_embed_dim = 512

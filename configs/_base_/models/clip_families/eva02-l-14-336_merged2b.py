# EVA02-CLIP-L/14-336 (timm tower): open_clip 'EVA02-L-14-336' with the
# 'merged2b_s6b_b61k' weights. Joint embedding width 768 (negative embeddings,
# Baseline Linear), text width 768 (prompt context). Read by the configs of
# configs/clip_families/eva02-l-14-336_merged2b/.
_clip_model = dict(model_name='EVA02-L-14-336', pretrained='merged2b_s6b_b61k')
_clip_embed_dim = 768

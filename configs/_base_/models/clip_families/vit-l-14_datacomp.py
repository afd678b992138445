# OpenCLIP ViT-L/14 trained on DataComp-1B: open_clip 'ViT-L-14' with the
# 'datacomp_xl_s13b_b90k' weights. Joint embedding width 768 (negative
# embeddings, Baseline Linear), text width 768 (prompt context). Read by the
# configs of configs/clip_families/vit-l-14_datacomp/.
_clip_model = dict(model_name='ViT-L-14', pretrained='datacomp_xl_s13b_b90k')
_clip_embed_dim = 768

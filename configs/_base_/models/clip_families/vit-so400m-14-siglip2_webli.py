# SigLIP2 So400m/14 (timm tower, map head): open_clip 'ViT-SO400M-14-SigLIP2'
# with the 'webli' weights. Joint embedding width 1152 (negative embeddings,
# Baseline Linear), text width 1152 (prompt context). Read by the configs of
# configs/clip_families/vit-so400m-14-siglip2_webli/.
_clip_model = dict(model_name='ViT-SO400M-14-SigLIP2', pretrained='webli')
_clip_embed_dim = 1152
# SigLIP normalises images with mean = std = 0.5 (x 255), not
# CLIP's statistics (open_clip's pretrained config of the tag);
# its tokenizer needs `pip install -e .[siglip]` (a transformers that
# mmpretrain 1.2 imports with; docs/backbones.md, "Installing the SigLIP
# tokenizers").
_clip_data_preprocessor = dict(mean=[127.5] * 3, std=[127.5] * 3)

# SigLIP ViT-B/16 (timm tower, map head): open_clip 'ViT-B-16-SigLIP' with the
# 'webli' weights. Joint embedding width 768 (negative embeddings, Baseline
# Linear), text width 768 (prompt context). Read by the configs of
# configs/clip_families/vit-b-16-siglip_webli/.
_clip_model = dict(model_name='ViT-B-16-SigLIP', pretrained='webli')
_clip_embed_dim = 768
# SigLIP normalises images with mean = std = 0.5 (x 255), not
# CLIP's statistics (open_clip's pretrained config of the tag);
# its tokenizer needs `pip install -e .[siglip]` (a transformers that
# mmpretrain 1.2 imports with; docs/backbones.md, "Installing the SigLIP
# tokenizers").
_clip_data_preprocessor = dict(mean=[127.5] * 3, std=[127.5] * 3)

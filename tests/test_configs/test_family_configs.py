# Copyright (c) mmcoop contributors. All rights reserved.
"""configs/clip_families: every config names an open_clip model and tag that
exist, at a resolution that fits the patch size, with the family's widths and
normalisation; one per architecture kind builds (tiny stand-in)."""
import copy
import glob
import os.path as osp

import open_clip
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

import mmcoop.models  # noqa: F401
from mmcoop.datasets.categories import COCO2014_CATEGORIES, VOC2007_CATEGORIES
from mmcoop.models.backbones import register_mmcoop_clip_configs
from mmcoop.models.data_preprocessors import CLIP_MEAN
from mmcoop.registry import MODELS

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
FAMILIES = osp.join(REPO, 'configs', 'clip_families')
CONFIGS = sorted(glob.glob(osp.join(FAMILIES, '*', '*.py')))


def _id(path):
    return osp.relpath(path, FAMILIES)


def test_every_family_has_its_configs():
    families = sorted(osp.basename(d) for d in glob.glob(f'{FAMILIES}/*'))
    assert len(families) == 19
    for family in families:
        names = {osp.basename(p) for p in CONFIGS
                 if osp.basename(osp.dirname(p)) == family}
        zero = {f'zeroshot_clip-{family}-pre_{d}-448px.py'
                for d in ('coco14', 'voc07')}
        methods = set() if family == 'rn101_openai' else {
            f'{m}_clip-{family}-pre_1xb32-coslr-50e_{d}-448px-p50.py'
            for m in ('positivecoop', 'dualcoop', 'baseline')
            for d in ('coco14', 'voc07')
        }
        assert names == zero | methods, family


@pytest.mark.parametrize('path', CONFIGS, ids=_id)
def test_family_config_facts(path):
    cfg = Config.fromfile(path)
    backbone, head = cfg.model.backbone, cfg.model.head
    name, tag = backbone.model_name, backbone.pretrained
    assert name in open_clip.list_models()
    assert tag in open_clip.list_pretrained_tags_by_model(name)
    if 'text_encoder' in head:
        assert (head.text_encoder.model_name,
                head.text_encoder.pretrained) == (name, tag)
    arch = open_clip.get_model_config(name)
    if head.type == 'BaselineHead':
        assert head.in_channels == arch['embed_dim']
    if head.type in ('PositiveCoOpHead', 'NegativeCoOpHead', 'DualCoOpHead'):
        # the learned context, the tokenizer's start token (none for the
        # SigLIP tokenizers), the longest class name (one token per word
        # at least) and the end token fit the text context
        text_cfg = arch['text_cfg']
        start = 0 if text_cfg.get('hf_tokenizer_name') else 1
        words = max(
            len(c.replace('_', ' ').split())
            for c in COCO2014_CATEGORIES + VOC2007_CATEGORIES)
        assert head.n_ctx + start + words + 1 < text_cfg.get(
            'context_length', 77), (name, head.n_ctx)
    vision = arch['vision_cfg']
    patch = vision.get('patch_size') or 32  # ResNets / ConvNeXt: stride 32
    if 'timm_model_name' in vision:
        timm_name = vision['timm_model_name']
        patch = 14 if 'patch14' in timm_name else 16 \
            if 'patch16' in timm_name else 32
    assert backbone.input_resolution % patch == 0
    # the normalisation of the weights (open_clip's pretrained config)
    mean = open_clip.get_pretrained_cfg(name, tag).get(
        'mean', open_clip.OPENAI_DATASET_MEAN)
    preprocessor = cfg.model.data_preprocessor
    assert preprocessor.type == 'CLIPDataPreprocessor'
    torch.testing.assert_close(
        torch.tensor(preprocessor.get('mean', CLIP_MEAN), dtype=torch.float64),
        torch.tensor(mean, dtype=torch.float64) * 255, atol=1e-3, rtol=0)
    # CLIP's statistics are the preprocessor's defaults, never retyped
    assert ('mean' in preprocessor) == ('SigLIP' in name)


# a few configs, every architecture kind and every head type among them,
# each built with a tiny instance of its kind
TINY = {
    'rn50x4_openai': ('mmcoop-tiny-RN', 'baseline'),
    'vit-l-14_datacomp': ('mmcoop-tiny-ViT', 'positivecoop'),
    'eva02-b-16_merged2b': ('mmcoop-tiny-EVA02', 'dualcoop'),
    'convnext-base-w_laion2b': ('mmcoop-tiny-ConvNeXt', 'zeroshot'),
    'vit-so400m-14-siglip_webli': ('mmcoop-tiny-MAP', 'positivecoop'),
}
BUILD = [
    p for p in CONFIGS if osp.basename(osp.dirname(p)) in TINY
    and 'coco14' in p and osp.basename(p).startswith(
        TINY[osp.basename(osp.dirname(p))][1])
]


@pytest.mark.parametrize('path', BUILD, ids=_id)
def test_family_config_builds_with_a_tiny_instance(path):
    register_mmcoop_clip_configs()
    cfg = Config.fromfile(path)
    tiny = TINY[osp.basename(osp.dirname(path))][0]
    model_cfg = copy.deepcopy(cfg.model)
    size = 56 if 'EVA02' in tiny else 64
    model_cfg.backbone.update(
        model_name=tiny, pretrained=None, input_resolution=size)
    if 'text_encoder' in model_cfg.head:
        model_cfg.head.text_encoder.update(model_name=tiny, pretrained=None)
    if model_cfg.head.type == 'BaselineHead':
        model_cfg.head.in_channels = open_clip.get_model_config(
            tiny)['embed_dim']
    with DefaultScope.overwrite_default_scope('mmcoop'):
        model = MODELS.build(model_cfg).eval()
    with torch.no_grad():
        logits = model(torch.rand(1, 3, size, size) * 255, mode='tensor')
    assert logits.shape == (1, 2, 80) and torch.isfinite(logits).all()

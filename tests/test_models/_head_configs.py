# Copyright (c) mmcoop contributors. All rights reserved.
"""The head configs of the model tests: a tiny text encoder, few contexts."""
from _official_reference import TINY_RN

NAMES = ['cat', 'traffic light', 'hair_drier']


def head_cfg(head_type,
             clip_file=None,
             model_name=TINY_RN,
             names=NAMES,
             **kwargs):
    """A head of ``head_type`` over ``names`` on the tiny CLIP
    ``model_name`` (weights ``clip_file``; random if None)."""
    cfg = dict(type=head_type, classnames=names, **kwargs)
    if head_type == 'BaselineHead':
        cfg.setdefault('in_channels', 64 if model_name == TINY_RN else 512)
    else:
        cfg.setdefault('n_ctx', 4)
        cfg['text_encoder'] = dict(
            type='FrozenCLIPTextEncoder',
            model_name=model_name,
            pretrained=clip_file)
    return cfg

# Copyright (c) mmcoop contributors. All rights reserved.
"""Parameters (frozen vs trainable) and FLOPs of the model of any config.

    python tools/analysis/get_flops.py CONFIG [--shape 448] \\
        [--cfg-options ...]

FLOPs are counted by ``torch.utils.flop_counter`` (2 per multiply-add;
matmuls, convolutions, attention) through :func:`mmcoop.benchmark.flops.
count_flops`, for one image of ``--shape`` (default: the backbone's
``input_resolution``):

* image tower: the frozen CLIP image encoder, per image;
* class features: the prompts through the frozen text encoder (prompt
  heads), once per forward pass (per batch) in training, once per
  evaluation at test time;
* head: region aggregation and logits per image, class features cached.

GMACs (FLOPs / 2) are what the metafiles' ``FLOPs`` field holds, as in
mmpretrain's metafiles.

The CLIP weights are not loaded (``pretrained=None``): counts do not
depend on them, and no download is needed.
"""
import argparse
import os.path as osp

import torch

from mmcoop.apis import init_model, load_config
from mmcoop.benchmark.flops import count_flops
from mmcoop.engine.cli import SpacedDictAction, positive_int


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Params (frozen / trainable) and FLOPs of a config')
    parser.add_argument('config', help='config file')
    parser.add_argument(
        '--shape', type=positive_int,
        help="input size S (S x S), the backbone built for it; default: "
        "the backbone's input_resolution")
    parser.add_argument('--cfg-options', nargs='+', action=SpacedDictAction)
    return parser.parse_args(argv)


def param_counts(module) -> dict:
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return dict(total=total, trainable=trainable, frozen=total - trainable)


def complexity(model, size: int) -> dict:
    """Params per part and FLOPs (see the module doc) of ``model``."""
    head = model.head
    parts = dict(backbone=model.backbone, head=head)
    if getattr(head, 'text_encoder', None) is not None:
        parts['head.text_encoder'] = head.text_encoder
    params = {name: param_counts(m) for name, m in parts.items()}
    params['total'] = param_counts(model)
    image = torch.zeros(1, 3, size, size)
    flops = {}
    with torch.no_grad():
        flops['image tower (per image)'] = count_flops(
            lambda: model.backbone(image))
        feats = model.backbone(image)
        if hasattr(head, 'class_features'):
            flops['class features (per forward pass)'] = count_flops(
                head.class_features)
        head(feats)  # fills the class-feature cache of prompt heads
        flops['head (per image, class features cached)'] = count_flops(
            lambda: head(feats))
    return dict(params=params, flops=flops, shape=size)


def format_report(cfg_name: str, result: dict) -> str:
    lines = [f'{cfg_name}  (input {result["shape"]} x {result["shape"]})',
             '', f'{"parameters":<22}{"total":>14}{"trainable":>14}'
             f'{"frozen":>14}']
    for name, c in result['params'].items():
        lines.append(f'{name:<22}{c["total"]:>14,}{c["trainable"]:>14,}'
                     f'{c["frozen"]:>14,}')
    lines += ['', f'{"FLOPs":<42}{"GFLOPs":>10}{"GMACs":>10}']
    for name, value in result['flops'].items():
        lines.append(f'{name:<42}{value / 1e9:>10.3f}{value / 2e9:>10.3f}')
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    cfg.model.backbone.pretrained = None
    if cfg.model.head.get('text_encoder'):
        cfg.model.head.text_encoder.pretrained = None
    size = args.shape or cfg.model.backbone.get('input_resolution', 224)
    if args.shape:  # the tower is built for the size it is counted at
        cfg.model.backbone.input_resolution = args.shape
    try:
        model = init_model(cfg, device='cpu')
    except ValueError as e:
        if not args.shape:
            raise
        raise SystemExit(f'--shape {args.shape}: the backbone cannot take '
                         f'it: {e}') from None
    result = complexity(model, size)
    print(format_report(osp.basename(args.config), result))
    return result


if __name__ == '__main__':
    main()

# Offline, CPU-only demo: PositiveCoOp on a tiny *random* CLIP, trained on a
# procedurally drawn COCO-format dataset (coloured shapes, 10 classes) with
# 50% of the training labels known. Same code path and recipe as the paper
# configs (partial-label wrapper, mask hook, loss, metric, SGD lr 0.5 with
# per-group multipliers, absolute warm-up + cosine, runner); what differs:
# the data, the CLIP size (random weights), 20 epochs, batch 16, no
# Cutout/RandAugment (256 images), validation every 5 epochs.
# Time and final mAP depend on the machine: see configs/demo/README.md.
#
# Why the tiny *ViT*: a randomly initialised open_clip ModifiedResNet zeroes
# the last BN of every residual block, so its dense features are nearly the
# same vector for every image (cosine ~0.99999); the cosine-similarity
# prompt heads cannot learn from them. The random tiny ViT keeps images
# apart (mean cosine ~0.16).
#
#   python tools/train.py \
#       configs/demo/positivecoop_clip-tiny-vit_1xb16-coslr-20e_demo-shapes-p50.py
#
# The data tree (data/mmcoop_demo_shapes) is written on first use by the
# dataset type `DemoShapesDataset` (mmcoop/demo), whichever launcher builds
# it, or by hand with `python -m mmcoop.demo data/mmcoop_demo_shapes`, which
# also prints the chance-level mAP. `DemoResultHook` logs the final val mAP
# next to chance level. A config that inherits this one for other data
# replaces `dataset_type` and `data_root`: nothing is generated then, and
# no chance level is reported (the hook only speaks for the demo tree).
_base_ = '../positivecoop/positivecoop_clip-rn101_openai-pre_1xb32-coslr-50e_coco14-448px-p50.py'  # noqa: E501

dataset_type = 'DemoShapesDataset'
data_root = 'data/mmcoop_demo_shapes'
classes = [
    'red circle', 'green square', 'blue triangle', 'yellow star',
    'purple diamond', 'orange cross', 'cyan ring', 'pink hexagon',
    'white pentagon', 'black arrow'
]
img_size = 96

model = dict(
    backbone=dict(
        model_name='mmcoop-tiny-ViT',
        pretrained=None,
        input_resolution=img_size),
    head=dict(
        classnames=classes,
        text_encoder=dict(model_name='mmcoop-tiny-ViT', pretrained=None)))

train_pipeline = [
    dict(type='mmcoop.LoadImageFromFileChecked'),
    dict(
        type='Resize',
        scale=(img_size, img_size),
        keep_ratio=False,
        backend='pillow',
        interpolation='bilinear'),
    dict(type='PackInputs'),
]
test_pipeline = train_pipeline

train_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        known_proportion=0.5,
        dataset=dict(
            type=dataset_type,
            data_root=data_root,
            classes=classes,
            pipeline=train_pipeline)))
val_dataloader = dict(
    batch_size=64,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        classes=classes,
        pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(lr=0.5))
param_scheduler = [
    dict(type='ConstantAbsoluteLR', value=5e-3, begin=0, end=1, by_epoch=True),
    dict(
        type='CosineAnnealingLR',
        T_max=20,
        eta_min=0.,
        begin=1,
        end=20,
        by_epoch=True),
]
train_cfg = dict(max_epochs=20, val_interval=5)

default_hooks = dict(logger=dict(interval=5))
custom_hooks = [
    dict(type='PartialLabelMaskHook'),
    dict(type='DemoResultHook'),
]

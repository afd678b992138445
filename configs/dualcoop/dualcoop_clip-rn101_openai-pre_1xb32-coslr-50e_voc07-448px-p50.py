# DualCoOp on PASCAL VOC 2007, 50% of the training labels known.
# Frozen CLIP RN101 (OpenAI weights) at 448 px, 1 GPU x batch 32, 50 epochs.
# Every other known-label proportion inherits this file.
_base_ = [
    '../_base_/models/dualcoop_clip-rn101.py',
    '../_base_/datasets/voc07_partial_448.py',
    '../_base_/schedules/sgd-coslr-50e_dualcoop.py',
    '../_base_/default_runtime.py',
]

# class names of the prompts / number of outputs
model = dict(head=dict(classnames='VOC2007MultiLabel'))

# fraction of the training labels that stay known
train_dataloader = dict(dataset=dict(known_proportion=0.5))

# DualCoOp README.md:L66: lr 0.001 for VOC2007 (0.002 for MS-COCO)
optim_wrapper = dict(optimizer=dict(lr=0.001))

# NegativeCoOp on MS-COCO 2014, 50% of the training labels known.
# Frozen CLIP RN101 (OpenAI weights) at 448 px, 1 GPU x batch 32, 50 epochs.
# Every other known-label proportion inherits this file.
_base_ = [
    '../_base_/models/negativecoop_clip-rn101.py',
    '../_base_/datasets/coco14_partial_448.py',
    '../_base_/schedules/sgd-coslr-50e_positivecoop.py',
    '../_base_/default_runtime.py',
]

# class names of the prompts / number of outputs
model = dict(head=dict(classnames='COCO2014MultiLabel'))

# fraction of the training labels that stay known
train_dataloader = dict(dataset=dict(known_proportion=0.5))

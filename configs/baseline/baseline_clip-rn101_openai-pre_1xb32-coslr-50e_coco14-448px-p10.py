# Baseline on MS-COCO 2014, 10% of the training labels known.
_base_ = './baseline_clip-rn101_openai-pre_1xb32-coslr-50e_coco14-448px-p50.py'

train_dataloader = dict(dataset=dict(known_proportion=0.1))

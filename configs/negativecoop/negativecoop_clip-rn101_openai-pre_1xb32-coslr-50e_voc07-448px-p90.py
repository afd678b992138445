# NegativeCoOp on PASCAL VOC 2007, 90% of the training labels known.
_base_ = './negativecoop_clip-rn101_openai-pre_1xb32-coslr-50e_voc07-448px-p50.py'  # noqa: E501

train_dataloader = dict(dataset=dict(known_proportion=0.9))

# Zero-shot / generalised zero-shot multi-label recognition on MS-COCO 2014,
# the 48/17 seen/unseen split (Bansal et al., ECCV 2018) as in DualCoOp's
# zero-shot experiments. DualCoOp with ONE context shared by all classes
# (class_specific=False), so a class never trained on still gets a prompt:
# its name. Training: all labels of the 48 seen classes; the 17 unseen and
# the 15 COCO classes outside the split are hidden (-1, no loss). Evaluation: mAP, F1@3, F1@5 over the 17
# unseen classes (ZSL) and over the 65 seen + unseen classes (GZSL).
_base_ = '../dualcoop/dualcoop_clip-rn101_openai-pre_1xb32-coslr-50e_coco14-448px-p50.py'  # noqa: E501

from mmcoop.datasets.categories import COCO2014_CATEGORIES as _COCO_CLASSES
from mmcoop.datasets.unseen_splits import COCO_48_17_SEEN, COCO_48_17_UNSEEN

model = dict(head=dict(class_specific=False))

train_dataloader = dict(
    dataset=dict(
        known_proportion=1.0,
        unseen_classes=[
            c for c in _COCO_CLASSES if c not in COCO_48_17_SEEN
        ]))

val_evaluator = dict(
    _delete_=True,
    type='UnseenClassMetric',
    unseen_classes=COCO_48_17_UNSEEN,
    seen_classes=COCO_48_17_SEEN)
test_evaluator = val_evaluator

# MS-COCO 2014 with the 48/17 seen/unseen split (Bansal et al., ECCV 2018)
# as in DualCoOp's zero-shot experiments, for the zero-shot configs
# (configs/zero_shot). Training: all labels of the 48 seen classes on the
# images with a seen object; the 17 unseen and the 15 COCO classes outside
# the split are hidden (-1, no loss). Evaluation: mAP, F1@3, F1@5 over the
# 17 unseen classes (ZSL) on the images with an unseen object, and over the
# 65 seen + unseen classes (GZSL) on the images with one of them. Only
# heads that can score a class they never trained on can use it
# (docs/data.md §9); MMCoopRunner refuses the others.
_base_ = './coco14_partial_448.py'

# an import above `_base_` would make this a "lazy import" config
from mmcoop.datasets.categories import \
    COCO2014_CATEGORIES as _COCO_CLASSES  # noqa: E402
from mmcoop.datasets.unseen_splits import (  # noqa: E402
    COCO_48_17_SEEN, COCO_48_17_UNSEEN)

# the official image sets: training images with a seen object (the test
# parts, with an unseen / any of the 65 objects, are chosen by the metric:
# UnseenClassMetric(images='with_positive'))
train_dataloader = dict(
    dataset=dict(
        known_proportion=1.0,
        unseen_classes=[
            c for c in _COCO_CLASSES if c not in COCO_48_17_SEEN
        ],
        dataset=dict(image_classes=COCO_48_17_SEEN)))

val_evaluator = dict(
    _delete_=True,
    type='UnseenClassMetric',
    unseen_classes=COCO_48_17_UNSEEN,
    seen_classes=COCO_48_17_SEEN)
test_evaluator = val_evaluator

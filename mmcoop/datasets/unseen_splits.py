# Copyright (c) mmcoop contributors. All rights reserved.
"""Seen / unseen class splits of the zero-shot multi-label protocols.

* COCO 48/17: the split of 65 COCO classes of Bansal et al., "Zero-Shot
  Object Detection" (ECCV 2018), used by the zero-shot multi-label
  experiments of DualCoOp; the lists as published with that split
  (mscoco_seen_classes.json / mscoco_unseen_classes.json) and reproduced
  in open-vocabulary detection code (e.g. github.com/microsoft/RegionCLIP).
  Names as :data:`~mmcoop.datasets.categories.COCO2014_CATEGORIES`; the
  other 15 COCO classes take no part.
* NUS-WIDE 925/81: the 81 unseen classes are the 81 ground-truth concepts
  (:data:`~mmcoop.datasets.categories.NUSWIDE_CONCEPTS`); the 925 seen
  labels are tags of NUS-WIDE's 1,000-tag list chosen by the authors of
  the split (Zhang et al., CVPR 2016). That list is not reproduced here:
  supply it as a file (one name a line) to ``UnseenClassMetric``'s
  ``seen_classes``.
"""
from .categories import NUSWIDE_CONCEPTS

__all__ = ['COCO_48_17_SEEN', 'COCO_48_17_UNSEEN', 'NUSWIDE_81_UNSEEN']

COCO_48_17_SEEN = (
    'person', 'bicycle', 'car', 'motorcycle', 'train', 'truck', 'boat',
    'bench', 'bird', 'horse', 'sheep', 'bear', 'zebra', 'giraffe', 'backpack',
    'handbag', 'suitcase', 'frisbee', 'skis', 'kite', 'surfboard', 'bottle',
    'fork', 'spoon', 'bowl', 'banana', 'apple', 'sandwich', 'orange',
    'broccoli', 'carrot', 'pizza', 'donut', 'chair', 'bed', 'toilet', 'tv',
    'laptop', 'mouse', 'remote', 'microwave', 'oven', 'toaster',
    'refrigerator', 'book', 'clock', 'vase', 'toothbrush')

COCO_48_17_UNSEEN = (
    'airplane', 'bus', 'cat', 'dog', 'cow', 'elephant', 'umbrella', 'tie',
    'snowboard', 'skateboard', 'cup', 'knife', 'cake', 'couch', 'keyboard',
    'sink', 'scissors')

NUSWIDE_81_UNSEEN = tuple(NUSWIDE_CONCEPTS)

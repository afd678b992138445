# Copyright (c) mmcoop contributors. All rights reserved.
"""Class names used as the default ``METAINFO['classes']``.

The names enter the text prompts (``"X X ... X {classname}."``), so they are
kept *exactly* as the official DualCoOp / PositiveCoOp code passes them:

* COCO-2014: ``dataloaders/coco_detection.py`` hard-codes the 80 COCO
  category names in sorted-category-id order. They are identical to the
  ``name`` fields of ``instances_{train,val}2014.json`` (e.g. ``'motorcycle'``,
  ``'airplane'``, ``'couch'``, ``'tv'``, ``'hair drier'``).
* VOC-2007: ``dataloaders/pascal_voc.py`` uses the raw VOC tags (e.g.
  ``'diningtable'``, ``'pottedplant'``, ``'tvmonitor'``), which is also
  mmpretrain's ``VOC2007_CATEGORIES``.

Changing a name changes the prompt and therefore the model; do it through the
dataset's ``classes`` argument (see ``docs/data.md``), not here.
"""

COCO2014_CATEGORIES = (
    'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train',
    'truck', 'boat', 'traffic light', 'fire hydrant', 'stop sign',
    'parking meter', 'bench', 'bird', 'cat', 'dog', 'horse', 'sheep', 'cow',
    'elephant', 'bear', 'zebra', 'giraffe', 'backpack', 'umbrella', 'handbag',
    'tie', 'suitcase', 'frisbee', 'skis', 'snowboard', 'sports ball', 'kite',
    'baseball bat', 'baseball glove', 'skateboard', 'surfboard',
    'tennis racket', 'bottle', 'wine glass', 'cup', 'fork', 'knife', 'spoon',
    'bowl', 'banana', 'apple', 'sandwich', 'orange', 'broccoli', 'carrot',
    'hot dog', 'pizza', 'donut', 'cake', 'chair', 'couch', 'potted plant',
    'bed', 'dining table', 'toilet', 'tv', 'laptop', 'mouse', 'remote',
    'keyboard', 'cell phone', 'microwave', 'oven', 'toaster', 'sink',
    'refrigerator', 'book', 'clock', 'vase', 'scissors', 'teddy bear',
    'hair drier', 'toothbrush')

#: COCO category ids of :data:`COCO2014_CATEGORIES`, in the same order.
COCO2014_CATEGORY_IDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17,
                         18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33,
                         34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47,
                         48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60,
                         61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77,
                         78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90)

VOC2007_CATEGORIES = ('aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus',
                      'car', 'cat', 'chair', 'cow', 'diningtable', 'dog',
                      'horse', 'motorbike', 'person', 'pottedplant', 'sheep',
                      'sofa', 'train', 'tvmonitor')

#: The 81 NUS-WIDE concepts in the order of the official ``Concepts81.txt``.
NUSWIDE_CONCEPTS = (
    'airport', 'animal', 'beach', 'bear', 'birds', 'boats', 'book', 'bridge',
    'buildings', 'cars', 'castle', 'cat', 'cityscape', 'clouds', 'computer',
    'coral', 'cow', 'dancing', 'dog', 'earthquake', 'elk', 'fire', 'fish',
    'flags', 'flowers', 'food', 'fox', 'frost', 'garden', 'glacier', 'grass',
    'harbor', 'horses', 'house', 'lake', 'leaf', 'map', 'military', 'moon',
    'mountain', 'nighttime', 'ocean', 'person', 'plane', 'plants', 'police',
    'protest', 'railroad', 'rainbow', 'reflection', 'road', 'rocks',
    'running', 'sand', 'sign', 'sky', 'snow', 'soccer', 'sports', 'statue',
    'street', 'sun', 'sunset', 'surf', 'swimmers', 'tattoo', 'temple',
    'tiger', 'tower', 'town', 'toy', 'train', 'tree', 'valley', 'vehicle',
    'water', 'waterfall', 'wedding', 'whales', 'window', 'zebra')

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
  labels are derived from the official release by
  :func:`nuswide_925_seen`: the tags of ``NUS_WID_Tags/TagList1k.txt``, in
  file order, without those that are also concept names (75 of the 81
  concepts are among the 1,000 tags).
"""
from typing import Sequence, Tuple, Union

from .categories import NUSWIDE_CONCEPTS
from .utils import AnnotationError, read_class_list

__all__ = [
    'COCO_48_17_SEEN', 'COCO_48_17_UNSEEN', 'NUSWIDE_81_UNSEEN',
    'NUSWIDE_925_SEEN_COUNT', 'nuswide_925_seen'
]

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

#: the number of seen labels of the NUS-WIDE zero-shot split
NUSWIDE_925_SEEN_COUNT = 925


def nuswide_925_seen(
    tag_list_file: str,
    concepts: Union[str, Sequence[str]] = NUSWIDE_CONCEPTS
) -> Tuple[str, ...]:
    """The 925 seen labels of the NUS-WIDE zero-shot split, derived from
    the official tag list.

    The rule of the code that defines the split, ``get_seen_unseen_classes``
    in github.com/hbdat/cvpr20_LESA (Huynh & Elhamifar, CVPR 2020; the same
    function in github.com/akshitac8/BiAM, ``util_nus.py``): a tag of
    ``TagList1k.txt`` is seen unless a line of ``Concepts81.txt`` is the
    same string. The official 1,000 tags hold 75 of the 81 concept names
    (not ``computer``, ``fire``, ``map``, ``swimmers``, ``tattoo``,
    ``whales``), which leaves 925.

    Args:
        tag_list_file (str): ``NUS_WID_Tags/TagList1k.txt`` of the official
            release (one tag a line; ``\\r\\n`` line ends as shipped).
        concepts (str | Sequence[str]): the 81 concepts, or their file
            (``Concepts81.txt``). Defaults to
            :data:`~mmcoop.datasets.categories.NUSWIDE_CONCEPTS`.

    Returns:
        tuple[str]: the seen tags, in the order of ``tag_list_file``.

    Raises:
        AnnotationError: the rule does not give 925 labels (not the
            official files); the message names the file and the counts.
    """
    try:
        tags = read_class_list(tag_list_file)
    except FileNotFoundError:
        raise FileNotFoundError(
            f'nuswide_925_seen: tag list {tag_list_file!r} not found. Fix: '
            'unpack NUS_WID_Tags.zip of the official NUS-WIDE release (it '
            'holds TagList1k.txt), see docs/data.md.') from None
    concepts = set(read_class_list(concepts))
    seen = tuple(t for t in tags if t not in concepts)
    if len(seen) != NUSWIDE_925_SEEN_COUNT or len(set(seen)) != len(seen):
        raise AnnotationError(
            f'{tag_list_file}: {len(tags)} tags, {len(tags) - len(seen)} of '
            f'them concept names, {len(set(seen))} distinct others: not the '
            f'{NUSWIDE_925_SEEN_COUNT} seen labels of the NUS-WIDE 925/81 '
            'split (the official list has 1,000 distinct tags, 75 of them '
            'concept names). Fix: use NUS_WID_Tags/TagList1k.txt and '
            'Concepts81.txt of the official release, unedited.')
    return seen

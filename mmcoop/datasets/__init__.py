# Copyright (c) mmcoop contributors. All rights reserved.
from .categories import (COCO2014_CATEGORIES, COCO2014_CATEGORY_IDS,
                         VOC2007_CATEGORIES)
from .coco2014 import COCO2014MultiLabel, load_coco_multilabel
from .feature_cache import CachedFeatureDataset, apply_feature_cache
from .held_out_split import held_out_split
from .multilabel_csv import MultiLabelCSVDataset
from .multilabel_json import MultiLabelJSONDataset
from .nus_wide import NUSWIDEMultiLabel
from .open_images import OpenImagesMultiLabel, load_open_images_labels
from .partial_label import PartialLabelDataset, make_known_mask
from .samplers import EpochIndex, EpochSeededSampler
from .transforms import (DUALCOOP_RANDAUG_POLICIES, DualCoOpRandAugment,
                         LoadImageFromFileChecked, RandomCutout)
from .utils import AnnotationError
from .voc2007 import VOC2007MultiLabel
from .wrapper import DatasetWrapper

__all__ = [
    'COCO2014MultiLabel', 'VOC2007MultiLabel', 'PartialLabelDataset',
    'make_known_mask', 'load_coco_multilabel', 'AnnotationError',
    'COCO2014_CATEGORIES', 'COCO2014_CATEGORY_IDS', 'VOC2007_CATEGORIES',
    'RandomCutout', 'LoadImageFromFileChecked', 'DualCoOpRandAugment',
    'DUALCOOP_RANDAUG_POLICIES', 'EpochSeededSampler', 'EpochIndex',
    'held_out_split', 'CachedFeatureDataset', 'apply_feature_cache',
    'DatasetWrapper',
    'MultiLabelCSVDataset', 'MultiLabelJSONDataset', 'OpenImagesMultiLabel',
    'load_open_images_labels', 'NUSWIDEMultiLabel'
]

# Copyright (c) mmcoop contributors. All rights reserved.
"""The offline demo: a procedurally drawn COCO-format dataset
(:mod:`.shapes`), the dataset type that writes it on first use
(:class:`DemoShapesDataset`) and the hook that reports the result next to
chance level (:class:`DemoResultHook`). ``python -m mmcoop.demo ROOT``
writes a tree by hand."""
from .dataset import DEMO_ROOT, DemoShapesDataset
from .hook import DemoResultHook
from .shapes import (DEMO_SHAPES, MANIFEST, chance_level_map,
                     chance_level_map_from_targets, demo_classes,
                     generate_demo_coco, read_manifest)

__all__ = [
    'DemoShapesDataset', 'DemoResultHook', 'DEMO_ROOT', 'DEMO_SHAPES',
    'MANIFEST', 'demo_classes', 'generate_demo_coco', 'read_manifest',
    'chance_level_map', 'chance_level_map_from_targets'
]

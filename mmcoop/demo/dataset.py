# Copyright (c) mmcoop contributors. All rights reserved.
"""The demo dataset: COCO-2014 multi-label data that writes itself."""
import os.path as osp
from typing import Optional

import numpy as np
from mmengine.dist import barrier, get_rank

from mmcoop.datasets.coco2014 import COCO2014MultiLabel
from mmcoop.registry import DATASETS
from .shapes import generate_demo_coco, read_manifest

__all__ = ['DemoShapesDataset', 'DEMO_ROOT']

#: Where the demo config keeps the demo tree (relative to the working
#: folder). Only here is the tree generated unless ``generate=True``.
DEMO_ROOT = 'data/mmcoop_demo_shapes'


@DATASETS.register_module()
class DemoShapesDataset(COCO2014MultiLabel):
    """:class:`~mmcoop.datasets.COCO2014MultiLabel` on the generated demo
    tree of :func:`~mmcoop.demo.shapes.generate_demo_coco`, written on
    first use.

    The tree is generated (or checked and reused) when the dataset is built:
    rank 0 writes, the other ranks wait at a barrier and then check it.
    Generation happens only at :data:`DEMO_ROOT` unless ``generate=True``:
    a config that inherits the demo config and points ``data_root`` at
    other data reads that data as COCO-2014 and writes nothing into it.

    Args:
        data_root (str): The tree. Defaults to :data:`DEMO_ROOT`.
        generate (bool, optional): Write the tree if missing. None (default)
            means "only at :data:`DEMO_ROOT`".
        num_train, num_val, image_size, seed, num_classes: parameters of
            :func:`~mmcoop.demo.shapes.generate_demo_coco` (the demo
            config's values are the defaults).
        **kwargs: :class:`~mmcoop.datasets.COCO2014MultiLabel` arguments.
    """

    def __init__(self,
                 data_root: str = DEMO_ROOT,
                 generate: Optional[bool] = None,
                 num_train: int = 256,
                 num_val: int = 128,
                 image_size: int = 112,
                 seed: int = 0,
                 num_classes: int = 10,
                 **kwargs):
        if generate is None:
            generate = osp.abspath(data_root) == osp.abspath(DEMO_ROOT)
        if generate:
            params = dict(
                num_train=num_train,
                num_val=num_val,
                seed=seed,
                image_size=image_size,
                num_classes=num_classes)
            error = None
            if get_rank() == 0:
                try:
                    generate_demo_coco(data_root, **params)
                except Exception as e:  # let the other ranks go on first
                    error = e
            barrier()
            if error is not None:
                raise error
            if get_rank() != 0:
                generate_demo_coco(data_root, **params)  # checks, reuses
        super().__init__(data_root=data_root, **kwargs)

    @property
    def is_demo_tree(self) -> bool:
        """Whether ``data_root`` holds a tree written by the generator."""
        manifest = read_manifest(self.data_root)
        return manifest is not None and 'params' in manifest

    def gt_targets(self) -> np.ndarray:
        """``(N, C)`` 0/1 labels of the dataset's images, in its order."""
        return np.stack([
            np.asarray(self.get_data_info(i)['gt_score']) > 0
            for i in range(len(self))
        ]).astype(np.int8)

# Copyright (c) mmcoop contributors. All rights reserved.
"""NUS-WIDE (81 concepts) from the official image lists and label files."""
import os.path as osp
from typing import List, Optional

import numpy as np
from mmengine.fileio import get_text, join_path
from mmengine.logging import MMLogger

from mmcoop.registry import DATASETS
from mmcoop.utils.paths import expand_user
from .categories import NUSWIDE_CONCEPTS
from .tri_state import TriStateMultiLabelDataset
from .utils import AnnotationError, normalize_class_name

__all__ = ['NUSWIDEMultiLabel']

_SPLIT_NAME = {'train': 'Train', 'test': 'Test'}
_CONCEPT_FILES = ('Concepts81.txt', osp.join('ConceptsList', 'Concepts81.txt'))
_EMPTY = ('drop', 'keep')


@DATASETS.register_module()
class NUSWIDEMultiLabel(TriStateMultiLabelDataset):
    """NUS-WIDE with its 81 ground-truth concepts.

    Layout (the files of the official NUS-WIDE release)::

        data_root
        ├── Concepts81.txt        (or ConceptsList/Concepts81.txt)
        ├── ImageList
        │   ├── TrainImagelist.txt   lines like actor\\0001_2124494179.jpg
        │   └── TestImagelist.txt
        ├── Groundtruth/TrainTestLabels
        │   ├── Labels_airport_Train.txt   one 0/1 per line, aligned with
        │   ├── Labels_airport_Test.txt    the image list of the split
        │   └── ... (81 x 2 files)
        └── Flickr/actor/0001_2124494179.jpg ...

    The classes are the 81 concepts in the order of ``Concepts81.txt``
    (``METAINFO['classes']`` is that list; a file with other concepts
    gives its own names, logged; ``classes=`` may reword them, one per
    concept in file order);
    an image's target is 1 for the concepts whose label file has 1 on its
    line, 0 otherwise (complete labels; the image lists' ``\\`` separators
    become ``/``).

    **Images without any label** (a large part of NUS-WIDE): ``empty``
    decides. ``'drop'`` (default) leaves them out, as DualCoOp, which
    trains and tests on NUS-WIDE lists filtered to labelled images (its
    ``formatted_*_filtered.npy`` files); ``'keep'`` keeps them with an
    all-zero target (such an image adds negatives only). The number
    dropped is logged.

    Args:
        data_root (str): The NUS-WIDE folder.
        split (str): ``'train'`` or ``'test'``. Defaults to ``'train'``.
        empty (str): ``'drop'`` or ``'keep'``. Defaults to ``'drop'``.
        concepts_file (str, optional): Relative to ``data_root``. Defaults
            to the first of ``Concepts81.txt``, ``ConceptsList/Concepts81.txt``
            that exists.
        data_prefix (str): Image folder. Defaults to ``'Flickr'``.
        check_images (bool): Check that every image exists. Defaults to
            True.
        **kwargs: Other arguments of :class:`mmpretrain.datasets.BaseDataset`.
    """

    METAINFO = {'classes': NUSWIDE_CONCEPTS}

    def __init__(self,
                 data_root: str,
                 split: str = 'train',
                 empty: str = 'drop',
                 concepts_file: Optional[str] = None,
                 data_prefix: str = 'Flickr',
                 check_images: bool = True,
                 backend_args: Optional[dict] = None,
                 **kwargs):
        if split not in _SPLIT_NAME:
            raise ValueError(f'NUSWIDEMultiLabel: split must be one of '
                             f'{tuple(_SPLIT_NAME)}, got {split!r}.')
        if empty not in _EMPTY:
            raise ValueError(f'NUSWIDEMultiLabel: empty must be one of '
                             f'{_EMPTY}, got {empty!r}.')
        data_root = expand_user(data_root, 'NUSWIDEMultiLabel.data_root')
        self.split = split
        self.empty = empty
        self.backend_args = backend_args
        if concepts_file is None:
            concepts_file = next((c for c in _CONCEPT_FILES
                                  if osp.isfile(osp.join(data_root, c))),
                                 _CONCEPT_FILES[0])
        self.concepts_file = join_path(data_root, concepts_file)
        self.num_dropped = 0
        self._explicit_classes = kwargs.get('classes') is not None or (
            kwargs.get('metainfo') or {}).get('classes') is not None
        super().__init__(
            ann_file=osp.join('ImageList',
                              f'{_SPLIT_NAME[split]}Imagelist.txt'),
            data_root=data_root,
            data_prefix=data_prefix,
            check_images=check_images,
            **kwargs)

    def _read(self, path: str, what: str) -> List[str]:
        try:
            text = get_text(path, backend_args=self.backend_args)
        except FileNotFoundError:
            raise FileNotFoundError(
                f'NUSWIDEMultiLabel: {what} {path!r} not found. Fix: unpack '
                'the official NUS-WIDE files into data_root as in '
                'docs/data.md.') from None
        lines = [s.strip() for s in text.splitlines()]
        while lines and not lines[-1]:
            lines.pop()
        return lines

    def load_data_list(self) -> List[dict]:
        """Read the image list and the 81 label files of the split."""
        concepts = [
            c for c in self._read(self.concepts_file, 'concept list') if c
        ]
        same = [normalize_class_name(c) for c in self.CLASSES
                ] == [normalize_class_name(c) for c in concepts]
        if not same and not self._explicit_classes:
            MMLogger.get_current_instance().info(
                f'{self.concepts_file}: not the 81 official concepts; using '
                f'its {len(concepts)} names as classes.')
            self._metainfo['classes'] = tuple(concepts)
        elif len(self.CLASSES) != len(concepts):
            raise AnnotationError(
                f'{self.concepts_file}: {len(concepts)} concepts, but '
                f'{len(self.CLASSES)} classes were given. Fix: one class '
                'name per concept, in the order of the file (or omit '
                '`classes`).')
        images = self._read(self.ann_file, 'image list')
        if not images:
            raise AnnotationError(f'{self.ann_file}: the image list is '
                                  'empty. Fix: restore the official file.')
        n = len(images)
        targets = np.zeros((n, len(concepts)), dtype=bool)
        folder = osp.join(self.data_root, 'Groundtruth', 'TrainTestLabels')
        for k, concept in enumerate(concepts):
            path = osp.join(folder,
                            f'Labels_{concept}_{_SPLIT_NAME[self.split]}.txt')
            values = self._read(path, f'label file of {concept!r}')
            if len(values) != n:
                raise AnnotationError(
                    f'{path}: {len(values)} lines, but {self.ann_file} '
                    f'lists {n} images (line i is the label of image i). '
                    'Fix: use the label files of the same release.')
            col = np.array(values)
            bad = np.flatnonzero((col != '0') & (col != '1'))
            if len(bad):
                raise AnnotationError(
                    f'{path}: line {bad[0] + 1} is {values[bad[0]]!r}; '
                    'expected 0 or 1. Fix: restore the official file.')
            targets[:, k] = col == '1'
        labelled = targets.any(1)
        self.num_dropped = 0 if self.empty == 'keep' else int(
            (~labelled).sum())
        MMLogger.get_current_instance().info(
            f'NUSWIDEMultiLabel ({self.split}): {n} images, '
            f'{int((~labelled).sum())} without a label '
            f'({"dropped" if self.empty == "drop" else "kept, all 0"}).')
        return [
            dict(
                img_path=join_path(self.img_prefix,
                                   images[i].replace('\\', '/')),
                img_id=images[i].replace('\\', '/'),
                gt_label=np.flatnonzero(targets[i]).tolist()) for i in range(n)
            if self.empty == 'keep' or labelled[i]
        ]

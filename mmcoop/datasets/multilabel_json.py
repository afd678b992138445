# Copyright (c) mmcoop contributors. All rights reserved.
"""Any multi-label set given as a COCO-style JSON (that is not COCO)."""
from typing import List, Optional, Sequence, Union

from mmengine.fileio import join_path

from mmcoop.registry import DATASETS
from mmcoop.utils.paths import expand_user
from .coco2014 import load_coco_multilabel
from .tri_state import TriStateMultiLabelDataset
from .utils import AnnotationError, check_given_classes, relative_path_note

__all__ = ['MultiLabelJSONDataset']

_FIX = ('Fix: correct the file (see MultiLabelJSONDataset for the fields it '
        'needs).')


@DATASETS.register_module()
class MultiLabelJSONDataset(TriStateMultiLabelDataset):
    """A user's multi-label set as a COCO-style JSON -- no code needed.

    The file has the three COCO lists; only these fields are read (others,
    e.g. ``bbox`` or ``segmentation``, may be there or not)::

        {"images":      [{"id": 1, "file_name": "a.jpg"}, ...],
         "annotations": [{"image_id": 1, "category_id": 3}, ...],
         "categories":  [{"id": 3, "name": "dog"}, ...]}

    Parsing and validation are those of the COCO-2014 set
    (:func:`load_coco_multilabel`). Classes are the categories sorted by
    id; ``file_name`` is relative to ``data_root/data_prefix``.

    **Target policy**: complete labelling as COCO -- a category with an
    annotation on the image is 1, every other category 0. For sets with
    verified negatives and unknown labels use
    :class:`MultiLabelCSVDataset` with a negatives column.

    Args:
        ann_file (str): The JSON file (relative to ``data_root``).
        data_root (str): Dataset root. Defaults to ''.
        data_prefix (str | dict): Image folder relative to ``data_root``.
            Defaults to ''.
        filter_empty (bool): Drop images without any annotation. Defaults
            to False: an image listed without annotations is an image where
            every class is absent (COCO-2014 drops them, following the
            official protocol).
        strict_class_names (bool): A given ``classes`` list must match the
            category names (up to case/``_``/spaces). False: any wording,
            one name per category in sorted-id order. Defaults to True.
        check_images (bool): Check that every image exists. Defaults to
            True.
        backend_args (dict, optional): mmengine file backend arguments.
        classes (str | Sequence[str], optional): Class names or a file.
        **kwargs: Other arguments of :class:`mmpretrain.datasets.BaseDataset`.
    """

    def __init__(self,
                 ann_file: str,
                 data_root: str = '',
                 data_prefix: Union[str, dict] = '',
                 filter_empty: bool = False,
                 strict_class_names: bool = True,
                 check_images: bool = True,
                 backend_args: Optional[dict] = None,
                 metainfo: Optional[dict] = None,
                 classes: Union[str, Sequence[str], None] = None,
                 **kwargs):
        self.filter_empty = filter_empty
        self.strict_class_names = strict_class_names
        self.backend_args = backend_args
        super().__init__(
            ann_file=expand_user(ann_file, 'MultiLabelJSONDataset.ann_file'),
            data_root=expand_user(data_root,
                                  'MultiLabelJSONDataset.data_root'),
            data_prefix=data_prefix,
            metainfo=metainfo,
            classes=classes,
            check_images=check_images,
            **kwargs)

    def _set_classes(self, file_names: List[str]) -> None:
        given = self.CLASSES
        if given is None:
            self._metainfo['classes'] = tuple(file_names)
            return
        check_given_classes(self.ann_file, given, file_names,
                            self.strict_class_names)

    def load_data_list(self) -> List[dict]:
        """Parse the file with :func:`load_coco_multilabel`."""
        try:  # read_annotation_text: a folder / non-UTF-8 file named
            coco = load_coco_multilabel(
                self.ann_file,
                backend_args=self.backend_args,
                filter_empty=self.filter_empty,
                fix=_FIX,
                img_prefix=self.img_prefix)
        except FileNotFoundError:
            raise FileNotFoundError(
                f'MultiLabelJSONDataset: annotation file {self.ann_file!r} '
                f'not found{relative_path_note(self.ann_file)}. Fix: check '
                'data_root / ann_file.') from None
        self._set_classes([name for _, name in coco.categories])
        if not coco.images:
            raise AnnotationError(
                f'{self.ann_file}: no image left ("images" is empty, or no '
                'image has an annotation with filter_empty=True). Fix: list '
                'the images in "images".')
        return [
            dict(
                img_path=join_path(self.img_prefix, file_name),
                img_id=img_id,
                gt_label=labels) for img_id, file_name, labels in coco.images
        ]

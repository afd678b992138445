# Copyright (c) mmcoop contributors. All rights reserved.
import os
import os.path as osp
from typing import Optional, Sequence

import numpy as np
from mmengine.hooks import Hook

from mmcoop.registry import HOOKS
from mmcoop.utils.value_checks import check_flag, check_int, check_number


def check_draw_dir(out_dir: str, force: bool = False) -> None:
    """Refuse a drawing folder that is not empty, unless ``force``
    (:class:`PredictionDrawHook`; ``tools/test.py`` calls it before the
    runner is built, so that a refused run writes nothing). A folder that
    is a file, or lies below one, is refused with or without ``force``."""
    from mmcoop.utils.paths import check_output_folder
    check_output_folder(out_dir, f'--show-dir {out_dir!r}')
    if not force and osp.isdir(out_dir) and os.listdir(out_dir):
        raise FileExistsError(
            f'--show-dir {out_dir!r} is not empty (e.g. the drawings of '
            'a test that was interrupted). Fix: give a new folder, or '
            'pass --force to draw into it (files of the same names are '
            'replaced, others are left).')


@HOOKS.register_module()
class PredictionDrawHook(Hook):
    """Draw every test image with its scores (``tools/test.py --show-dir``).

    One PNG per image, ``<out_dir>/<image stem>.png``: the image next to its
    ``topk`` scores, each bar coloured by the ground-truth label
    (:func:`mmcoop.visualization.prediction_figure`). A stem that several
    images of the test set share (``a/x.jpg`` and ``b/x.jpg``) is drawn as
    ``<stem>_<position in the test set>.png``, so every image has a file
    of its own, whichever process of a distributed test draws it.

    Args:
        out_dir (str): folder of the PNGs; must be absent or empty (nothing
            in it is overwritten) unless ``force``.
        topk (int): scores shown per image, an int >= 1. Defaults to 10.
        threshold (float): drawn as a dashed line, a number in [0, 1].
            Defaults to 0.5.
        force (bool): draw into a folder that is not empty (e.g. the
            drawings of a test that was interrupted): files of the same
            names are replaced, others are left (``tools/test.py
            --force``). Defaults to False.
    """

    def __init__(self,
                 out_dir: str,
                 topk: int = 10,
                 threshold: float = 0.5,
                 force: bool = False):
        owner = type(self).__name__
        if not isinstance(out_dir, (str, os.PathLike)) or not str(out_dir):
            raise ValueError(
                f'{owner}: out_dir must be a folder path, got '
                f'{out_dir!r}. Fix: e.g. tools/test.py --show-dir DIR.')
        check_int(owner, 'topk', topk, 1)
        check_number(owner, 'threshold', threshold, 0, 1,
                     what='scores are probabilities; 0.5 by default')
        check_flag(owner, 'force', force)
        check_draw_dir(out_dir, force)
        self.out_dir = out_dir
        self.topk = topk
        self.threshold = threshold
        self._written = set()
        self._stems: Optional[dict] = None
        self._positions: dict = {}

    def before_test(self, runner) -> None:
        """Count the image stems of the whole test set and note each
        image's position in it (every process sees the same), which decide
        the file names."""
        from collections import Counter

        from mmcoop.datasets.feature_cache.key import image_paths
        paths = image_paths(runner.test_dataloader.dataset)
        self._stems = Counter(osp.splitext(osp.basename(p))[0] for p in paths)
        self._positions = {}
        for i, path in enumerate(paths):
            self._positions.setdefault(path, i)

    def after_test_iter(self,
                        runner,
                        batch_idx: int,
                        data_batch=None,
                        outputs: Optional[Sequence] = None) -> None:
        from PIL import Image

        from mmcoop.visualization import prediction_figure, save_figure
        if not outputs:
            return
        classes = runner.test_dataloader.dataset.metainfo.get('classes')
        for index, sample in enumerate(outputs):
            path = sample.get('img_path')
            if path is None:
                continue
            scores = sample.pred_score.detach().float().cpu().numpy()
            names = list(classes) if classes is not None else [
                str(i) for i in range(len(scores))
            ]
            targets = (sample.gt_score.detach().cpu().numpy()
                       if 'gt_score' in sample else None)
            name = self._file_stem(path, batch_idx, index)
            image = np.asarray(Image.open(path).convert('RGB'))
            fig = prediction_figure(
                image, scores, names, targets, self.topk, self.threshold,
                title=osp.basename(path))
            save_figure(fig, osp.join(self.out_dir, f'{name}.png'))

    def _file_stem(self, path: str, batch_idx: int, index: int) -> str:
        """The file stem of the image ``path`` (see the class doc): from
        the test set's stems and the image's position in it (not the
        sample's ``sample_idx``, which a ``ConcatDataset`` counts per
        part), the same in every process; for an image not found there
        (a pipeline that renames it), one not used before by this
        process."""
        stem = osp.splitext(osp.basename(path))[0]
        position = self._positions.get(str(path))
        if position is None:  # also without before_test
            return self._unique_name(path, batch_idx, index)
        name = stem
        if self._stems[stem] > 1:
            name = f'{stem}_{position}'
            while name in self._stems:  # an image named 'x_3'
                name += '_'
        return name

    def _unique_name(self, path: str, batch_idx: int, index: int) -> str:
        """A file stem not used before in this process."""
        stem = osp.splitext(osp.basename(path))[0]
        name = stem
        if name in self._written:
            name = f'{stem}_{batch_idx}_{index}'
        extra = 1
        while name in self._written:  # e.g. an image named 'x_0_1'
            name = f'{stem}_{batch_idx}_{index}-{extra}'
            extra += 1
        self._written.add(name)
        return name

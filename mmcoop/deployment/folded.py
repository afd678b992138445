# Copyright (c) mmcoop contributors. All rights reserved.
"""A trained mmcoop model as one fixed function of the image.

After training the class features are constants (the prompts are fixed, the
text encoder is frozen), so a deployed tagger needs only the image tower,
the ``(C, D)`` class features and the region aggregation:

============  =================================================
head          folded form
============  =================================================
prompt heads  ``class_features()`` computed once, two ``(C, D)``
              buffers, :func:`class_specific_region_aggregation`
Baseline      the head itself with its ``fc`` rows for the kept
              classes (it never had a text encoder)
============  =================================================

:class:`FoldedTagger` maps images to ``(B, C)`` ``p(present)``, the
``pred_score`` of the full model.
"""
import copy
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from mmcoop.datasets.utils import normalize_class_name
from mmcoop.models.heads.base_head import presence_probability
from mmcoop.models.heads.baseline_head import BaselineHead
from mmcoop.models.heads.coop_heads import PromptRegionHead
from mmcoop.models.heads.region_aggregation import \
    class_specific_region_aggregation

#: Input layouts of the exported graph.
INPUT_FORMATS = ('uint8', 'normalized')


class FoldedRegionHead(nn.Module):
    """Fixed class features + region aggregation.

    Args:
        neg_feats (Tensor): ``(C, D)`` class-absence features.
        pos_feats (Tensor): ``(C, D)`` class-presence features.
        feat_scale (float): cosine multiplier of the head.
        logit_scale (float): logit multiplier of the head.

    Shapes:
        ``((B, D, N),)`` dense features -> ``(B, 2, C)`` logits.
    """

    def __init__(self, neg_feats: torch.Tensor, pos_feats: torch.Tensor,
                 feat_scale: float, logit_scale: float):
        super().__init__()
        self.register_buffer('neg_feats', neg_feats.detach().float().clone())
        self.register_buffer('pos_feats', pos_feats.detach().float().clone())
        self.feat_scale = float(feat_scale)
        self.logit_scale = float(logit_scale)

    def forward(self, feats: Tuple[torch.Tensor]) -> torch.Tensor:
        return class_specific_region_aggregation(feats[-1], self.neg_feats,
                                                 self.pos_feats,
                                                 self.feat_scale,
                                                 self.logit_scale)


def class_indices(classnames: Sequence[str],
                  subset: Optional[Sequence[str]]) -> List[int]:
    """Indices of ``subset`` in ``classnames`` (all classes for None).

    Names compare as :func:`normalize_class_name` does (case, ``_`` and
    spaces do not matter), so ``'traffic_light'`` finds ``'traffic light'``.

    Raises:
        ValueError: a name the model does not know (the message lists the
            unknown names and the model's classes), a duplicate, or an empty
            subset.
    """
    if subset is None:
        return list(range(len(classnames)))
    if isinstance(subset, str):  # list('cat') would be its letters
        raise ValueError(
            f'The class subset is the string {subset!r}; give a list of '
            f'class names, e.g. [{subset!r}].')
    subset = list(subset)
    if not subset:
        raise ValueError('The class subset is empty: give at least one '
                         'class name, or none to keep all classes.')
    lookup = {normalize_class_name(c): i for i, c in enumerate(classnames)}
    unknown = [c for c in subset if normalize_class_name(c) not in lookup]
    if unknown:
        raise ValueError(
            f'Unknown class name(s) {unknown} in the class subset. The model '
            f'knows {len(classnames)} classes: {list(classnames)}.')
    index = [lookup[normalize_class_name(c)] for c in subset]
    dups = sorted({classnames[i] for i in index if index.count(i) > 1})
    if dups:
        raise ValueError(f'The class subset names {dups} more than once.')
    return index


def fold_head(head: nn.Module, index: Sequence[int]) -> nn.Module:
    """The head as a fixed module for the classes ``index``.

    Returns:
        nn.Module: ``((B, D, N),)`` dense features -> ``(B, 2, len(index))``
        logits, the same numbers as ``head`` for those classes.
    """
    index_t = torch.as_tensor(list(index), dtype=torch.long)
    if isinstance(head, PromptRegionHead):
        with torch.no_grad():
            neg, pos = head.class_features()
        return FoldedRegionHead(neg[index_t], pos[index_t], head.feat_scale,
                                head.logit_scale)
    if isinstance(head, BaselineHead):
        folded = copy.deepcopy(head)  # same forward, fewer output channels
        rows = torch.cat([index_t, index_t + head.num_classes])
        fc = nn.Linear(head.in_channels, len(rows))
        with torch.no_grad():
            fc.weight.copy_(head.fc.weight[rows])
            fc.bias.copy_(head.fc.bias[rows])
        folded.fc = fc
        folded.num_classes = len(index_t)
        folded.classnames = [head.classnames[i] for i in index]
        return folded
    raise TypeError(
        f'Cannot fold a {type(head).__name__}: export supports the mmcoop '
        'heads (PositiveCoOpHead, NegativeCoOpHead, DualCoOpHead, '
        'BaselineHead).')


class FoldedTagger(nn.Module):
    """Image tower + folded head: images -> ``(B, C)`` p(present).

    Args:
        backbone (nn.Module): the frozen image tower (dense features).
        head (nn.Module): from :func:`fold_head`.
        mean (Sequence[float]): normalisation mean, RGB, 0-255 scale.
        std (Sequence[float]): normalisation std, RGB, 0-255 scale.
        to_bgr (bool): the tower was trained on BGR (a data preprocessor
            without ``to_rgb``): flip the RGB input.
        input_format (str): ``'uint8'``: ``(B, H, W, 3)`` RGB ``uint8``,
            normalised inside; ``'normalized'``: ``(B, 3, H, W)`` float,
            ``(rgb - mean) / std``.
        dtype (torch.dtype): dtype of the image tower (``float16`` for GPU
            runtimes). The head always runs in fp32.
    """

    def __init__(self,
                 backbone: nn.Module,
                 head: nn.Module,
                 mean: Sequence[float],
                 std: Sequence[float],
                 to_bgr: bool = False,
                 input_format: str = 'uint8',
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        if input_format not in INPUT_FORMATS:
            raise ValueError(f'input_format must be one of {INPUT_FORMATS}, '
                             f'not {input_format!r}.')
        self.backbone = backbone.to(dtype)
        self.head = head.float()
        self.register_buffer(
            'mean',
            torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer(
            'std',
            torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.to_bgr = bool(to_bgr)
        self.input_format = input_format
        self.dtype = dtype

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Input layout -> normalised ``(B, 3, H, W)`` in the tower's dtype
        and channel order."""
        if self.input_format == 'uint8':
            x = images.permute(0, 3, 1, 2).float()
            x = (x - self.mean) / self.std
        else:
            x = images
        if self.to_bgr:
            x = x.flip(1)
        return x.to(self.dtype)

    def dense_features(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, D, N)`` fp32 dense features of the image tower."""
        return self.backbone(self.normalize(images))[-1].float()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.head((self.dense_features(images), ))
        return presence_probability(logits)


def fold_model(model: nn.Module,
               classes: Optional[Sequence[str]] = None,
               input_format: str = 'uint8',
               dtype: torch.dtype = torch.float32) -> FoldedTagger:
    """Fold a model from :func:`mmcoop.apis.init_model` into a
    :class:`FoldedTagger` (on CPU, eval mode; ``model`` is not changed).

    Args:
        model (nn.Module): an mmcoop ``ImageClassifier``.
        classes (Sequence[str], optional): keep only these classes, in this
            order (see :func:`class_indices`). Defaults to all.
        input_format (str): ``'uint8'`` or ``'normalized'``.
        dtype (torch.dtype): image tower dtype.
    """
    preprocessor = getattr(model, 'data_preprocessor', None)
    mean = getattr(preprocessor, 'mean', None)
    std = getattr(preprocessor, 'std', None)
    if mean is None or std is None:
        raise ValueError(
            'The model has no normalising data preprocessor (field '
            '`model.data_preprocessor` needs `mean` and `std`); export '
            'needs them to accept raw images.')
    to_rgb = bool(getattr(preprocessor, 'to_rgb', False))
    mean = mean.flatten().tolist()
    std = std.flatten().tolist()
    if not to_rgb:  # the preprocessor's statistics are in BGR order
        mean, std = mean[::-1], std[::-1]
    index = class_indices(model.head.classnames, classes)
    head = fold_head(model.head, index)
    backbone = copy.deepcopy(model.backbone).cpu()
    tagger = FoldedTagger(
        backbone,
        head.cpu(),
        mean,
        std,
        to_bgr=not to_rgb,
        input_format=input_format,
        dtype=dtype)
    tagger.classnames = [model.head.classnames[i] for i in index]
    tagger.class_index = index
    return tagger.requires_grad_(False).eval()

# Copyright (c) mmcoop contributors. All rights reserved.
"""What every mmcoop head shares: tri-state targets, the partial-label loss,
two-way-softmax predictions, and whether it can score an unseen class."""
import inspect
import os.path as osp
from typing import Any, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmengine.registry import DefaultScope
from mmpretrain.models.heads import MultiLabelClsHead
from mmpretrain.structures import DataSample, label_to_onehot

from mmcoop.datasets.utils import (check_class_names, check_ordered,
                                   read_class_list)
from mmcoop.registry import DATASETS, MODELS
from mmcoop.utils.value_checks import check_int, check_number


def build_in_mmcoop_scope(cfg: dict):
    """Build a sub-module config with mmcoop's registry, whatever the
    current default scope (e.g. ``mmpretrain.apis.get_model`` forces
    ``'mmpretrain'``, which cannot see mmcoop types)."""
    with DefaultScope.overwrite_default_scope('mmcoop'):
        return MODELS.build(cfg)


def resolve_classnames(
        classnames: Union[str, Sequence[str], dict]) -> List[str]:
    """Class names from a list, a class file or a registered dataset.

    Args:
        classnames (str | Sequence[str] | dict): the names; or the type
            name of a registered dataset (e.g. ``'COCO2014MultiLabel'``)
            whose ``METAINFO['classes']`` gives them; or the path of a text
            file with one name a line, read as the datasets read their
            ``classes=`` file (the CSV base's ``classes``); or
            ``dict(type=...,
            **kwargs)`` for a dataset whose classes depend on its files:
            its ``class_names(**kwargs)`` gives them (e.g.
            ``dict(type='NUSWIDEMultiLabel', data_root='data/nus-wide',
            tags='925')``, read when the head is built).
    """
    if classnames is None:
        raise ValueError(
            'classnames is None: the prompts need the class names. Fix: '
            "give them, e.g. model.head.classnames=['cat', 'dog'] (a list "
            'or a class file, one name a line; for a COCO-style JSON: the '
            'category names sorted by id, checked against the file before '
            'training).')
    if isinstance(classnames, dict):
        kwargs = dict(classnames)
        dataset_type = kwargs.pop('type', None)
        dataset_cls = DATASETS.get(dataset_type) if isinstance(
            dataset_type, str) else None
        if not hasattr(dataset_cls, 'class_names'):
            raise ValueError(
                f'classnames={classnames!r}: a dict must name (`type`) a '
                'registered dataset with a `class_names` method (e.g. '
                "'NUSWIDEMultiLabel'). Fix: give a list of names or a "
                'dataset type name instead.')
        classnames = dataset_cls.class_names(**kwargs)
    elif isinstance(classnames, str):
        dataset_cls = DATASETS.get(classnames)
        if dataset_cls is not None and 'classes' in getattr(
                dataset_cls, 'METAINFO', {}):
            classnames = dataset_cls.METAINFO['classes']
        elif osp.isfile(osp.expanduser(classnames)):
            return read_class_list(classnames, 'classnames')
        else:
            raise ValueError(
                f'classnames={classnames!r} is neither a list of class '
                'names, nor a registered dataset type with '
                'METAINFO["classes"], nor an existing class file (one name '
                'a line; relative paths resolve against the working '
                'directory). Fix: give the names, the dataset type or the '
                'path of the class file the dataset reads.')
    if isinstance(classnames, (str, bytes)) or not isinstance(
            classnames, Iterable):
        raise ValueError(
            f'classnames={classnames!r}: give the class names (a list of '
            'strings), a class file, a dataset type name or dict(type=...).')
    check_ordered(classnames, 'classnames')
    classnames = list(classnames)
    if not classnames:
        raise ValueError('`classnames` is empty: give one name per class.')
    check_class_names(classnames, 'classnames')
    return classnames


def build_sub_config(owner: str, field: str, cfg, example: str,
                     module_ok: bool = False):
    """Build the sub-module config ``cfg`` of ``owner.field`` (a dict; with
    ``module_ok`` also a built ``nn.Module``, returned as is), refusing
    anything else naming the field (MMEngine's builder would only say
    ``cfg should be a dict``)."""
    if module_ok and isinstance(cfg, torch.nn.Module):
        return cfg
    if not isinstance(cfg, dict):
        raise ValueError(
            f'{owner}: {field} must be a config dict such as {example}, '
            f'got {cfg!r}.')
    return build_in_mmcoop_scope(cfg)


def check_partial_loss(owner: str, loss) -> None:
    """``loss`` takes what the heads give it, ``(B, 2, C)`` logits
    [absent, present] and ``(B, C)`` targets in {1, 0, -1}, and returns a
    finite number: tried once on a tiny batch. A loss of another kind
    (mmpretrain's ``AsymmetricLoss``, ``FocalLoss``, a BCE: ``(B, C)``
    logits and 0/1 targets), which the registry finds too, is refused here
    naming the field, instead of an ``AssertionError`` from inside it at
    the first training step."""
    logits = torch.zeros(2, 2, 3)
    target = torch.tensor([[1., 0., -1.], [0., 1., -1.]])
    try:
        out = loss(logits, target)
        why = None if isinstance(out, torch.Tensor) and out.dim() == 0 \
            and bool(torch.isfinite(out)) else (
                f'it returned {type(out).__name__} '
                f'{tuple(getattr(out, "shape", ()))}, not one finite number')
    except Exception as e:  # noqa: BLE001 - the loss's own error
        text = str(e).strip().rstrip('.') or '(no message)'
        why = f'{type(e).__name__}: {text}'
    if why:
        raise ValueError(
            f'{owner}: loss ({type(loss).__name__}) does not take what the '
            'head gives it, (B, 2, C) logits [absent, present] and (B, C) '
            f'targets 1 (present), 0 (absent) or -1 (unknown): {why}. Fix: '
            "loss=dict(type='PartialAsymmetricLoss', ...) (the paper's), or "
            'a loss with that signature.')


def check_positive_scale(owner: str, field: str, value,
                         official: float) -> float:
    """A logit multiplier (``feat_scale``, ``logit_scale``): a finite
    number > 0 (0 trains nothing, a negative flips the logits, NaN/inf give
    NaN losses)."""
    return check_number(
        owner,
        field,
        value,
        low=0,
        above=True,
        what=f'a multiplier of the logits; {official:g} in the official '
        'code')


def check_prediction_args(owner: str, thr, topk, num_classes: int) -> None:
    """``thr``: None or a number in [0, 1]; ``topk``: None or an int in
    1..``num_classes``; not both (the label rule is one of them)."""
    if thr is not None:
        check_number(
            owner,
            'thr',
            thr,
            0,
            1,
            what='the score threshold of pred_label; scores are '
            'probabilities. Fix: e.g. thr=0.5, or None with topk')
    if thr is not None and topk is not None:
        raise ValueError(
            f'{owner}: thr={thr!r} and topk={topk!r} are both set, but '
            'pred_label is given by one of them (thr; topk would be '
            'ignored). Fix: set only one (neither: thr=0.5).')
    if topk is not None:
        check_int(owner, 'topk', topk, 1)
        if topk > num_classes:
            raise ValueError(
                f'{owner}: topk must be an int in 1..{num_classes} (the '
                f'number of classes), got {topk!r}. Fix: a smaller topk, '
                'or thr instead.')


def presence_probability(logits: torch.Tensor) -> torch.Tensor:
    """``(B, 2, C)`` [negative, positive] logits -> ``(B, C)`` fp32
    p(present), ``softmax(logits, dim=1)[:, 1]``."""
    return logits.float().softmax(dim=1)[:, 1]


def presence_log_odds(logits: torch.Tensor) -> torch.Tensor:
    """``(B, 2, C)`` [negative, positive] logits -> ``(B, C)`` fp32
    log-odds of presence, ``logit_pos - logit_neg``: p(present) is its
    sigmoid, so it ranks images as p(present) does, without p's rounding
    to exactly 1.0 in fp32 above a log-odds of about 17 (the heads' logits
    span +-100), where the ranking of p would be a tie."""
    logits = logits.float()
    return logits[:, 1] - logits[:, 0]


class PartialLabelHead(MultiLabelClsHead):
    """Base of the mmcoop heads.

    Subclasses implement :meth:`forward` returning ``(B, 2, C)`` logits
    ordered [negative, positive]. Targets are read from ``gt_score``
    (tri-state {1, 0, -1}, -1 = unknown) or built from ``gt_label``.
    ``predict`` sets ``pred_score`` to ``p(present) = softmax(logits,
    dim=1)[:, 1]`` so mmpretrain metrics and inferencers work unchanged,
    and ``pred_log_odds`` to its log-odds (:func:`presence_log_odds`), by
    which mmcoop's metrics rank.

    Args:
        classnames (str | Sequence[str] | dict): see
            :func:`resolve_classnames`.
        loss (dict): loss config. Defaults to ``PartialAsymmetricLoss``.
        thr (float, optional): score threshold for ``pred_label``, a
            number in [0, 1] (scores are probabilities). Used when given;
            with neither ``thr`` nor ``topk``, 0.5.
        topk (int, optional): top-k labels instead of a threshold, an int
            in 1..C (C classes); not together with ``thr``.
    """

    def __init__(self,
                 classnames: Union[str, Sequence[str]],
                 loss: dict = dict(type='PartialAsymmetricLoss'),
                 thr: Optional[float] = None,
                 topk: Optional[int] = None,
                 init_cfg: Optional[dict] = None):
        loss = build_sub_config(
            type(self).__name__, 'loss', loss,
            "dict(type='PartialAsymmetricLoss')", module_ok=True)
        check_partial_loss(type(self).__name__, loss)
        super().__init__(loss=loss, thr=thr, topk=topk, init_cfg=init_cfg)
        self.classnames = resolve_classnames(classnames)
        self.num_classes = len(self.classnames)
        check_prediction_args(
            type(self).__name__, self.thr, self.topk, self.num_classes)

    #: D, the feature width the head expects (set by subclasses).
    in_channels: int

    #: the constructor arguments that decide
    #: :meth:`unseen_class_obstacles`; the head keeps each as an attribute
    #: of the same name.
    unseen_class_args: Tuple[str, ...] = ()

    @classmethod
    def unseen_class_obstacles(cls, head_cfg: dict) -> List[str]:
        """Why a head of this type cannot score a class it never trained on.

        A class hidden in every training image (``PartialLabelDataset(
        unseen_classes=...)``) gets no gradient of its own: it can only be
        scored by a head whose parameters are all shared by the classes
        (the class enters only through its name). This is the one place
        that says which heads can (docs/data.md §9 describes it).

        Args:
            head_cfg (dict): constructor arguments (a config's
                ``model.head``); a missing one takes its default.

        Returns:
            list[str]: one sentence per obstacle, naming the config field
            and the fix; empty when the head can score unseen classes.
        """
        return [
            f'{cls.__name__} learns weights per class, so a class without '
            'known labels keeps its initialisation. Fix: a prompt head '
            'whose parameters are shared by all classes (ZeroShotHead; '
            'DualCoOpHead with class_specific=False; PositiveCoOpHead or '
            'NegativeCoOpHead with class_specific=False, use_residual=False, '
            'shared_embedding=True)'
        ]

    @classmethod
    def _cfg_arg(cls, head_cfg: dict, name: str) -> Any:
        """``head_cfg[name]``, else the default of the constructor argument
        ``name`` (searched along the class hierarchy)."""
        if name in head_cfg:
            return head_cfg[name]
        for klass in cls.__mro__:
            param = inspect.signature(klass.__init__).parameters.get(name)
            if param is not None and param.default is not param.empty:
                return param.default
        raise KeyError(f'{cls.__name__} has no constructor argument {name!r}')

    @property
    def scores_unseen_classes(self) -> bool:
        """Whether this head can score a class it never trained on (see
        :meth:`unseen_class_obstacles`)."""
        args = {name: getattr(self, name) for name in self.unseen_class_args}
        return not self.unseen_class_obstacles(args)

    def pre_logits(self, feats: Tuple[torch.Tensor]) -> torch.Tensor:
        """Last backbone output: ``(B, D, N)`` dense features, D checked
        against the width the head was built for."""
        dense = feats[-1]
        if dense.dim() != 3 or dense.shape[1] != self.in_channels:
            raise ValueError(
                f'{type(self).__name__} expects (B, {self.in_channels}, N) '
                f'dense features, got {tuple(dense.shape)}. The head width '
                "is the CLIP joint embedding width of the head's own tower "
                '(text encoder, or `in_channels` of BaselineHead): use the '
                'same `model_name` for the backbone and the text encoder, '
                'and set BaselineHead `in_channels` to the backbone width '
                '(`FrozenCLIP(...).embed_dim`).')
        return dense

    def forward(self, feats: Tuple[torch.Tensor]) -> torch.Tensor:
        """``(B, D, N)`` dense features -> ``(B, 2, C)`` logits."""
        raise NotImplementedError

    def targets(self, data_samples: List[DataSample],
                device: torch.device) -> torch.Tensor:
        """``(B, C)`` fp32 tri-state targets of the batch on ``device``."""
        if 'gt_score' in data_samples[0]:
            target = torch.stack([ds.gt_score for ds in data_samples])
        else:
            target = torch.stack([
                label_to_onehot(ds.gt_label, self.num_classes)
                for ds in data_samples
            ])
        return target.to(device, torch.float32)

    def _get_loss(self, cls_score: torch.Tensor,
                  data_samples: List[DataSample], **kwargs) -> dict:
        target = self.targets(data_samples, cls_score.device)
        return dict(loss=self.loss_module(cls_score, target, **kwargs))

    def _get_predictions(self, cls_score: torch.Tensor,
                         data_samples: Optional[List[DataSample]]):
        probs = presence_probability(cls_score)
        log_odds = presence_log_odds(cls_score)
        if data_samples is None:
            data_samples = [DataSample() for _ in range(probs.size(0))]
        # the labels are read back once for the batch (one wait for the
        # device, not one per image); they are CPU int64 tensors
        if self.thr is not None:
            hits = (probs >= self.thr).cpu().numpy()
            labels = [
                torch.from_numpy(np.flatnonzero(row).astype(np.int64))
                for row in hits
            ]
        else:
            labels = log_odds.topk(self.topk, dim=1).indices.cpu().unbind(0)
        for data_sample, score, rank, label in zip(data_samples, probs,
                                                   log_odds, labels):
            data_sample.set_pred_score(score).set_pred_label(label)
            data_sample.set_field(rank, 'pred_log_odds')
        return data_samples

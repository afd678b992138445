# Copyright (c) mmcoop contributors. All rights reserved.
"""Prompt heads: PositiveCoOp, NegativeCoOp and DualCoOp.

All three produce a class-presence and a class-absence feature per class and
score the dense image features with
:func:`~mmcoop.models.heads.region_aggregation.class_specific_region_aggregation`.
They differ only in where each feature comes from:

============  ==============================  ==============================
head          presence (positive)             absence (negative)
============  ==============================  ==============================
PositiveCoOp  learned prompt -> text encoder  learned embedding (C, D)
NegativeCoOp  learned embedding (C, D)        learned prompt -> text encoder
DualCoOp      learned prompt -> text encoder  learned prompt -> text encoder
ZeroShot      written prompts -> text encoder written prompts -> text encoder
============  ==============================  ==============================

PositiveCoOp / NegativeCoOp with ``shared_embedding=True`` learn one
``(1, D)`` embedding for all classes instead of ``(C, D)``.

Unseen classes: a head's :attr:`~PartialLabelHead.scores_unseen_classes`
says whether it can score a class it never trained on, and
:meth:`~PartialLabelHead.unseen_class_obstacles` why not (checked for
configs that hide or score unseen classes by
:func:`mmcoop.engine.config_checks.check_unseen_class_head`). It can when
no parameter belongs to one class: ZeroShot; DualCoOp with
``class_specific=False``; PositiveCoOp / NegativeCoOp with
``class_specific=False, use_residual=False, shared_embedding=True``.
"""
import warnings
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmpretrain.structures import DataSample

from mmcoop.registry import MODELS
from mmcoop.utils.value_checks import check_flag
from ..prompt_learners import PromptLearner, ctx_init_words
from .base_head import PartialLabelHead, build_sub_config, check_positive_scale
from .class_subset import check_class_subset, sample_class_subset
from .region_aggregation import class_specific_region_aggregation


class PromptRegionHead(PartialLabelHead):
    """Base of the prompt heads: text encoder, aggregation, eval cache.

    Args:
        classnames (str | Sequence[str] | dict): class names, dataset type
            or dataset dict (see :func:`resolve_classnames`).
        text_encoder (dict): config of a ``FrozenCLIPTextEncoder``.
        n_ctx (int): context tokens per prompt. Defaults to 16.
        class_specific (bool): class-specific contexts (CSC). Defaults to
            True, the paper's setting.
        ctx_init (str, optional): initialise contexts from these words,
            e.g. ``'a photo of a'``: before training, the prompt of class c
            is then the written prompt ``'a photo of a {c}.'``.
        neg_ctx_init (str, optional): the words for negative prompts
            (NegativeCoOp, DualCoOp), e.g. ``'a photo without a'``; defaults
            to ``ctx_init``. With both set, DualCoOp starts from exactly the
            :class:`ZeroShotHead` of the same words.
        feat_scale (float): multiplier of the cosine similarities, a finite
            number > 0 (20 in the official code).
        logit_scale (float): multiplier of the aggregated logits, a finite
            number > 0 (5 in the official code).
        loss (dict): loss config.
        thr / topk: prediction threshold / top-k.
        class_subset (dict, optional): ``dict(num_classes=K, fill=True)``:
            each training step encodes and scores only K classes, the
            batch's classes with a known label plus uniformly drawn others
            (:mod:`~mmcoop.models.heads.class_subset`, which states the
            exact effect on the loss: exact while the batch has at most K
            known classes, else an unbiased estimate with the default
            ``reduction='sum'``). Evaluation always scores all classes.
            A step whose batch has no known label with ``fill=False``
            (no class drawn) has a zero loss, still connected to the
            trainable parameters. Defaults to None (all classes at every
            step).

    Class features are recomputed at every training step. In eval mode they
    are computed once and reused until a trainable parameter changes. For
    thousands of classes, also set ``text_encoder.text_chunk_size`` (bounded
    text-encoder memory).
    """

    def __init__(self,
                 classnames: Union[str, Sequence[str]],
                 text_encoder: dict,
                 n_ctx: int = 16,
                 class_specific: bool = True,
                 ctx_init: Optional[str] = None,
                 neg_ctx_init: Optional[str] = None,
                 feat_scale: float = 20.,
                 logit_scale: float = 5.,
                 loss: dict = dict(type='PartialAsymmetricLoss'),
                 thr: Optional[float] = None,
                 topk: Optional[int] = None,
                 class_subset: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        # the plain values first: before the text encoder is built
        owner = type(self).__name__
        check_positive_scale(owner, 'feat_scale', feat_scale, 20)
        check_positive_scale(owner, 'logit_scale', logit_scale, 5)
        check_flag(owner, 'class_specific', class_specific)
        class_subset = check_class_subset(class_subset, owner)
        super().__init__(
            classnames=classnames,
            loss=loss,
            thr=thr,
            topk=topk,
            init_cfg=init_cfg)
        self.text_encoder = build_sub_config(
            owner, 'text_encoder', text_encoder,
            "dict(type='FrozenCLIPTextEncoder', model_name='RN101-quickgelu'"
            ", pretrained='openai')")
        # D = the joint embedding width; the prompt context has the text
        # width W (see PromptLearner); both come from the text tower
        self.embed_dim = self.in_channels = self.text_encoder.embed_dim
        self.feat_scale = feat_scale
        self.logit_scale = logit_scale
        self.class_specific = class_specific
        self._prompt_cfg = dict(n_ctx=n_ctx, class_specific=class_specific)
        pos_words = ctx_init_words('ctx_init', ctx_init)
        self._ctx_init = dict(
            pos=pos_words,
            neg=ctx_init_words('neg_ctx_init', neg_ctx_init) or pos_words)
        self.class_subset = class_subset
        self._cache_key = None
        self._cache_state_key = None
        self._cache = None

    unseen_class_args = ('class_specific', )

    @classmethod
    def unseen_class_obstacles(cls, head_cfg: dict) -> List[str]:
        if cls._cfg_arg(head_cfg, 'class_specific'):
            return [
                '`model.head.class_specific=True` (CSC): each class has its '
                'own context, and that of a class without known labels '
                'never gets a gradient (it stays at its initialisation). '
                'Fix: `class_specific=False` (one context shared by all '
                'classes)'
            ]
        return []

    def _build_prompt(self, polarity: str = 'pos') -> PromptLearner:
        """A learned prompt; ``polarity`` (``'pos'``/``'neg'``) picks the
        initial words."""
        return PromptLearner(
            self.classnames,
            self.text_encoder,
            ctx_init=self._ctx_init[polarity],
            **self._prompt_cfg)

    def _learned_embedding(self, shared: bool = False) -> nn.Parameter:
        """A ``(C, D)`` feature-space embedding, N(0, 1) as the official;
        ``shared``: one ``(1, D)`` row for every class (see
        :meth:`_rows`)."""
        rows = 1 if shared else self.num_classes
        return nn.Parameter(torch.randn(rows, self.embed_dim))

    def _rows(self, feats: torch.Tensor,
              index: Optional[torch.Tensor]) -> torch.Tensor:
        """``(C, D)`` -> the ``(K, D)`` rows ``index`` (all C rows if None).

        A ``(1, D)`` (shared) embedding is the row of every class: it is
        broadcast to ``(C, D)`` or ``(K, D)``."""
        if feats.shape[0] == 1:
            rows = self.num_classes if index is None else index.numel()
            return feats.expand(rows, -1)
        return feats if index is None else feats[index]

    def encode_prompts(self,
                       *prompts: PromptLearner,
                       index: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Run prompts through the text encoder in one batch -> ``(kC, D)``
        (``(kK, D)`` for the ``(K,)`` class indices ``index``)."""
        tokens = [p.tokens if index is None else p.tokens[index]
                  for p in prompts]
        embeds = torch.cat([
            p(self.text_encoder.embed_tokens(t), index)
            for p, t in zip(prompts, tokens)
        ], dim=0)
        # the truncation length is read on the host, from the CPU ends:
        # with ``index`` (on the device, not read) after the last end of
        # all the classes' prompts, the length of the full pass; exact,
        # as the text transformer is causal
        ends = torch.cat([
            p.ends if index is None else p.ends.max().expand(index.numel())
            for p in prompts
        ])
        return self.text_encoder(embeds, torch.cat(tokens, dim=0), ends)

    def class_features(
        self,
        index: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Return ``(neg, pos)`` class features, each ``(C, D)``; with
        ``index`` (``(K,)`` class indices) those of these classes only,
        each ``(K, D)``."""
        raise NotImplementedError

    def cached_class_features(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """Class features; computed once per eval while the trainable
        parameters keep their values (prompts are fixed at test time).

        The cache is keyed on a copy of those values, compared at every
        call: a change that bypasses autograd's version counter
        (``p.data.copy_(...)``, as MMEngine's ``EMAHook`` swaps the
        averaged weights in and out) is seen too. It is also keyed on the
        frozen text tower's weights (their version counters, which every
        ``load_state_dict`` bumps: a checkpoint that carries them), its
        device and the autocast state the features are computed under (an
        outer ``torch.autocast``, as a test loop's ``fp16=True``). The
        cached features are copies, so they never follow a parameter they
        were read from."""
        if self.training or torch.is_grad_enabled():
            self._cache_key = self._cache = None
            return self.class_features()
        params = [p for p in self.parameters() if p.requires_grad]
        state = self._cache_state()
        if self._cache is None or state != self._cache_state_key or \
                not _same_values(self._cache_key, params):
            self._cache = tuple(
                f.detach().clone() for f in self.class_features())
            self._cache_key = [p.detach().clone() for p in params]
            self._cache_state_key = state
        return self._cache

    def _cache_state(self) -> tuple:
        """What the class features depend on besides the trainable values
        (see :meth:`cached_class_features`)."""
        tower = getattr(self, 'text_encoder', None)
        tensors = [*tower.parameters(), *tower.buffers()] if tower else []
        device = tensors[0].device if tensors else torch.device('cpu')
        return (str(device), torch.is_autocast_enabled(device.type),
                torch.get_autocast_dtype(device.type),
                tuple(t._version for t in tensors))

    def _aggregate(self, dense: torch.Tensor, neg: torch.Tensor,
                   pos: torch.Tensor) -> torch.Tensor:
        return class_specific_region_aggregation(
            dense, neg.to(dense.dtype), pos.to(dense.dtype), self.feat_scale,
            self.logit_scale)

    def forward(self, feats: Tuple[torch.Tensor]) -> torch.Tensor:
        """``((B, D, N),)`` dense features -> ``(B, 2, C)`` logits."""
        return self._aggregate(
            self.pre_logits(feats), *self.cached_class_features())

    def loss(self, feats: Tuple[torch.Tensor], data_samples: List[DataSample],
             **kwargs) -> dict:
        """The training loss; over a per-step class subset when
        ``class_subset`` is set (see
        :mod:`~mmcoop.models.heads.class_subset`)."""
        if self.class_subset is None:
            return super().loss(feats, data_samples, **kwargs)
        dense = self.pre_logits(feats)
        target = self.targets(data_samples, dense.device)
        index, scale = sample_class_subset(target, **self.class_subset)
        if index.numel() == 0:
            # fill=False and no known label in the batch: nothing to score
            # (the text encoder cannot encode 0 prompts); a zero loss on
            # the trainable parameters keeps every one in the graph, with a
            # zero gradient, as a subset of unknown classes would give
            return dict(loss=self._zero_loss(dense))
        logits = self._aggregate(dense, *self.class_features(index))
        loss = self.loss_module(logits, target[:, index], **kwargs)
        if getattr(self.loss_module, 'reduction', 'sum') == 'sum':
            loss = loss * scale.to(loss.dtype)
        return dict(loss=loss)

    def _zero_loss(self, dense: torch.Tensor) -> torch.Tensor:
        """A fp32 scalar 0 connected to the trainable parameters (and to
        ``dense``)."""
        zero = dense.float().sum() * 0.
        for param in self.parameters():
            if param.requires_grad:
                zero = zero + param.float().sum() * 0.
        return zero


class PromptEmbeddingHead(PromptRegionHead):
    """Base of PositiveCoOp and NegativeCoOp: one polarity from a learned
    prompt (plus, optionally, a learned ``(C, D)`` residual), the other a
    feature-space embedding learned directly (N(0, 1) init).

    Args:
        use_residual (bool): add the learned ``(C, D)`` residual to the
            prompt feature. Defaults to True (official code).
        shared_embedding (bool): the feature-space embedding is one
            class-agnostic ``(1, D)`` row shared by all classes instead of
            one ``(C, D)`` row per class. With ``class_specific=False`` and
            ``use_residual=False`` no parameter belongs to one class, so
            the head can score classes it never trained on
            (:attr:`scores_unseen_classes`); an mmcoop variant, not in the
            papers. Defaults to False (official).
        **kwargs: see :class:`PromptRegionHead`.
    """

    unseen_class_args = ('class_specific', 'use_residual', 'shared_embedding')
    #: the polarity of the feature-space embedding (its parameter is
    #: ``{embedded}_embedding``).
    embedded: str

    def __init__(self,
                 *args,
                 use_residual: bool = True,
                 shared_embedding: bool = False,
                 **kwargs):
        owner = type(self).__name__
        check_flag(owner, 'use_residual', use_residual)
        check_flag(owner, 'shared_embedding', shared_embedding)
        super().__init__(*args, **kwargs)
        self.use_residual = use_residual
        self.shared_embedding = shared_embedding

    @classmethod
    def unseen_class_obstacles(cls, head_cfg: dict) -> List[str]:
        out = super().unseen_class_obstacles(head_cfg)
        if cls._cfg_arg(head_cfg, 'use_residual'):
            out.append(
                '`model.head.use_residual=True`: the (C, D) residual of a '
                'class without known labels stays at its random init. Fix: '
                '`use_residual=False`')
        if not cls._cfg_arg(head_cfg, 'shared_embedding'):
            out.append(
                f'`model.head.shared_embedding=False`: the (C, D) '
                f'{cls.embedded}_embedding of a class without known labels '
                'stays at its random init. Fix: `shared_embedding=True` '
                '(one (1, D) embedding shared by all classes)')
        return out


@MODELS.register_module()
class PositiveCoOpHead(PromptEmbeddingHead):
    """PositiveCoOp (WACV 2025): learned positive prompt, learned negative
    embedding.

    Presence: a CoOp prompt through the frozen text encoder, plus (as the
    official code, not described in the paper) a learned ``(C, D)`` residual
    added to the text feature. Absence: a ``(C, D)`` embedding learned
    directly in feature space (N(0, 1) init), or with
    ``shared_embedding=True`` one ``(1, D)`` embedding for every class.

    Args:
        use_residual (bool), shared_embedding (bool): see
            :class:`PromptEmbeddingHead`.
        **kwargs: see :class:`PromptRegionHead`.

    Trainable parameters, with text width W and joint width D:

    * CSC (the paper): ``C*n_ctx*W + 2*C*D`` (737,280 for COCO, 184,320
      for VOC with W = D = 512, RN101);
    * ``class_specific=False, use_residual=False, shared_embedding=True``
      (scores unseen classes): ``n_ctx*W + D``, whatever C (8,704 with
      n_ctx = 16, W = D = 512).
    """

    embedded = 'neg'

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if kwargs.get('neg_ctx_init'):
            warnings.warn(
                f'PositiveCoOpHead: neg_ctx_init={kwargs["neg_ctx_init"]!r} '
                'has no effect: PositiveCoOp learns no negative prompt (its '
                'absence side is an embedding in feature space). Remove it, '
                'or use NegativeCoOpHead / DualCoOpHead for a learned '
                'negative prompt.')
        self.pos_prompt = self._build_prompt()
        self.neg_embedding = self._learned_embedding(self.shared_embedding)
        self.pos_residual = self._learned_embedding() \
            if self.use_residual else None

    def class_features(self, index=None):
        pos = self.encode_prompts(self.pos_prompt, index=index)
        if self.pos_residual is not None:
            pos = pos + self._rows(self.pos_residual, index)
        return self._rows(self.neg_embedding, index), pos


@MODELS.register_module()
class NegativeCoOpHead(PromptEmbeddingHead):
    """NegativeCoOp: learned negative prompt, learned positive embedding.

    The mirror of :class:`PositiveCoOpHead` (same arguments, same
    parameter counts), ``shared_embedding=True`` making the positive
    embedding one ``(1, D)`` row. As in the official code the spatial
    weights still come from the positive side, here the feature-space
    embedding: with a shared positive embedding every class gets the same
    spatial weights.
    """

    embedded = 'pos'

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.neg_prompt = self._build_prompt('neg')
        self.pos_embedding = self._learned_embedding(self.shared_embedding)
        self.neg_residual = self._learned_embedding() \
            if self.use_residual else None

    def class_features(self, index=None):
        neg = self.encode_prompts(self.neg_prompt, index=index)
        if self.neg_residual is not None:
            neg = neg + self._rows(self.neg_residual, index)
        return neg, self._rows(self.pos_embedding, index)


@MODELS.register_module()
class DualCoOpHead(PromptRegionHead):
    """DualCoOp (NeurIPS 2022): learned positive and negative prompts.

    Both prompts go through the frozen text encoder (in one batch, negatives
    first, as the official code). Trainable parameters with CSC and text
    width W: ``2*C*n_ctx*W`` (1,310,720 for COCO with W = 512, RN101).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.neg_prompt = self._build_prompt('neg')
        self.pos_prompt = self._build_prompt()

    def class_features(self, index=None):
        feats = self.encode_prompts(
            self.neg_prompt, self.pos_prompt, index=index)
        return feats.chunk(2)


@MODELS.register_module()
class ZeroShotHead(PromptRegionHead):
    """Zero-shot scoring with written prompts: nothing to train.

    The presence (absence) feature of class c is the mean of the L2-normalised
    text features of ``pos_templates`` (``neg_templates``) filled with c
    (CLIP's prompt ensembling), scored through the same region aggregation
    as the prompt heads. The row every table should start from.

    Args:
        pos_templates (str | Sequence[str]): templates with one ``{}`` slot,
            or ``'bank'`` for the 85-template bank of
            :mod:`mmcoop.utils.prompt_templates`. Defaults to
            ``('a photo of a {}.',)``.
        neg_templates (str | Sequence[str], optional): the absence templates;
            None negates each positive template
            (:func:`~mmcoop.utils.prompt_templates.negate_template`, rule
            ``'prefix'``: ``'not a photo of a {}.'``). Defaults to
            ``('a photo without a {}.',)``.
        use_residual, shared_embedding (bool, optional): accepted and
            unused, so that ``--cfg-options model.head.type=ZeroShotHead``
            works on any PositiveCoOp / NegativeCoOp / DualCoOp config.
        **kwargs: see :class:`PromptRegionHead` (``n_ctx``,
            ``class_specific``, ``ctx_init`` are unused).
    """

    def __init__(self,
                 *args,
                 pos_templates: Union[str, Sequence[str]] = (
                     'a photo of a {}.', ),
                 neg_templates: Optional[Union[str, Sequence[str]]] = (
                     'a photo without a {}.', ),
                 use_residual: Optional[bool] = None,
                 shared_embedding: Optional[bool] = None,
                 **kwargs):
        from mmcoop.utils import prompt_templates as pt

        # the templates first: before the text encoder is built
        if isinstance(pos_templates, str):
            pos_templates = pt.DEFAULT_TEMPLATE_BANK if pos_templates == \
                'bank' else (pos_templates, )
        pos_templates = pt.check_templates('pos_templates', pos_templates)
        if neg_templates is None:
            neg_templates = [pt.negate_template(t) for t in pos_templates]
        elif isinstance(neg_templates, str):
            neg_templates = (neg_templates, )
        neg_templates = pt.check_templates('neg_templates', neg_templates)
        if sorted(neg_templates) == sorted(pos_templates):
            raise ValueError(
                f'{type(self).__name__}: `neg_templates` are the '
                f'`pos_templates` ({list(pos_templates)[:3]}...): the absence '
                'prompt of every class would be its presence prompt, and '
                'every class would score 0.5. Fix: write absence prompts, '
                "e.g. neg_templates=['a photo without a {}.'], or "
                'neg_templates=None for the negated positive templates.')
        for field, value in (('use_residual', use_residual),
                             ('shared_embedding', shared_embedding)):
            if value is not None:
                check_flag(type(self).__name__, field, value)
        super().__init__(*args, **kwargs)
        self.pos_templates = pos_templates
        self.neg_templates = neg_templates
        # every prompt fits the text context: refused now, not at the
        # first test batch
        texts = list(dict.fromkeys(
            pt.fill(t, c) for t in (*pos_templates, *neg_templates)
            for c in self.classnames))
        self.text_encoder.check_fit(
            texts, self.text_encoder.tokenize(texts),
            'Fix: shorten the class name or the template (`pos_templates` / '
            '`neg_templates`).')

    unseen_class_args = ()

    @classmethod
    def unseen_class_obstacles(cls, head_cfg: dict) -> List[str]:
        return []  # written prompts: any class name

    def _ensemble(self, templates: Sequence[str]) -> torch.Tensor:
        """``(C, D)`` mean of normalised features over the templates."""
        from mmcoop.utils.prompt_templates import encode_prompts, fill
        texts = [fill(t, c) for c in self.classnames for t in templates]
        feats = encode_prompts(self.text_encoder, texts)
        feats = feats.view(self.num_classes, len(templates), -1).mean(1)
        return feats.to(self.text_encoder.token_embedding.weight.device)

    def class_features(self, index=None):
        return (self._rows(self._ensemble(self.neg_templates), index),
                self._rows(self._ensemble(self.pos_templates), index))


def _same_values(saved: Optional[List[torch.Tensor]],
                 params: List[torch.Tensor]) -> bool:
    """Whether ``params`` hold the values ``saved`` (copies taken
    earlier): same number, shapes, dtypes, devices and elements (as
    ``torch.equal``: NaN differs from NaN). The elements are compared on
    their device and read back once, whatever the number of parameters."""
    if saved is None or len(saved) != len(params) or not all(
            s.shape == p.shape and s.dtype == p.dtype and s.device == p.device
            for s, p in zip(saved, params)):
        return False
    if not params:
        return True
    same = [(s == p).all() for s, p in zip(saved, params)]
    return bool(torch.stack([x.to(same[0].device) for x in same]).all())

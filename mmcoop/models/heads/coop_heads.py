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
============  ==============================  ==============================
"""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from mmcoop.registry import MODELS
from ..prompt_learners import PromptLearner
from .base_head import PartialLabelHead, build_in_mmcoop_scope
from .region_aggregation import class_specific_region_aggregation


class PromptRegionHead(PartialLabelHead):
    """Base of the prompt heads: text encoder, aggregation, eval cache.

    Args:
        classnames (str | Sequence[str]): class names or dataset type.
        text_encoder (dict): config of a ``FrozenCLIPTextEncoder``.
        n_ctx (int): context tokens per prompt. Defaults to 16.
        class_specific (bool): class-specific contexts (CSC). Defaults to
            True, the paper's setting.
        ctx_init (str, optional): initialise contexts from these words.
        feat_scale (float): multiplier of the cosine similarities (20 in the
            official code).
        logit_scale (float): multiplier of the aggregated logits (5 in the
            official code).
        loss (dict): loss config.
        thr / topk: prediction threshold / top-k.

    Class features are recomputed at every training step. In eval mode they
    are computed once and reused until a trainable parameter changes.
    """

    def __init__(self,
                 classnames: Union[str, Sequence[str]],
                 text_encoder: dict,
                 n_ctx: int = 16,
                 class_specific: bool = True,
                 ctx_init: Optional[str] = None,
                 feat_scale: float = 20.,
                 logit_scale: float = 5.,
                 loss: dict = dict(type='PartialAsymmetricLoss'),
                 thr: Optional[float] = None,
                 topk: Optional[int] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(
            classnames=classnames,
            loss=loss,
            thr=thr,
            topk=topk,
            init_cfg=init_cfg)
        self.text_encoder = build_in_mmcoop_scope(text_encoder)
        # D = the joint embedding width; the prompt context has the text
        # width W (see PromptLearner); both come from the text tower
        self.embed_dim = self.in_channels = self.text_encoder.embed_dim
        self.feat_scale = feat_scale
        self.logit_scale = logit_scale
        self._prompt_cfg = dict(
            n_ctx=n_ctx, class_specific=class_specific, ctx_init=ctx_init)
        self._cache_key = None
        self._cache = None

    def _build_prompt(self) -> PromptLearner:
        return PromptLearner(self.classnames, self.text_encoder,
                             **self._prompt_cfg)

    def _learned_embedding(self) -> nn.Parameter:
        """A ``(C, D)`` feature-space embedding, N(0, 1) as the official."""
        return nn.Parameter(torch.randn(self.num_classes, self.embed_dim))

    def encode_prompts(self, *prompts: PromptLearner) -> torch.Tensor:
        """Run prompts through the text encoder in one batch -> ``(kC, D)``."""
        embeds = torch.cat(
            [p(self.text_encoder.embed_tokens(p.tokens)) for p in prompts],
            dim=0)
        tokens = torch.cat([p.tokens for p in prompts], dim=0)
        return self.text_encoder(embeds, tokens)

    def class_features(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """Return ``(neg, pos)`` class features, each ``(C, D)``."""
        raise NotImplementedError

    def _trainable_state(self) -> tuple:
        return tuple((id(p), p._version, p.device)
                     for p in self.parameters() if p.requires_grad)

    def cached_class_features(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """Class features; computed once per eval while parameters are
        unchanged (prompts are fixed at test time)."""
        if self.training or torch.is_grad_enabled():
            self._cache_key = self._cache = None
            return self.class_features()
        key = self._trainable_state()
        if self._cache is None or key != self._cache_key:
            self._cache = tuple(f.detach() for f in self.class_features())
            self._cache_key = key
        return self._cache

    def forward(self, feats: Tuple[torch.Tensor]) -> torch.Tensor:
        """``((B, D, N),)`` dense features -> ``(B, 2, C)`` logits."""
        dense = self.pre_logits(feats)
        neg, pos = self.cached_class_features()
        return class_specific_region_aggregation(
            dense, neg.to(dense.dtype), pos.to(dense.dtype), self.feat_scale,
            self.logit_scale)


@MODELS.register_module()
class PositiveCoOpHead(PromptRegionHead):
    """PositiveCoOp (WACV 2025): learned positive prompt, learned negative
    embedding.

    Presence: a CoOp prompt through the frozen text encoder, plus (as the
    official code, not described in the paper) a learned ``(C, D)`` residual
    added to the text feature. Absence: a ``(C, D)`` embedding learned
    directly in feature space (N(0, 1) init).

    Args:
        use_residual (bool): add the learned residual to the prompt feature.
            Defaults to True (official code).
        **kwargs: see :class:`PromptRegionHead`.

    Trainable parameters with CSC, text width W and joint width D:
    ``C*n_ctx*W + 2*C*D`` (737,280 for COCO, 184,320 for VOC with
    W = D = 512, RN101).
    """

    def __init__(self, *args, use_residual: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.pos_prompt = self._build_prompt()
        self.neg_embedding = self._learned_embedding()
        self.use_residual = use_residual
        self.pos_residual = self._learned_embedding() if use_residual else None

    def class_features(self):
        pos = self.encode_prompts(self.pos_prompt)
        if self.pos_residual is not None:
            pos = pos + self.pos_residual
        return self.neg_embedding, pos


@MODELS.register_module()
class NegativeCoOpHead(PromptRegionHead):
    """NegativeCoOp: learned negative prompt, learned positive embedding.

    The mirror of :class:`PositiveCoOpHead`. As in the official code the
    spatial weights still come from the positive side, here the
    feature-space embedding.
    """

    def __init__(self, *args, use_residual: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.neg_prompt = self._build_prompt()
        self.pos_embedding = self._learned_embedding()
        self.use_residual = use_residual
        self.neg_residual = self._learned_embedding() if use_residual else None

    def class_features(self):
        neg = self.encode_prompts(self.neg_prompt)
        if self.neg_residual is not None:
            neg = neg + self.neg_residual
        return neg, self.pos_embedding


@MODELS.register_module()
class DualCoOpHead(PromptRegionHead):
    """DualCoOp (NeurIPS 2022): learned positive and negative prompts.

    Both prompts go through the frozen text encoder (in one batch, negatives
    first, as the official code). Trainable parameters with CSC and text
    width W: ``2*C*n_ctx*W`` (1,310,720 for COCO with W = 512, RN101).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.neg_prompt = self._build_prompt()
        self.pos_prompt = self._build_prompt()

    def class_features(self):
        feats = self.encode_prompts(self.neg_prompt, self.pos_prompt)
        return feats[:self.num_classes], feats[self.num_classes:]

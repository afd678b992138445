# Copyright (c) mmcoop contributors. All rights reserved.
"""CoOp-style learnable context for one prompt polarity."""
from typing import Optional, Sequence

import torch
import torch.nn as nn
from mmengine.logging import MMLogger
from mmengine.model import BaseModule

from mmcoop.registry import MODELS
from mmcoop.utils.value_checks import check_flag, check_number


@MODELS.register_module()
class PromptLearner(BaseModule):
    """Learnable context vectors spliced into ``"X X ... X {classname}."``.

    The prompt of class ``c`` is ``[SOS] ctx_1 ... ctx_n <classname tokens>
    . [EOS]``. The context is class-specific (``(C, n_ctx, W)``, CSC, the
    paper's setting) or shared (``(n_ctx, W)``); it is initialised from
    N(0, ``init_std``) or from the token embeddings of ``ctx_init`` words,
    as in CoOp / DualCoOp. Only ``ctx`` is a parameter; the prompt token
    ids (``tokens``) are derived from the class names and not saved. The
    token embeddings around the context are looked up in the text encoder's
    (frozen) table at every call, so they always match the weights loaded.

    Args:
        classnames (Sequence[str]): class names; ``_`` is read as a space.
        text_encoder (FrozenCLIPTextEncoder): gives the tokenizer and the
            token embedding table (not registered as a submodule here).
        n_ctx (int): number of context tokens; it must leave room in the
            text encoder's context (``context_length``) for the class name
            and the special tokens, checked before the context is
            allocated. Defaults to 16.
        class_specific (bool): one context per class (CSC). Defaults to True.
        ctx_init (str, optional): words to initialise the context with, e.g.
            ``'a photo of a'``; ``n_ctx`` then becomes the number of words.
        init_std (float): std of the random initialisation, a finite number
            >= 0. Defaults to 0.02.

    Shapes:
        ``forward(token_embeds)``: ``(C, L, W)`` embeddings of ``tokens`` ->
        ``(C, L, W)`` prompt embeddings with the context spliced in at
        positions ``start .. start + n_ctx - 1`` (``start`` = 1 after CLIP's
        start token); ``tokens`` is the ``(C, L)`` token-id buffer
        (also used for end-of-text pooling).
    """

    def __init__(self,
                 classnames: Sequence[str],
                 text_encoder: nn.Module,
                 n_ctx: int = 16,
                 class_specific: bool = True,
                 ctx_init: Optional[str] = None,
                 init_std: float = 0.02,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        ctx_init = ctx_init_words('ctx_init', ctx_init)
        if not ctx_init and (isinstance(n_ctx, bool) or not isinstance(
                n_ctx, int) or n_ctx < 1):
            raise ValueError(
                f'n_ctx must be a positive int (the number of learned '
                f'context tokens), got {n_ctx!r}. Fix: set the head\'s '
                "`n_ctx` (16 in the paper) or `ctx_init` (e.g. 'a photo of "
                "a').")
        owner = type(self).__name__
        check_flag(owner, 'class_specific', class_specific)
        check_number(owner, 'init_std', init_std, low=0,
                     what='the std of the random context initialisation; '
                     '0.02 by default')
        classnames = [name.replace('_', ' ') for name in classnames]
        num_classes = len(classnames)
        width = text_encoder.width
        weight = text_encoder.token_embedding.weight
        # the context follows the tokenizer's leading special tokens (CLIP's
        # start token; none for SigLIP's)
        start = text_encoder.text_start
        if not ctx_init:
            _check_n_ctx_fits(text_encoder, classnames, n_ctx, start)
        if ctx_init:
            # As many context tokens as the words have (one per word for
            # common words with CLIP's BPE, as the official code assumes).
            init_tokens, twice = text_encoder.tokenize(
                [ctx_init, f'{ctx_init} {ctx_init}'])
            text_encoder.check_fit([ctx_init], init_tokens[None],
                                   'Fix: use fewer words in `ctx_init`.')
            # the words' tokens end where the repeated words start (whatever
            # the tokenizer's end and padding tokens)
            given, n_ctx = n_ctx, int(
                (init_tokens != twice).int().argmax()) - start
            if n_ctx < 1:
                raise ValueError(
                    f'ctx_init={ctx_init!r} gives no tokens with the '
                    f'tokenizer of {text_encoder.model_name!r}. Fix: use '
                    "words, e.g. ctx_init='a photo of a'.")
            if given != n_ctx:
                MMLogger.get_current_instance().info(
                    f'{owner}: ctx_init={ctx_init!r} sets the context to its '
                    f'{n_ctx} token(s); n_ctx={given!r} is not used.')
            embeds = text_encoder.embed_tokens(init_tokens[None])[0]
            ctx = embeds[start:start + n_ctx]
            ctx = ctx.detach().clone().to(weight.dtype).cpu()
            if class_specific:
                ctx = ctx.unsqueeze(0).repeat(num_classes, 1, 1)
            prefix = ctx_init
        else:
            shape = (num_classes, n_ctx, width) if class_specific else (n_ctx,
                                                                        width)
            ctx = torch.empty(shape, dtype=weight.dtype)
            nn.init.normal_(ctx, std=init_std)
            prefix = ' '.join(['X'] * n_ctx)
        self.ctx = nn.Parameter(ctx)
        self.n_ctx = n_ctx
        self.start = start
        self.num_classes = num_classes
        self.class_specific = class_specific
        self.prompt_texts = [f'{prefix} {name}.' for name in classnames]

        tokens = text_encoder.tokenize(self.prompt_texts)
        text_encoder.check_fit(
            self.prompt_texts, tokens,
            f'Fix: shorten the class name, or use fewer context tokens '
            f'(n_ctx={n_ctx}: `n_ctx` or the words of `ctx_init`).')
        _check_context_positions(text_encoder, tokens, classnames, prefix,
                                 start, n_ctx)
        self.register_buffer('tokens', tokens, persistent=False)
        #: ``(C,)`` end positions of ``tokens``, kept on the CPU (not a
        #: buffer): the text encoder's truncation reads them without
        #: waiting for the device
        self.ends = text_encoder.end_positions(tokens)

    def forward(self,
                token_embeds: torch.Tensor,
                index: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Splice the context into the ``(C, L, W)`` embeddings of
        ``self.tokens`` -> ``(C, L, W)`` prompt embeddings.

        With ``index`` (``(K,)`` class indices), ``token_embeds`` are the
        ``(K, L, W)`` embeddings of ``self.tokens[index]`` and the prompts
        of those classes are returned, ``(K, L, W)``.
        """
        ctx = self.ctx
        if ctx.dim() == 3 and index is not None:
            ctx = ctx[index]
        if ctx.dim() == 2:
            ctx = ctx.unsqueeze(0).expand(token_embeds.shape[0], -1, -1)
        ctx = ctx.to(token_embeds.dtype)
        start, end = self.start, self.start + self.n_ctx
        return torch.cat(
            [token_embeds[:, :start], ctx, token_embeds[:, end:]], dim=1)


def ctx_init_words(field: str, value: Optional[str]) -> Optional[str]:
    """The words of a ``ctx_init``-like option (``field`` names it in the
    error): ``_`` read as a space, outer spaces dropped; None or ``''``
    (no words: a random context, as the official code) -> None. Anything
    but a string, or a string of spaces / underscores only, is refused."""
    if value is None or value == '':
        return None
    if not isinstance(value, str):
        raise ValueError(
            f'{field} must be a string of words (e.g. \'a photo of a\') or '
            f'None, got {value!r} ({type(value).__name__}).')
    words = value.replace('_', ' ').strip()
    if not words:
        raise ValueError(
            f'{field}={value!r} has no words. Fix: e.g. {field}=\'a photo '
            "of a', or None for a random context.")
    return words


def _check_n_ctx_fits(text_encoder: nn.Module, classnames: Sequence[str],
                      n_ctx: int, start: int) -> None:
    """Refuse an ``n_ctx`` that leaves no room for a class name in the
    text context, before the ``(C, n_ctx, W)`` context is allocated (a huge
    ``n_ctx`` would otherwise exhaust memory before
    ``text_encoder.check_fit`` refuses the prompts). The prompt is
    ``start`` leading tokens, ``n_ctx`` context tokens, then at least one
    token of the class name, which must end before the context's last
    position (as ``check_fit`` requires): ``start + n_ctx < L - 1``."""
    length = getattr(text_encoder, 'context_length', None)
    if not isinstance(length, int) or start + n_ctx < length - 1:
        return
    model = getattr(text_encoder, 'model_name', 'the text encoder')
    shown = ' '.join(['X'] * min(n_ctx, 8)) + (' ...' if n_ctx > 8 else '')
    name = classnames[0] if len(classnames) else ''
    shown = f'{shown} {name if len(name) <= 40 else name[:37] + "..."}.'
    raise ValueError(
        f'The prompt {shown!r} does not fit the text context length of '
        f'{model!r} ({length} tokens): its n_ctx={n_ctx} context tokens '
        f'after {start} leading token(s) leave no room for the class name '
        f'and the end token. Fix: use fewer context tokens (n_ctx < '
        f'{length - 1 - start} minus the tokens of the longest class name; '
        "16 in the paper), or set `ctx_init`.")


def _check_context_positions(text_encoder: nn.Module, tokens: torch.Tensor,
                             classnames: Sequence[str], prefix: str,
                             start: int, n_ctx: int) -> None:
    """The prefix must be exactly ``n_ctx`` tokens at ``start .. start +
    n_ctx - 1``, followed by the class-name tokens as the class name alone
    tokenizes: ``tokens[:, start + n_ctx:]`` (``(C, L - start - n_ctx)``)
    equals ``tokenize('{name}.')[:, start:L - n_ctx]``. A tokenizer that
    splits or merges the prefix words would otherwise have the context
    spliced over other tokens, silently."""
    alone = text_encoder.tokenize([f'{name}.' for name in classnames])
    length = tokens.shape[1]
    same = (tokens[:, start + n_ctx:] == alone[:, start:length - n_ctx]).all(
        dim=1)
    if bool(same.all()):
        return
    name = classnames[int((~same).int().argmax())]
    raise ValueError(
        f'{getattr(text_encoder, "model_name", "the text encoder")}: the '
        f'prompt prefix {prefix!r} does not tokenize to n_ctx={n_ctx} tokens '
        f'at positions {start}..{start + n_ctx - 1} followed by the tokens of '
        f'the class name (class {name!r}), so the learned context would '
        "replace other tokens. Set the prompt learner's `ctx_init` to words "
        "this tokenizer keeps one token each (e.g. 'a photo of a').")

# Copyright (c) mmcoop contributors. All rights reserved.
"""Frozen open_clip towers: dense image features and prompt text encoding."""
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from open_clip.modified_resnet import ModifiedResNet
from open_clip.timm_model import TimmModel
from open_clip.transformer import VisionTransformer, text_global_pool
from torch.utils.checkpoint import checkpoint

from mmcoop.registry import MODELS
from mmcoop.utils.value_checks import check_flag, check_int
from .clip_loader import (CLIP_IDENTITY, build_clip_tokenizer, build_open_clip,
                          resize_attnpool_pos_embed, resize_vit_pos_embed)
from .frozen import FrozenMixin
from .tower_compile import parse_compile, tower_call


@MODELS.register_module()
class FrozenCLIP(FrozenMixin, BaseModule):
    """Frozen CLIP image tower that returns dense, projected features.

    For a ResNet CLIP (``RN50``, ``RN101``, ...) the output is the value path
    of the attention pool, ``c_proj(v_proj(x + pos))``, for the mean token
    followed by every spatial token, exactly as the official DualCoOp /
    PositiveCoOp ``AttentionConv`` does. The attention itself (whose output
    nobody uses) is never computed. The attention-pool positional embedding
    is resized to ``input_resolution // 32`` by bicubic interpolation.

    For a ViT CLIP (open_clip ``VisionTransformer``) two dense modes exist,
    both with the positional embedding resized bicubically to
    ``input_resolution // patch_size`` and the class token first:

    * ``'tokens'`` (default): ``proj(ln_post(x))`` for every token of the
      last layer's output; with ``tok`` pooling the class token is exactly
      ``encode_image``;
    * ``'value'``: the last-layer value path (MaskCLIP-style, the ViT
      analogue of the ResNet ``c_proj(v_proj(x))``): the last block's
      attention branch as if every token attended only to itself,
      ``proj(ln_post(ls_1(out_proj(v_proj(ln_1(x))))))`` with ``x`` the
      input of the last block; the block's residual and MLP are dropped.

    For a timm tower (open_clip ``TimmModel``: SigLIP / SigLIP2 ViTs with an
    attention-pool ("map") head, EVA02, ConvNeXt) position 0 is the tower's
    pooled output, exactly ``encode_image``, and every patch (ViT) or grid
    cell (ConvNeXt) follows, each passed *alone* through the tower's pooling
    head: pooling a single element is the identity for ``token`` / ``avg``
    pooling, and for the map head it is its value path ``x + mlp(norm(x))``
    with ``x = proj(v(token))`` (the latent query attending to one token).
    The tokens are the final features (``'tokens'``, default) or, for timm
    ViT / EVA blocks, the last block's value path followed by the final norm
    (``'value'``, as for open_clip ViTs; rotary embeddings act on q and k
    only, so they drop out). Prefix (class, register) tokens are not
    repeated. The input size is set with timm's ``set_input_size``.

    Args:
        model_name (str): open_clip architecture, e.g. ``'RN101-quickgelu'``.
        pretrained (str, optional): open_clip tag (``'openai'``), a local
            state dict (see :mod:`.clip_loader`), or None for
            random weights (tests; a warning is logged).
        input_resolution (int): square input size. Defaults to 448.
        force_quick_gelu (bool): force QuickGELU activations.
        save_frozen (bool): keep the frozen weights in ``state_dict()``.
            Defaults to False (checkpoints hold only trained parameters).
        cache_dir (str, optional): open_clip download cache.
        autocast_dtype (str, optional): run the tower under
            ``torch.autocast('cuda', dtype)`` with ``'fp16'`` or ``'bf16'``
            (the official code runs fp16 autocast). Applied to CUDA inputs;
            on CPU only with ``autocast_cpu``. The output is cast back to
            fp32. Defaults to None (fp32 everywhere, bit-identical to
            earlier versions).
        autocast_cpu (bool): also autocast CPU inputs
            (``torch.autocast('cpu', torch.bfloat16)``); needs
            ``autocast_dtype='bf16'``. Fast only on CPUs with native bf16
            (AVX512-BF16 / AMX); see ``docs/benchmarks.md`` for the logit
            difference. Defaults to False (CPU runs fp32).
        channels_last (bool): keep the conv weights and the input in the
            ``channels_last`` memory format (faster convolutions with
            autocast on recent GPUs). Same function, but other kernels, so
            results may differ in the last bits. Defaults to False.
        init_seed (int, optional): seed of the random initialisation, drawn
            in a forked RNG (see :func:`build_open_clip`): with
            ``pretrained=None`` the tower is a function of this seed alone,
            and building it never consumes the global RNG. Defaults to 0.
        dense_mode (str, optional): ``'tokens'`` or ``'value'`` for ViTs
            (open_clip or timm, see above); ResNets have only ``'value'``,
            ConvNeXt only ``'tokens'``. None: the architecture's default
            (``'value'`` for ResNets, ``'tokens'`` otherwise).
        compile (bool | dict): ``torch.compile`` the dense forward: False
            (default, eager), True, or a dict of ``torch.compile``
            arguments, e.g. ``dict(mode='max-autotune')``. Same function,
            other kernels (results may differ in the last bits, so the
            options are part of the feature-cache key); see
            :mod:`.tower_compile`.

    Shapes:
        input ``(B, 3, S, S)`` -> ``((B, D, 1 + HW),)`` with ``HW = (S/32)^2``
        for ResNets (197 positions at 448 px).
    """

    def __init__(self,
                 model_name: str = 'RN101-quickgelu',
                 pretrained: Optional[str] = None,
                 input_resolution: int = 448,
                 force_quick_gelu: bool = False,
                 save_frozen: bool = False,
                 cache_dir: Optional[str] = None,
                 init_cfg=None,
                 autocast_dtype: Optional[str] = None,
                 autocast_cpu: bool = False,
                 channels_last: bool = False,
                 init_seed: Optional[int] = 0,
                 dense_mode: Optional[str] = None,
                 compile: Union[bool, dict] = False):
        super().__init__(init_cfg=init_cfg)
        # the plain values first: before the (slow) weights are loaded
        self.input_resolution = check_int('FrozenCLIP', 'input_resolution',
                                          input_resolution)
        for field, flag in (('force_quick_gelu', force_quick_gelu),
                            ('save_frozen', save_frozen),
                            ('autocast_cpu', autocast_cpu),
                            ('channels_last', channels_last)):
            check_flag('FrozenCLIP', field, flag)
        _check_init_seed('FrozenCLIP', init_seed)
        known_modes = sorted({m for ms in _DENSE_MODES.values() for m in ms})
        if dense_mode is not None and dense_mode not in known_modes:
            raise ValueError(
                f'dense_mode={dense_mode!r} is not a dense mode; use one of '
                f'{known_modes} or None (field `dense_mode` of FrozenCLIP).')
        self.autocast_dtype, self.autocast_cpu = _parse_autocast(
            autocast_dtype, autocast_cpu)
        self.compile_options = parse_compile('FrozenCLIP', compile)
        self.channels_last = channels_last
        clip = build_open_clip(model_name, pretrained, force_quick_gelu,
                               cache_dir, init_seed)
        self.model_name = model_name
        self.clip_identity = _identity(locals())
        self.visual = clip.visual
        del clip
        if isinstance(self.visual, ModifiedResNet):
            self.arch = 'resnet'
            if self.input_resolution % 32:
                raise ValueError(
                    f'input_resolution={input_resolution} must be a multiple '
                    'of 32 for ResNet CLIP models.')
            pool = self.visual.attnpool
            pool.positional_embedding = nn.Parameter(
                resize_attnpool_pos_embed(pool.positional_embedding.data,
                                          self.input_resolution // 32))
            self.embed_dim = pool.c_proj.out_features
        elif isinstance(self.visual, TimmModel):
            self.arch = _timm_arch(self.visual.trunk, model_name)
            self._setup_timm()
        elif isinstance(self.visual, VisionTransformer):
            self.arch = 'vit'
            patch = self.visual.patch_size[0]
            if self.input_resolution % patch:
                raise ValueError(
                    f'input_resolution={input_resolution} must be a multiple '
                    f'of the patch size {patch}.')
            grid = self.input_resolution // patch
            self.visual.positional_embedding = nn.Parameter(
                resize_vit_pos_embed(self.visual.positional_embedding.data,
                                     grid))
            self.visual.grid_size = (grid, grid)
            if self.visual.attn_pool is not None:
                raise NotImplementedError(
                    f'{model_name}: ViTs with an attentional pool (CoCa) '
                    'have no dense path in mmcoop.')
            self.embed_dim = self.visual.proj.shape[1]
        else:
            raise NotImplementedError(
                f'{model_name}: dense features are implemented for open_clip '
                f'ModifiedResNet, VisionTransformer and timm (ViT, EVA, '
                f'ConvNeXt) towers, not {type(self.visual).__name__}.')
        self.dense_mode = _check_dense_mode(dense_mode, self.arch, model_name)
        if self.arch == 'timm_vit' and self.dense_mode == 'value':
            _check_timm_value_block(self.visual.trunk.blocks[-1], model_name)
        self.visual.image_size = (self.input_resolution, ) * 2
        if self.channels_last:
            self.visual.to(memory_format=torch.channels_last)
        self._freeze(save_frozen)

    def _setup_timm(self) -> None:
        """Input size, grid and output width of a timm tower."""
        trunk = self.visual.trunk
        stride = trunk.patch_embed.patch_size[0] \
            if self.arch == 'timm_vit' else 32
        if self.input_resolution % stride:
            raise ValueError(
                f'input_resolution={self.input_resolution} must be a '
                f'multiple of the patch size (stride) {stride} of '
                f'{self.model_name}.')
        if self.arch == 'timm_vit':
            trunk.set_input_size(img_size=self.input_resolution)
        self._timm_grid = self.input_resolution // stride
        linears = [
            m for m in self.visual.head.modules() if isinstance(m, nn.Linear)
        ]
        classifier = trunk.get_classifier()
        if linears:
            self.embed_dim = linears[-1].out_features
        elif isinstance(classifier, nn.Linear):
            self.embed_dim = classifier.out_features
        else:
            self.embed_dim = trunk.num_features

    def extra_repr(self) -> str:
        # what selects the function beyond the weights, in the module repr
        # (which the feature-cache key hashes)
        return (f'model_name={self.model_name!r}, input_resolution='
                f'{self.input_resolution}, dense_mode={self.dense_mode!r}')

    @property
    def num_positions(self) -> int:
        """Number of dense positions ``1 + HW`` at ``input_resolution``."""
        if self.arch == 'resnet':
            return 1 + (self.input_resolution // 32)**2
        if self.arch.startswith('timm'):
            return 1 + self._timm_grid**2
        return self.visual.positional_embedding.shape[0]

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor]:
        """``(B, 3, S, S)`` images -> ``((B, D, 1 + HW),)`` dense features.

        A ViT, EVA or ConvNeXt tower takes ``S = input_resolution`` only (its
        positional embedding is built for that grid); a ResNet any square
        size (its attention-pool embedding is resized on the fly, as the
        official code evaluates at 224 px after training at 448 px)."""
        self._check_input(x)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return (_autocast_fp32(self, self._forward_dense_call, x), )

    def _forward_dense_call(self, x: torch.Tensor) -> torch.Tensor:
        # compiled with `compile` (tower_compile.py), else a plain call
        return tower_call(self, FrozenCLIP._forward_dense, x)

    def _check_input(self, x: torch.Tensor) -> None:
        """Refuse images the tower cannot take, naming the sizes and the
        fix (else open_clip / timm fail deep inside with a shape error)."""
        res = self.input_resolution
        # a ResNet takes any square side the stride 32 divides (its grid
        # follows; a smaller side leaves no position, another drops pixels)
        if x.dim() == 4 and x.shape[1] == 3 and (
                x.shape[-1] == x.shape[-2] and x.shape[-1] >= 32
                and x.shape[-1] % 32 == 0 if self.arch == 'resnet' else
                tuple(x.shape[-2:]) == (res, res)):
            return
        need = ('square images, S a multiple of 32 (the stride)'
                if self.arch == 'resnet' else
                f'{res} x {res} images (`input_resolution`)')
        raise ValueError(
            f'FrozenCLIP({self.model_name!r}) takes (B, 3, S, S) {need}, got '
            f'a batch of shape {tuple(x.shape)}. Fix: make the pipelines '
            f'resize to ({res}, {res}) (`scale` of Resize / LoadImageTensor, '
            'keep_ratio=False), or set model.backbone.input_resolution to '
            'the pipelines\' size.')

    def _forward_dense(self, x: torch.Tensor) -> torch.Tensor:
        if self.arch == 'resnet':
            return self._forward_resnet(x)
        if self.arch == 'vit':
            return self._forward_vit(x)
        return self._forward_timm(x)

    def _forward_timm(self, x: torch.Tensor) -> torch.Tensor:
        visual, trunk = self.visual, self.visual.trunk
        if self.dense_mode == 'value':
            # one pass: the final features and the last block's input
            feats, (tokens, ) = trunk.forward_intermediates(
                x, indices=[len(trunk.blocks) - 2], output_fmt='NLC')
            tokens = trunk.norm(_timm_block_value_path(trunk.blocks[-1],
                                                       tokens))
        else:
            feats = trunk.forward_features(x)
        pooled = visual.head(trunk.forward_head(feats))  # = encode_image
        if self.arch == 'timm_vit':
            if self.dense_mode != 'value':
                tokens = feats[:, trunk.num_prefix_tokens:]  # (B, HW, C)
            if getattr(trunk, 'attn_pool', None) is not None:
                tokens = _map_value_path(trunk.attn_pool, tokens)
            tokens = trunk.head(trunk.fc_norm(tokens))
        else:  # ConvNeXt: NormMlpClassifierHead without the pooling
            head = trunk.head
            tokens = head.norm(feats).flatten(2).transpose(1, 2)
            tokens = head.fc(head.pre_logits(tokens))
        tokens = visual.head(tokens)
        return torch.cat([pooled[:, :, None], tokens.transpose(1, 2)], dim=2)

    def _forward_resnet(self, x: torch.Tensor) -> torch.Tensor:
        visual = self.visual
        x = visual.stem(x)
        x = visual.layer1(x)
        x = visual.layer2(x)
        x = visual.layer3(x)
        x = visual.layer4(x)
        pool = visual.attnpool
        x = x.flatten(2).permute(0, 2, 1)  # (B, HW, C)
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)
        pos = pool.positional_embedding
        if pos.shape[0] != x.shape[1]:
            pos = resize_attnpool_pos_embed(pos, round(
                (x.shape[1] - 1)**0.5))
        x = x + pos[None].to(x.dtype)
        x = pool.c_proj(pool.v_proj(x))  # (B, 1 + HW, D)
        return x.permute(0, 2, 1).contiguous()

    def _forward_vit(self, x: torch.Tensor) -> torch.Tensor:
        visual = self.visual
        x = visual._embeds(x)  # (B, 1 + HW, C)
        if self.dense_mode == 'tokens':
            x = visual.transformer(x)
        else:
            transformer = visual.transformer
            *blocks, last = transformer.resblocks
            x = x if transformer.batch_first else x.transpose(0, 1)
            for block in blocks:
                x = block(x)
            x = x if transformer.batch_first else x.transpose(0, 1)
            # per token, so the layout does not matter
            x = last.ls_1(_value_path(last.attn, last.ln_1(x)))
        x = visual.ln_post(x)
        x = x @ visual.proj
        return x.permute(0, 2, 1).contiguous()


_DENSE_MODES = dict(
    resnet=('value', ),
    vit=('tokens', 'value'),
    timm_vit=('tokens', 'value'),
    timm_convnext=('tokens', ))


def _timm_arch(trunk: nn.Module, model_name: str) -> str:
    """``'timm_vit'`` (timm VisionTransformer, EVA) or ``'timm_convnext'``."""
    from timm.models.convnext import ConvNeXt
    from timm.models.eva import Eva
    from timm.models.vision_transformer import VisionTransformer as TimmViT
    if isinstance(trunk, (TimmViT, Eva)):
        return 'timm_vit'
    if isinstance(trunk, ConvNeXt):
        return 'timm_convnext'
    raise NotImplementedError(
        f'{model_name}: dense features are implemented for timm '
        f'VisionTransformer, Eva and ConvNeXt towers, not '
        f'{type(trunk).__name__}.')


def _check_timm_value_block(block: nn.Module, model_name: str) -> None:
    """The value path is written for timm's pre-norm ``Block`` / ``EvaBlock``
    with ungated attention."""
    from timm.models.eva import EvaBlock
    from timm.models.vision_transformer import Block
    if type(block) not in (Block, EvaBlock) or getattr(
            block.attn, 'gate', None) is not None:
        raise NotImplementedError(
            f"{model_name}: dense_mode='value' supports timm pre-norm Block "
            f'/ EvaBlock with ungated attention, not {type(block).__name__};'
            " use dense_mode='tokens'.")


def _timm_block_value_path(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The attention branch of a timm ``Block`` / ``EvaBlock`` when every
    token attends only to itself: ``ls(proj(norm(v(norm1(x)))))``; residual
    and MLP dropped. ``(B, N, C) -> (B, N, C)``."""
    x = _timm_value_path(block.attn, block.norm1(x))
    if hasattr(block, 'ls1'):  # timm Block: LayerScale or Identity
        return block.ls1(x)
    gamma = getattr(block, 'gamma_1', None)  # EvaBlock
    return x if gamma is None else gamma * x


def _timm_value_path(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A timm ``Attention`` / ``EvaAttention`` output when every token
    attends only to itself (rotary embeddings act on q and k only):
    ``proj(norm(v(x)))``. ``(B, N, C) -> (B, N, C)``."""
    if getattr(attn, 'qkv', None) is None:  # separate projections
        v = attn.v_proj(x)
    else:
        width = attn.qkv.out_features // 3
        bias = attn.qkv.bias
        if bias is not None:
            bias = bias[2 * width:]
        elif getattr(attn, 'v_bias', None) is not None:  # EVA: q/v biases
            bias = attn.v_bias
        v = F.linear(x, attn.qkv.weight[2 * width:], bias)
    return attn.proj(attn.norm(v))


def _map_value_path(pool: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """timm ``AttentionPoolLatent`` applied to every token alone: the latent
    query attends to one key, so the attention output is ``proj(v(x))``,
    followed by the head's ``x + mlp(norm(x))``. ``(B, N, C) -> (B, N, C)``.
    """
    if pool.pos_embed is not None:
        raise NotImplementedError(
            'attention-pool heads with a positional embedding are not '
            'supported.')
    width = x.shape[-1]
    v = pool.kv(x)[..., width:]  # kv packs (k, v), heads inside each
    x = pool.proj(v)
    if pool.mlp is not None:
        x = x + pool.mlp(pool.norm(x))
    return x


def _check_dense_mode(mode: Optional[str], arch: str, model_name: str) -> str:
    """The dense mode of ``arch``: ``mode``, or the first (default) one."""
    modes = _DENSE_MODES[arch]
    if mode is None:
        return modes[0]
    if mode not in modes:
        raise ValueError(
            f'dense_mode={mode!r} is not available for {model_name} '
            f'({arch}); use one of {list(modes)} or None (field '
            '`dense_mode` of FrozenCLIP).')
    return mode


def _value_path(attn: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
    """``out_proj(v_proj(x))`` of a packed ``nn.MultiheadAttention``: its
    output when every token attends only to itself. ``(..., C) -> (..., C)``.
    """
    width = attn.embed_dim
    bias = None if attn.in_proj_bias is None else attn.in_proj_bias[2 *
                                                                    width:]
    v = F.linear(x, attn.in_proj_weight[2 * width:], bias)
    return attn.out_proj(v)


@MODELS.register_module()
class FrozenCLIPTextEncoder(FrozenMixin, BaseModule):
    """Frozen CLIP text tower for learned prompts.

    Takes prompt *embeddings* (token embeddings with learned context vectors
    spliced in) and returns the projected end-of-text features, as CoOp's
    ``TextEncoder``. Only input gradients flow; the weights are frozen.

    With ``truncate=True`` (default) the transformer runs only up to the last
    end-of-text position of the batch: the causal mask makes later positions
    irrelevant, so the result is identical to the full 77-token pass. Text
    towers without a causal mask or with ``last`` pooling (SigLIP / SigLIP2:
    bidirectional, pooled at the final position, no end-of-text token) are
    never truncated (``self.truncate`` is False whatever was asked): there
    every position influences the pooled one.

    Args:
        model_name (str): open_clip architecture.
        pretrained (str, optional): as :class:`FrozenCLIP`.
        force_quick_gelu (bool): force QuickGELU activations.
        truncate (bool): exact EOT truncation. Defaults to True.
        save_frozen (bool): keep frozen weights in ``state_dict()``.
        cache_dir (str, optional): open_clip download cache.
        autocast_dtype (str, optional): ``'fp16'`` or ``'bf16'``: run the
            transformer under ``torch.autocast('cuda', dtype)``, for CUDA
            inputs (on CPU only with ``autocast_cpu``); the output is cast
            back to fp32.
            Gradients reach the prompt context through the autocast region
            without a loss scaler (as the official code), so prefer
            ``'bf16'``. Defaults to None (fp32).
        autocast_cpu (bool): as :class:`FrozenCLIP`. Defaults to False.
        init_seed (int, optional): as :class:`FrozenCLIP`; with the same
            seed and ``model_name`` the random image and text towers come
            from the same random CLIP. Defaults to 0.
        text_chunk_size (int, optional): encode at most this many prompts
            at a time, for large vocabularies. Without gradient (evaluation)
            only one chunk's activations are alive at a time; with gradient
            each chunk is recomputed in the backward pass
            (``torch.utils.checkpoint``, non-reentrant), so the text
            activations kept for backward are those of one chunk, for one
            extra forward pass of the text transformer. The features are
            those of the unchunked pass (each prompt is encoded
            independently; truncation is exact per chunk). Defaults to
            None (one batch).
        tokenizer (str | callable, optional): the prompt tokenizer. None
            (default): open_clip's for ``model_name``. A str: the local
            folder of the model's Hugging Face tokenizer (SigLIP, SigLIP2:
            e.g. the downloaded ``timm/ViT-B-16-SigLIP`` repository), for
            machines without the hub. A callable ``N`` strings ->
            ``(N, context_length)`` ids: used as is. See
            :func:`~mmcoop.models.backbones.clip_loader.build_clip_tokenizer`.
            Its ids must fit the tower (context length, vocabulary).
        compile (bool | dict): ``torch.compile`` the transformer, final
            norm, pooling and projection after the truncation: False
            (default, eager), True, or a dict of ``torch.compile``
            arguments; ``dict(mode='reduce-overhead')`` replays the
            launch-bound forward and backward as CUDA graphs. See
            :mod:`.tower_compile`.
    """

    def __init__(self,
                 model_name: str = 'RN101-quickgelu',
                 pretrained: Optional[str] = None,
                 force_quick_gelu: bool = False,
                 truncate: bool = True,
                 save_frozen: bool = False,
                 cache_dir: Optional[str] = None,
                 init_cfg=None,
                 autocast_dtype: Optional[str] = None,
                 init_seed: Optional[int] = 0,
                 autocast_cpu: bool = False,
                 text_chunk_size: Optional[int] = None,
                 tokenizer: Union[None, str, Callable] = None,
                 compile: Union[bool, dict] = False):
        super().__init__(init_cfg=init_cfg)
        owner = 'FrozenCLIPTextEncoder'
        if text_chunk_size is not None:
            check_int(owner, 'text_chunk_size', text_chunk_size)
        for field, flag in (('force_quick_gelu', force_quick_gelu),
                            ('truncate', truncate),
                            ('save_frozen', save_frozen),
                            ('autocast_cpu', autocast_cpu)):
            check_flag(owner, field, flag)
        _check_init_seed(owner, init_seed)
        self.text_chunk_size = text_chunk_size
        self.autocast_dtype, self.autocast_cpu = _parse_autocast(
            autocast_dtype, autocast_cpu)
        self.compile_options = parse_compile(owner, compile)
        clip = build_open_clip(model_name, pretrained, force_quick_gelu,
                               cache_dir, init_seed)
        # CustomTextCLIP (SigLIP, EVA02, ...) keeps its tower in `.text`
        text = getattr(clip, 'text', clip)
        if not hasattr(text, 'token_embedding') or getattr(
                text, 'cls_emb', None) is not None or getattr(
                    text, 'use_pad_mask', False):
            raise NotImplementedError(
                f'{model_name} has a text tower mmcoop cannot feed prompt '
                'embeddings to (HF text model, CoCa class token or padding '
                'mask); mmcoop supports the open_clip text transformer.')
        self.model_name = model_name
        self.clip_identity = _identity(locals())
        self.token_embedding = text.token_embedding
        self.positional_embedding = text.positional_embedding
        self.transformer = text.transformer
        self.ln_final = text.ln_final
        self.text_projection = text.text_projection
        self.register_buffer('attn_mask', text.attn_mask, persistent=False)
        self.pool_type = getattr(text, 'text_pool_type', None) or getattr(
            text, 'pool_type')
        self.eos_id = getattr(text, 'text_eos_id', getattr(text, 'eos_id',
                                                           None))
        del clip, text
        self.tokenizer = build_clip_tokenizer(model_name, tokenizer)
        self.context_length = self.positional_embedding.shape[0]
        self._check_tokenizer()
        self.width = self.token_embedding.weight.shape[1]
        if self.text_projection is None:
            self.embed_dim = self.width
        elif isinstance(self.text_projection, nn.Linear):
            self.embed_dim = self.text_projection.out_features
        else:
            self.embed_dim = self.text_projection.shape[1]
        # Truncation is exact only with a causal mask and pooling at the
        # end-of-text token (no later position can influence it); 'last'
        # pooling (SigLIP) reads the final position of the full context.
        self.truncate = bool(truncate) and self.attn_mask is not None \
            and self.pool_type in ('argmax', 'eos')
        first, second = self.tokenize(['a', 'b'])
        #: special tokens before the text (1 for CLIP's start token)
        self.text_start = int((first != second).int().argmax())
        # padding and end token from the tokenizer, not the tower config
        # (SigLIP's configs leave pad_id at 0; its T5 vocabulary pads with
        # its end token, 1; Gemma's (SigLIP2) pads with 0)
        empty = self.tokenize([''])[0]
        #: token id after the text's end (the last position is always one)
        self.pad_id = int(empty[-1])
        #: whether the end token is the padding token (T5 vocabulary)
        self.end_is_pad = bool(empty[self.text_start] == self.pad_id)
        self._check_end_token()
        self._freeze(save_frozen)

    def _check_tokenizer(self) -> None:
        """The tokenizer's ids fit the tower: ``(N, context_length)``
        integers below the vocabulary size (a tokenizer of another model
        would index past the token embedding, or shift the positions)."""
        vocab = self.token_embedding.weight.shape[0]
        try:
            ids = self.tokenize(['a photo of a dog.', 'X X X traffic light'])
        except Exception as e:  # noqa: BLE001 - any tokenizer's error
            raise ValueError(
                f'The prompt tokenizer of {self.model_name!r} '
                f'({type(self.tokenizer).__name__}) failed on a plain '
                f'prompt: {type(e).__name__}: {e}. Check '
                '`text_encoder.tokenizer`.') from e
        if not (isinstance(ids, torch.Tensor) and ids.dim() == 2
                and ids.shape == (2, self.context_length)
                and not ids.is_floating_point() and ids.dtype != torch.bool
                and int(ids.min()) >= 0 and int(ids.max()) < vocab):
            got = (f'{tuple(ids.shape)} {ids.dtype}, ids '
                   f'{int(ids.min())}..{int(ids.max())}' if isinstance(
                       ids, torch.Tensor) and ids.numel() else repr(ids))
            raise ValueError(
                f'The prompt tokenizer ({type(self.tokenizer).__name__}) '
                f'does not fit the text tower of {self.model_name!r}: it '
                f'must give (N, {self.context_length}) integer ids in '
                f'0..{vocab - 1}, got {got[:200]}. Set '
                "`text_encoder.tokenizer` to the model's own tokenizer (or "
                "None for open_clip's).")

    def _check_end_token(self) -> None:
        """The tower pools each prompt where its tokens say it ends
        (:meth:`end_positions`): after its text, later for a longer text.
        A tokenizer without the tower's end token (another vocabulary, or
        one that pads over it) would pool every prompt at one position, so
        that every class got the same text feature, without an error."""
        texts = ['a', 'a photo of a dog.']
        short, long = (int(e) for e in self.end_positions(
            self.tokenize(texts)))
        if self.text_start < short < long:
            return
        raise ValueError(
            f'The prompt tokenizer ({type(self.tokenizer).__name__}) does '
            f'not mark the end of a prompt as the text tower of '
            f'{self.model_name!r} reads it ({self.pool_type!r} pooling'
            + (f', end token id {self.eos_id}' if self.pool_type == 'eos'
               else '') + f'): {texts[0]!r} would be pooled at position '
            f'{short} and {texts[1]!r} at {long}, so every class would get '
            "the same text feature. Set `text_encoder.tokenizer` to the "
            "model's own tokenizer (or None for open_clip's).")

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """``N`` strings -> ``(N, L)`` token ids (L = context length)."""
        return self.tokenizer(list(texts))

    @torch.no_grad()
    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(N, L)`` token ids -> ``(N, L, W)`` token embeddings."""
        weight = self.token_embedding.weight
        return self.token_embedding(tokens.to(weight.device))

    def end_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        """Index of the end token of each prompt, ``(N,)``: the
        end-of-text token for ``eos`` / ``argmax`` pooling, else the last
        non-padding token, or the position after it when the end token is
        the padding token (SigLIP's T5 vocabulary)."""
        if self.pool_type == 'eos':
            return (tokens == self.eos_id).int().argmax(dim=-1)
        if self.pool_type == 'argmax':
            return tokens.argmax(dim=-1)
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        last = ((tokens != self.pad_id) * positions).argmax(dim=-1)
        if self.end_is_pad:
            last = (last + 1).clamp(max=tokens.shape[1] - 1)
        return last

    def check_fit(self, texts: Sequence[str], tokens: torch.Tensor,
                  fix: str) -> None:
        """Each of ``texts`` (tokenized: ``tokens``, ``(N, L)``) ends
        before the last position of the context: a longer one has been cut
        short by the tokenizer (its class name lost, without a word), so it
        is refused naming the text, the context length and ``fix``."""
        over = (self.end_positions(tokens) >= tokens.shape[1] - 1).nonzero()
        if over.numel():
            text = texts[int(over[0])]
            shown = text if len(text) <= 120 else f'{text[:117]}...'
            raise ValueError(
                f'The prompt {shown!r} does not fit the text context length '
                f'of {self.model_name!r} ({tokens.shape[1]} tokens): the '
                f'tokenizer would cut it short. {fix}')

    def forward(self,
                prompts: torch.Tensor,
                tokens: torch.Tensor,
                ends: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Encode prompt embeddings.

        Args:
            prompts (Tensor): ``(N, L, W)`` prompt embeddings.
            tokens (Tensor): ``(N, L)`` token ids (for EOT pooling).
            ends (Tensor, optional): ``(N,)`` :meth:`end_positions` of
                ``tokens`` on the CPU, where the caller keeps them (the
                prompt learners do): the truncation then reads its length
                without waiting for the device. None: read from
                ``tokens``.

        Returns:
            Tensor: ``(N, D)`` projected text features (not normalised).
        """
        size = self.text_chunk_size
        if size is None or prompts.shape[0] <= size:
            return self._encode_fp32(prompts, tokens, ends)
        recompute = torch.is_grad_enabled() and prompts.requires_grad
        out = []
        chunk_ends = ends.split(size) if ends is not None else [None] * (
            (prompts.shape[0] + size - 1) // size)
        for chunk, chunk_tokens, chunk_end in zip(
                prompts.split(size), tokens.split(size), chunk_ends):
            if recompute:
                out.append(
                    checkpoint(
                        self._encode_fp32,
                        chunk,
                        chunk_tokens,
                        chunk_end,
                        use_reentrant=False))
            else:
                out.append(self._encode_fp32(chunk, chunk_tokens, chunk_end))
        return torch.cat(out)

    def _encode_fp32(self, prompts: torch.Tensor, tokens: torch.Tensor,
                     ends: Optional[torch.Tensor]) -> torch.Tensor:
        return _autocast_fp32(self, self._encode, prompts, tokens, ends)

    def _encode(self, prompts: torch.Tensor, tokens: torch.Tensor,
                ends: Optional[torch.Tensor]) -> torch.Tensor:
        length = prompts.shape[1]
        attn_mask = self.attn_mask
        if self.truncate:
            # read on the host, outside the compiled part: static shapes
            if ends is None:
                ends = self.end_positions(tokens)
            length = int(ends.max()) + 1
            prompts = prompts[:, :length]
            tokens = tokens[:, :length]
            if attn_mask is not None:
                attn_mask = attn_mask[:length, :length]
        return tower_call(self, FrozenCLIPTextEncoder._transform, prompts,
                          tokens, attn_mask)

    def _transform(self, prompts: torch.Tensor, tokens: torch.Tensor,
                   attn_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """``(N, L, W)`` prompt embeddings (already truncated to ``L``)
        -> ``(N, D)`` projected features at the pooled position."""
        x = prompts + self.positional_embedding[:prompts.shape[1]].to(
            prompts.dtype)
        x = self.transformer(x, attn_mask=attn_mask)
        x = self.ln_final(x)
        x = text_global_pool(x, tokens, self.pool_type, self.eos_id)
        if self.text_projection is None:
            return x
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection

    def encode_texts(self, texts: List[str]) -> torch.Tensor:
        """Encode plain strings (hand-written prompts) -> ``(N, D)``; a
        string longer than the context is refused (:meth:`check_fit`)."""
        tokens = self.tokenize(texts)
        self.check_fit(
            texts, tokens, 'Fix: shorten the class name or the template.')
        ends = self.end_positions(tokens)
        tokens = tokens.to(self.token_embedding.weight.device)
        return self.forward(self.embed_tokens(tokens), tokens, ends)


def _identity(args: dict) -> dict:
    """The :data:`~.clip_loader.CLIP_IDENTITY` fields of a tower's
    constructor arguments (plain data, recorded in checkpoints)."""
    return {field: args[field] for field in CLIP_IDENTITY}


def config_clip_identity(cfg) -> Optional[dict]:
    """The ``clip_identity`` a tower built from the config ``cfg`` would
    have (the given fields, else the constructor's defaults), without
    building it; None when ``cfg`` is not a :class:`FrozenCLIP` /
    :class:`FrozenCLIPTextEncoder` config (e.g. the image tower a feature
    cache holds, recorded in the checkpoints of a cached run)."""
    import inspect

    from mmcoop.registry import MODELS
    from mmcoop.utils.config_types import registered_class
    cls = registered_class(MODELS, cfg) if isinstance(cfg, dict) else None
    if not (cls and issubclass(cls, (FrozenCLIP, FrozenCLIPTextEncoder))):
        return None
    params = inspect.signature(cls).parameters
    return {
        field: cfg[field] if field in cfg else params[field].default
        for field in CLIP_IDENTITY
    }


def clip_towers(model: nn.Module) -> Dict[str, dict]:
    """``{module path: clip_identity}`` of the frozen CLIP towers in
    ``model`` (e.g. ``'backbone'``, ``'head.text_encoder'``); MMCoopRunner
    records it in every checkpoint's ``meta['clip_towers']``, and the load
    policy compares it (:mod:`mmcoop.engine.checkpoint_fit`)."""
    return {
        name: dict(module.clip_identity)
        for name, module in model.named_modules()
        if isinstance(module, (FrozenCLIP, FrozenCLIPTextEncoder))
    }


_AUTOCAST_DTYPES = {
    'fp16': torch.float16,
    'float16': torch.float16,
    'bf16': torch.bfloat16,
    'bfloat16': torch.bfloat16,
}


def _parse_autocast_dtype(name: Optional[str]) -> Optional[torch.dtype]:
    """``None | 'fp16' | 'bf16'`` (or the long names) -> torch dtype."""
    if name is None:
        return None
    if isinstance(name, torch.dtype) and name in _AUTOCAST_DTYPES.values():
        return name
    if isinstance(name, str) and name.lower() in _AUTOCAST_DTYPES:
        return _AUTOCAST_DTYPES[name.lower()]
    raise ValueError(
        f"autocast_dtype must be None, 'fp16' or 'bf16', got {name!r}.")


def _check_init_seed(owner: str, seed) -> None:
    """``init_seed`` is None or an int >= 0 (``torch.manual_seed`` would
    turn 1.5 or ``'0'`` into another seed without a word)."""
    if seed is not None:
        # torch.manual_seed takes a 64-bit seed
        check_int(owner, 'init_seed', seed, minimum=0, maximum=2**64 - 1)


def _parse_autocast(name, cpu: bool):
    """``(autocast_dtype, autocast_cpu)`` checked -> ``(dtype, bool)``."""
    dtype = _parse_autocast_dtype(name)
    if cpu and dtype != torch.bfloat16:
        raise ValueError(
            f'autocast_cpu=True needs autocast_dtype=\'bf16\' (CPU autocast '
            f'is bf16 only here), got autocast_dtype={name!r}: set '
            f"autocast_dtype='bf16' or drop autocast_cpu.")
    return dtype, bool(cpu)


def _autocast_device(tower, device: torch.device) -> Optional[str]:
    """The device type ``tower`` autocasts its inputs on ``device`` under
    (``'cuda'`` or ``'cpu'``), or None when it runs fp32 there."""
    if getattr(tower, 'autocast_dtype', None) is None:
        return None
    if device.type == 'cuda' or (device.type == 'cpu'
                                 and getattr(tower, 'autocast_cpu', False)):
        return device.type
    return None


def _autocast_fp32(tower, fn, x: torch.Tensor, *args) -> torch.Tensor:
    """``fn(x, *args)``, under ``torch.autocast(device, tower.autocast_dtype)``
    where :func:`_autocast_device` says so (the result cast back to fp32); a
    plain call otherwise."""
    device = _autocast_device(tower, x.device)
    if device is None:
        return fn(x, *args)
    with torch.autocast(device, dtype=tower.autocast_dtype):
        out = fn(x, *args)
    return out.float()

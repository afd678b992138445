# Copyright (c) mmcoop contributors. All rights reserved.
"""Build open_clip models and load CLIP weights from tags or local files.

``pretrained`` may be

* ``None``: random initialisation (tests, tiny demo models); a warning is
  logged because the features are meaningless for real data.
* a path to a local checkpoint: an OpenAI TorchScript archive (the format of
  the official ``RN101.pt`` release), read as data without running its code
  (:mod:`mmcoop.utils.torchscript_reader`), or a ``torch.save``-d state dict
  (optionally wrapped in ``{'state_dict': ...}``), loaded with
  ``weights_only=True``.
* an open_clip pretrained tag such as ``'openai'``; open_clip fetches and
  caches the file. Without network access this fails with an error that says
  which file to download and how to point ``pretrained`` at it.
"""
import os
import os.path as osp
import zipfile
from typing import Dict, Optional

import open_clip
import torch
import torch.nn.functional as F
from mmengine.logging import MMLogger

from mmcoop.utils.checkpoint import safe_torch_load
from mmcoop.utils.torchscript_reader import (TorchScriptReadError,
                                             read_torchscript_state_dict)

_CONFIG_DIR = osp.join(osp.dirname(osp.dirname(osp.dirname(__file__))),
                       'clip_configs')
_registered = False


def register_mmcoop_clip_configs() -> None:
    """Make mmcoop's small CLIP architectures known to open_clip.

    ``mmcoop/clip_configs/*.json`` holds tiny open_clip model configs
    (``mmcoop-tiny-RN``, ``mmcoop-tiny-RN-512``, ``mmcoop-tiny-ViT``) used by
    the tests and the offline demo. Registration is idempotent.
    """
    global _registered
    if not _registered:
        open_clip.add_model_config(_CONFIG_DIR)
        _registered = True


def _is_torchscript_archive(path: str) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    return any(n.endswith('constants.pkl') or '/code/' in n for n in names)


def load_clip_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """Read a CLIP state dict from a local file.

    Args:
        path (str): an OpenAI TorchScript archive or a state dict file.

    Returns:
        dict: parameter name -> fp32 tensor in the OpenAI / open_clip layout.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'CLIP weights file {path!r} does not exist. Set '
            '`pretrained` to an existing file, an open_clip tag such as '
            "'openai', or None for random weights.")
    if _is_torchscript_archive(path):
        # data only: the archive's code is never compiled or run
        try:
            state_dict = read_torchscript_state_dict(path)
        except TorchScriptReadError as e:
            raise RuntimeError(
                f'Could not read the TorchScript CLIP archive {path!r} '
                f'(field `pretrained`): {e} If it is a genuine file that '
                'mmcoop cannot parse, convert it once where you trust it: '
                "torch.save(torch.jit.load(path).state_dict(), 'clip.pth') "
                'and set `pretrained` to that file.') from e
    else:
        ckpt = safe_torch_load(path, what='CLIP weights')
        if isinstance(ckpt, dict) and 'state_dict' in ckpt:
            ckpt = ckpt['state_dict']
        if not isinstance(ckpt, dict) or not ckpt:
            raise RuntimeError(
                f'CLIP weights file {path!r} holds no state dict (found '
                f'{type(ckpt).__name__}). Pass an OpenAI .pt archive or a '
                'file saved with torch.save(model.state_dict()).')
        state_dict = ckpt
    state_dict = {(k[7:] if k.startswith('module.') else k): v
                  for k, v in state_dict.items()}
    for key in ('input_resolution', 'context_length', 'vocab_size'):
        state_dict.pop(key, None)
    return {
        k: (v.float() if torch.is_floating_point(v) else v)
        for k, v in state_dict.items()
    }


def build_open_clip(model_name: str,
                    pretrained: Optional[str] = None,
                    force_quick_gelu: bool = False,
                    cache_dir: Optional[str] = None,
                    init_seed: Optional[int] = 0) -> torch.nn.Module:
    """Build an fp32 open_clip CLIP model at its native resolution.

    Args:
        model_name (str): any ``open_clip.list_models()`` name, e.g.
            ``'RN101-quickgelu'``, or an mmcoop tiny config.
        pretrained (str, optional): tag, local path or None (see module doc).
        force_quick_gelu (bool): use QuickGELU, needed for OpenAI weights
            with configs that default to GELU (``RN101`` vs
            ``RN101-quickgelu``).
        cache_dir (str, optional): open_clip download cache.
        init_seed (int, optional): the model is built (and randomly
            initialised, before any weights are loaded) under a forked torch
            RNG seeded with this value, so the global RNG is left untouched
            and a random tower is the same wherever and whenever it is built
            (in the model, or in a feature cache's dataset wrapper). None
            draws from the global RNG instead. Defaults to 0.
    """
    if init_seed is None:
        return _build_open_clip(model_name, pretrained, force_quick_gelu,
                                cache_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        return _build_open_clip(model_name, pretrained, force_quick_gelu,
                                cache_dir)


def _build_open_clip(model_name, pretrained, force_quick_gelu, cache_dir):
    register_mmcoop_clip_configs()
    logger = MMLogger.get_current_instance()
    if model_name not in open_clip.list_models():
        raise ValueError(
            f'Unknown open_clip model name {model_name!r} (field '
            '`model_name`). Use one of open_clip.list_models(), e.g. '
            "'RN101-quickgelu', 'RN50-quickgelu', 'ViT-B-16', or an mmcoop "
            "tiny config such as 'mmcoop-tiny-RN'.")
    kwargs = dict(force_quick_gelu=force_quick_gelu, precision='fp32')
    if pretrained is None:
        logger.warning(
            f'CLIP {model_name} is randomly initialised (pretrained=None): '
            'fine for tests and the offline demo, meaningless for real data.')
        model = open_clip.create_model(model_name, pretrained=None, **kwargs)
    elif osp.exists(str(pretrained)) or os.sep in str(pretrained) \
            or str(pretrained).endswith(('.pt', '.pth', '.bin')):
        state_dict = load_clip_state_dict(str(pretrained))
        model = open_clip.create_model(model_name, pretrained=None, **kwargs)
        state_dict = _adapt_to_model(state_dict, model)
        own = model.state_dict()
        mismatched = [
            f'{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}'
            for k, v in state_dict.items() if v.shape != own[k].shape
        ]
        if mismatched:
            raise RuntimeError(
                f'CLIP weights in {pretrained!r} do not fit the open_clip '
                f'architecture {model_name!r}: shape mismatches '
                f'{mismatched[:5]}{"..." if len(mismatched) > 5 else ""}. '
                'Check `model_name` (e.g. RN101-quickgelu for the OpenAI '
                'RN101.pt).')
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
        # logit_bias only exists in SigLIP-style models; anything else
        # missing means the file does not fit the architecture.
        missing = [k for k in missing if k not in ('logit_bias', )]
        if missing or unexpected:
            raise RuntimeError(
                f'CLIP weights in {pretrained!r} do not fit the open_clip '
                f'architecture {model_name!r}: missing keys '
                f'{missing[:5]}{"..." if len(missing) > 5 else ""}, '
                f'unexpected keys {unexpected[:5]}'
                f'{"..." if len(unexpected) > 5 else ""}. Check '
                '`model_name` (e.g. RN101-quickgelu for the OpenAI RN101.pt).')
        logger.info(f'Loaded CLIP {model_name} weights from {pretrained}')
    else:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        if pretrained not in tags:
            raise ValueError(
                f'`pretrained={pretrained!r}` is neither an existing file nor '
                f'an open_clip tag of {model_name!r} (known tags: {tags}). '
                'Pass a local checkpoint path, a tag, or None.')
        try:
            model = open_clip.create_model(
                model_name, pretrained=pretrained, cache_dir=cache_dir,
                **kwargs)
        except Exception as e:  # noqa: BLE001 - network / hub errors vary
            url = open_clip.get_pretrained_url(model_name, pretrained)
            raise RuntimeError(
                f'Could not fetch CLIP weights {model_name}:{pretrained} '
                f'({type(e).__name__}: {e}). On an offline machine download '
                f'{url or "the checkpoint"} elsewhere and set '
                "`pretrained='/path/to/file.pt'` in the config.") from e
    if model_name.startswith(('RN', 'ViT')) and pretrained == 'openai' \
            and 'quickgelu' not in model_name and not force_quick_gelu:
        logger.warning(
            f'{model_name} with OpenAI weights should use QuickGELU: use '
            f'{model_name}-quickgelu or force_quick_gelu=True.')
    model.float().eval()
    return model


def _adapt_to_model(state_dict: Dict[str, torch.Tensor],
                    model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """Drop entries the open_clip model has no slot for (none for CLIP)."""
    own = model.state_dict()
    return {k: v for k, v in state_dict.items() if k in own}


def resize_attnpool_pos_embed(pos_embed: torch.Tensor,
                              grid: int) -> torch.Tensor:
    """Resize a ModifiedResNet attention-pool positional embedding.

    Bicubic interpolation of the spatial part, the mean-token entry kept, as
    the official DualCoOp/PositiveCoOp ``build_model_conv_proj`` does.

    Args:
        pos_embed (Tensor): ``(1 + g*g, C)``.
        grid (int): the new side, ``input_resolution // 32``.

    Returns:
        Tensor: ``(1 + grid*grid, C)``.
    """
    old = round((pos_embed.shape[0] - 1)**0.5)
    if old == grid:
        return pos_embed
    spatial = pos_embed[1:].permute(1, 0).reshape(1, -1, old, old)
    spatial = F.interpolate(spatial, size=(grid, grid), mode='bicubic')
    spatial = spatial.reshape(-1, grid * grid).permute(1, 0)
    return torch.cat([pos_embed[:1], spatial], dim=0)


def resize_vit_pos_embed(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """Bicubic resize of a ViT positional embedding ``(1 + g*g, C)``."""
    old = round((pos_embed.shape[0] - 1)**0.5)
    if old == grid:
        return pos_embed
    spatial = pos_embed[1:].reshape(1, old, old, -1).permute(0, 3, 1, 2)
    spatial = F.interpolate(
        spatial, size=(grid, grid), mode='bicubic', align_corners=False)
    spatial = spatial.permute(0, 2, 3, 1).reshape(grid * grid, -1)
    return torch.cat([pos_embed[:1], spatial], dim=0)

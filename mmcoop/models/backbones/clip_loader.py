# Copyright (c) mmcoop contributors. All rights reserved.
"""Build open_clip models and load CLIP weights from tags or local files.

``pretrained`` may be

* ``None``: random initialisation (tests, tiny demo models); a warning is
  logged because the features are meaningless for real data.
* an open_clip pretrained tag such as ``'openai'``; open_clip fetches and
  caches the file (for ``openai`` a plain state dict from the Hugging Face
  hub). Without network access this fails with an error that says which file
  to download and how to point ``pretrained`` at it.
* a path to a local state dict (``torch.save``-d, optionally wrapped in
  ``{'state_dict': ...}``, ``.safetensors``, or big_vision ``.npz``), loaded
  by open_clip's own :func:`open_clip.load_checkpoint` with
  ``weights_only=True`` and ``strict=True``: a file of another architecture
  is an error that names it.

OpenAI TorchScript archives (the ``RN101.pt`` of the original CLIP release)
are refused, not read: ``torch.jit.load`` would compile and keep code chosen
by whoever wrote the file, and open_clip already serves the same weights as a
plain state dict (``pretrained='openai'``). The error prints a one-line
conversion, to run once where the file is trusted.
"""
import contextlib
import logging
import os
import os.path as osp
import warnings
import zipfile
from typing import Callable, List, Optional, Union

import open_clip
import torch
import torch.nn.functional as F
from mmengine.logging import MMLogger

from mmcoop.utils.checkpoint import (CheckpointReadError,
                                     UnsafeCheckpointError, safe_torch_load)

#: The open_clip_torch releases mmcoop runs on (setup.cfg's
#: ``install_requires`` gives the same range). 3.0 and earlier lack what
#: the towers use: ``text_global_pool(x, text, pool_type, eos_id)`` and
#: ``CLIPTextCfg.eos_id`` (3.0), batch-first transformers and the ViT's
#: ``_embeds`` (2.x); the suite fails there, it passes with 3.1 to 3.3.
OPEN_CLIP_RANGE = ('3.1.0', '4.0.0')


def check_open_clip_version(version: Optional[str]) -> None:
    """Refuse an installed open_clip_torch ``version`` outside
    :data:`OPEN_CLIP_RANGE` with the command that fixes it (it would fail
    later, deep in a tower), as pip reads the range (PEP 440): a
    pre-release of the upper bound (``4.0.0.dev0``, ``4.0.0rc1``) is
    outside it, one inside the range (``3.2.0.dev0``) and a local version
    (``3.1.0+cpu``) inside. None (not installed as a distribution, e.g. a
    source checkout on ``PYTHONPATH``) is not checked, nor, with a
    warning, a version that is not PEP 440 (nothing pip installs)."""
    from packaging.version import InvalidVersion, Version
    low, high = OPEN_CLIP_RANGE
    if version is None:
        return
    try:
        parsed = Version(version)
    except InvalidVersion:
        warnings.warn(
            f'open_clip_torch reports the version {version!r}, which is not '
            f'a version number: not checked against {low} <= '
            f'open_clip_torch < {high}.')
        return
    if Version(low) <= parsed and Version(parsed.base_version) < Version(
            high):
        return
    raise ImportError(
        f'open_clip_torch {version} is installed; mmcoop needs {low} <= '
        f"open_clip_torch < {high}. Fix: pip install 'open_clip_torch>="
        f"{low},<{high}'.")


def _installed_open_clip() -> Optional[str]:
    """The installed open_clip_torch distribution's version, or None."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version('open_clip_torch')
    except PackageNotFoundError:
        return None


check_open_clip_version(_installed_open_clip())

_CONFIG_DIR = osp.join(osp.dirname(osp.dirname(osp.dirname(__file__))),
                       'clip_configs')
_registered = False
_WEIGHT_FILE_SUFFIXES = ('.pt', '.pth', '.bin', '.safetensors', '.npz')


def register_mmcoop_clip_configs() -> None:
    """Make mmcoop's small CLIP architectures known to open_clip.

    ``mmcoop/clip_configs/*.json`` holds tiny open_clip model configs
    (``mmcoop-tiny-RN``, ``mmcoop-tiny-RN-512``, ``mmcoop-tiny-ViT``, ...)
    used by the tests and the offline demo. Registration is idempotent.
    """
    global _registered
    if not _registered:
        open_clip.add_model_config(_CONFIG_DIR)
        _registered = True


def is_torchscript_archive(path: str) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip with ``code/`` or
    ``constants.pkl``), as opposed to a ``torch.save`` zip."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    return any(n.endswith('constants.pkl') or '/code/' in n for n in names)


def load_clip_weights(model: torch.nn.Module, path: str,
                      model_name: str) -> None:
    """Load the local CLIP weights file ``path`` into the open_clip ``model``.

    Raises:
        FileNotFoundError: no such file.
        RuntimeError: a TorchScript archive (refused, with the conversion
            command), an unreadable or unsafe file (from
            :func:`mmcoop.utils.checkpoint.safe_torch_load`), or weights that
            do not fit ``model_name`` (missing, unexpected or mis-shaped
            keys).
    """
    if osp.isdir(path):
        inside = sorted(f for f in os.listdir(path)
                        if f.endswith(_WEIGHT_FILE_SUFFIXES))
        raise IsADirectoryError(
            f'CLIP weights {path!r} (field `pretrained`) is a folder. Set '
            '`pretrained` to the weights file inside it (here: '
            f'{inside or "no weights file"}, e.g. open_clip_pytorch_model.bin '
            'or open_clip_model.safetensors of a downloaded repository).')
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'CLIP weights file {path!r} does not exist. Set '
            '`pretrained` to an existing file, an open_clip tag such as '
            "'openai', or None for random weights.")
    if is_torchscript_archive(path):
        out = osp.splitext(path)[0] + '-state-dict.pth'
        raise RuntimeError(
            f'CLIP weights file {path!r} (field `pretrained`) is a '
            'TorchScript archive; mmcoop does not load TorchScript (loading '
            'runs code from the file). Use `pretrained=\'openai\'` (open_clip '
            'fetches the same weights as a plain state dict), or convert the '
            'file once where you trust it: python -c "import open_clip, '
            f'torch; torch.save(open_clip.load_openai_model({path!r}, '
            f'device=\'cpu\').state_dict(), {out!r})" and set `pretrained` '
            'to the new file.')
    _check_vit_grid(model, path, model_name)
    try:
        # open_clip reads with torch.load(weights_only=True) (3.x; 2.x and
        # its TypeError fallback use torch's default, weights_only=True
        # since torch 2.6, which setup.cfg requires)
        open_clip.load_checkpoint(model, path, strict=True)
    except Exception as e:  # noqa: BLE001 - classified below
        _check_one_tower_file(path, _check_readable_state_dict(path))
        detail = ' '.join(str(e).split())
        detail = detail if len(detail) <= 600 else detail[:600] + '...'
        raise RuntimeError(
            f'CLIP weights in {path!r} do not fit the open_clip architecture '
            f'{model_name!r}: {detail}'
            ' Check `model_name` (e.g. RN101-quickgelu for the OpenAI RN101 '
            'weights).') from e


def _stored_shape(path: str, key: str) -> Optional[tuple]:
    """The shape of the tensor ``key`` (also under a ``module.`` prefix or
    in a ``state_dict`` entry) in the weights file ``path``, read without
    loading the file (memory-mapped zip or safetensors); None where that
    cannot be told cheaply (the load then decides)."""
    try:
        if path.endswith('.safetensors'):
            from safetensors import safe_open
            with safe_open(path, 'pt') as f:
                for name in f.keys():
                    if name == key or name.endswith('.' + key):
                        return tuple(f.get_slice(name).get_shape())
            return None
        state = torch.load(path, map_location='cpu', weights_only=True,
                           mmap=True)
    except Exception:  # noqa: BLE001 - legacy format etc.: not told here
        return None
    if isinstance(state, dict) and isinstance(state.get('state_dict'), dict):
        state = state['state_dict']
    for name, value in (state.items() if isinstance(state, dict) else ()):
        if (name == key or name.endswith('.' + key)) and hasattr(
                value, 'shape'):
            return tuple(value.shape)
    return None


def _check_vit_grid(model: torch.nn.Module, path: str,
                    model_name: str) -> None:
    """Refuse ViT weights made for another image size: open_clip resizes
    their positional embedding to the architecture's grid while loading,
    silently (ViT-L-14 and ViT-L-14-336 differ only there), and the tower
    then resizes it again to ``input_resolution``: features of neither."""
    own = getattr(getattr(model, 'visual', None), 'positional_embedding',
                  None)
    if own is None or own.dim() != 2:
        return  # not an open_clip ViT (ResNet's attnpool, timm towers)
    stored = _stored_shape(path, 'visual.positional_embedding')
    if stored is None or stored[0] == own.shape[0]:
        return

    def grid(length):
        side = int(round((length - 1)**0.5))
        return f'{side}x{side}' if side * side == length - 1 else '?'

    patch = getattr(model.visual, 'patch_size', None)
    patch = patch[0] if isinstance(patch, (tuple, list)) else patch
    size = (f', {int(grid(stored[0]).split("x")[0]) * patch} px for patch '
            f'{patch}' if patch and grid(stored[0]) != '?' else '')
    raise RuntimeError(
        f'CLIP weights in {path!r} have a ViT positional embedding of '
        f'{stored[0]} positions (a {grid(stored[0])} grid{size}), but '
        f'{model_name!r} has {own.shape[0]} ({grid(own.shape[0])}): the '
        'weights are of another image size, and loading would resize '
        'their positions silently. Fix: the architecture of these weights '
        "as `model_name` (e.g. 'ViT-L-14-336-quickgelu' for OpenAI's "
        'ViT-L/14@336px); `input_resolution` then sets the size the tower '
        'runs at.')


#: open_clip's key prefixes of the text tower (and the shared scalars)
_TEXT_KEYS = ('token_embedding.', 'positional_embedding', 'transformer.',
              'ln_final.', 'text_projection', 'text.', 'logit_scale',
              'logit_bias', 'attn_mask')


def _check_one_tower_file(path: str, keys: List[str]) -> None:
    """Raise ``CheckpointReadError`` if the weights file ``path`` (its
    tensor names ``keys``) holds one tower of an open_clip CLIP only (an
    image encoder saved alone, or a text encoder): then the fault is the
    file, not ``model_name``. Keys of other layouts (big_vision ``.npz``,
    Hugging Face ``vision_model.*``) are left to the load's own error."""
    names = [k[len('module.'):] if k.startswith('module.') else k
             for k in keys]
    image = sum(n.startswith('visual.') for n in names)
    text = sum(n.startswith(_TEXT_KEYS) for n in names)
    if names and (image == len(names) or text == len(names)):
        has, lacks = (('the image tower (visual.*)', 'the text tower')
                      if image else ('the text tower', 'the image tower '
                                     '(visual.*)'))
        raise CheckpointReadError(
            f'CLIP weights file {path!r} (field `pretrained`) holds '
            f'{has} only ({len(names)} tensors): the file lacks {lacks}, '
            'which mmcoop uses (both towers are frozen and read from one '
            'file). Fix: set `pretrained` to the whole CLIP checkpoint '
            "(e.g. open_clip_pytorch_model.bin) or an open_clip tag such "
            "as 'openai'.")


def _check_readable_state_dict(path: str) -> List[str]:
    """The tensor names in the weights file ``path``; raise
    ``CheckpointReadError`` naming the file and the fix if ``path`` cannot
    be read as a mapping of arrays (corrupt, truncated, of another format,
    or holding something else): then the fault is the file, not
    ``model_name``. Unsafe pickles are refused by
    :func:`~mmcoop.utils.checkpoint.safe_torch_load`."""
    try:
        if path.endswith('.safetensors'):
            from safetensors.torch import load_file
            weights = load_file(path)
        elif path.endswith(('.npz', '.npy')):
            import numpy as np
            weights = np.load(path, allow_pickle=False)
        else:
            weights = safe_torch_load(path, what='CLIP weights')
    except (CheckpointReadError, UnsafeCheckpointError):
        raise
    except Exception as e:  # noqa: BLE001 - each reader has its own errors
        weights, reason = None, f'{type(e).__name__}: {e}'
    else:
        reason = f'it holds a {type(weights).__name__}'
    if not hasattr(weights, 'keys'):
        raise CheckpointReadError(
            f'CLIP weights file {path!r} (field `pretrained`) is not a '
            f'readable state dict ({" ".join(reason.split())[:300]}). Fix: '
            'replace the file (download it again), or set `pretrained` to '
            "an open_clip tag such as 'openai'.")
    if isinstance(weights, dict) and isinstance(
            weights.get('state_dict'), dict):
        weights = weights['state_dict']  # as open_clip.load_checkpoint
    return [str(k) for k in weights.keys()]


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


def check_model_name(model_name: str, field: str = '`model_name`') -> None:
    """Raise a ``ValueError`` naming ``field`` unless ``model_name`` is an
    open_clip architecture (mmcoop's tiny configs included)."""
    register_mmcoop_clip_configs()
    if model_name not in open_clip.list_models():
        raise ValueError(
            f'Unknown open_clip model name {model_name!r} (field '
            f'{field}). Use one of open_clip.list_models(), e.g. '
            "'RN101-quickgelu', 'RN50-quickgelu', 'ViT-B-16', or an mmcoop "
            "tiny config such as 'mmcoop-tiny-RN'.")


#: the constructor fields that make two frozen towers one CLIP (the same
#: architecture and weights; ``init_seed`` only for random weights)
CLIP_IDENTITY = ('model_name', 'pretrained', 'force_quick_gelu', 'init_seed')


def is_weights_path(pretrained) -> bool:
    """Whether ``pretrained`` names a local weights file (not an open_clip
    tag): it holds a path separator or has a weights suffix, or it exists
    and is no open_clip tag (a folder ``./openai`` in the working
    directory does not turn the tag ``'openai'`` into a path; write
    ``'./openai'`` for that)."""
    text = str(pretrained)
    if os.sep in text or text.endswith(_WEIGHT_FILE_SUFFIXES):
        return True
    if text in {tag for _, tag in open_clip.list_pretrained()}:
        return False
    return osp.exists(osp.expanduser(text))


def clip_difference(a: dict, b: dict) -> Optional[str]:
    """The :data:`CLIP_IDENTITY` field in which two towers' identities
    (dicts of those fields) show different CLIPs, or None where they may be
    one. Weights files are not compared by path (one file lies at other
    paths on other machines); tags are, and random weights by their seed."""
    for field in ('model_name', 'force_quick_gelu'):
        if a.get(field) != b.get(field):
            return field
    wa, wb = a.get('pretrained'), b.get('pretrained')
    if (wa is None) != (wb is None):
        return 'pretrained'
    if wa is None:
        return None if a.get('init_seed') == b.get('init_seed') \
            else 'init_seed'
    if is_weights_path(wa) or is_weights_path(wb):
        return None
    return None if wa == wb else 'pretrained'


def clip_embed_dim(model_name: str) -> Optional[int]:
    """The joint embedding width D of the open_clip architecture
    ``model_name`` from its config (None for a name open_clip does not
    know), without building it."""
    register_mmcoop_clip_configs()
    config = open_clip.get_model_config(model_name) if isinstance(
        model_name, str) else None
    return (config or {}).get('embed_dim')


def _build_open_clip(model_name, pretrained, force_quick_gelu, cache_dir):
    check_model_name(model_name)
    logger = MMLogger.get_current_instance()
    kwargs = dict(force_quick_gelu=force_quick_gelu, precision='fp32')
    if pretrained is None:
        logger.warning(
            f'CLIP {model_name} is randomly initialised (pretrained=None): '
            'fine for tests and the offline demo, meaningless for real data.')
        model = open_clip.create_model(model_name, pretrained=None, **kwargs)
    elif is_weights_path(pretrained):
        with _quiet_random_init_notice():  # the weights are loaded next
            model = open_clip.create_model(model_name, pretrained=None,
                                           **kwargs)
        load_clip_weights(model, osp.expanduser(str(pretrained)),
                          model_name)
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
            quick = (' These weights need QuickGELU: use model_name='
                     f"'{model_name}-quickgelu' with the file."
                     if _needs_quick_gelu(model_name, pretrained,
                                          force_quick_gelu) else '')
            raise RuntimeError(
                f'Could not fetch CLIP weights {model_name}:{pretrained} '
                f'({type(e).__name__}: {e}). On an offline machine download '
                f'{_weights_source(model_name, pretrained)} elsewhere and set '
                f"`pretrained='/path/to/file'` in the config.{quick}") from e
    if _needs_quick_gelu(model_name, pretrained, force_quick_gelu):
        source = (f'the {pretrained!r} weights' if not is_weights_path(
            pretrained) else f'weights of {model_name} (every open_clip '
                  f'release of it: {_tags(model_name)})')
        logger.warning(
            f'{model_name} with {source} should use QuickGELU, which this '
            f'architecture lacks: its text tower (and a ViT image tower) '
            f'then computes other features. Fix: model_name='
            f"'{model_name}-quickgelu' (or force_quick_gelu=True).")
    model.float().eval()
    return model


def _tags(model_name: str) -> List[str]:
    return list(open_clip.list_pretrained_tags_by_model(model_name))


def _needs_quick_gelu(model_name: str, pretrained,
                      force_quick_gelu: bool) -> bool:
    """Whether ``model_name`` (without QuickGELU) is given weights trained
    with it: a tag open_clip marks ``quick_gelu`` (OpenAI's, YFCC's), or a
    local file for an architecture all of whose releases are such (RN50,
    RN101: a file of it is one of them)."""
    if pretrained is None or force_quick_gelu or (
            open_clip.get_model_config(model_name) or {}).get('quick_gelu'):
        return False
    tags = _tags(model_name)
    if is_weights_path(pretrained):
        chosen = tags
    else:
        chosen = [pretrained] if pretrained in tags else []
    return bool(chosen) and all(
        (open_clip.get_pretrained_cfg(model_name, t) or {}).get('quick_gelu')
        for t in chosen)


class _RandomInitNotice(logging.Filter):
    """open_clip's 'No pretrained weights loaded ... initialized randomly'
    (root logger), untrue when mmcoop loads a weights file next."""

    def filter(self, record: logging.LogRecord) -> bool:
        return 'No pretrained weights loaded' not in record.getMessage()


@contextlib.contextmanager
def _quiet_random_init_notice():
    root = logging.getLogger()
    notice = _RandomInitNotice()
    root.addFilter(notice)
    try:
        yield
    finally:
        root.removeFilter(notice)


def _weights_source(model_name: str, tag: str) -> str:
    """Where open_clip fetches ``model_name:tag`` from, in words."""
    cfg = open_clip.get_pretrained_cfg(model_name, tag) or {}
    hub = cfg.get('hf_hub', '')
    if hub:
        repo, filename = osp.split(hub)  # 'org/repo/' or 'org/repo/file'
        return (f'https://huggingface.co/{repo}/resolve/main/'
                f'{filename or "open_clip_pytorch_model.bin"}')
    return cfg.get('url') or 'the checkpoint'


def build_clip_tokenizer(model_name: str,
                         tokenizer: Union[None, str, Callable] = None
                         ) -> Callable:
    """The prompt tokenizer of the open_clip model ``model_name``: ``N``
    strings -> ``(N, context_length)`` token ids.

    Args:
        model_name (str): open_clip architecture.
        tokenizer (str | callable, optional): where it comes from.

            * None: open_clip's own, :func:`open_clip.get_tokenizer`: CLIP's
              BPE, or the Hugging Face tokenizer the model config names
              (``text_cfg.hf_tokenizer_name``: SigLIP, SigLIP2), which
              ``transformers`` loads from the hub or its cache;
            * a str: a local folder (or a hub id) holding that Hugging Face
              tokenizer, e.g. the downloaded ``timm/ViT-B-16-SigLIP``
              repository, for machines without the hub. It is loaded as
              open_clip loads the model's own (``HFTokenizer`` with the
              model config's ``tokenizer_kwargs``, ``tokenizer_mode`` and
              context length), so only for models whose config names one;
            * a callable: used as is.

    Raises:
        TypeError: ``tokenizer`` of another type.
        ValueError: a folder for a model that has no Hugging Face tokenizer.
        FileNotFoundError: a path that does not exist.
        RuntimeError: the Hugging Face tokenizer cannot be loaded (no
            ``transformers``, or offline), with the fix.
    """
    if callable(tokenizer):
        return tokenizer
    if tokenizer is not None and not isinstance(tokenizer, str):
        raise TypeError(
            '`text_encoder.tokenizer` must be None (open_clip\'s tokenizer '
            f'of {model_name!r}), a Hugging Face tokenizer folder or a '
            f'callable, got {type(tokenizer).__name__} {tokenizer!r}.')
    register_mmcoop_clip_configs()
    text_cfg = (open_clip.get_model_config(model_name) or {}).get(
        'text_cfg', {})
    hf_name = text_cfg.get('hf_tokenizer_name')
    if tokenizer is not None and not hf_name:
        raise ValueError(
            f'`text_encoder.tokenizer={tokenizer!r}`: {model_name!r} '
            "tokenizes with open_clip's built-in CLIP tokenizer (its config "
            'names no Hugging Face tokenizer), so there is nothing to load '
            'from a folder: remove `tokenizer`.')
    if tokenizer is not None and not osp.isdir(osp.expanduser(tokenizer)) \
            and (osp.isabs(tokenizer) or tokenizer.startswith(('.', '~'))
                 or osp.exists(tokenizer)):
        raise FileNotFoundError(
            f'`text_encoder.tokenizer={tokenizer!r}` is not a folder. Set '
            "it to the folder of the model's Hugging Face tokenizer (e.g. "
            f'the downloaded {hf_name!r} repository, with its '
            'tokenizer.json / tokenizer_config.json), or None for '
            "open_clip's.")
    try:
        if tokenizer is None:
            return open_clip.get_tokenizer(model_name)
        from open_clip.tokenizer import HFTokenizer
        return HFTokenizer(
            osp.expanduser(tokenizer),
            context_length=text_cfg.get('context_length', 77),
            tokenizer_mode=text_cfg.get('tokenizer_mode'),
            **text_cfg.get('tokenizer_kwargs', {}))
    except Exception as e:  # noqa: BLE001 - import / hub errors vary
        if not hf_name:
            raise
        fix = (f'check that {tokenizer!r} holds the tokenizer files of '
               f'{hf_name!r} (tokenizer.json, tokenizer_config.json)'
               if tokenizer else
               f'on a machine without the hub, download the {hf_name!r} '
               'repository elsewhere and set '
               '`model.head.text_encoder.tokenizer` to its folder')
        raise RuntimeError(
            'Could not load the Hugging Face tokenizer '
            f'{tokenizer or hf_name!r} of {model_name!r} '
            f'({type(e).__name__}: {" ".join(str(e).split())[:300]}). It '
            "needs `transformers` (pip install 'mmcoop[siglip]'); "
            f'{fix}.') from e


def clip_normalization(model_name: str,
                       pretrained: Optional[str] = None) -> tuple:
    """``(mean, std)`` (RGB, 0-1 scale) with which ``model_name``'s
    weights expect images, from open_clip's pretrained configs: those of
    the tag ``pretrained``, or, for a local file or None, the one all of the
    model's tags share (CLIP's statistics where a config states none, and
    for models without tags, such as mmcoop's tiny ones).

    Raises:
        ValueError: the model's tags disagree and ``pretrained`` is not a
            tag (name the tag, or use a config's data preprocessor).
    """
    register_mmcoop_clip_configs()
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    tags = [pretrained] if pretrained in tags else tags
    stats = set()
    for tag in tags:
        cfg = open_clip.get_pretrained_cfg(model_name, tag) or {}
        stats.add((tuple(cfg.get('mean', open_clip.OPENAI_DATASET_MEAN)),
                   tuple(cfg.get('std', open_clip.OPENAI_DATASET_STD))))
    if len(stats) > 1:
        raise ValueError(
            f'The open_clip weights of {model_name!r} expect different image '
            f'normalisations ({sorted(stats)}); with pretrained='
            f'{pretrained!r} it cannot be told which. Give the open_clip tag '
            f'({tags}) or a config whose data_preprocessor states it.')
    return stats.pop() if stats else (tuple(open_clip.OPENAI_DATASET_MEAN),
                                      tuple(open_clip.OPENAI_DATASET_STD))


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

# Copyright (c) mmcoop contributors. All rights reserved.
"""Version facts about the dependency stack that mmcoop works around.

1. torch >= 2.6 defaults ``torch.load`` to ``weights_only=True``; mmengine
   0.10.x resume checkpoints pickle ``HistoryBuffer`` and fail to load.
   mmcoop never flips the default, process-wide or otherwise: its runner
   (:class:`mmcoop.engine.MMCoopRunner`) reads every checkpoint with
   ``weights_only=True``, MMEngine's runtime state through inert stand-ins
   allow-listed for that one call
   (``mmcoop.utils.safe_torch_load(..., runtime_state=True)``).
2. setuptools >= 82 has no ``pkg_resources``, which mmengine 0.10.x imports
   to resolve ``mmpretrain::`` config bases. mmcoop vendors its ``_base_``
   configs (relative paths) and pins ``setuptools<82`` for users who inherit
   mmpretrain bases themselves.
"""
import importlib.util

import mmengine
import torch
from mmengine.utils import digit_version

TORCH_DEFAULT_WEIGHTS_ONLY = digit_version(
    torch.__version__.split('+')[0]) >= digit_version('2.6.0')
MMENGINE_RESUME_NEEDS_TRUSTED_LOAD = TORCH_DEFAULT_WEIGHTS_ONLY and \
    digit_version(mmengine.__version__) <= digit_version('0.10.7')


def has_pkg_resources() -> bool:
    """Whether ``pkg_resources`` (needed for ``mmpretrain::`` bases) exists."""
    return importlib.util.find_spec('pkg_resources') is not None


def check_external_base(cfg_path: str, base: str) -> None:
    """Raise a clear error if a config inherits a package base unusable here.

    Args:
        cfg_path (str): the config that names the base.
        base (str): the ``_base_`` entry, e.g. ``'mmpretrain::...'``.
    """
    if '::' in base and not has_pkg_resources():
        raise RuntimeError(
            f'{cfg_path}: `_base_ = {base!r}` needs pkg_resources, which '
            'setuptools>=82 removed (mmengine 0.10.7 imports it). Fix: '
            "pip install 'setuptools<82', or copy the base file next to your "
            'config and inherit it by relative path.')

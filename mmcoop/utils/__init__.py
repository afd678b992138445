# Copyright (c) mmcoop contributors. All rights reserved.
from .checkpoint import (CheckpointMismatchError, CheckpointReadError,
                         UnsafeCheckpointError, atomic_torch_save,
                         safe_torch_load)
from .setup_env import register_all_modules

__all__ = [
    'register_all_modules', 'safe_torch_load', 'atomic_torch_save',
    'UnsafeCheckpointError', 'CheckpointReadError', 'CheckpointMismatchError'
]

# Copyright (c) mmcoop contributors. All rights reserved.
"""Save the global RNG states in checkpoints and restore them on resume."""
import random
from typing import Optional

import numpy as np
import torch
from mmengine.hooks import Hook

from mmcoop.registry import HOOKS

RNG_STATE_KEY = 'rng_state'


def get_rng_state() -> dict:
    """The states of Python's ``random``, NumPy's and torch's global RNGs.

    Only tensors, numpy arrays and plain Python values, so the state loads
    with ``safe_torch_load(..., runtime_state=True)``.
    """
    state = dict(
        python=random.getstate(),
        numpy=np.random.get_state(),
        torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`get_rng_state` returned."""
    if 'python' in state:
        version, internal, gauss = state['python']
        random.setstate((version, tuple(internal), gauss))
    if 'numpy' in state:
        np.random.set_state(tuple(state['numpy']))
    if 'torch' in state:
        torch.set_rng_state(state['torch'].cpu())
    cuda = state.get('cuda')
    if cuda and torch.cuda.is_available():
        n = min(len(cuda), torch.cuda.device_count())
        for i in range(n):
            torch.cuda.set_rng_state(cuda[i].cpu(), i)


def is_resuming(runner) -> bool:
    """Whether the checkpoint being loaded is resumed (``MMCoopRunner.
    resuming``; for another runner, its config's ``resume``: MMEngine's
    runner loads ``load_from`` only when it does not resume)."""
    resuming = getattr(runner, 'resuming', None)
    if resuming is None:  # a plain mmengine Runner
        resuming = runner.cfg.get('resume', False)
    return bool(resuming)


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Make ``--resume`` continue the random streams of the crashed run.

    MMEngine's resume restores the model, optimizer, schedulers and the
    epoch counter but not the global RNGs, so the augmentations drawn after
    a resume (``TensorCutout``, ``TensorRandAugment`` and the rest of the
    pipeline use NumPy's global RNG in the main process when
    ``num_workers=0``) differ from those of an uninterrupted run.

    * ``before_save_checkpoint``: stores the Python, NumPy, torch (and CUDA)
      RNG states in ``checkpoint['rng_state']`` (tensors, a numpy array and
      plain values).
    * ``after_load_checkpoint``: when the runner *resumes* (not for
      ``load_from`` / testing), restores them.

    :class:`~mmcoop.engine.MMCoopRunner` registers it automatically (opt
    out with ``mmcoop_hooks = dict(rng_state=False)`` in the config).

    Not covered: the RNGs of dataloader worker processes. MMEngine seeds
    each worker from ``randomness.seed`` when the workers start, so with
    ``num_workers > 0`` and ``persistent_workers=False`` every epoch starts
    its workers from the same seeds (an uninterrupted and a resumed run
    agree); with ``persistent_workers=True`` a resumed run restarts the
    worker streams and its augmentations differ from the uninterrupted run
    (statistically the same, not bit for bit).
    """

    priority = 'VERY_LOW'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint[RNG_STATE_KEY] = get_rng_state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if not is_resuming(runner):
            return
        state: Optional[dict] = checkpoint.get(RNG_STATE_KEY)
        if state is None:
            runner.logger.warning(
                'The resumed checkpoint holds no RNG state (written without '
                'RNGStateHook): random augmentations after the resume will '
                'differ from those of an uninterrupted run.')
            return
        set_rng_state(state)
        runner.logger.info('Restored the Python/NumPy/torch RNG states of '
                           'the resumed checkpoint.')

# Copyright (c) mmcoop contributors. All rights reserved.
"""What "frozen" means for the CLIP towers, in one place."""
import torch
import torch.nn as nn


class FrozenMixin:
    """Freeze a module for good.

    * no parameter requires grad;
    * the module stays in eval mode (BatchNorm statistics and dropout never
      change), even after ``model.train()``;
    * its tensors are left out of ``state_dict()`` unless
      ``save_frozen=True``: checkpoints hold only what was trained. When a
      checkpoint without them is loaded, the weights the module was built
      with are kept (no "missing keys" noise, no partial load).

    Call :meth:`_freeze` at the end of ``__init__``.
    """

    save_frozen: bool = False

    def _freeze(self, save_frozen: bool = False) -> None:
        self.save_frozen = save_frozen
        for param in self.parameters():
            param.requires_grad_(False)
        nn.Module.train(self, False)
        self._register_state_dict_hook(_drop_frozen_tensors)
        self._register_load_state_dict_pre_hook(
            _fill_absent_frozen_tensors, with_module=True)
        # a checkpoint that carries the frozen tensors sets them anew
        self.register_load_state_dict_post_hook(
            lambda module, keys: module._record_weights())
        self._record_weights()

    def _record_weights(self) -> None:
        self._weights_record = _weights_record(self)

    def check_weights_unchanged(self, name: str) -> None:
        """Raise ``ValueError`` when the tower's tensors changed since it
        was built (or loaded from a checkpoint that carries them): an
        ``init_cfg`` of a module that contains the tower (MMEngine's
        ``init_weights`` applies ``layer='Linear'`` initialisers to every
        submodule) re-initialises a frozen CLIP, which no checkpoint saves
        and nothing restores. ``name``: the tower's path in the model."""
        now = _weights_record(self)
        before = getattr(self, '_weights_record', None)
        if before is None or torch.allclose(now, before, rtol=1e-3,
                                            atol=0):
            return
        raise ValueError(
            f'The frozen CLIP tower `{name}` ({type(self).__name__}) was '
            're-initialised after it was built: an `init_cfg` of the model '
            '(`model.init_cfg`) or of a module containing the tower '
            '(`model.head.init_cfg` holds the text tower) applied its '
            'initialisers to the tower\'s layers. Its weights are CLIP\'s '
            'and are never trained or saved, so training would fit the '
            'prompts to a random CLIP and testing would use the real one. '
            'Fix: remove that init_cfg, or restrict it to the trainable '
            "modules (e.g. `override=dict(name='fc')`).")

    def train(self, mode: bool = True):
        """Ignore ``mode``: a frozen tower is always in eval mode."""
        return nn.Module.train(self, False)


def _drop_frozen_tensors(module, state_dict, prefix, local_metadata):
    if module.save_frozen:
        return state_dict
    for key in [k for k in state_dict if k.startswith(prefix)]:
        del state_dict[key]
    return state_dict


def _fill_absent_frozen_tensors(module, state_dict, prefix, local_metadata,
                                strict, missing_keys, unexpected_keys,
                                error_msgs):
    if any(k.startswith(prefix) for k in state_dict):
        return  # the checkpoint carries the frozen weights: load them
    save_frozen, module.save_frozen = module.save_frozen, True
    try:
        own = module.state_dict(prefix=prefix, keep_vars=False)
    finally:
        module.save_frozen = save_frozen
    state_dict.update(own)


def _weights_record(module: nn.Module) -> torch.Tensor:
    """``(T, 2)`` float64: the L1 and L2 norms of each of ``module``'s
    tensors (parameters and buffers; no cancellation, no copy of the
    tensor, and a change of device or of reduction order moves them by far
    less than 1e-3 relative, a re-initialisation by far more)."""
    def norms(t):  # accumulated in fp32 at least (fp32 towers: no copy)
        dtype = torch.promote_types(t.dtype, torch.float32)
        return torch.stack([
            torch.linalg.vector_norm(t.detach(), p, dtype=dtype)
            for p in (1, 2)
        ]).double().cpu()

    rows = [
        norms(t) for t in list(module.parameters()) + list(module.buffers())
        if t.is_floating_point()
    ]
    return torch.stack(rows) if rows else torch.zeros(0, 2,
                                                      dtype=torch.float64)

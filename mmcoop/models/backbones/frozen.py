# Copyright (c) mmcoop contributors. All rights reserved.
"""What "frozen" means for the CLIP towers, in one place."""
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

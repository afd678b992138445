# Copyright (c) mmcoop contributors. All rights reserved.
"""PyTorch's fused multi-head attention inference kernel, and when mmcoop
turns it off.

In evaluation without gradients, ``nn.MultiheadAttention`` with an even
number of heads and no mask (every real CLIP ViT's image tower) runs one
fused kernel, ``aten::_native_multi_head_attention``, instead of its
in-projection, scaled dot-product attention and out-projection. The two
compute the same function, but

* ONNX has no form of the fused kernel (the export fails), and
* ``torch.utils.flop_counter.FlopCounterMode`` does not count it (the
  attention of every block would be missing from a FLOP count).

:func:`composite_attention` runs a block of code on the composite path,
through PyTorch's own switch (``torch.backends.mha``), and restores the
setting afterwards.
"""
import contextlib

import torch

__all__ = ['composite_attention']


@contextlib.contextmanager
def composite_attention():
    """Run ``nn.MultiheadAttention`` on its composite path inside the
    block (see the module docstring)."""
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)

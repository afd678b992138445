# Copyright (c) mmcoop contributors. All rights reserved.
"""FLOPs of one call, as ``torch.utils.flop_counter.FlopCounterMode`` counts
them (matmuls, convolutions, attention; 2 FLOPs per multiply-add)."""
from typing import Callable

import torch
from torch.utils import flop_counter as fc

from mmcoop.utils.attention import composite_attention

__all__ = ['count_flops', 'cpu_attention_flop_formulas']


def cpu_attention_flop_formulas() -> dict:
    """FLOP formulas for the CPU flash-attention kernels.

    ``FlopCounterMode`` knows the CUDA attention kernels but not
    ``aten._scaled_dot_product_flash_attention_for_cpu`` (and its
    backward), which the text transformer uses on CPU; without these
    formulas the attention matmuls (~2.5 % of the 77-token text FLOPs) are
    missed. The formulas are torch's own ``sdpa_flop_count`` and
    ``sdpa_backward_flop_count``.

    Returns:
        dict: ``{aten op: formula}``, the ``custom_mapping`` of
        ``FlopCounterMode`` (empty where torch lacks the op or formula).
    """
    aten = torch.ops.aten
    mapping = {}
    fwd = getattr(aten, '_scaled_dot_product_flash_attention_for_cpu', None)
    bwd = getattr(aten,
                  '_scaled_dot_product_flash_attention_for_cpu_backward',
                  None)
    if fwd is not None and hasattr(fc, 'sdpa_flop_count'):

        def fwd_flop(query, key, value, *args, out_shape=None, **kwargs):
            # FlopCounterMode passes shapes in place of tensors
            return fc.sdpa_flop_count(query, key, value)

        mapping[fwd] = fwd_flop
    if bwd is not None and hasattr(fc, 'sdpa_backward_flop_count'):

        def bwd_flop(grad_out, query, key, value, *args, out_shape=None,
                     **kwargs):
            return fc.sdpa_backward_flop_count(grad_out, query, key, value)

        mapping[bwd] = bwd_flop
    return mapping


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` (forward and any backward it runs).

    ``fn`` runs with PyTorch's fused multi-head attention kernel off
    (:func:`~mmcoop.utils.attention.composite_attention`): the counter
    does not see inside it, so a ViT image tower's attention would be
    missing from the count; the composite path computes the same
    function."""
    counter = fc.FlopCounterMode(
        display=False, custom_mapping=cpu_attention_flop_formulas())
    with composite_attention(), counter:
        fn()
    return int(counter.get_total_flops())

# Copyright (c) mmcoop contributors. All rights reserved.
from .finite_check_hook import FiniteCheckHook, NonFiniteError
from .partial_label_mask_hook import PartialLabelMaskHook

__all__ = ['FiniteCheckHook', 'NonFiniteError', 'PartialLabelMaskHook']

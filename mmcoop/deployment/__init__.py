# Copyright (c) mmcoop contributors. All rights reserved.
"""Deployment: a trained model as one fixed graph (ONNX, TorchScript)."""
from .export import (FORMATS, ONNX_OPSETS, PRECISIONS, TOLERANCES, ExportError,
                     check_export_options, deployment_metadata, export_model,
                     pipeline_steps)
from .folded import (INPUT_FORMATS, FoldedRegionHead, FoldedTagger,
                     class_indices, fold_head, fold_model)

__all__ = [
    'export_model', 'check_export_options', 'deployment_metadata',
    'pipeline_steps',
    'ExportError', 'FORMATS',
    'ONNX_OPSETS', 'PRECISIONS', 'TOLERANCES', 'INPUT_FORMATS',
    'FoldedRegionHead', 'FoldedTagger', 'class_indices', 'fold_head',
    'fold_model'
]

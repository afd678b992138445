# Copyright (c) mmcoop contributors. All rights reserved.
from ..deployment import export_model, fold_model
from .inference import (MultiLabelInferencer, build_test_pipeline,
                        inference_model, init_model)
from .visualization import draw_predictions

__all__ = [
    'init_model', 'inference_model', 'MultiLabelInferencer',
    'build_test_pipeline', 'draw_predictions', 'export_model', 'fold_model'
]

# Copyright (c) mmcoop contributors. All rights reserved.
from ..deployment import export_model, fold_model
from .inference import (MultiLabelInferencer, build_test_pipeline,
                        config_classnames, default_threshold, inference_config,
                        inference_model, init_model, load_config,
                        resolve_threshold)
from .model_zoo import (fetch_checkpoint, get_model, list_models, model_info,
                        register_to_mmpretrain)
from .visualization import draw_predictions

__all__ = [
    'load_config', 'inference_config', 'init_model', 'config_classnames',
    'inference_model',
    'default_threshold', 'resolve_threshold',
    'MultiLabelInferencer', 'build_test_pipeline', 'draw_predictions',
    'export_model', 'fold_model', 'list_models', 'get_model', 'model_info',
    'fetch_checkpoint', 'register_to_mmpretrain'
]

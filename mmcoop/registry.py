# Copyright (c) mmcoop contributors. All rights reserved.
"""mmcoop registries.

Every registry is a child of the corresponding mmpretrain registry with the
scope ``mmcoop``. Lookups walk up to the parents, so configs that set
``default_scope='mmcoop'`` can use both mmcoop types (``PositiveCoOpHead``)
and mmpretrain / mmengine types (``ImageClassifier``, ``PackInputs``, ``SGD``)
without a scope prefix.
"""
from mmengine.registry import Registry
from mmpretrain.registry import DATA_SAMPLERS as MMPRETRAIN_DATA_SAMPLERS
from mmpretrain.registry import DATASETS as MMPRETRAIN_DATASETS
from mmpretrain.registry import EVALUATORS as MMPRETRAIN_EVALUATORS
from mmpretrain.registry import HOOKS as MMPRETRAIN_HOOKS
from mmpretrain.registry import LOG_PROCESSORS as MMPRETRAIN_LOG_PROCESSORS
from mmpretrain.registry import LOOPS as MMPRETRAIN_LOOPS
from mmpretrain.registry import METRICS as MMPRETRAIN_METRICS
from mmpretrain.registry import MODEL_WRAPPERS as MMPRETRAIN_MODEL_WRAPPERS
from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
from mmpretrain.registry import \
    OPTIM_WRAPPER_CONSTRUCTORS as MMPRETRAIN_OPTIM_WRAPPER_CONSTRUCTORS
from mmpretrain.registry import OPTIM_WRAPPERS as MMPRETRAIN_OPTIM_WRAPPERS
from mmpretrain.registry import OPTIMIZERS as MMPRETRAIN_OPTIMIZERS
from mmpretrain.registry import PARAM_SCHEDULERS as MMPRETRAIN_PARAM_SCHEDULERS
from mmpretrain.registry import RUNNERS as MMPRETRAIN_RUNNERS
from mmpretrain.registry import TRANSFORMS as MMPRETRAIN_TRANSFORMS
from mmpretrain.registry import VISBACKENDS as MMPRETRAIN_VISBACKENDS
from mmpretrain.registry import VISUALIZERS as MMPRETRAIN_VISUALIZERS

__all__ = [
    'RUNNERS', 'LOOPS', 'HOOKS', 'LOG_PROCESSORS', 'OPTIMIZERS',
    'OPTIM_WRAPPERS', 'OPTIM_WRAPPER_CONSTRUCTORS', 'PARAM_SCHEDULERS',
    'DATASETS', 'DATA_SAMPLERS', 'TRANSFORMS', 'MODELS', 'MODEL_WRAPPERS',
    'METRICS', 'EVALUATORS', 'VISUALIZERS', 'VISBACKENDS'
]

RUNNERS = Registry('runner', parent=MMPRETRAIN_RUNNERS, scope='mmcoop')
LOOPS = Registry('loop', parent=MMPRETRAIN_LOOPS, scope='mmcoop')
HOOKS = Registry(
    'hook',
    parent=MMPRETRAIN_HOOKS,
    scope='mmcoop',
    locations=['mmcoop.engine', 'mmcoop.demo'])
LOG_PROCESSORS = Registry(
    'log processor', parent=MMPRETRAIN_LOG_PROCESSORS, scope='mmcoop')
OPTIMIZERS = Registry(
    'optimizer', parent=MMPRETRAIN_OPTIMIZERS, scope='mmcoop')
OPTIM_WRAPPERS = Registry(
    'optim_wrapper', parent=MMPRETRAIN_OPTIM_WRAPPERS, scope='mmcoop')
OPTIM_WRAPPER_CONSTRUCTORS = Registry(
    'optimizer wrapper constructor',
    parent=MMPRETRAIN_OPTIM_WRAPPER_CONSTRUCTORS,
    scope='mmcoop')
PARAM_SCHEDULERS = Registry(
    'parameter scheduler',
    parent=MMPRETRAIN_PARAM_SCHEDULERS,
    scope='mmcoop',
    locations=['mmcoop.engine'])
DATASETS = Registry(
    'dataset',
    parent=MMPRETRAIN_DATASETS,
    scope='mmcoop',
    locations=['mmcoop.datasets', 'mmcoop.demo'])
DATA_SAMPLERS = Registry(
    'data sampler', parent=MMPRETRAIN_DATA_SAMPLERS, scope='mmcoop')
TRANSFORMS = Registry(
    'transform',
    parent=MMPRETRAIN_TRANSFORMS,
    scope='mmcoop',
    locations=['mmcoop.datasets'])
MODELS = Registry(
    'model',
    parent=MMPRETRAIN_MODELS,
    scope='mmcoop',
    locations=['mmcoop.models'])
MODEL_WRAPPERS = Registry(
    'model_wrapper', parent=MMPRETRAIN_MODEL_WRAPPERS, scope='mmcoop')
METRICS = Registry(
    'metric',
    parent=MMPRETRAIN_METRICS,
    scope='mmcoop',
    locations=['mmcoop.evaluation'])
EVALUATORS = Registry(
    'evaluator', parent=MMPRETRAIN_EVALUATORS, scope='mmcoop')
VISUALIZERS = Registry(
    'visualizer', parent=MMPRETRAIN_VISUALIZERS, scope='mmcoop')
VISBACKENDS = Registry(
    'vis_backend', parent=MMPRETRAIN_VISBACKENDS, scope='mmcoop')

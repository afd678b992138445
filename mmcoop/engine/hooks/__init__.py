# Copyright (c) mmcoop contributors. All rights reserved.
from .finite_check_hook import FiniteCheckHook, NonFiniteError
from .partial_label_mask_hook import PartialLabelMaskHook

__all__ = ['FiniteCheckHook', 'NonFiniteError', 'PartialLabelMaskHook']
from .rng_state_hook import RNGStateHook  # noqa: E402

__all__ += ['RNGStateHook']
from .class_check_hook import ClassCheckHook  # noqa: E402

__all__ += ['ClassCheckHook']
from .prediction_draw_hook import PredictionDrawHook  # noqa: E402

__all__ += ['PredictionDrawHook']
from .threshold_calibration_hook import ThresholdCalibrationHook  # noqa: E402

__all__ += ['ThresholdCalibrationHook']
from .runner_check_hook import RunnerCheckHook, RunnerTypeError  # noqa: E402

__all__ += ['RunnerCheckHook', 'RunnerTypeError']
from .protocol_check_hook import ProtocolCheckHook  # noqa: E402

__all__ += ['ProtocolCheckHook']
from .resume_validation_hook import ResumeValidationHook  # noqa: E402

__all__ += ['ResumeValidationHook']

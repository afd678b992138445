# Copyright (c) mmcoop contributors. All rights reserved.
from .multi_label import (PartialMultiLabelMetric, average_precision,
                          average_precision_per_class, calibrate_thresholds,
                          mean_average_precision, threshold_metrics,
                          topk_metrics)
from .unseen_classes import UnseenClassMetric

__all__ = [
    'PartialMultiLabelMetric', 'average_precision',
    'average_precision_per_class', 'mean_average_precision',
    'threshold_metrics', 'topk_metrics', 'calibrate_thresholds',
    'UnseenClassMetric'
]

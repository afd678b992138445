# Copyright (c) mmcoop contributors. All rights reserved.
from .multi_label import (STATE_COLOURS, ap_bar_figure, label_state_figure,
                          pr_curve_figure, prediction_figure,
                          ranked_examples_figure, save_figure, save_image)

__all__ = [
    'STATE_COLOURS', 'label_state_figure', 'prediction_figure',
    'pr_curve_figure', 'ap_bar_figure', 'ranked_examples_figure',
    'save_figure', 'save_image'
]

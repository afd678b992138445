# Copyright (c) mmcoop contributors. All rights reserved.
from .metrics import *  # noqa: F401,F403
from .per_class import (evaluator_per_class_ap, format_ap_table,
                        load_predictions, per_class_ap, per_class_rows,
                        precision_recall, ranked_examples)

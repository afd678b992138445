# Copyright (c) mmcoop contributors. All rights reserved.
from .partial_asymmetric_loss import (PartialAsymmetricLoss,
                                      check_partial_targets)

__all__ = ['PartialAsymmetricLoss', 'check_partial_targets']

# Copyright (c) mmcoop contributors. All rights reserved.
"""Experiments: evaluation protocols, label-proportion sweeps, result
tables and the paper's reference numbers."""
from .protocols import PROTOCOLS, apply_protocol

__all__ = ['PROTOCOLS', 'apply_protocol']

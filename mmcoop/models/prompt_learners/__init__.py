# Copyright (c) mmcoop contributors. All rights reserved.
from .prompt_learner import PromptLearner

__all__ = ['PromptLearner']

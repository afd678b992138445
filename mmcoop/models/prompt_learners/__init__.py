# Copyright (c) mmcoop contributors. All rights reserved.
from .prompt_learner import PromptLearner, ctx_init_words

__all__ = ['PromptLearner', 'ctx_init_words']

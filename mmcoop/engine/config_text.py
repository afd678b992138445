# Copyright (c) mmcoop contributors. All rights reserved.
"""A :class:`mmengine.config.Config` that formats its text once.

MMEngine's runner reads ``cfg.pretty_text`` when it dumps the config, logs
it, and at **every checkpoint save** (``meta['cfg']``). ``pretty_text``
runs yapf over the whole config each time. Measured on the 2-core
development CPU: 0.26 s for the COCO PositiveCoOp paper config (13 s over
50 epochs), and 2 s for the demo config with the feature cache, where six
checkpoint saves took 12 of the 30 s of a 6-epoch run. With the feature
cache an epoch can take seconds, so that is no longer negligible.
"""
from mmengine.config import Config

__all__ = ['FormatOnceConfig']


class FormatOnceConfig(Config):
    """``Config`` whose yapf-formatted ``pretty_text`` is memoised.

    The memo is keyed by the *unformatted* text (cheap to build), so a
    config changed after the first call is formatted again; the result is
    always equal to :attr:`Config.pretty_text`.
    """

    @classmethod
    def from_config(cls, cfg: Config) -> 'FormatOnceConfig':
        """Wrap ``cfg`` (shares its content; no copy)."""
        new = cls.__new__(cls)
        new.__setstate__(cfg.__getstate__())
        return new

    @property
    def pretty_text(self) -> str:
        if not self._format_python_code:
            return super().pretty_text
        object.__setattr__(self, '_format_python_code', False)
        try:
            raw = super().pretty_text
        finally:
            object.__setattr__(self, '_format_python_code', True)
        memo = self.__dict__.get('_formatted_text_memo')
        if memo is None or memo[0] != raw:
            memo = (raw, super().pretty_text)
            object.__setattr__(self, '_formatted_text_memo', memo)
        return memo[1]

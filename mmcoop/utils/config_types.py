# Copyright (c) mmcoop contributors. All rights reserved.
"""The type name of a registry config, whatever form its ``type`` has."""

__all__ = ['type_name']


def type_name(cfg) -> str:
    """The unscoped class name of a config's ``type``: ``'mmcoop.Foo'`` and
    ``'Foo'`` -> ``'Foo'``, a class -> its ``__name__``; ``''`` for
    anything that is not a dict with a type."""
    t = cfg.get('type', '') if isinstance(cfg, dict) else ''
    return t.split('.')[-1] if isinstance(t, str) else getattr(
        t, '__name__', '')

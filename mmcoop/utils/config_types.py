# Copyright (c) mmcoop contributors. All rights reserved.
"""The type name and the class of a registry config, whatever form its
``type`` has."""
import inspect
from typing import Optional

__all__ = ['type_name', 'registered_class']


def type_name(cfg) -> str:
    """The unscoped class name of a config's ``type``: ``'mmcoop.Foo'`` and
    ``'Foo'`` -> ``'Foo'``, a class -> its ``__name__``; ``''`` for
    anything that is not a dict with a type."""
    t = cfg.get('type', '') if isinstance(cfg, dict) else ''
    return t.split('.')[-1] if isinstance(t, str) else getattr(
        t, '__name__', '')


def registered_class(registry, cfg, scope: str = 'mmcoop') -> Optional[type]:
    """The class that the ``type`` of config ``cfg`` names, looked up as
    MMEngine's ``build_from_cfg`` does: ``Registry.get`` in the registry of
    the dict's ``_scope_``, else of ``scope``. A class given as ``type`` is
    itself. None for anything else: not a dict with a type, a name that is
    not registered (building it names it), or a builder function (such as
    ``HeldOutSplit``, which returns a dataset of the inner type)."""
    t = cfg.get('type') if isinstance(cfg, dict) else None
    if isinstance(t, str):
        with registry.switch_scope_and_registry(
                cfg.get('_scope_') or scope) as scoped:
            try:
                t = scoped.get(t)
            except RuntimeError:  # MMEngine's import of a dotted name
                return None
    return t if inspect.isclass(t) else None

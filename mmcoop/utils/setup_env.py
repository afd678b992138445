# Copyright (c) mmcoop contributors. All rights reserved.
import datetime
import warnings

from mmengine import DefaultScope


def register_all_modules(init_default_scope: bool = True) -> None:
    """Import every mmcoop module so that it registers itself.

    Args:
        init_default_scope (bool): set the default scope to ``'mmcoop'`` so
            that configs resolve mmcoop names first and mmpretrain / mmengine
            names through the parent registries. Defaults to True.
    """
    import mmcoop.datasets  # noqa: F401,F403
    import mmcoop.engine  # noqa: F401,F403
    import mmcoop.evaluation  # noqa: F401,F403
    import mmcoop.models  # noqa: F401,F403

    if not init_default_scope:
        return
    current_scope = DefaultScope.get_current_instance()
    if current_scope is None:
        DefaultScope.get_instance('mmcoop', scope_name='mmcoop')
    elif current_scope.scope_name != 'mmcoop':
        warnings.warn(f'The current default scope "{current_scope.scope_name}"'
                      ' is not "mmcoop"; `register_all_modules` forces it.')
        new_instance_name = f'mmcoop-{datetime.datetime.now()}'
        DefaultScope.get_instance(new_instance_name, scope_name='mmcoop')

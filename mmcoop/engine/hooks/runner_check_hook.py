# Copyright (c) mmcoop contributors. All rights reserved.
"""Stop a run of an mmcoop config that bypasses ``MMCoopRunner``.

``tools/train.py``, ``tools/test.py``, ``mim``, mmpretrain's tools and
``RUNNERS.build(cfg)`` follow the config's
``runner_type = 'mmcoop.engine.MMCoopRunner'``; MMEngine's own
``Runner.from_cfg(cfg)`` (the usual notebook call) does not, and would
silently drop what ``MMCoopRunner.from_cfg`` interprets (docs/architecture.md,
"Where each config key is read"): the evaluation protocol, the feature
cache, the device data path, the CLIP tower and checkpoint checks, safe
loading, the work-dir lock and mmcoop's default hooks. This hook is the one
part of an mmcoop config that such a runner still runs
(``default_hooks.mmcoop_runner`` in ``configs/_base_/default_runtime.py``).
"""
from mmengine.hooks import Hook

from mmcoop.registry import HOOKS

__all__ = ['RunnerCheckHook', 'RunnerTypeError']


class RunnerTypeError(RuntimeError):
    """An mmcoop config is run by a runner that ignores its keys."""


@HOOKS.register_module()
class RunnerCheckHook(Hook):
    """Before anything runs (``before_run``, before weights are loaded or a
    step is taken): a runner that is not an
    :class:`~mmcoop.engine.MMCoopRunner` raises :class:`RunnerTypeError`
    naming the mmcoop keys of its config it would ignore and the two calls
    that build the right runner. No-op under ``MMCoopRunner``."""

    priority = 'HIGHEST'

    def before_run(self, runner) -> None:
        from mmcoop.engine.config_checks import MMCOOP_KEYS
        from mmcoop.engine.runner import MMCoopRunner
        if isinstance(runner, MMCoopRunner):
            return
        cfg = getattr(runner, 'cfg', None) or {}
        ignored = sorted(k for k in MMCOOP_KEYS if k in cfg)
        what = (f'its keys {ignored} and ' if ignored else '') + \
            'mmcoop\'s checks, safe checkpoint loading, work-dir lock and ' \
            'default hooks'
        raise RunnerTypeError(
            f'{type(runner).__module__}.{type(runner).__name__} runs an '
            f'mmcoop config without {what} (they are read by '
            'MMCoopRunner.from_cfg; MMEngine\'s Runner.from_cfg ignores '
            "runner_type). Fix: build the runner with "
            '`from mmcoop.registry import RUNNERS; RUNNERS.build(cfg)` '
            '(as tools/train.py does) or `from mmcoop.engine import '
            'MMCoopRunner; MMCoopRunner.from_cfg(cfg)`; to run without '
            "them on purpose, delete cfg.default_hooks['mmcoop_runner'].")

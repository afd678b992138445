# Copyright (c) mmcoop contributors. All rights reserved.
"""Record the evaluation protocol in checkpoints; name a checkpoint of
another protocol when it is loaded."""
import os.path as osp
from typing import List, Optional

from mmengine.hooks import Hook

from mmcoop.registry import HOOKS
from .rng_state_hook import is_resuming

__all__ = ['ProtocolCheckHook', 'protocol_differences']

META_KEY = 'protocol'


def _normal(protocol: Optional[dict]) -> Optional[dict]:
    if not protocol:
        return None
    protocol = dict(protocol)
    if protocol.get('split_file'):
        protocol['split_file'] = osp.abspath(protocol['split_file'])
    return protocol


def protocol_differences(stored: Optional[dict],
                         now: Optional[dict]) -> List[str]:
    """``key: checkpoint value -> config value`` of two protocols (a
    checkpoint's ``meta['protocol']`` and the config's applied
    ``protocol``); empty when either is unknown."""
    stored, now = _normal(stored), _normal(now)
    if stored is None or now is None:
        return []
    return [
        f'{k}: {stored.get(k)!r} -> {now.get(k)!r}'
        for k in sorted(set(stored) | set(now))
        if stored.get(k) != now.get(k)
    ]


@HOOKS.register_module()
class ProtocolCheckHook(Hook):
    """Keep the protocol with the weights it selected.

    :func:`mmcoop.experiments.apply_protocol` adds this hook, and the
    runner registers it for every config (``mmcoop_hooks.protocol_check``).
    Every checkpoint gets ``meta['protocol']`` (the applied ``protocol`` of
    the config: name, selection, and for ``clean`` the split). When a
    checkpoint that records one is loaded (also with a config that sets
    no protocol):

    * ``--resume`` under another protocol raises: the best score and the
      checkpoints kept so far were selected under the recorded one;
    * testing it (or ``load_from``) with a config of another protocol name
      logs a warning naming both: its numbers are those of the recorded
      protocol's model selection (e.g. ``official``: the best epoch on the
      test split), whatever the test config is called.
    """

    priority = 'NORMAL'

    @staticmethod
    def _without_protocol(runner, stored: dict, source: str) -> None:
        """A checkpoint of a protocol loaded with a config that sets none
        (e.g. a shipped paper config): a resume would select under other
        rules; a test reports the recorded protocol's model, without what
        the protocol adds (``clean``: the calibrated thresholds)."""
        name = stored.get('name')
        if is_resuming(runner):
            raise ValueError(
                f'{source}: trained under protocol {dict(stored)!r}, resumed '
                'with a config that sets no protocol; the best checkpoint '
                'and score kept so far were selected under the first. Fix: '
                f"resume with protocol=dict(name={name!r}, ...) as "
                'recorded, or train in a new --work-dir.')
        runner.logger.warning(
            f'{source}: trained and selected under protocol {name!r} '
            f'(selection {stored.get("selection")!r}), loaded with a config '
            'that sets no protocol: its numbers are those of the '
            f'{name!r} protocol\'s model selection, and what the protocol '
            'adds to a test (clean: the calibrated thresholds, CF1_calib) '
            f'is not applied. Fix: test with protocol={name!r} '
            f'(--cfg-options protocol.name={name}), or label the numbers '
            f'{name!r}.')

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        protocol = _normal(runner.cfg.get('protocol', None))
        if protocol:
            checkpoint.setdefault('meta', {})[META_KEY] = protocol

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        meta = checkpoint.get('meta') or {}
        stored = meta.get(META_KEY)
        if stored is None and isinstance(meta.get('cfg'), str):
            # a checkpoint from before the record: the applied protocol of
            # the config it carries (parsed, never run)
            from mmcoop.engine.config_text import stored_config_values
            stored = stored_config_values(meta['cfg']).get('protocol')
            stored = stored if isinstance(stored, dict) else None
        stored = _normal(stored)
        now = runner.cfg.get('protocol', None)
        # the file being loaded (an auto-resume ignores load_from)
        source = getattr(runner, 'loading_checkpoint', None) or \
            runner.cfg.get('load_from', None) or \
            f'the last checkpoint of {runner.work_dir}'
        if stored and not _normal(now):
            self._without_protocol(runner, stored, source)
            return
        differ = protocol_differences(stored, now)
        if not differ:
            return
        if is_resuming(runner):
            raise ValueError(
                f'{source}: trained under protocol {dict(stored)!r}, resumed '
                f'with protocol {dict(now)!r} ({"; ".join(differ)}); the best '
                'checkpoint and score kept so far were selected under the '
                'first. Fix: train in a new --work-dir, or resume with the '
                'recorded protocol.')
        if stored.get('name') != now.get('name'):
            runner.logger.warning(
                f'{source}: trained and selected under protocol '
                f'{stored.get("name")!r} (selection '
                f'{stored.get("selection")!r}), loaded with a config of '
                f'protocol {now.get("name")!r}: its numbers are those of '
                f'the {stored.get("name")!r} protocol. Fix: label them '
                f'{stored.get("name")!r}, or test a checkpoint trained under '
                f'{now.get("name")!r}.')

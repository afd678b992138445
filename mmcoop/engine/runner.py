# Copyright (c) mmcoop contributors. All rights reserved.
"""MMEngine runner with safe checkpoint loading and crash-safe saving."""
import os
import os.path as osp
import re
from typing import Callable, List, Union

import torch
from mmengine.config import Config
from mmengine.model import is_model_wrapper
from mmengine.runner import BaseLoop, Runner
from mmengine.runner.checkpoint import _load_checkpoint_to_model

from mmcoop.engine.config_text import FormatOnceConfig
from mmcoop.registry import RUNNERS
from mmcoop.utils.checkpoint import (CheckpointMismatchError,
                                     CheckpointReadError, atomic_torch_save,
                                     safe_torch_load)

_NUMBERED = re.compile(r'^(epoch|iter)_(\d+)\.pth$')


def _norm(name) -> str:
    return re.sub(r'\s+', ' ', str(name).replace('_', ' ')).strip().lower()


def describe_class_difference(ckpt: List[str],
                              current: List[str],
                              limit: int = 8) -> str:
    """Human-readable differences between two class lists."""
    parts = [f'{len(ckpt)} vs {len(current)} classes']
    a = {_norm(c) for c in ckpt}
    b = {_norm(c) for c in current}
    only_ckpt = [c for c in ckpt if _norm(c) not in b]
    only_cur = [c for c in current if _norm(c) not in a]
    if only_ckpt:
        parts.append(f'only in the checkpoint: {only_ckpt[:limit]}'
                     f'{"..." if len(only_ckpt) > limit else ""}')
    if only_cur:
        parts.append(f'only in the config: {only_cur[:limit]}'
                     f'{"..." if len(only_cur) > limit else ""}')
    if not only_ckpt and not only_cur:
        moved = [
            f'#{i}: {x!r} vs {y!r}'
            for i, (x, y) in enumerate(zip(ckpt, current))
            if _norm(x) != _norm(y)
        ]
        parts.append('same names in another order (' +
                     ', '.join(moved[:limit]) +
                     (', ...' if len(moved) > limit else '') + ')')
    return '; '.join(parts)


@RUNNERS.register_module()
class MMCoopRunner(Runner):
    """``mmengine.runner.Runner`` with mmcoop's checkpoint policy.

    * **Safe loading.** Every checkpoint -- ``load_from``, ``--resume``
      (the run's own files included), ``tools/test.py`` -- is read with
      ``torch.load(weights_only=True)``; MMEngine's runtime state
      (``HistoryBuffer``, numpy arrays) is read through the same restricted
      unpickler with inert stand-ins (:func:`mmcoop.utils.safe_torch_load`
      ``(runtime_state=True)``). A file that would need code is refused
      with a message naming the pickled objects. There is no exception,
      not even for the run's own checkpoints.
    * **Fit checks.** A checkpoint whose tensors have other shapes than the
      model's, or whose ``meta.dataset_meta.classes`` differ from the
      classes of the config, raises :class:`~mmcoop.utils.checkpoint.
      CheckpointMismatchError` naming both (MMEngine only warns and loads
      the rest). Opt out per check with ``checkpoint_check =
      dict(shapes=False, classes=False)`` in the config.
    * **Atomic saves.** Checkpoints are written to a temporary file and
      renamed, so a crash mid-write never leaves a truncated file under the
      final name. The config text stored in every checkpoint is formatted
      once (:class:`~mmcoop.engine.config_text.FormatOnceConfig`), not by
      yapf at every save.
    * **Robust auto-resume.** ``--resume`` without a path uses the file
      named in ``last_checkpoint``, or a newer numbered checkpoint; if that
      file is missing or unreadable it falls back, with a warning, to the
      newest readable ``epoch_*.pth`` / ``iter_*.pth`` of the work dir.
    * **Default hooks.** :class:`~mmcoop.engine.RNGStateHook` (RNG states
      in checkpoints, restored on resume),
      :class:`~mmcoop.engine.FiniteCheckHook` (stop at the first NaN/Inf)
      and :class:`~mmcoop.engine.ClassCheckHook` (datasets' classes vs the
      head, before every loop) are registered unless the config registers
      them itself or opts out with ``mmcoop_hooks = dict(rng_state=False,
      finite_check=False, class_check=False)``.

    Select it with ``runner_type = 'MMCoopRunner'`` (set in mmcoop's
    ``default_runtime.py``).
    """

    _resuming = False

    def __init__(self, *args, **kwargs):
        cfg = kwargs.get('cfg')
        if cfg is None or (isinstance(cfg, dict)
                           and not isinstance(cfg, Config)):
            cfg = Config(cfg or {})
        if isinstance(cfg, Config) and not isinstance(cfg, FormatOnceConfig):
            # yapf runs once, not at every checkpoint save
            kwargs['cfg'] = FormatOnceConfig.from_config(cfg)
        super().__init__(*args, **kwargs)
        self._register_mmcoop_hooks()

    # ------------------------------------------------------------------
    # hooks
    # ------------------------------------------------------------------
    def _register_mmcoop_hooks(self) -> None:
        from mmcoop.engine.hooks import (ClassCheckHook, FiniteCheckHook,
                                         RNGStateHook)
        opts = dict(rng_state=True, finite_check=True, class_check=True)
        opts.update(self.cfg.get('mmcoop_hooks', None) or {})
        unknown = set(opts) - {'rng_state', 'finite_check', 'class_check'}
        if unknown:
            raise ValueError(
                f'mmcoop_hooks: unknown keys {sorted(unknown)}; allowed: '
                "'rng_state', 'finite_check', 'class_check' (True/False).")
        for key, hook_type in (('rng_state', RNGStateHook), ('finite_check',
                                                             FiniteCheckHook),
                               ('class_check', ClassCheckHook)):
            if opts[key] and not any(
                    isinstance(h, hook_type) for h in self._hooks):
                self.register_hook(hook_type())

    # ------------------------------------------------------------------
    # resume
    # ------------------------------------------------------------------
    def resume(self, filename: str, *args, **kwargs) -> None:
        self._resuming = True
        try:
            super().resume(filename, *args, **kwargs)
        finally:
            self._resuming = False

    def _resume_candidates(self) -> List[str]:
        """Checkpoints to try for auto-resume, best first."""
        work_dir = self.work_dir
        numbered = []
        for name in os.listdir(work_dir) if osp.isdir(work_dir) else ():
            m = _NUMBERED.match(name)
            path = osp.join(work_dir, name)
            if m and osp.isfile(path):
                numbered.append(
                    (m.group(1), int(m.group(2)), osp.getmtime(path), path))
        kinds = {k for k, *_ in numbered}
        if len(kinds) > 1:  # epoch and iter checkpoints: newest file first
            numbered.sort(key=lambda t: (t[2], t[1]), reverse=True)
        else:
            numbered.sort(key=lambda t: t[1], reverse=True)
        ordered = [t[3] for t in numbered]

        pointer = osp.join(work_dir, 'last_checkpoint')
        named = None
        if osp.isfile(pointer):
            with open(pointer, errors='replace') as f:
                named = f.read().strip() or None
            if named is None:
                self.logger.warning(
                    f'{pointer} is empty (a crash while it was written?); '
                    'falling back to the newest checkpoint of the work dir.')
        if named is not None and not osp.isfile(named):
            moved = osp.join(work_dir, osp.basename(named))
            if osp.isfile(moved):  # the work dir was moved or copied
                named = moved
            else:
                self.logger.warning(
                    f'{pointer} names {named!r}, which does not exist; '
                    'falling back to the newest checkpoint of the work dir.')
                named = None
        if named is None:
            return ordered
        named = osp.abspath(named)
        # A numbered checkpoint newer than the one named (a crash between
        # the atomic save and the update of last_checkpoint) is complete:
        # prefer it. Older ones are fallbacks.
        m = _NUMBERED.match(osp.basename(named))
        newer = [
            t[3] for t in numbered
            if m and t[0] == m.group(1) and t[1] > int(m.group(2))
        ]
        rest = [
            p for p in ordered if p not in newer and osp.abspath(p) != named
        ]
        return newer + [named] + rest

    def load_or_resume(self) -> None:
        """Load or resume; auto-resume falls back past unreadable files."""
        if self._has_loaded:
            return None
        if not (self._resume and self._load_from is None):
            return super().load_or_resume()
        candidates = self._resume_candidates()
        if not candidates:
            self.logger.info(
                f'--resume: no checkpoint in {self.work_dir}; training starts '
                'from scratch.')
            return None
        skipped = []
        for path in candidates:
            try:
                if skipped:
                    self.logger.warning(
                        f'Resuming from {path} instead (skipped: ' +
                        '; '.join(skipped) + ').')
                else:
                    self.logger.info(f'Auto-resuming from {path}.')
                self.resume(path)
                self._has_loaded = True
                return None
            except CheckpointReadError as e:
                skipped.append(f'{osp.basename(path)}: {e}')
                self.logger.warning(
                    f'Checkpoint {path} is unreadable and is skipped: {e}')
        raise CheckpointReadError(
            f'--resume: none of the checkpoints in {self.work_dir} is '
            'readable (' + '; '.join(skipped) + '). Fix: delete them to train '
            'from scratch, or pass `--resume PATH` with a good checkpoint.')

    # ------------------------------------------------------------------
    # load
    # ------------------------------------------------------------------
    def _read_checkpoint(self, filename: str, map_location) -> dict:
        checkpoint = safe_torch_load(
            filename, map_location, 'checkpoint', runtime_state=True)
        if not isinstance(checkpoint, dict):
            raise CheckpointReadError(
                f'{filename!r} holds a {type(checkpoint).__name__}, not a '
                'checkpoint dict (state_dict / meta).')
        return checkpoint

    def _loaded_datasets(self):
        """(role, dataset) of the dataloaders already built."""
        out = []
        for role, loop in (('training', self._train_loop),
                           ('validation', self._val_loop), ('test',
                                                            self._test_loop)):
            if isinstance(loop, BaseLoop):
                dataset = getattr(
                    getattr(loop, 'dataloader', None), 'dataset', None)
                if dataset is not None:
                    out.append((role, dataset))
        return out

    def check_checkpoint_fits(self,
                              checkpoint: dict,
                              filename: str,
                              revise_keys: list = [(r'^module.', '')]) -> None:
        """Raise :class:`CheckpointMismatchError` if ``checkpoint`` does not
        fit the model (tensor shapes) or the classes of this config."""
        checks = dict(shapes=True, classes=True)
        checks.update(self.cfg.get('checkpoint_check', None) or {})
        model = self.model.module if is_model_wrapper(
            self.model) else self.model
        state_dict = checkpoint.get('state_dict', checkpoint)
        if not isinstance(state_dict, dict):
            raise CheckpointReadError(
                f'{filename!r}: `state_dict` is a '
                f'{type(state_dict).__name__}, not a dict of tensors.')
        revised = {}
        for key, value in state_dict.items():
            for pattern, repl in revise_keys:
                key = re.sub(pattern, repl, key)
            revised[key] = value
        own = {n: tuple(t.shape) for n, t in model.named_parameters()}
        own.update({n: tuple(t.shape) for n, t in model.named_buffers()})
        meta = checkpoint.get('meta') or {}
        meta = meta if isinstance(meta, dict) else {}
        dataset_meta = meta.get('dataset_meta') or {}
        ckpt_classes = (dataset_meta.get('classes') if isinstance(
            dataset_meta, dict) else None) or meta.get('classnames')
        ckpt_classes = list(ckpt_classes) if ckpt_classes else None
        head = getattr(model, 'head', None)
        head_classes = getattr(head, 'classnames', None)
        fix = ('Fix: use the config the checkpoint was trained with (its '
               "meta['cfg'] holds it) or a checkpoint trained for this "
               'config')
        if checks['shapes']:
            bad = [(k, tuple(v.shape), own[k]) for k, v in revised.items()
                   if k in own and isinstance(v, torch.Tensor)
                   and tuple(v.shape) != own[k]]
            if bad:
                lines = '; '.join(f'{k}: checkpoint {list(c)} vs model '
                                  f'{list(m)}' for k, c, m in bad[:10])
                more = f' (and {len(bad) - 10} more)' if len(bad) > 10 else ''
                classes = ''
                if ckpt_classes and head_classes is not None:
                    classes = (
                        f' The checkpoint was trained for {len(ckpt_classes)}'
                        f' classes, the model head has {len(head_classes)}'
                        ': ' + describe_class_difference(
                            ckpt_classes, list(head_classes)) + '.')
                raise CheckpointMismatchError(
                    f'Checkpoint {filename!r} does not fit the model of this '
                    f'config: {len(bad)} tensor(s) have other shapes '
                    f'({lines}{more}).{classes} {fix}; or set '
                    '`checkpoint_check = dict(shapes=False)` to load only '
                    'the tensors that fit (MMEngine then skips the others).')
        if revised and own and not any(k in own for k in revised):
            raise CheckpointMismatchError(
                f'Checkpoint {filename!r} shares no parameter name with the '
                f'model of this config (checkpoint keys like '
                f'{list(revised)[:3]}, model keys like {list(own)[:3]}); '
                f'nothing would be loaded. {fix}.')
        if not checks['classes'] or not ckpt_classes:
            return
        targets = []
        for role, dataset in self._loaded_datasets():
            classes = (getattr(dataset, 'metainfo', None) or {}).get('classes')
            if classes:
                targets.append((f'the {role} dataset', list(classes)))
        if not targets and head_classes is not None:
            targets.append(('the model head (`model.head.classnames`)',
                            list(head_classes)))
        for what, classes in targets:
            if [_norm(c) for c in classes] != [_norm(c) for c in ckpt_classes]:
                raise CheckpointMismatchError(
                    f'Checkpoint {filename!r} was trained for other classes '
                    f'than {what}: ' +
                    describe_class_difference(ckpt_classes, classes) +
                    f'. Checkpoint classes: {ckpt_classes[:20]}'
                    f'{"..." if len(ckpt_classes) > 20 else ""}; config: '
                    f'{classes[:20]}{"..." if len(classes) > 20 else ""}. '
                    f'{fix}; or, to reuse class-agnostic parameters on '
                    'purpose, set `checkpoint_check = dict(classes=False)`.')

    def load_checkpoint(self,
                        filename: str,
                        map_location: Union[str, Callable] = 'cpu',
                        strict: bool = False,
                        revise_keys: list = [(r'^module.', '')]):
        if '://' in str(filename):
            raise ValueError(
                f'Checkpoint {filename!r}: mmcoop loads local files only '
                '(remote loaders unpickle without weights_only). Download it '
                'and pass the local path.')
        if not osp.isfile(filename):
            raise FileNotFoundError(
                f'Checkpoint {filename!r} does not exist (from `load_from`, '
                '`--resume` or the test checkpoint argument).')
        checkpoint = self._read_checkpoint(filename, map_location)
        self.check_checkpoint_fits(checkpoint, filename, revise_keys)
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        model = self.model.module if is_model_wrapper(
            self.model) else self.model
        checkpoint = _load_checkpoint_to_model(
            model, checkpoint, strict, revise_keys=revise_keys)
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename}')
        return checkpoint

    # ------------------------------------------------------------------
    # save
    # ------------------------------------------------------------------
    def save_checkpoint(self, out_dir: str, filename: str, *args, **kwargs):
        """Save as mmengine does, but atomically (temp file + rename)."""
        import mmengine.runner.runner as runner_module
        original = runner_module.save_checkpoint

        def _atomic_save(checkpoint, filepath, *a, **k):
            if '://' in str(filepath):  # remote backends: mmengine's path
                return original(checkpoint, filepath, *a, **k)
            atomic_torch_save(checkpoint, str(filepath))

        runner_module.save_checkpoint = _atomic_save
        try:
            return super().save_checkpoint(out_dir, filename, *args, **kwargs)
        finally:
            runner_module.save_checkpoint = original

# Copyright (c) mmcoop contributors. All rights reserved.
"""MMEngine runner with safe checkpoint loading and crash-safe saving."""
import copy
import inspect
import os
import os.path as osp
import re
from typing import Callable, List, Optional, Union

import torch
from mmengine.config import Config, ConfigDict
from mmengine.dist import (broadcast_object_list, get_rank, is_distributed,
                           is_main_process, master_only)
from mmengine.model import is_model_wrapper
from mmengine.runner import (BaseLoop, EpochBasedTrainLoop, IterBasedTrainLoop,
                             Runner)

from mmcoop.datasets.utils import path_is_inside
from mmcoop.engine.atomic_backend import ATOMIC_BACKEND_ARGS
from mmcoop.engine.checkpoint_fit import (check_checkpoint_fits,
                                          load_checkpoint_weights)
from mmcoop.engine.config_checks import (check_clip_towers, check_load_from,
                                         check_nested_keys,
                                         check_normalization,
                                         check_runner_compile,
                                         check_thresholds_agree,
                                         check_unknown_keys,
                                         check_unseen_class_head,
                                         check_work_dir_is_a_folder,
                                         check_work_dir_outside_datasets)
from mmcoop.engine.config_text import FormatOnceConfig
from mmcoop.engine.train_checks import (check_accumulative_counts,
                                        check_amp_optim_wrapper,
                                        check_schedule,
                                        check_train_dataloader_length,
                                        check_train_settings)
from mmcoop.engine.work_dir_lock import WorkDirLock
from mmcoop.registry import RUNNERS
from mmcoop.utils.checkpoint import (CheckpointReadError,
                                     remove_partial_checkpoints,
                                     safe_torch_load)
from mmcoop.utils.paths import OutputPathError
from mmcoop.utils.signals import sigterm_as_exit
from mmcoop.utils.value_checks import is_int

_NUMBERED = re.compile(r'^(epoch|iter)_(\d+)\.pth$')


def _numbered_checkpoints(work_dir: str) -> List[tuple]:
    """``(kind, number, mtime, path)`` of the ``epoch_N.pth`` /
    ``iter_N.pth`` files of ``work_dir``, unsorted."""
    out = []
    for name in os.listdir(work_dir) if osp.isdir(work_dir) else ():
        m = _NUMBERED.match(name)
        path = osp.join(work_dir, name)
        if m and osp.isfile(path):
            out.append((m.group(1), int(m.group(2)), osp.getmtime(path), path))
    return out


def last_checkpoint_named(work_dir: str) -> Optional[str]:
    """The path that ``work_dir/last_checkpoint`` names (MMEngine writes it
    at every save); ``None`` without the file or when it is empty."""
    pointer = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(pointer):
        return None
    with open(pointer, errors='replace') as f:
        return f.read().strip() or None


def auto_resume_finds_checkpoint(work_dir: str) -> bool:
    """Whether ``resume='auto'`` (:meth:`MMCoopRunner._load_or_resume`)
    takes a checkpoint of ``work_dir`` rather than ``load_from``: the work
    dir holds an ``epoch_N.pth`` / ``iter_N.pth``, or its
    ``last_checkpoint`` names an existing file (or one of that name lies in
    the work dir: a moved work dir). One naming another work dir's file
    counts too: auto-resume refuses it
    (:class:`ResumeOutsideWorkDirError`), it never falls back to
    ``load_from``. ``False`` for a work dir that is not a local folder."""
    if not isinstance(work_dir, str) or '://' in work_dir or \
            not osp.isdir(work_dir):
        return False
    if _numbered_checkpoints(work_dir):
        return True
    named = last_checkpoint_named(work_dir)
    return named is not None and (
        osp.isfile(named)
        or osp.isfile(osp.join(work_dir, osp.basename(named))))


def train_batch_record(world_size: Optional[int], train_dataloader) -> dict:
    """A run's ``meta['train_batch']``: ``dict(world_size, batch_size)``,
    the processes and the images per process and step that train (the
    global batch is their product); ``None`` for a value not known."""
    loader = train_dataloader if isinstance(train_dataloader, dict) else {}
    return dict(world_size=world_size, batch_size=loader.get('batch_size'))


def train_batch_in_config(text) -> Optional[dict]:
    """The :func:`train_batch_record` of a checkpoint written before
    ``meta['train_batch']``, from the config text it carries
    (``meta['cfg']``), parsed, never run
    (:func:`~mmcoop.engine.config_text.stored_config_values`): the
    ``train_dataloader.batch_size`` and, for ``launcher='none'`` (the
    default), one process; ``world_size`` is ``None`` under another
    launcher (the config does not record the number of processes).
    ``None`` when the text gives no batch size."""
    from mmcoop.engine.config_text import stored_config_values
    if not isinstance(text, str) or not text.strip():
        return None
    values = stored_config_values(text)
    record = train_batch_record(
        1 if values.get('launcher', 'none') == 'none' else None,
        values.get('train_dataloader'))
    return record if is_int(record['batch_size']) else None


def train_batch_differs(then: dict, now: dict) -> bool:
    """Whether a resume (``now``) trains with another global batch than the
    checkpoint's run (``then``), two :func:`train_batch_record` s: a value
    differs that both record (``None``: not known)."""
    return any(then.get(k) is not None and then.get(k) != now.get(k)
               for k in ('world_size', 'batch_size'))


class ResumeOutsideWorkDirError(ValueError):
    """Auto-resume found a ``last_checkpoint`` that names a checkpoint of
    another work dir (a copied work dir) and no file of that name in its
    own."""


class ResumePastScheduleError(ValueError):
    """The checkpoint to resume is past the end of the config's schedule
    (``train_cfg.max_epochs`` / ``max_iters``)."""


#: the first line of a config dump (a ``.py`` / ``.yaml`` config): what
#: tells a run's own earlier dump from a user's file of the same name
DUMP_MARK = ('# The resolved config of an mmcoop run in this folder, written '
             'by the runner: edit the source config, not this copy.')
_RUN_FOLDER = re.compile(r'^\d{8}_\d{6}$')


def check_dump_target(path: str, work_dir: str, timestamp: str) -> None:
    """Refuse to replace a file at the config dump's ``path`` that no run
    wrote: one without :data:`DUMP_MARK` in a work dir without an earlier
    run's record (``last_checkpoint``, an ``epoch_N.pth`` / ``iter_N.pth``
    or the ``<timestamp>/`` log folder of a run other than this one's,
    ``timestamp``; the record of runs from before the mark). A user's own
    config there (an edited copy, or the ``_base_`` of the run's config)
    would otherwise be replaced by this run's resolved config."""
    if not osp.isfile(path):
        return
    with open(path, encoding='utf-8', errors='replace') as f:
        if f.readline().rstrip('\n') == DUMP_MARK:
            return
    for name in os.listdir(work_dir):
        if name == 'last_checkpoint' or _NUMBERED.match(name) or (
                _RUN_FOLDER.match(name) and name != timestamp
                and osp.isdir(osp.join(work_dir, name))):
            return
    raise OutputPathError(
        f'{path} exists and no earlier run in {work_dir} wrote it: this run '
        'would replace it with its resolved config (saved under the name of '
        'the config file). Nothing was written. Fix: use another '
        '--work-dir, or move the file out of the work dir.')


def check_dump_target_on_every_rank(path: str, work_dir: str,
                                    timestamp: str) -> None:
    """:func:`check_dump_target` on rank 0 (which writes the dump), its
    refusal raised on every rank of a distributed run (the others would
    otherwise wait for rank 0 in the first collective)."""
    message = None
    if is_main_process():
        try:
            check_dump_target(path, work_dir, timestamp)
        except OutputPathError as e:
            message = str(e)
    if is_distributed():
        box = [message]
        broadcast_object_list(box)
        message = box[0]
    if message:
        raise OutputPathError(message)


def config_dump_path(work_dir: str, config_file: Optional[str],
                     timestamp: str) -> str:
    """Where the run's resolved config is dumped: ``<work_dir>/<name of the
    config file>`` as in MMEngine (``<timestamp>.py`` for a config without
    a file), except when that is the config file itself (a config kept in
    its own work dir, ``tools/train.py work_dirs/exp/exp.py``): the user's
    file is never replaced, the dump goes to ``<stem>_resolved<ext>``
    beside it."""
    if config_file is None:
        return osp.join(work_dir, f'{timestamp}.py')
    path = osp.join(work_dir, osp.basename(config_file))
    if osp.exists(path) and osp.samefile(path, config_file):
        stem, ext = osp.splitext(osp.basename(config_file))
        path = osp.join(work_dir, f'{stem}_resolved{ext}')
    return path


#: scheduler state that changes while training (not a config value).
_DYNAMIC_STATE = frozenset({
    'base_values', 'last_step', '_global_step', 'verbose', '_last_value',
    '_get_value_called_within_step', 'param_name'
})


def _launcher_rank(launcher: str) -> int:
    """The global rank of this process before MMEngine initialises the
    process group (0 for ``launcher='none'``)."""
    if is_distributed():
        return get_rank()
    if launcher == 'none':
        return 0
    for var in ('RANK', 'SLURM_PROCID', 'OMPI_COMM_WORLD_RANK', 'PMI_RANK'):
        if os.environ.get(var, '').isdigit():
            return int(os.environ[var])
    return 0


#: what torchrun sets for each process, which ``launcher='pytorch'`` reads
_TORCHRUN_ENV = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR',
                 'MASTER_PORT')


def check_launcher_env(cfg: Config) -> None:
    """Refuse ``launcher='pytorch'`` in a process that torchrun did not
    start (e.g. ``python tools/train.py CONFIG --launcher pytorch``),
    before anything is built: torch's own error names one missing
    variable and not the launcher."""
    if cfg.get('launcher', 'none') != 'pytorch' or is_distributed():
        return
    missing = [v for v in _TORCHRUN_ENV if v not in os.environ]
    if missing:
        raise ValueError(
            f"--launcher pytorch (launcher='pytorch'): this process was "
            f'not started by torchrun, which sets {", ".join(missing)}. '
            'Fix: bash tools/dist_train.sh CONFIG N (or tools/'
            'dist_test.sh CONFIG CHECKPOINT N), or python -m '
            'torch.distributed.run --nproc_per_node N tools/train.py '
            'CONFIG --launcher pytorch; for one process leave --launcher '
            'out.')


def setup_cpu_distributed(cfg: Config) -> None:
    """Make ``launcher='pytorch'`` work on machines without CUDA.

    MMEngine's ``init_dist`` calls ``torch.cuda.set_device`` and wraps the
    model with ``device_ids=[LOCAL_RANK]``; both fail without a GPU. Here
    the process group is created with the gloo backend (``env://``, as set
    by torchrun) and the DDP wrapper gets ``device_ids=None`` (and the
    config's ``find_unused_parameters``, as MMEngine's default wrapper).
    ``env_cfg.dist_cfg.timeout`` (seconds) applies as in MMEngine's
    ``init_dist`` (e.g. to the ranks that wait at a barrier while rank 0
    builds a feature cache). Used for debugging and for the CPU distributed
    test; GPU runs are untouched.
    """
    if cfg.get('launcher', 'none') != 'pytorch' or torch.cuda.is_available():
        return
    import datetime

    import torch.distributed as dist

    from mmcoop.utils.value_checks import check_number
    cfg.setdefault('env_cfg', ConfigDict())
    cfg.env_cfg.setdefault('dist_cfg', ConfigDict())
    cfg.env_cfg.dist_cfg.backend = 'gloo'
    if not dist.is_initialized():
        timeout = cfg.env_cfg.dist_cfg.get('timeout', None)
        kwargs = {} if timeout is None else dict(
            timeout=datetime.timedelta(seconds=check_number(
                'MMCoopRunner', 'env_cfg.dist_cfg.timeout', timeout, low=0,
                what='seconds', above=True)))
        dist.init_process_group(backend='gloo', **kwargs)
    wrapper = cfg.get('model_wrapper_cfg', None) or ConfigDict(
        type='MMDistributedDataParallel', broadcast_buffers=False)
    wrapper.setdefault('device_ids', None)
    wrapper.setdefault('find_unused_parameters',
                       cfg.get('find_unused_parameters', False))
    cfg.model_wrapper_cfg = wrapper


def record_classnames(cfg: Config) -> None:
    """Write the class names into ``model.head.classnames`` where the
    config gives a class file, a dataset type or a dataset dict
    (:func:`mmcoop.models.heads.resolve_classnames` reads them).

    The config the work dir and every checkpoint record then holds the
    names the prompts were trained with: a trained model is tested or
    deployed (``init_model``, the inferencer) without the class file or
    the dataset's files, and an edit of the class file after training
    cannot change it.
    """
    head = cfg.get('model', None)
    head = head.get('head', None) if isinstance(head, dict) else None
    if isinstance(head, dict) and isinstance(head.get('classnames'),
                                             (str, dict)):
        from mmcoop.models.heads import resolve_classnames
        head['classnames'] = resolve_classnames(head['classnames'])


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
      model's, that leaves a trainable parameter unloaded, or whose
      ``meta.dataset_meta.classes`` differ from the classes of the config,
      raises :class:`~mmcoop.utils.checkpoint.CheckpointMismatchError`
      naming the keys (MMEngine only warns and loads the rest); one policy
      with ``init_model`` (:mod:`mmcoop.engine.checkpoint_fit`). Opt out per
      check with ``checkpoint_check = dict(shapes=False, missing=False,
      classes=False)`` in the config.
    * **Atomic saves.** Checkpoints are written through the file backend
      :class:`~mmcoop.engine.atomic_backend.AtomicLocalBackend` (temporary
      file + rename), so a crash mid-write never leaves a truncated file
      under the final name. The config text stored in every checkpoint
      is formatted once (:class:`~mmcoop.engine.config_text.
      FormatOnceConfig`), not by yapf at every save.
    * **Robust auto-resume.** ``--resume`` without a path
      (``resume='auto'``) uses the file named in ``last_checkpoint``, or a
      newer numbered checkpoint; if that file is missing or unreadable it
      falls back, with a warning, to the newest readable ``epoch_*.pth`` /
      ``iter_*.pth`` of the work dir; without a checkpoint it starts from
      ``load_from`` (:meth:`_load_or_resume`). Only the work dir's own
      files: a ``last_checkpoint`` naming another work dir's file (a copied
      work dir) is refused unless the work dir has a file of that name, and
      a resumed best-checkpoint path outside the run's checkpoint folder is
      re-pointed or dropped (:meth:`resume`), so nothing outside the work
      dir is removed.
    * **Resume at or past the end.** A resumed checkpoint at the end of the
      schedule (epoch == ``train_cfg.max_epochs``, or iteration ==
      ``max_iters`` of an iteration-based loop) gets a warning that the
      run is complete and trains nothing; one past it raises
      :class:`ResumePastScheduleError` before anything is loaded
      (:meth:`check_resume_position`). A resume that trains nothing leaves
      the work dir's config dump as it was (:meth:`dump_config`).
    * **Default hooks.** :class:`~mmcoop.engine.RNGStateHook` (RNG states
      in checkpoints, restored on resume),
      :class:`~mmcoop.engine.FiniteCheckHook` (stop at the first NaN/Inf)
      and :class:`~mmcoop.engine.ClassCheckHook` (datasets' classes vs the
      head, before every loop) are registered unless the config registers
      them itself or opts out with ``mmcoop_hooks = dict(rng_state=False,
      finite_check=False, class_check=False)``.

    Select it with ``runner_type = 'mmcoop.engine.MMCoopRunner'`` (set in
    mmcoop's ``default_runtime.py``). :meth:`from_cfg` (reached by
    ``tools/train.py``, ``tools/test.py``, ``mim`` and ``RUNNERS.build``) is
    where mmcoop's config keys are interpreted (``docs/architecture.md``).
    """

    _resuming = False
    _loading: Optional[str] = None
    #: the resumed checkpoint is at the end of the schedule
    _resumed_complete = False
    #: the config dump of a resuming run waits for the resume (dump_config)
    _dump_pending = False
    #: the loop the runner runs ('train', 'val', 'test'): where the config
    #: dump goes (dump_config)
    _loop_kind = 'train'

    @classmethod
    def from_cfg(cls, cfg) -> 'MMCoopRunner':
        """Interpret mmcoop's config keys, then build the runner.

        * ``data_path``: ``'device'`` moves the image pipelines' decode,
          resize and augmentation onto the model's device
          (:func:`mmcoop.datasets.data_path.apply_data_path`);
        * ``protocol``: the evaluation protocol's validation split, model
          selection and thresholds
          (:func:`mmcoop.experiments.apply_protocol`);
        * ``feature_cache``: rewrites the config to train/validate from
          cached frozen features
          (:func:`mmcoop.datasets.feature_cache.apply_feature_cache`);
        * ``launcher='pytorch'`` without CUDA: gloo process group
          (:func:`setup_cpu_distributed`);
        * top-level keys nothing reads: a warning naming them, an error with
          ``strict_config=True``
          (:func:`mmcoop.engine.config_checks.check_unknown_keys`);
        * keys that the constructor of their ``type`` does not take
          (``model.head.n_ctxx``; model, datasets and pipelines, samplers,
          evaluators, hooks, schedulers, optimizer): an error naming
          the path, the class and the close names, before anything is
          built (:func:`mmcoop.engine.config_checks.check_nested_keys`);
        * classes hidden in training (``PartialLabelDataset(
          unseen_classes=...)``) with a head that cannot score unseen
          classes: an error naming the head fields to change; an
          ``UnseenClassMetric`` with nothing hidden: a warning
          (:func:`mmcoop.engine.config_checks.check_unseen_class_head`);
        * ``model.backbone`` and ``model.head.text_encoder``: one CLIP, and
          a head's ``in_channels`` its width, before a feature cache is
          extracted (:func:`mmcoop.engine.config_checks.check_clip_towers`);
        * the training settings MMEngine reads only when the run reaches
          them, or never checks (``optim_wrapper.clip_grad``,
          ``train_cfg.max_epochs`` / ``max_iters`` / ``val_interval``, the
          ``param_scheduler`` against ``train_cfg``,
          ``optim_wrapper.accumulative_counts``, ``randomness``, the
          dataloaders' ``batch_size`` / ``num_workers`` ...): an error
          naming the field, the value and the fix, before anything is built
          (:func:`mmcoop.engine.train_checks.check_train_settings`; a
          scheduler that starts after the run or ends after it: a
          warning);
        * ``model.head.classnames`` given as a class file or a dataset: the
          names it gives, so the recorded config holds them
          (:func:`record_classnames`).

        ``__init__`` then refuses a work dir inside a dataset folder and
        takes the work-dir lock (:mod:`mmcoop.engine.work_dir_lock`)
        before MMEngine writes there; :meth:`build_train_loop` refuses a
        train dataloader that gives no batch; :meth:`train` refuses an
        ``AmpOptimWrapper`` without an accelerator (not here: testing the
        config of a run trained with ``--amp`` builds no optimizer).
        """
        cfg = copy.deepcopy(cfg)
        if not isinstance(cfg, Config):
            cfg = Config(dict(cfg))
        check_unknown_keys(cfg)
        check_nested_keys(cfg)
        check_unseen_class_head(cfg)
        check_clip_towers(cfg)
        check_normalization(cfg)
        check_load_from(cfg)
        check_runner_compile(cfg)
        check_train_settings(cfg)
        check_thresholds_agree(cfg)
        check_launcher_env(cfg)
        record_classnames(cfg)
        # the evaluation protocol picks the datasets; the cache wraps them
        from mmcoop.datasets.data_path import apply_data_path
        from mmcoop.datasets.feature_cache import apply_feature_cache
        from mmcoop.experiments import apply_protocol
        cfg = apply_data_path(cfg)
        cfg = apply_protocol(cfg)
        cfg = apply_feature_cache(cfg)
        setup_cpu_distributed(cfg)
        return super().from_cfg(cfg)

    def __init__(self, *args, **kwargs):
        cfg = kwargs.get('cfg')
        if cfg is None or (isinstance(cfg, dict)
                           and not isinstance(cfg, Config)):
            cfg = Config(cfg or {})
        if isinstance(cfg, Config) and not isinstance(cfg, FormatOnceConfig):
            # yapf runs once, not at every checkpoint save
            kwargs['cfg'] = FormatOnceConfig.from_config(cfg)
        # before MMEngine creates the work dir and writes its log and
        # config dump there: never inside a dataset, never two runs at once
        work_dir = kwargs.get('work_dir', args[1] if len(args) > 1 else None)
        check_work_dir_is_a_folder(work_dir)
        check_work_dir_outside_datasets(
            work_dir, (kwargs.get(k) for k in ('train_dataloader',
                                               'val_dataloader',
                                               'test_dataloader')))
        self._work_dir_lock = None
        if _launcher_rank(kwargs.get('launcher', 'none')) == 0:
            self._work_dir_lock = WorkDirLock(osp.abspath(work_dir))
            self._work_dir_lock.acquire()
        try:
            super().__init__(*args, **kwargs)
            stale = self._work_dir_lock and self._work_dir_lock.took_over
            if stale:
                self.logger.warning(
                    f'Took over the stale lock {self._work_dir_lock.path} of '
                    f"pid {stale.get('pid')} (since {stale.get('since')}), "
                    'which no longer runs (a crashed or killed run).')
            if self._work_dir_lock is not None:
                removed = remove_partial_checkpoints(self.work_dir)
                if removed:
                    self.logger.warning(
                        f'Removed {len(removed)} partial checkpoint file(s) '
                        f'that a killed save left in {self.work_dir}: '
                        f'{removed[:5]} (never complete checkpoints).')
            self._register_mmcoop_hooks()
        except BaseException:
            self._release_work_dir()
            raise

    def dump_config(self) -> None:
        """MMEngine's dump of the config, written atomically once the run
        starts (:meth:`load_or_resume`), never over the config file the run
        was started with (:func:`config_dump_path`):

        * training: ``<work_dir>/<config name>``; a run that resumes writes
          it once the resume is accepted: a resume that is refused or
          trains nothing (:meth:`check_resume_position`) keeps the dump of
          the run that made the checkpoints; a file of that name that no
          run wrote stops the run before it trains
          (:func:`check_dump_target`);
        * testing / validating (``tools/test.py``, whose work dir is by
          default the training's): ``<work_dir>/<timestamp>/<config
          name>``, beside the run's log, so the training's record of what
          it trained is kept."""
        self._dump_pending = True

    @master_only
    def _write_config_dump(self) -> None:
        from mmcoop.utils.checkpoint import atomic_open
        if self._loop_kind == 'train':
            path = config_dump_path(self.work_dir, self.cfg.filename,
                                    self.timestamp)
        else:
            os.makedirs(self.log_dir, exist_ok=True)
            path = config_dump_path(self.log_dir, self.cfg.filename,
                                    self.timestamp)
        text = self.cfg.dump()  # the format of the config file's extension
        if path.endswith(('.py', '.yaml', '.yml')):
            text = f'{DUMP_MARK}\n{text}'
        with atomic_open(path, 'w', encoding='utf-8') as f:
            f.write(text)

    # ------------------------------------------------------------------
    # the work-dir lock is held while the runner is built and runs
    # ------------------------------------------------------------------
    def _release_work_dir(self) -> None:
        if self._work_dir_lock is not None:
            self._work_dir_lock.release()

    def _locked(self, loop: Callable):
        # SIGTERM (kill, Slurm's stop) ends the loop through the clean-up:
        # the lock is released, a partial file removed
        with sigterm_as_exit():
            if self._work_dir_lock is not None:
                self._work_dir_lock.acquire()
            try:
                return loop()
            finally:
                self._release_work_dir()

    def train(self):
        # before the training data, a feature cache and the optimizer are
        # built (MMEngine: a bare AssertionError once they are)
        check_amp_optim_wrapper(self.cfg)
        self._loop_kind = 'train'
        check_dump_target_on_every_rank(
            config_dump_path(self.work_dir, self.cfg.filename,
                             self.timestamp), self.work_dir, self.timestamp)
        return self._locked(super().train)

    def build_train_loop(self, loop) -> BaseLoop:
        """MMEngine's train loop, refused when its dataloader gives no
        batch (:func:`~mmcoop.engine.train_checks.
        check_train_dataloader_length`: a ``batch_size`` larger than the
        training set with ``drop_last=True`` trained zero iterations and
        saved untrained checkpoints); the schedulers counted in iterations
        are compared with the run's length
        (:func:`~mmcoop.engine.train_checks.check_schedule`), and so is
        ``optim_wrapper.accumulative_counts`` (a warning when it is larger:
        one update)."""
        built = not isinstance(loop, BaseLoop)
        loop = super().build_train_loop(loop)
        if built:
            check_train_dataloader_length(loop)
            try:
                iters_per_epoch = len(loop.dataloader)
            except TypeError:  # an iterable dataset
                iters_per_epoch = None
            if iters_per_epoch:  # the schedulers counted in iterations
                check_schedule(self.cfg, iters_per_epoch)
            total = getattr(loop, 'max_iters', None)
            if isinstance(total, int):
                check_accumulative_counts(self.cfg, total)
        return loop

    def val(self):
        self._loop_kind = 'val'
        return self._locked(super().val)

    def test(self):
        self._loop_kind = 'test'
        return self._locked(super().test)

    # ------------------------------------------------------------------
    # hooks
    # ------------------------------------------------------------------
    def _register_mmcoop_hooks(self) -> None:
        from mmcoop.engine.hooks import (ClassCheckHook, FiniteCheckHook,
                                         ProtocolCheckHook,
                                         ResumeValidationHook, RNGStateHook)
        from mmcoop.utils.value_checks import check_flag
        opts = dict(rng_state=True, finite_check=True, class_check=True,
                    resume_validation=True, protocol_check=True)
        given = self.cfg.get('mmcoop_hooks', None)
        if given is None:
            given = {}
        if not isinstance(given, dict):
            raise ValueError(
                'MMCoopRunner: mmcoop_hooks must be a dict of flags, e.g. '
                f'mmcoop_hooks = dict(finite_check=False) (keys '
                f'{", ".join(opts)}; all True by default), got {given!r}.')
        unknown = set(given) - set(opts)
        if unknown:
            raise ValueError(
                f'mmcoop_hooks: unknown keys {sorted(unknown)}; allowed: '
                f'{", ".join(map(repr, opts))} (True/False).')
        for key, flag in given.items():
            # 'False' or 0 would read as its truth value
            opts[key] = check_flag('MMCoopRunner', f'mmcoop_hooks.{key}',
                                   flag)
        for key, hook_type in (('rng_state', RNGStateHook), ('finite_check',
                                                             FiniteCheckHook),
                               ('class_check', ClassCheckHook),
                               ('resume_validation', ResumeValidationHook),
                               ('protocol_check', ProtocolCheckHook)):
            if opts[key] and not any(
                    isinstance(h, hook_type) for h in self.hooks):
                self.register_hook(hook_type())

    def wrap_model(self, model_wrapper_cfg, model):
        """MMEngine's, except that a distributed model with nothing to
        train (a ``ZeroShotHead`` on the frozen CLIP, tested with
        ``tools/dist_test.sh CONFIG none N``) is not wrapped: torch's
        ``DistributedDataParallel`` refuses a module without a parameter
        that requires a gradient, and with no gradient to synchronise
        each rank runs its own copy."""
        if self.distributed and not is_model_wrapper(model) and not any(
                p.requires_grad for p in model.parameters()):
            from mmengine.device import get_device
            self.logger.info('The model has no trainable parameter: each '
                             'process runs it without a DDP wrapper.')
            return model.to(get_device())
        return super().wrap_model(model_wrapper_cfg, model)

    # ------------------------------------------------------------------
    # resume
    # ------------------------------------------------------------------
    @property
    def bare_model(self):
        """The model without its wrapper (DDP, MMEngine's wrappers)."""
        return self.model.module if is_model_wrapper(self.model) \
            else self.model

    @property
    def resuming(self) -> bool:
        """True while :meth:`resume` loads a checkpoint (read by the hooks'
        ``after_load_checkpoint``: a resume, not a ``load_from``)."""
        return self._resuming

    @property
    def loading_checkpoint(self) -> Optional[str]:
        """The file :meth:`load_checkpoint` is loading (read by the hooks'
        ``after_load_checkpoint`` to name it: a resumed work-dir
        checkpoint, a ``load_from`` or a test checkpoint), else None."""
        return self._loading

    def resume(self, filename: str, *args, **kwargs) -> None:
        """MMEngine's resume; then the best-checkpoint paths of the resumed
        message hub are kept inside this run's checkpoint folder
        (:meth:`_keep_best_checkpoints_own`)."""
        self._resuming = True
        try:
            super().resume(filename, *args, **kwargs)
        finally:
            self._resuming = False
        self._keep_best_checkpoints_own(filename)

    def _checkpoint_dirs(self) -> List[str]:
        """The folders this run's ``CheckpointHook`` s save into: the work
        dir, or ``out_dir/<work dir name>`` (MMEngine's rule)."""
        from mmengine.hooks import CheckpointHook
        dirs = [self.work_dir]
        for hook in self.hooks:
            out_dir = getattr(hook, 'out_dir', None)
            if isinstance(hook, CheckpointHook) and isinstance(out_dir, str):
                if out_dir != self.work_dir:
                    out_dir = osp.join(
                        out_dir, osp.basename(self.work_dir.rstrip(osp.sep)))
                dirs.append(out_dir)
        return dirs

    def _keep_best_checkpoints_own(self, filename: str) -> None:
        """MMEngine's ``CheckpointHook`` (``save_best``) removes the previous
        best checkpoint, whose path it reads from the resumed message hub
        (``best_ckpt``, ``best_ckpt_<metric>``): the absolute path of the
        run that wrote the checkpoint. Resuming a copy of a work dir, or an
        explicit ``--resume`` of another work dir's file, would delete the
        original's best checkpoint. A path outside this run's checkpoint
        folders is re-pointed to the file of the same name in them, else
        dropped (the new best is saved, nothing is removed)."""
        hub = self.message_hub
        dirs = self._checkpoint_dirs()
        local = [d for d in dirs if '://' not in d]
        for key, path in list(hub.runtime_info.items()):
            if not (key == 'best_ckpt' or key.startswith('best_ckpt_')):
                continue
            if not isinstance(path, str) or not path:
                continue
            if '://' in path:
                own = any(osp.dirname(path) == d.rstrip('/') for d in dirs)
            else:
                own = any(path_is_inside(path, d) for d in local)
            if own:
                continue
            here = [
                osp.join(d, osp.basename(path)) for d in local
                if osp.isfile(osp.join(d, osp.basename(path)))
            ]
            if here:
                hub.update_info(key, here[0])
                self.logger.info(
                    f'--resume from {filename}: the best checkpoint it '
                    f'records ({key}) is {path}, outside this run\'s '
                    f'checkpoint folder; it is now {here[0]}.')
            else:
                hub.pop_info(key)
                self.logger.warning(
                    f'--resume from {filename}: the best checkpoint it '
                    f'records ({key}), {path}, lies outside this run\'s '
                    f'checkpoint folder ({dirs[-1]}) and has no copy there: '
                    'it is no longer tracked (the next best checkpoint is '
                    'saved here, that file is never removed).')

    def check_resume_position(self, checkpoint: dict, filename: str) -> bool:
        """Compare the position of the checkpoint to resume with the end of
        the config's schedule; True when the run is complete.

        * before the end: nothing to say, training goes on;
        * at the end (epoch == ``train_cfg.max_epochs``; iteration ==
          ``max_iters`` for an ``IterBasedTrainLoop``): a warning that the
          run is complete and nothing is trained, with the fix for a user
          who meant to train longer; the run ends normally (a finished run
          resumed again, e.g. by a sweep whose test step failed, is not an
          error);
        * past the end (a shortened schedule, or another run's work dir):
          :class:`ResumePastScheduleError`. The checkpoint's optimizer and
          scheduler state belong to a longer schedule than the config's,
          so the run would neither be the config's run nor continue the
          checkpoint's; nothing is loaded.

        Loops of other types (no such bound) are not checked.
        """
        loop = self.train_loop
        meta = checkpoint.get('meta')
        if isinstance(loop, IterBasedTrainLoop):
            unit, key, end = 'iteration', 'max_iters', loop.max_iters
            done = meta.get('iter') if isinstance(meta, dict) else None
        elif isinstance(loop, EpochBasedTrainLoop):
            unit, key, end = 'epoch', 'max_epochs', loop.max_epochs
            done = meta.get('epoch') if isinstance(meta, dict) else None
        else:
            return False
        if not is_int(done) or done < end:
            return False
        where = f'train_cfg.{key} = {end}' + (
            f' of {self.cfg.filename}' if self.cfg.filename else '')
        if done > end:
            raise ResumePastScheduleError(
                f'Resuming {filename}: the checkpoint is at {unit} {done}, '
                f'past the end of the schedule ({where}): a shortened '
                'schedule, or the work dir of another run; nothing was '
                f'trained or loaded. Fix: to continue this run, give the '
                f'schedule it was trained with (train_cfg.{key} of at least '
                f'{done}, e.g. `--cfg-options train_cfg.{key}={done}` if it '
                'ended there); for a run with the shorter schedule, use '
                'another --work-dir; to evaluate the checkpoint, use '
                'tools/test.py.')
        self.logger.warning(
            f'Resuming {filename}: the checkpoint is at {unit} {done}, the '
            f'end of the schedule ({where}): the run is complete and '
            f'nothing is trained. To train longer, raise train_cfg.{key} '
            f'above {done} (e.g. `--cfg-options train_cfg.{key}='
            f'{done + 1}`; the resumed param schedulers keep the '
            "checkpoint's `end`, so the lr stays at its last value past "
            'it); for a new run, use another --work-dir.')
        return True

    def _report_resume_overrides(self, checkpoint: dict,
                                 filename: str) -> None:
        """Warn when the resumed optimizer / scheduler state replaces
        values the config sets now (e.g. ``--resume`` with a new lr)."""
        changes = []
        ckpt_optim = checkpoint.get('optimizer')
        optimizer = getattr(self.optim_wrapper, 'optimizer', None)
        if isinstance(ckpt_optim, dict) and optimizer is not None:
            for i, (now, old) in enumerate(
                    zip(optimizer.param_groups,
                        ckpt_optim.get('param_groups') or [])):
                for key in sorted(set(now) & set(old) - {'params', 'lr'}):
                    if key != 'initial_lr' or 'initial_lr' in now:
                        if now[key] != old[key]:
                            name = 'lr' if key == 'initial_lr' else key
                            changes.append(
                                f'optimizer param group {i} {name}: '
                                f'config {now[key]!r} -> checkpoint '
                                f'{old[key]!r}')
        schedulers = self.param_schedulers
        if isinstance(schedulers, list):
            for i, (now, old) in enumerate(
                    zip(schedulers, checkpoint.get('param_schedulers') or [])):
                kind = type(now).__name__
                now = now.state_dict()
                for key in sorted(set(now) & set(old) - _DYNAMIC_STATE):
                    if now[key] != old[key]:
                        changes.append(
                            f'param_scheduler[{i}] ({kind}) {key}: config '
                            f'{now[key]!r} -> checkpoint {old[key]!r}')
        if changes:
            self.logger.warning(
                f'--resume from {filename}: the resumed optimizer and '
                'scheduler state win over the config for ' +
                '; '.join(changes[:8]) +
                (f' (and {len(changes) - 8} more)' if len(changes) > 8 else
                 '') + '. train_cfg (e.g. max_epochs) comes from the config. '
                'To train with the new values, start a new run with '
                f'`load_from={filename}` (weights only) instead of --resume.')

    def _resume_candidates(self) -> List[str]:
        """Checkpoints to try for auto-resume, best first."""
        work_dir = self.work_dir
        numbered = _numbered_checkpoints(work_dir)
        kinds = {k for k, *_ in numbered}
        if len(kinds) > 1:  # epoch and iter checkpoints: newest file first
            numbered.sort(key=lambda t: (t[2], t[1]), reverse=True)
        else:
            numbered.sort(key=lambda t: t[1], reverse=True)
        ordered = [t[3] for t in numbered]

        pointer = osp.join(work_dir, 'last_checkpoint')
        named = last_checkpoint_named(work_dir)
        if osp.isfile(pointer) and named is None:
            self.logger.warning(
                f'{pointer} is empty (a crash while it was written?); '
                'falling back to the newest checkpoint of the work dir.')
        own_dirs = [d for d in self._checkpoint_dirs() if '://' not in d]
        if named is not None and not any(
                path_is_inside(named, d) for d in own_dirs):
            # MMEngine writes an absolute path: in a moved or copied work
            # dir it names the original's file. Auto-resume reads only the
            # work dir's own checkpoints.
            own = osp.join(work_dir, osp.basename(named))
            if osp.isfile(own):
                self.logger.info(
                    f'{pointer} names {named}, outside the work dir (a '
                    'moved or copied work dir): resuming the file of that '
                    f'name in the work dir, {own}.')
                named = own
            elif osp.isfile(named):
                raise ResumeOutsideWorkDirError(
                    f'--resume (auto): {pointer} names {named}, a '
                    f'checkpoint outside the work dir {work_dir} (a copy of '
                    "another run's work dir?), and the work dir holds no "
                    f'{osp.basename(named)}. Auto-resume uses only the work '
                    "dir's own checkpoints; nothing was loaded. Fix: to "
                    f'continue from that checkpoint on purpose, `--resume '
                    f'{named}` (it is read, nothing outside the work dir is '
                    f'changed); else delete {pointer} to resume the newest '
                    'checkpoint of the work dir (or start from scratch '
                    'without one).')
            else:
                self.logger.warning(
                    f'{pointer} names {named!r}, which does not exist; '
                    'falling back to the newest checkpoint of the work dir.')
                named = None
        elif named is not None and not osp.isfile(named):
            self.logger.warning(
                f'{pointer} names {named!r}, which does not exist; '
                'falling back to the newest checkpoint of the work dir.')
            named = None
        if named is None:
            return ordered
        named = osp.abspath(named)
        # A numbered checkpoint after the one named, written after it (a
        # crash between the atomic save and the update of last_checkpoint),
        # is complete: prefer it. One numbered after it but written before
        # it is an earlier run's (a new run in the same work dir replaced
        # the files up to its own epoch): never resumed from. Older ones
        # are fallbacks.
        m = _NUMBERED.match(osp.basename(named))
        named_mtime = osp.getmtime(named)
        later = [
            t for t in numbered
            if m and t[0] == m.group(1) and t[1] > int(m.group(2))
        ]
        newer = [t[3] for t in later if t[2] >= named_mtime]
        stale = [t[3] for t in later if t[2] < named_mtime]
        if stale:
            self.logger.warning(
                f'--resume: {[osp.basename(p) for p in stale]} in '
                f'{work_dir} come after {osp.basename(named)} (named in '
                'last_checkpoint) but were written before it: an earlier '
                'run in this work dir left them; they are not resumed '
                'from.')
        rest = [
            p for p in ordered
            if p not in newer and p not in stale and osp.abspath(p) != named
        ]
        return newer + [named] + rest

    def load_or_resume(self) -> None:
        """Load or resume; auto-resume falls back past unreadable files.
        The config dump is written here (:meth:`dump_config`), unless a
        resumed checkpoint is at the end of the schedule (nothing is
        trained)."""
        self._check_frozen_towers()
        if self._loop_kind == 'train' and not self._resume:
            self._warn_earlier_checkpoints()
        self._load_or_resume()
        if self._dump_pending and not self._resumed_complete:
            self._dump_pending = False
            self._write_config_dump()

    def _warn_earlier_checkpoints(self) -> None:
        """A new run (no ``--resume``) in a work dir that holds an earlier
        run's numbered checkpoints replaces those of the same names as it
        goes, beside the earlier run's later ones: said once, with the
        fixes (``--resume`` never takes the earlier run's later files:
        :meth:`_resume_candidates`)."""
        work_dir = self.work_dir
        names = [
            osp.basename(t[3])
            for t in sorted(_numbered_checkpoints(work_dir),
                            key=lambda t: t[1])
        ]
        if names:
            self.logger.warning(
                f'{work_dir} holds the checkpoints of an earlier run '
                f'({", ".join(names[:3])}{" ..." if len(names) > 3 else ""}'
                '); this new run (no --resume) replaces those of the same '
                'names as it goes. Fix: --resume to continue that run, or '
                'another --work-dir to keep it.')

    def _check_frozen_towers(self) -> None:
        """The frozen CLIP towers must hold the weights they were built
        with: Runner.train initialises the model's weights just before
        (``init_cfg``), and an initialiser reaching a tower replaces CLIP
        (:meth:`~mmcoop.models.backbones.frozen.FrozenMixin.
        check_weights_unchanged`)."""
        from mmcoop.models.backbones.frozen import FrozenMixin
        model = self.bare_model
        for name, module in model.named_modules():
            if isinstance(module, FrozenMixin):
                module.check_weights_unchanged(name)

    def _load_or_resume(self) -> None:
        """``resume`` and ``load_from``, one rule for every launcher
        (``tools/train.py``, ``mim train``, ``Runner.from_cfg``):

        * ``resume=False``: ``load_from`` (if any) is the initial weights;
        * ``resume='auto'`` (``tools/train.py --resume``): the work dir's
          latest checkpoint (:meth:`_resume_candidates`) is resumed, and
          ``load_from`` is not used (said at INFO); without one, the run
          starts from ``load_from`` as with ``resume=False``;
        * ``resume=True``: MMEngine's meaning, ``load_from`` is the
          checkpoint to resume (``--resume PATH``); without ``load_from``,
          as ``'auto'``.
        """
        if self._has_loaded:
            return None
        auto = self._resume == 'auto' or (self._resume is True
                                          and self._load_from is None)
        if not auto:
            return super().load_or_resume()
        candidates = self._resume_candidates()
        if not candidates:
            if self._load_from is not None:
                self.logger.info(
                    f'--resume: no checkpoint in {self.work_dir}; training '
                    f'starts from load_from={self._load_from}.')
                # initial weights, not a resume: hooks that read
                # `runner._resume` after loading (EMAHook) see a new run
                resume, self._resume = self._resume, False
                try:
                    self.load_checkpoint(self._load_from)
                finally:
                    self._resume = resume
                self._has_loaded = True
                return None
            self.logger.info(
                f'--resume: no checkpoint in {self.work_dir}; training starts '
                'from scratch.')
            return None
        if self._load_from is not None:
            # a missing load_from is no error here (check_load_from): the
            # pretrained file of a crashed run may have moved since
            missing = not osp.isfile(self._load_from)
            (self.logger.warning if missing else self.logger.info)(
                f'--resume: {self.work_dir} holds a checkpoint to resume; '
                f'load_from={self._load_from} (the initial weights of a new '
                'run) is not used' +
                (' (it does not exist).' if missing else '.'))
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
        """Apply mmcoop's load policy
        (:func:`mmcoop.engine.checkpoint_fit.check_checkpoint_fits`) with
        the config's ``checkpoint_check`` and the classes of the datasets
        already built (the head's when none is)."""
        targets = []
        for role, dataset in self._loaded_datasets():
            classes = (getattr(dataset, 'metainfo', None) or {}).get('classes')
            if classes:
                targets.append((f'the {role} dataset', list(classes)))
        for warning in check_checkpoint_fits(
                self.model,
                checkpoint,
                filename,
                checks=self.cfg.get('checkpoint_check', None),
                class_targets=targets,
                revise_keys=revise_keys,
                towers=self.clip_towers()):
            self.logger.warning(warning)

    def clip_towers(self) -> dict:
        """``{path: clip_identity}`` of the run's frozen CLIP towers: the
        model's (:func:`~mmcoop.models.backbones.frozen_clip.clip_towers`)
        and, for a feature-cache run, whose model has no image tower, the
        tower of its built ``CachedFeatureDataset`` as ``'backbone'``
        (recorded in every checkpoint, compared when one is loaded: a
        cached run's checkpoint is refused for another image tower as an
        uncached run's is)."""
        from mmcoop.models.backbones.frozen_clip import clip_towers
        model = self.bare_model
        towers = clip_towers(model)
        if 'backbone' not in towers:
            for _, dataset in self._loaded_datasets():
                while dataset is not None:
                    identity = getattr(dataset, 'clip_identity', None)
                    if isinstance(identity, dict):
                        towers['backbone'] = identity
                        return towers
                    dataset = getattr(dataset, 'dataset', None)
        return towers

    def load_checkpoint(self,
                        filename: str,
                        map_location: Union[str, Callable] = 'cpu',
                        strict: bool = False,
                        revise_keys: list = [(r'^module.', '')]):
        from mmcoop.apis.model_zoo import check_local_checkpoint
        check_local_checkpoint(
            filename, 'Checkpoint (`load_from`, `--resume` or the test '
            'checkpoint argument)')
        checkpoint = self._read_checkpoint(filename, map_location)
        self.check_checkpoint_fits(checkpoint, filename, revise_keys)
        if self._resuming:
            self._resumed_complete = self.check_resume_position(
                checkpoint, filename)
            if not self._resumed_complete:
                self._report_resume_overrides(checkpoint, filename)
                self._report_resume_train_batch(checkpoint, filename)
        self._loading = filename
        try:
            self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        finally:
            self._loading = None
        model = self.bare_model
        checkpoint = load_checkpoint_weights(
            model, checkpoint, filename, strict, revise_keys=revise_keys)
        if self._resuming and isinstance(checkpoint.get('meta'), dict):
            # MMEngine's resume() runs Config.fromstring on a stored
            # meta['config'] (for a `gpu_ids` no MMEngine runner records):
            # that would execute the file's text. Its copy here is dropped;
            # the file is left as it is.
            checkpoint['meta'] = {
                k: v for k, v in checkpoint['meta'].items() if k != 'config'
            }
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename}')
        return checkpoint

    # ------------------------------------------------------------------
    # save
    # ------------------------------------------------------------------
    def save_checkpoint(self, out_dir: str, filename: str, *args, **kwargs):
        """Save as MMEngine does, with ``meta['clip_towers']`` (the frozen
        CLIP towers of the run, :meth:`clip_towers`, which the load policy
        compares); local
        files go through
        :class:`~mmcoop.engine.atomic_backend.AtomicLocalBackend` (temp file
        + rename) unless the caller chose a backend (``backend_args`` /
        ``file_client_args``, as ``CheckpointHook`` passes them)."""
        bound = inspect.signature(Runner.save_checkpoint).bind(
            self, out_dir, filename, *args, **kwargs)
        bound.apply_defaults()
        call = dict(bound.arguments)
        del call['self']
        if (call['file_client_args'] is None and call['backend_args'] is None
                and '://' not in str(out_dir)):
            call['backend_args'] = dict(ATOMIC_BACKEND_ARGS)
        call['meta'] = dict(call['meta'] or {},
                            clip_towers=self.clip_towers(),
                            train_batch=self._train_batch())
        return super().save_checkpoint(**call)

    def _train_batch(self) -> dict:
        """The processes and the images per process and step that train
        (recorded in checkpoints; a resume compares them):
        :func:`train_batch_record`."""
        return train_batch_record(self.world_size,
                                  self.cfg.get('train_dataloader', None))

    def _report_resume_train_batch(self, checkpoint: dict,
                                   filename: str) -> None:
        """Warn when a resume trains with another global batch than the
        checkpoint's run (another number of processes, or images per
        process): the loss sums over the global batch and the lr is not
        rescaled, so the rest of the run follows another recipe. A
        checkpoint written before ``meta['train_batch']`` is compared by
        the config it carries (:func:`train_batch_in_config`; the message
        says so), on what that config records."""
        meta = checkpoint.get('meta') or {}
        then, source = meta.get('train_batch'), ''
        if not isinstance(then, dict):
            then = train_batch_in_config(meta.get('cfg'))
            source = (' (read from the config the checkpoint carries: it '
                      'predates the train_batch record)')
        now = self._train_batch()
        if not isinstance(then, dict) or not train_batch_differs(then, now):
            return

        def processes(b):
            n = b.get('world_size')
            return (f'{n} process(es)' if n is not None else
                    'an unrecorded number of processes')

        def words(b):
            return f"{processes(b)} x {b.get('batch_size')} images per step"

        self.logger.warning(
            f'--resume from {filename}: the checkpoint was trained with '
            f'{words(then)}{source}, this run has {words(now)}: the rest of '
            'the run trains with another global batch (the loss sums over '
            'it and the lr is not rescaled), so its result is not the '
            "recipe's. Fix: resume with " +
            (processes(then) if then.get('world_size') is not None else
             'as many processes as the run started with') + ' '
            '(tools/dist_train.sh CONFIG N --resume) and the batch size '
            'the run started with, or start a new run.')

# Copyright (c) mmcoop contributors. All rights reserved.
"""Checks of a whole config, run by ``MMCoopRunner`` before anything is
built or written.

* :func:`check_unknown_keys`: top-level keys that nothing reads (a typo
  such as ``modle=``) are named in a warning, or an error with
  ``strict_config=True`` (``--strict-config``). Only keys the user set
  count (in the config file itself or on the command line), not helper
  variables that only the overrides left unused.
* :func:`check_work_dir_outside_datasets`: a work dir inside a dataset
  folder is refused before MMEngine creates it or writes its log and
  config dump there.
* :func:`check_clip_towers`: the image tower (``model.backbone``) and the
  head's text tower (``model.head.text_encoder``) must be one CLIP (the
  same architecture and weights), and a head's ``in_channels`` its
  embedding width, checked before a feature cache is extracted.
* :func:`check_unseen_class_head`: a config that hides classes from
  training (``PartialLabelDataset(unseen_classes=...)``) with a head that
  cannot score a class it never trained on is refused, naming the head
  fields to change; an ``UnseenClassMetric`` whose classes the training
  does not hide gets a warning (not a zero-shot result).
"""
import ast
import difflib
import functools
import inspect
import os
import os.path as osp
import textwrap
import warnings
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from mmengine.utils import ManagerMixin
from torch import nn

from mmcoop.datasets.utils import check_outside_dataset
from mmcoop.utils.config_types import registered_class

__all__ = [
    'RUNNER_KEYS', 'MMCOOP_KEYS', 'BUILDER_KEYS', 'UnknownConfigKeyError',
    'check_unknown_keys', 'constructor_keywords', 'check_constructor_keys',
    'check_nested_keys', 'DATALOADERS', 'unread_keys_the_user_set',
    'dataset_dirs',
    'check_load_from', 'check_runner_compile', 'check_work_dir_is_a_folder',
    'check_work_dir_outside_datasets', 'config_dataset_dirs',
    'check_outputs_outside_datasets', 'UnseenClassHeadError',
    'unseen_class_fields', 'check_unseen_class_head', 'check_clip_towers'
]

#: top-level keys read by MMEngine's ``Runner`` / ``Runner.from_cfg`` and the
#: config machinery (MMEngine 0.10).
RUNNER_KEYS = frozenset({
    'model', 'work_dir', 'train_dataloader', 'val_dataloader',
    'test_dataloader', 'train_cfg', 'val_cfg', 'test_cfg', 'auto_scale_lr',
    'optim_wrapper', 'param_scheduler', 'val_evaluator', 'test_evaluator',
    'default_hooks', 'custom_hooks', 'data_preprocessor', 'load_from',
    'resume', 'launcher', 'env_cfg', 'log_processor', 'log_level',
    'visualizer', 'default_scope', 'randomness', 'experiment_name',
    'model_wrapper_cfg', 'find_unused_parameters', 'compile', 'runner_type',
    'custom_imports', 'gpu_ids', 'vis_backends', 'cfg',
    'activation_checkpointing', 'efficient_conv_bn_eval'
})

#: top-level keys mmcoop interprets (docs/architecture.md says where).
MMCOOP_KEYS = frozenset({
    'feature_cache', 'mmcoop_hooks', 'checkpoint_check', 'strict_config',
    'protocol', 'data_path'
})


#: keys of a registry config that MMEngine's builder reads itself
#: (``build_from_cfg``), not the constructor of its type.
BUILDER_KEYS = frozenset({'type', '_scope_'})


class UnknownConfigKeyError(ValueError):
    """A config has top-level keys that nothing reads (strict mode), or a
    key that the constructor of its ``type`` refuses."""


def _did_you_mean(key: str, known: Iterable[str], n: int = 1) -> str:
    """`` (did you mean 'a' or 'b'?)`` with the ``n`` names of ``known``
    closest to ``key``; ``''`` if none is close."""
    close = difflib.get_close_matches(key, sorted(known), n=n)
    return f' (did you mean {" or ".join(map(repr, close))}?)' if close \
        else ''


def _contains(tree: Any, value: Any) -> bool:
    """Whether ``value`` occurs (by equality) anywhere inside ``tree``."""
    if type(tree) is type(value) and tree == value:
        return True
    if isinstance(tree, dict):
        return any(_contains(v, value) for v in tree.values())
    if isinstance(tree, (list, tuple)):
        return any(_contains(v, value) for v in tree)
    return False


def _assigned_names(path: str) -> Optional[Set[str]]:
    """The names a Python config file assigns itself at module level (in
    ``if`` / ``with`` / ``try`` blocks too, not in functions or classes);
    None if ``path`` is not a readable Python file."""
    if not isinstance(path, str) or not path.endswith('.py') or \
            not osp.isfile(path):
        return None
    try:
        with open(path, encoding='utf-8') as f:
            tree = ast.parse(f.read(), filename=path)
    except (OSError, SyntaxError, ValueError):
        return None
    names = set()

    class Visitor(ast.NodeVisitor):

        def visit_Name(self, node):
            if isinstance(node.ctx, ast.Store):
                names.add(node.id)

        def skip(self, node):
            pass

        visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = skip
        visit_Lambda = skip

    Visitor().visit(tree)
    return names


def _unread_keys(cfg, known: Set[str]) -> List[str]:
    """Top-level keys of ``cfg`` that nothing reads (see
    :func:`check_unknown_keys`), sorted."""
    used = {k: v for k, v in cfg.items() if k in known}
    return sorted(
        key for key, value in cfg.items()
        if key not in known and not key.startswith('_')
        and not _contains(used, value))


def unread_keys_the_user_set(cfg, unread: List[str],
                             known: Set[str]) -> List[str]:
    """Of the ``unread`` top-level keys of ``cfg``, those the user set:
    added or changed on the command line, or assigned in the config file
    itself and unread there already. Not the others: a base config's
    variable that the file does not assign (``img_size`` once the pipelines
    are replaced), nor a variable of the file that command-line overrides
    left unused (``data_root`` after ``--cfg-options
    train_dataloader.dataset.data_root=...``). A config without a Python
    file: all of ``unread``."""
    own = _assigned_names(getattr(cfg, 'filename', None))
    if own is None:
        return list(unread)
    from mmengine.config import Config
    try:  # the file as written: its bases merged, no --cfg-options
        as_written = Config.fromfile(cfg.filename)
    except Exception:  # noqa: BLE001 - then every key counts as set
        return list(unread)
    unread_as_written = set(_unread_keys(as_written, known))
    return [
        key for key in unread
        if key not in as_written or cfg[key] != as_written[key] or (
            key in own and key in unread_as_written)
    ]


def check_unknown_keys(cfg, known: Iterable[str] = (),
                       inherited: bool = False) -> List[str]:
    """Warn about (or, with ``cfg.strict_config``, refuse) top-level keys
    that nothing reads.

    A key is read when MMEngine's runner or mmcoop interprets it
    (:data:`RUNNER_KEYS`, :data:`MMCOOP_KEYS`, ``known``), or when it is a
    helper variable of the config file whose value is used in a key that
    is read (``data_root``, ``train_pipeline``, ...). Only keys the user
    set are reported (:func:`unread_keys_the_user_set`): a helper variable
    that only the overrides left unused is not a mistake;
    ``inherited=True`` reports every unread key, the base configs'
    variables included (for checking the shipped configs). Returns the
    unknown keys.
    """
    known = RUNNER_KEYS | MMCOOP_KEYS | set(known)
    unknown = _unread_keys(cfg, known)
    if unknown and not inherited:
        unknown = unread_keys_the_user_set(cfg, unknown, known)
    if not unknown:
        return []
    hints = [f'{key!r}{_did_you_mean(key, known)}' for key in unknown]
    where = f' of {cfg.filename}' if getattr(cfg, 'filename', None) else ''
    msg = (f'Top-level config key(s){where} that nothing reads: '
           f'{", ".join(hints)}. A misspelt key silently keeps the inherited '
           'value, and a base config\'s variable (such as data_root) set '
           'here does not change the keys the base built from it. Fix: '
           'correct or remove them, or set the keys that use them (e.g. '
           'train_dataloader.dataset.data_root); helper variables must be '
           'used in a key that is read.')
    if cfg.get('strict_config', False):
        raise UnknownConfigKeyError(msg + ' (strict_config=True)')
    warnings.warn(msg + ' Set strict_config=True (--strict-config) to '
                  'make this an error.')
    return unknown


#: methods of a ``**kwargs`` dict that remove no key.
_KEEPING_METHODS = frozenset(
    {'get', 'setdefault', 'update', 'copy', 'keys', 'items', 'values'})


def _is_super_init(call: ast.AST) -> bool:
    """Whether ``call`` is ``super().__init__(...)`` (or with arguments to
    ``super``)."""
    func = getattr(call, 'func', None)
    return (isinstance(call, ast.Call) and isinstance(func, ast.Attribute)
            and func.attr == '__init__'
            and isinstance(func.value, ast.Call)
            and getattr(func.value.func, 'id', None) == 'super')


def _passes_kwargs_on(init, name: str) -> Optional[bool]:
    """Whether the ``__init__`` ``init`` passes every key of its ``**name``
    on to ``super().__init__``, read from its source: True if it does so
    and removes none on the way (its other uses read, set or copy keys:
    ``name.get(k)``, ``name[k] = v``, ``f(**name)``, ``k in name``), False
    if it never does (it keeps or ignores them), None otherwise (a key may
    be removed: ``name.pop(k)``, ``del name[k]``, ``name`` rebound or
    handed to a function; or no source)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(init)))
    except (OSError, TypeError, SyntaxError):
        return None
    parents = {
        child: node
        for node in ast.walk(tree) for child in ast.iter_child_nodes(node)
    }
    passed = False
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Name) and node.id == name):
            continue
        up = parents[node]
        if isinstance(up, ast.keyword) and up.arg is None:
            passed = passed or _is_super_init(parents[up])
        elif not (isinstance(node.ctx, ast.Load) and (
                (isinstance(up, ast.Subscript)
                 and not isinstance(up.ctx, ast.Del))
                or (isinstance(up, ast.Attribute)
                    and up.attr in _KEEPING_METHODS)
                or (isinstance(up, ast.Compare) and node in up.comparators))):
            return None
    return passed


@functools.lru_cache(maxsize=None)
def constructor_keywords(cls: type) -> Optional[Tuple[frozenset, bool]]:
    """``(names, certain)``: the keys that building ``cls`` from a config
    accepts (its keyword arguments), and whether any other key certainly
    fails; None where that cannot be told.

    The names are those of the ``__init__`` of ``cls`` and, while it takes
    ``**kwargs``, of the ``__init__`` of its bases in MRO order, up to the
    first without ``**kwargs``. Another key then fails with ``unexpected
    keyword argument``: ``certain`` if every ``**kwargs`` on the way passes
    all its keys to ``super().__init__`` (read from the source,
    :func:`_passes_kwargs_on`), else probably (one may remove a key from
    ``kwargs`` itself). None for an ``__init__`` that keeps its
    ``**kwargs``, for ``object`` / ``nn.Module`` reached with ``**kwargs``
    everywhere, and for a signature that cannot be read. A class without
    an ``__init__`` (nor ``__new__``) of its own takes no key; a
    ``ManagerMixin`` also takes ``name`` (MMEngine builds it with
    ``get_instance``).
    """
    names, certain = set(), True
    if issubclass(cls, ManagerMixin):
        names.add('name')
    if cls.__init__ is object.__init__ and cls.__new__ is object.__new__:
        return frozenset(names), True  # takes no arguments
    for klass in cls.__mro__:
        init = vars(klass).get('__init__')
        if init is None:
            continue
        if klass in (object, nn.Module):
            return None
        try:
            params = list(inspect.signature(init).parameters.values())[1:]
        except (TypeError, ValueError):
            return None
        names.update(p.name for p in params
                     if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))
        kwargs = [p.name for p in params if p.kind is p.VAR_KEYWORD]
        if not kwargs:
            return frozenset(names), certain
        passed = _passes_kwargs_on(init, kwargs[0])
        if passed is False:
            return None
        certain = certain and passed is True
    return None


def _unknown_key_message(path: str, cls: type, unknown: List[str],
                         names: Iterable[str], certain: bool,
                         filename: Optional[str]) -> str:
    """The message of :func:`check_constructor_keys` for the keys
    ``unknown`` of the config dict at ``path`` (type ``cls``)."""
    keys = ', '.join(f'`{path}.{key}`{_did_you_mean(key, names, n=3)}'
                     for key in unknown)
    many = len(unknown) > 1
    it = 'them' if many else 'it'
    where = f' in {filename}' if filename else ''
    kind = f'`{path}` is a {cls.__name__} ({cls.__module__})'
    why = (f'{kind}, which takes no such argument: building it would fail '
           'with "unexpected keyword argument"' if certain else
           f'{kind}, and neither it nor the bases it passes **kwargs to '
           f'take such an argument: unless it reads {it} from **kwargs '
           f'itself, building it fails or ignores {it}')
    return (f'{"Probably u" if not certain else "U"}nknown config '
            f'key{"s" if many else ""} {keys}{where}: {why}. Fix: rename '
            f'{it}, or remove {it} (in the config file or --cfg-options). '
            f'{cls.__name__} takes: {", ".join(sorted(names)) or "nothing"}.')


def check_constructor_keys(tree: Any,
                           path: str,
                           registry,
                           filename: Optional[str] = None,
                           subtrees: Optional[Dict[str, Any]] = None,
                           scope: str = 'mmcoop',
                           read_by_caller: Iterable[str] = ()) -> List[str]:
    """Name the keys of the config subtree ``tree`` (at ``path``, e.g.
    ``'model'``) that the constructor of their ``type`` does not take,
    such as ``model.head.n_ctxx``, without building anything.

    Every dict below ``tree`` whose ``type`` names a class of ``registry``
    (:func:`~mmcoop.utils.config_types.registered_class`: in its
    ``_scope_``, else ``scope``; a class given as ``type`` is itself) is
    compared with the keys that class accepts
    (:func:`constructor_keywords`), apart from the builder's own
    :data:`BUILDER_KEYS` and the keys ``read_by_caller`` of ``tree``
    itself (a hook's ``priority``, read by the runner). The values of a
    key in ``subtrees`` are built by the registry it maps to
    (``{'pipeline': TRANSFORMS}`` below a dataset).

    Not judged: other types (unregistered: building names them; builder
    functions), classes whose keys cannot be told, and ``*_cfg``
    subtrees, which other builders read (``init_cfg``: the initializers;
    mmcv's layer builders take keys of their own, such as ``norm_cfg``'s
    ``requires_grad``; ``train_cfg``'s batch augments).

    Returns:
        list[str]: the paths of the dicts judged.

    Raises:
        UnknownConfigKeyError: a key that building certainly refuses,
            naming its path, the class, the config file (``filename``),
            the close names and the fix.

    A key that building probably refuses (a ``**kwargs`` on the way may
    remove keys itself) gets a warning with the same content.
    """
    if isinstance(tree, (list, tuple)):
        return [
            judged for i, item in enumerate(tree)
            for judged in check_constructor_keys(
                item, f'{path}[{i}]', registry, filename, subtrees, scope)
        ]
    if not isinstance(tree, dict):
        return []
    scope = tree.get('_scope_') or scope
    cls = registered_class(registry, tree, scope)
    accepted = constructor_keywords(cls) if cls else None
    judged = []
    if accepted is not None:
        judged.append(path)
        names, certain = accepted
        names = names | frozenset(read_by_caller)
        unknown = [k for k in tree if k not in names and k not in BUILDER_KEYS]
        if unknown:
            msg = _unknown_key_message(path, cls, unknown, names, certain,
                                       filename)
            if certain:
                raise UnknownConfigKeyError(msg)
            warnings.warn(msg)
    for key, value in tree.items():
        if not (isinstance(key, str) and key.endswith(('_cfg', '_cfgs'))):
            judged += check_constructor_keys(
                value, f'{path}.{key}', (subtrees or {}).get(key, registry),
                filename, subtrees, scope)
    return judged


#: the dataloaders whose ``dataset`` :func:`check_nested_keys` checks.
DATALOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


#: keys of a hook config that the runner reads itself (``register_hook``).
HOOK_RUNNER_KEYS = ('priority', )
#: keys of a ``param_scheduler`` entry that the runner reads itself
#: (``build_param_scheduler``).
SCHEDULER_RUNNER_KEYS = ('convert_to_iter_based', )
#: keys of ``optim_wrapper`` that the optimizer wrapper constructor reads
#: (``DefaultOptimWrapperConstructor``), not the wrapper.
OPTIM_WRAPPER_CONSTRUCTOR_KEYS = ('constructor', 'paramwise_cfg')


def check_nested_keys(cfg) -> List[str]:
    """:func:`check_constructor_keys` of the parts of ``cfg`` that MMEngine
    builds from a registry ``type``, in the config's ``default_scope``
    (else ``'mmcoop'``): the ``model`` and the top-level
    ``data_preprocessor`` (``MODELS``), the
    :data:`DATALOADERS`' ``dataset`` (``DATASETS``, wrappers' inner
    datasets included) with its ``pipeline`` (``TRANSFORMS``) and their
    ``sampler`` (``DATA_SAMPLERS``), the ``val_evaluator`` /
    ``test_evaluator`` metrics (``METRICS``; a dict with ``metrics`` is an
    evaluator of its own and not judged) and the ``custom_hooks`` /
    ``default_hooks`` (``HOOKS``; their ``priority`` is the runner's) and
    the ``param_scheduler`` entries (``PARAM_SCHEDULERS``; their
    ``convert_to_iter_based`` is the runner's), and the ``optim_wrapper``
    (``OPTIM_WRAPPERS``; ``constructor`` and ``paramwise_cfg`` are the
    constructor's) with its ``optimizer`` (``OPTIMIZERS``). Returns the
    paths of the dicts judged."""
    from mmcoop.registry import (DATA_SAMPLERS, DATASETS, HOOKS, METRICS,
                                 MODELS, OPTIM_WRAPPERS, OPTIMIZERS,
                                 PARAM_SCHEDULERS, TRANSFORMS)
    filename = getattr(cfg, 'filename', None)
    scope = cfg.get('default_scope', None) or 'mmcoop'
    judged = []
    for field in ('model', 'data_preprocessor'):
        judged += check_constructor_keys(
            cfg.get(field, None), field, MODELS, filename, scope=scope)
    for field in DATALOADERS:
        loader = cfg.get(field, None)
        if isinstance(loader, dict):
            judged += check_constructor_keys(
                loader.get('dataset', None), f'{field}.dataset', DATASETS,
                filename, {'pipeline': TRANSFORMS}, scope)
            judged += check_constructor_keys(
                loader.get('sampler', None), f'{field}.sampler',
                DATA_SAMPLERS, filename, scope=scope)
    for field in ('val_evaluator', 'test_evaluator'):
        evaluator = cfg.get(field, None)
        if not (isinstance(evaluator, dict) and 'metrics' in evaluator):
            judged += check_constructor_keys(evaluator, field, METRICS,
                                             filename, scope=scope)
    hooks = cfg.get('custom_hooks', None)
    for i, hook in enumerate(hooks if isinstance(hooks, list) else []):
        judged += check_constructor_keys(
            hook, f'custom_hooks[{i}]', HOOKS, filename, scope=scope,
            read_by_caller=HOOK_RUNNER_KEYS)
    hooks = cfg.get('default_hooks', None)
    for name, hook in (hooks.items() if isinstance(hooks, dict) else ()):
        judged += check_constructor_keys(
            hook, f'default_hooks.{name}', HOOKS, filename, scope=scope,
            read_by_caller=HOOK_RUNNER_KEYS)
    schedulers = cfg.get('param_scheduler', None)
    if isinstance(schedulers, dict):
        schedulers = [schedulers]
    for i, scheduler in enumerate(
            schedulers if isinstance(schedulers, list) else []):
        judged += check_constructor_keys(
            scheduler, f'param_scheduler[{i}]', PARAM_SCHEDULERS, filename,
            scope=scope, read_by_caller=SCHEDULER_RUNNER_KEYS)
    judged += check_constructor_keys(
        cfg.get('optim_wrapper', None), 'optim_wrapper', OPTIM_WRAPPERS,
        filename, {'optimizer': OPTIMIZERS}, scope,
        read_by_caller=OPTIM_WRAPPER_CONSTRUCTOR_KEYS)
    return judged


def _join(root: Optional[str], path: Any) -> Optional[str]:
    if not isinstance(path, str) or not path or '://' in path:
        return None
    if root and not osp.isabs(osp.expanduser(path)):
        return osp.join(root, path)
    return path


def dataset_dirs(dataset: Any) -> List[str]:
    """The dataset trees of a dataset (config dict or object, through
    wrappers such as ``PartialLabelDataset``): ``data_root`` and the
    ``data_prefix`` folders. (The folder of an ``ann_file`` outside
    ``data_root`` is not one: annotation files often lie in a project
    folder that also holds ``work_dirs``.)"""
    out = []
    while dataset is not None:
        get = (dataset.get if isinstance(dataset, dict) else
               lambda k, d=None, o=dataset: getattr(o, k, d))
        root = get('data_root', None)
        root = root if isinstance(root, str) and root else None
        out.append(root)
        prefix = get('data_prefix', None)
        if isinstance(prefix, dict):
            out.extend(_join(root, v) for v in prefix.values())
        else:
            out.append(_join(root, prefix))
        dataset = get('dataset', None)
        if isinstance(dataset, (list, tuple)):  # ConcatDataset-like
            for d in dataset:
                out.extend(dataset_dirs(d))
            break
    return [d for d in out if d]


def check_load_from(cfg) -> None:
    """Refuse a ``resume`` other than ``False``, ``True`` or ``'auto'``
    (or ``None``)
    (:meth:`~mmcoop.engine.runner.MMCoopRunner.load_or_resume`), and a
    ``load_from`` (``--resume PATH``, the checkpoint argument of
    ``tools/test.py``, or the config's) that is a URL, a folder or missing,
    before the runner makes its work dir and builds the model (the runner
    refuses the same when it loads, later).

    With ``resume='auto'`` and a checkpoint in ``cfg.work_dir`` to resume
    (:func:`~mmcoop.engine.runner.auto_resume_finds_checkpoint`),
    ``load_from`` is not used and a missing (blank, remote, folder) one is
    no error (the runner says so in one warning): the pretrained file of a
    crashed run may have moved since it started."""
    from mmcoop.apis.model_zoo import check_local_checkpoint
    from mmcoop.engine.runner import auto_resume_finds_checkpoint
    from mmcoop.utils.paths import check_not_a_list
    resume = cfg.get('resume', False)
    if not (resume is None or isinstance(resume, bool) or resume == 'auto'):
        raise ValueError(
            f'resume must be False, True or \'auto\', got {resume!r}. '
            "Fix: resume='auto' (tools/train.py --resume) resumes the work "
            "dir's latest checkpoint, or starts from `load_from` when it "
            'has none; resume=True with load_from=PATH (--resume PATH) '
            'resumes PATH.')
    path = cfg.get('load_from', None)
    check_not_a_list(path, 'load_from')
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise ValueError(
            f'load_from must be the path of a checkpoint file or None, got '
            f'{path!r} ({type(path).__name__}). Fix: '
            "load_from='path/to/checkpoint.pth', or None for no initial "
            'weights.')
    if path is None or (resume == 'auto' and auto_resume_finds_checkpoint(
            cfg.get('work_dir'))):
        return  # none, or not used: the work dir's checkpoint is resumed
    if isinstance(path, str) and not path.strip():
        # an unset shell variable (load_from="$CKPT"): MMEngine would try
        # to load '' once the model and the data are built
        raise ValueError(
            f'load_from {path!r} is empty. Fix: give a checkpoint file, or '
            'load_from=None for no initial weights.')
    if isinstance(path, str):
        check_local_checkpoint(
            path, 'Checkpoint to resume (`load_from` with `resume=True`, '
            'e.g. --resume PATH)'
            if resume is True else 'Checkpoint `load_from`')


def check_runner_compile(cfg) -> None:
    """Check MMEngine's top-level ``compile`` (``torch.compile`` of the
    model's steps) as the towers' ``compile`` is checked
    (:func:`~mmcoop.models.backbones.tower_compile.parse_compile`), before
    anything is built: MMEngine reads it only when the train loop starts,
    after the datasets, the model and a feature cache are built, with a
    bare ``AssertionError`` or ``TypeError``."""
    from mmcoop.models.backbones.tower_compile import parse_compile
    if 'compile' in cfg:
        parse_compile(None, cfg['compile'])


def check_work_dir_is_a_folder(work_dir: str) -> None:
    """Refuse a ``work_dir`` that is a file, lies below one or cannot be
    written (:func:`mmcoop.utils.paths.check_output_folder`; MMEngine
    would stop with a bare ``FileExistsError`` from ``os.makedirs``)."""
    from mmcoop.utils.paths import OutputPathError, check_output_folder
    if isinstance(work_dir, str) and not work_dir.strip():
        # an unset shell variable (--work-dir "$W"): MMEngine would write
        # the checkpoints, logs and dump into the current folder
        raise OutputPathError(
            f"work_dir {work_dir!r} (--work-dir or the config's `work_dir`) "
            'is empty: the run would write its checkpoints, logs and '
            'config dump into the current folder. Fix: give a folder, e.g. '
            '--work-dir work_dirs/<experiment> (or leave --work-dir out for '
            'work_dirs/<config name>).')
    if isinstance(work_dir, str) and '://' not in work_dir:
        check_output_folder(
            work_dir, f"work_dir {work_dir!r} (--work-dir or the config's "
            '`work_dir`)')


def check_work_dir_outside_datasets(work_dir: str, loaders: Iterable) -> None:
    """Raise ``ValueError`` if ``work_dir`` lies inside a folder that a
    dataloader's dataset reads from (``loaders``: dataloader configs or
    objects, None entries are skipped)."""
    check_outside_dataset(
        work_dir, _loader_dataset_dirs(loaders), 'work dir',
        example="'work_dirs/<experiment>'")


def _loader_dataset_dirs(loaders: Iterable) -> List[str]:
    """The dataset folders (:func:`dataset_dirs`) of dataloader configs or
    objects; None entries are skipped."""
    dirs = []
    for loader in loaders:
        if loader is None:
            continue
        dataset = (loader.get('dataset', None) if isinstance(loader, dict)
                   else getattr(loader, 'dataset', None))
        dirs.extend(dataset_dirs(dataset))
    return dirs


def config_dataset_dirs(cfg) -> List[str]:
    """The dataset folders (:func:`dataset_dirs`) of every dataloader of a
    config (``train_dataloader``, ``val_dataloader``, ``test_dataloader``;
    a missing or None one is skipped)."""
    return _loader_dataset_dirs(cfg.get(key, None) for key in DATALOADERS)


def check_outputs_outside_datasets(
        cfg, outputs: Iterable[Tuple[str, Optional[str], str]]) -> None:
    """Raise ``ValueError`` if an output of a tool lies inside a dataset
    folder of ``cfg`` (any dataloader's, :func:`config_dataset_dirs`), before
    anything is written: a later run would read the files (and the demo
    refuses a tree it did not write). ``outputs``: ``(what, path,
    example)``, e.g. ``('output folder (--out-dir)', args.out_dir,
    "'work_dirs/analysis'")``; a None or empty path is skipped."""
    dirs = config_dataset_dirs(cfg)
    for what, path, example in outputs:
        if path:
            check_outside_dataset(path, dirs, what, example=example)


class UnseenClassHeadError(ValueError):
    """A config hides classes in training from a head that cannot score a
    class it never trained on."""


def unseen_class_fields(cfg) -> List[str]:
    """The fields of ``cfg`` that set unseen classes: every ``unseen_classes``
    that is not None below ``train_dataloader`` (``PartialLabelDataset``:
    hidden in every training image), ``val_evaluator`` and
    ``test_evaluator`` (``UnseenClassMetric``: scored as unseen)."""
    found = []

    def walk(tree: Any, path: str) -> None:
        if isinstance(tree, dict):
            if tree.get('unseen_classes') is not None:
                kind = tree.get('type')
                kind = getattr(kind, '__name__', kind)
                found.append(f'`{path}.unseen_classes`' +
                             (f' ({kind})' if kind else ''))
            for key, value in tree.items():
                walk(value, f'{path}.{key}')
        elif isinstance(tree, (list, tuple)):
            for i, value in enumerate(tree):
                walk(value, f'{path}[{i}]')

    for key in ('train_dataloader', 'val_evaluator', 'test_evaluator'):
        walk(cfg.get(key, None), key)
    return found


def check_unseen_class_head(cfg) -> None:
    """Raise :class:`UnseenClassHeadError` if ``cfg`` hides classes in
    training (``unseen_classes`` below ``train_dataloader``,
    :func:`unseen_class_fields`) and its ``model.head`` cannot score a
    class it never trained on.

    An ``UnseenClassMetric`` whose classes the training does not hide is
    not an error (a model trained on every class, reported on the split:
    the split's upper bound), but a warning says that its "unseen" figures
    are not zero-shot figures.

    The head type answers for itself from the config, without building it
    (:meth:`~mmcoop.models.heads.PartialLabelHead.unseen_class_obstacles`;
    a built head says the same in ``scores_unseen_classes``). A head type
    that does not answer (not an mmcoop head) is refused too. Configs
    without unseen classes, or whose ``model.head`` is not a dict with a
    registered ``type``, are not checked here.
    """
    fields = unseen_class_fields(cfg)
    hidden = [f for f in fields if f.startswith('`train_dataloader')]
    if fields and not hidden:
        warnings.warn(
            f'{" and ".join(fields)} score classes as unseen, but the '
            'training hides no class (no `unseen_classes` below '
            '`train_dataloader`): the model trains on those classes, so '
            'its "unseen" figures are an upper bound, not a zero-shot '
            'result. Fix for a zero-shot run: set the same classes in '
            '`PartialLabelDataset(unseen_classes=...)` (docs/data.md §9).')
        return
    head = (cfg.get('model', None) or {}).get('head', None)
    if not hidden or not isinstance(head, dict) or 'type' not in head:
        return
    head_type = _model_class(head)
    if head_type is None:  # building the model names the unknown type
        return
    name = getattr(head_type, '__name__', str(head_type))
    answer = getattr(head_type, 'unseen_class_obstacles', None)
    obstacles = answer(dict(head)) if callable(answer) else [
        f'{name} does not say whether it can (mmcoop heads define '
        '`unseen_class_obstacles`). Fix: an mmcoop head that can'
    ]
    if not obstacles:
        return
    where = f' in {cfg.filename}' if getattr(cfg, 'filename', None) else ''
    raise UnseenClassHeadError(
        f'{" and ".join(fields)}{where} set unseen classes, but '
        f'`model.head` ({name}) cannot score a class it never trained on: '
        f'{"; ".join(obstacles)}. Its scores for those classes would come '
        'from untrained parameters. Either change the head as said (see '
        'docs/data.md §9, "Which methods can score an unseen class"), or '
        'remove `unseen_classes` and `UnseenClassMetric` from the config.')


def _model_class(cfg) -> Optional[type]:
    """The class a model config's ``type`` names in mmcoop's scope (None
    for a missing or unknown type: building the model names it)."""
    from mmcoop.registry import MODELS
    return registered_class(MODELS, cfg)


def _arg(cls: type, cfg: dict, field: str) -> Any:
    """``cfg[field]``, or the default of ``cls``'s constructor."""
    if field in cfg:
        return cfg[field]
    param = inspect.signature(cls).parameters.get(field)
    return None if param is None else param.default


def _same_weights(a: Any, b: Any) -> bool:
    """``pretrained`` values that load the same weights: equal, or two
    spellings of one existing file."""
    if a == b:
        return True
    if not (isinstance(a, str) and isinstance(b, str)):
        return False
    a, b = (osp.expanduser(p) for p in (a, b))
    return osp.isfile(a) and osp.isfile(b) and osp.samefile(a, b)


def check_clip_towers(cfg) -> None:
    """Refuse a config whose image and text towers are not one CLIP.

    A ``FrozenCLIP`` backbone and the head's ``FrozenCLIPTextEncoder`` must
    agree on ``CLIP_IDENTITY`` (:mod:`~mmcoop.models.backbones.clip_loader`;
    missing keys read as the constructor defaults): the prompt heads
    compare image regions with text features,
    which only share an embedding space within one CLIP. Two different
    CLIPs of the same width would otherwise train without an error (e.g.
    ``--cfg-options model.backbone.pretrained=FILE`` with the text encoder
    left at the config's tag). A head with ``in_channels`` (BaselineHead)
    must have the backbone's embedding width. Checked from the config, so
    before a feature cache is extracted with the backbone; configs without
    a ``FrozenCLIP`` backbone are not checked here.

    Raises:
        ValueError: naming the two fields, their values and the fix.
    """
    from mmcoop.models.backbones import FrozenCLIP, FrozenCLIPTextEncoder
    from mmcoop.models.backbones.clip_loader import (CLIP_IDENTITY,
                                                     check_model_name,
                                                     clip_embed_dim)
    model = cfg.get('model', None) or {}
    backbone, head = model.get('backbone'), model.get('head')
    image_cls = _model_class(backbone)
    if not (isinstance(head, dict) and image_cls
            and issubclass(image_cls, FrozenCLIP)):
        return
    where = f' ({cfg.filename})' if getattr(cfg, 'filename', None) else ''
    image = {f: _arg(image_cls, backbone, f) for f in CLIP_IDENTITY}
    # a typo is named as such, not as two different CLIPs
    check_model_name(image['model_name'], '`model.backbone.model_name`')
    text_cfg = head.get('text_encoder')
    text_cls = _model_class(text_cfg)
    if text_cls and issubclass(text_cls, FrozenCLIPTextEncoder):
        check_model_name(
            _arg(text_cls, text_cfg, 'model_name'),
            '`model.head.text_encoder.model_name`')
        for field in CLIP_IDENTITY:
            if field == 'init_seed' and image['pretrained'] is not None:
                continue
            a, b = image[field], _arg(text_cls, text_cfg, field)
            if (_same_weights(a, b) if field == 'pretrained' else a == b):
                continue
            raise ValueError(
                f'model.backbone.{field}={a!r} but '
                f'model.head.text_encoder.{field}={b!r}{where}: the image '
                'and text towers must be one CLIP (the head compares image '
                'regions with text features, which share an embedding space '
                f'only within one CLIP). Fix: give both the same {field}, '
                f'e.g. --cfg-options model.backbone.{field}=VALUE '
                f'model.head.text_encoder.{field}=VALUE.')
    head_cls = _model_class(head)
    if head_cls is None or 'in_channels' not in inspect.signature(
            head_cls).parameters:
        return
    width = clip_embed_dim(image['model_name'])
    in_channels = _arg(head_cls, head, 'in_channels')
    if width is not None and in_channels != width:
        raise ValueError(
            f'model.head.in_channels={in_channels!r}{where}, but the '
            f'backbone {image["model_name"]!r} gives {width}-d features. '
            f'Fix: model.head.in_channels={width}.')


def check_thresholds_agree(cfg) -> None:
    """Warn when ``model.head.thr`` (the threshold predictions are labelled
    with: ``pred_label``, inference, export) differs from the ``thr`` of a
    ``PartialMultiLabelMetric`` in ``val_evaluator`` / ``test_evaluator``
    (the one CP/CR/CF1 and OP/OR/OF1 are computed at, 0.5 unless set): a
    ``--cfg-options model.head.thr=0.3`` otherwise changed the labels but
    not one reported number. Only thresholds the config gives are
    compared (the head labels the top k with ``topk``)."""
    head = (cfg.get('model', None) or {}).get('head', None)
    thr = head.get('thr', None) if isinstance(head, dict) else None
    if thr is None or isinstance(thr, bool) or not isinstance(
            thr, (int, float)):
        return
    for key in ('val_evaluator', 'test_evaluator'):
        evaluator = cfg.get(key, None)
        if isinstance(evaluator, dict) and 'metrics' in evaluator:
            key, evaluator = f'{key}.metrics', evaluator['metrics']
        named = [(key, evaluator)] if isinstance(evaluator, dict) else [
            (f'{key}[{i}]', m) for i, m in enumerate(evaluator or [])
        ]
        for where, metric in named:
            kind = metric.get('type') if isinstance(metric, dict) else None
            name = kind if isinstance(kind, str) else getattr(
                kind, '__name__', '')
            if name.split('.')[-1] != 'PartialMultiLabelMetric':
                continue
            metric_thr = metric.get('thr', 0.5)
            if metric_thr != thr:
                warnings.warn(
                    f'model.head.thr = {thr} labels the predictions, but '
                    f'{where}.thr = {metric_thr} is the threshold of the '
                    'reported CP/CR/CF1 and OP/OR/OF1: the labels and the '
                    'numbers are of different thresholds. Fix: set both '
                    f'(e.g. --cfg-options model.head.thr={thr} '
                    f'{where}.thr={thr}).')


def check_normalization(cfg) -> None:
    """Warn when ``model.data_preprocessor``'s ``mean`` / ``std`` (0-255)
    are not the image statistics the ``FrozenCLIP`` weights expect
    (:func:`~mmcoop.models.backbones.clip_loader.clip_normalization`: the
    tag's, or those all of the architecture's releases share): a config
    switched to another family (``--cfg-options model.backbone.model_name=
    ...``) kept the old family's normalisation, and the tower then sees
    other inputs than it was trained on, without a word. Configs whose
    weights' statistics cannot be told (releases that disagree and a local
    file), or without a ``FrozenCLIP`` backbone or stated statistics, are
    not checked."""
    import numpy as np

    from mmcoop.models.backbones import FrozenCLIP
    from mmcoop.models.backbones.clip_loader import clip_normalization
    model = cfg.get('model', None) or {}
    backbone = model.get('backbone')
    image_cls = _model_class(backbone)
    pre = model.get('data_preprocessor') or cfg.get('data_preprocessor')
    pre_cls = _model_class(pre) if isinstance(pre, dict) else None
    if not (image_cls and issubclass(image_cls, FrozenCLIP) and pre_cls):
        return
    mean, std = _arg(pre_cls, pre, 'mean'), _arg(pre_cls, pre, 'std')
    model_name = _arg(image_cls, backbone, 'model_name')
    if mean is None or std is None or not isinstance(model_name, str):
        return
    try:
        expected = clip_normalization(
            model_name, _arg(image_cls, backbone, 'pretrained'))
        given = (np.asarray(mean, float).reshape(-1) / 255,
                 np.asarray(std, float).reshape(-1) / 255)
    except (ValueError, TypeError):
        return  # releases that disagree, or values the preprocessor refuses
    if all(g.shape == (3, ) and np.allclose(g, e, rtol=1e-3, atol=1e-4)
           for g, e in zip(given, expected)):
        return
    shown = [tuple(round(255 * v, 3) for v in e) for e in expected]
    warnings.warn(
        f'model.data_preprocessor mean={list(mean)} std={list(std)} are not '
        f'the image statistics the weights of {model_name!r} expect (mean='
        f'{list(shown[0])}, std={list(shown[1])} on the 0-255 scale): the '
        'tower would see other inputs than it was trained on (a config '
        'switched to another CLIP family keeps the old normalisation). '
        "Fix: set model.data_preprocessor's mean and std to these (the "
        "family's base config in configs/_base_/models/clip_families/ "
        'states them).')

# Copyright (c) mmcoop contributors. All rights reserved.
"""Command-line arguments shared by ``tools/train.py`` and ``tools/test.py``
and their merge into the config.

Only the mapping *CLI argument -> config key* lives here; what a config key
means is decided by :meth:`mmcoop.engine.MMCoopRunner.from_cfg`, which every
launcher reaches (the tools, ``mim``, notebooks).
"""
import argparse
import os
import os.path as osp
import re
from typing import Any, Optional

from mmengine.config import Config, ConfigDict, DictAction

__all__ = [
    'SpacedDictAction', 'add_common_args', 'merge_train_args',
    'merge_test_args', 'check_cfg_option_types', 'merge_cfg_options',
    'check_test_weights',
    'OUT_SUFFIXES', 'check_out_suffix', 'check_test_inputs_and_outputs',
    'check_amp_device', 'build_runner',
    'positive_int', 'nonnegative_int', 'positive_float', 'fraction',
    'positive_fraction', 'user_path', 'checkpoint_or_none'
]


# ---------------------------------------------------- argparse value types
# ``type=`` functions of the tools' numeric options: a wrong value stops at
# argument parsing with ``argument --iters: must be an integer >= 1, got
# '0'`` (argparse adds the option name) instead of failing later, deep in
# NumPy/torch, or measuring nothing.
def _number(text: str, kind, minimum, what: str, above: bool = False,
            maximum=None):
    try:
        value = kind(text)
    except (TypeError, ValueError):
        value = None
    if value is None or value != value or value in (float('inf'),
                                                    float('-inf')) or (
            value <= minimum if above else value < minimum) or (
                maximum is not None and value > maximum):
        raise argparse.ArgumentTypeError(f'must be {what}, got {text!r}')
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _number(text, int, 1, 'an integer >= 1')


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _number(text, int, 0, 'an integer >= 0')


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    return _number(text, float, 0, 'a finite number > 0', above=True)


def fraction(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    return _number(text, float, 0, 'a number in [0, 1]', maximum=1)


def positive_fraction(text: str) -> float:
    """argparse type: a number in (0, 1]."""
    return _number(
        text, float, 0, 'a number in (0, 1]', above=True, maximum=1)


def torch_device(text: str) -> str:
    """An argparse type: a device of this machine (``cpu``, ``cuda``,
    ``cuda:1``; :func:`~mmcoop.utils.value_checks.check_device`)."""
    from mmcoop.utils.value_checks import check_device
    try:
        check_device('', text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).strip()) from None
    return text


def user_path(text: str) -> str:
    """An argparse type: a path with a leading ``~`` / ``~user`` expanded.
    The shell leaves ``~`` alone in a quoted word and after ``=``
    (``--work-dir=~/wd``); unexpanded, the tool would make a folder named
    ``~`` in the current folder, or not find ``~/e1.pth``."""
    from mmcoop.utils.paths import expand_user
    try:
        return expand_user(text, 'path')
    except ValueError as e:  # argparse names the option
        raise argparse.ArgumentTypeError(str(e)) from None


def checkpoint_or_none(text: str) -> Optional[str]:
    """An argparse type: a checkpoint path (``~`` expanded,
    :func:`user_path`) or URL, or ``none`` (any case) for a model with
    nothing learned (a ``ZeroShotHead``; speed tools) -> None."""
    return None if text.lower() == 'none' else user_path(text)


def _bracket_problem(val: str) -> Optional[str]:
    """Why the brackets of a ``--cfg-options`` value do not match (None if
    they do)."""
    stack = []
    pairs = {')': '(', ']': '['}
    for char in val:
        if char in '([':
            stack.append(char)
        elif char in ')]':
            if not stack or stack.pop() != pairs[char]:
                return f'unmatched {char!r} in the value'
    if stack:
        return f'unclosed {stack[-1]!r} in the value'
    return None


def _scalar(val: str) -> Any:
    for kind in (int, float):
        try:
            return kind(val)
        except ValueError:
            pass
    if val.lower() in ('true', 'false'):
        return val.lower() == 'true'
    return None if val == 'None' else val


class SpacedDictAction(DictAction):
    """MMEngine's ``DictAction`` that keeps spaces inside values.

    ``DictAction`` deletes every space, so
    ``model.head.classnames="[traffic light,stop sign]"`` would become
    ``['trafficlight', 'stopsign']`` (other prompts than intended). Here
    only the spaces around values and separators are dropped. An unquoted
    value that the shell split at its spaces
    (``classnames=[traffic light,stop sign]``) is joined back.
    """

    @staticmethod
    def parse_value(val: str) -> Any:
        """The value of ``KEY=VALUE``: brackets and top-level commas make
        lists (tuples with ``()``), nested as written; a scalar is an int,
        a float, ``true``/``false`` (any case), ``None`` or the string."""

        def next_comma(string):
            depth = 0
            for idx, char in enumerate(string):
                if char in '([':
                    depth += 1
                elif char in ')]':
                    depth -= 1
                elif char == ',' and depth == 0:
                    return idx
            return len(string)

        val = val.strip()
        inner = val[1:-1]
        if len(val) > 1 and val[0] == val[-1] and val[0] in '\'"' and \
                ',' in inner and val[0] not in inner and \
                not inner.lstrip().startswith(('[', '(')):
            # a quoted text with a comma (a path) stays one string
            return inner
        val = val.strip('\'"').strip()
        is_tuple = False
        if val.startswith('(') and val.endswith(')'):
            is_tuple, val = True, val[1:-1]
        elif val.startswith('[') and val.endswith(']'):
            val = val[1:-1]
        elif next_comma(val) == len(val):  # no top-level comma
            return _scalar(val)
        values = []
        while val.strip():
            idx = next_comma(val)
            values.append(SpacedDictAction.parse_value(val[:idx]))
            val = val[idx + 1:]
        return tuple(values) if is_tuple else values

    def __call__(self, parser, namespace, values, option_string=None):
        joined = []
        for token in values or ():
            if '=' not in token.split('[')[0].split('(')[0] and joined:
                joined[-1] += ' ' + token  # the shell split at a space
            else:
                joined.append(token)
        for token in joined:
            if '=' not in token:
                parser.error(f'{option_string} {token!r}: expected KEY=VALUE.')
        options = dict(getattr(namespace, self.dest, None) or {})
        for kv in joined:
            key, val = kv.split('=', maxsplit=1)
            if not key.strip() or any(
                    not part for part in key.strip().split('.')):
                parser.error(
                    f'{option_string} {kv!r}: the key before "=" must be a '
                    'dotted config key such as optim_wrapper.optimizer.lr.')
            bare = val.strip().strip('\'"').strip()
            problem = _bracket_problem(bare) if bare[:1] in '([' else None
            if problem:
                parser.error(
                    f'{option_string} {kv!r}: {problem}. Fix: close every '
                    '"[" and "(" of the value, e.g. key="[1,2]".')
            options[key.strip()] = self.parse_value(val)
        setattr(namespace, self.dest, options)


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Arguments both tools take (as mmpretrain's tools name them)."""
    parser.add_argument(
        '--work-dir',
        type=user_path,
        help='the dir to save logs and models')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=SpacedDictAction,
        help='override settings of the config, e.g. '
        'optim_wrapper.optimizer.lr=0.01 or '
        'model.head.classnames="[traffic light,stop sign]" (spaces inside '
        'values are kept). A value that does not have the type of the '
        'value it replaces (a number written `0,5`) is an error naming '
        'the option.')
    parser.add_argument(
        '--strict-config',
        action='store_true',
        help='stop (instead of warning) on top-level config keys that '
        'nothing reads, e.g. a typo such as `modle`; sets '
        '`strict_config=True`.')
    parser.add_argument(
        '--no-pin-memory',
        action='store_true',
        help='whether to disable the pin_memory option in dataloaders.')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    # torch.distributed.launch passes `--local-rank` (torch >= 2.0) or
    # `--local_rank`; torchrun sets the LOCAL_RANK environment variable.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def set_local_rank(args) -> None:
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)


def _lookup(cfg, dotted: str):
    """The value at ``a.b.0.c`` of ``cfg``, or a sentinel when absent."""
    node = cfg
    for part in dotted.split('.'):
        if isinstance(node, (list, tuple)) and part.isdigit():
            index = int(part)
            if index >= len(node):
                return _MISSING
            node = node[index]
        elif isinstance(node, (dict, Config)) and part in node:
            node = node[part]
        else:
            return _MISSING
    return node


_MISSING = object()


def _kind(value) -> Optional[str]:
    if isinstance(value, bool):
        return 'a boolean'
    if isinstance(value, (int, float)):
        return 'a number'
    if isinstance(value, str):
        return 'a string'
    if isinstance(value, (list, tuple)):
        return 'a list'
    return None


def check_cfg_option_types(cfg: Config, options: Optional[dict]) -> None:
    """Raise ``ValueError`` naming an option whose value has another type
    than the config value it replaces.

    Numbers, booleans and strings must stay what they are; a number may
    replace a number of the other kind (``lr=1`` for ``0.1``). Lists may be
    replaced by anything (mmcoop heads take a class list or a dataset type
    name), and a missing or ``None`` value by anything.
    """
    for key, new in (options or {}).items():
        old = _lookup(cfg, key)
        if old is _MISSING or old is None or new is None:
            continue
        old_kind, new_kind = _kind(old), _kind(new)
        if old_kind in (None, 'a list') or old_kind == new_kind:
            continue
        hint = ''
        if old_kind == 'a number' and new_kind == 'a list':
            hint = (' A comma splits a value into a list: write decimals '
                    'with a point (0.5, not 0,5).')
        elif old_kind == 'a string' and new_kind == 'a list':
            from mmcoop.utils.paths import COMMA_HINT
            hint = f' {COMMA_HINT}'
        raise ValueError(
            f'--cfg-options {key}={new!r}: the config has {old_kind} there '
            f'({old!r}), the option gives {new_kind}.{hint} Fix the value '
            f'of `{key}`.')


def merge_cfg_options(cfg: Config, options: Optional[dict]) -> Config:
    """Merge ``--cfg-options`` into ``cfg`` after
    :func:`check_cfg_option_types`: the one way ``tools/train.py``,
    ``tools/test.py``, ``init_model`` (``cfg_options=``) and every tool
    that loads a config apply them."""
    check_cfg_option_types(cfg, options)
    for key in options or {}:
        check_list_indices(cfg, key)
    if options:
        cfg.merge_from_dict(options)
    return cfg


def check_list_indices(cfg, key: str) -> None:
    """An option ``a.N.b`` that indexes a list of the config must name an
    entry of it: MMEngine's merge raises a bare ``KeyError`` ("Index 5
    exceeds the length of list") or ``TypeError`` (a negative index)."""
    node, path = cfg, []
    for part in key.split('.'):
        if isinstance(node, (list, tuple)):
            if not re.fullmatch(r'-?\d+', part) or int(part) < 0 or int(
                    part) >= len(node):
                where = '.'.join(path)
                raise ValueError(
                    f'--cfg-options {key}: `{where}` is a list of '
                    f'{len(node)} entries, so its entries are '
                    f'{where}.0 .. {where}.{len(node) - 1}, not {where}.'
                    f'{part} (negative indices are not supported). Fix: '
                    'give the index of an existing entry, or the whole list '
                    f'as {where}="[...]".')
            node = node[int(part)]
        elif isinstance(node, (dict, Config)) and part in node:
            node = node[part]
        else:
            return  # a new key: MMEngine adds it
        path.append(part)


def _merge_common(cfg: Config, args, dataloaders) -> Config:
    cfg.launcher = args.launcher
    # work_dir: CLI > the config's > ./work_dirs/<config name>
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    if args.strict_config:
        cfg.strict_config = True
    for field in dataloaders:
        loader = cfg.get(field, None)
        if loader is None:
            continue
        merged = ConfigDict(pin_memory=True)
        if hasattr(args, 'no_persistent_workers'):  # training
            merged.persistent_workers = not args.no_persistent_workers
        merged.update(loader)
        if args.no_pin_memory:
            merged.pin_memory = False
        if getattr(args, 'no_persistent_workers', False):
            merged.persistent_workers = False
        cfg[field] = merged
    merge_cfg_options(cfg, args.cfg_options)
    if isinstance(cfg.get('work_dir', None), str):  # '~' of the config's
        from mmcoop.utils.paths import expand_user  # or --cfg-options'
        cfg.work_dir = expand_user(cfg.work_dir, 'work_dir')
    for field in dataloaders:  # persistent workers need workers
        loader = cfg.get(field, None)
        if loader is not None and not loader.get('num_workers', 0):
            loader['persistent_workers'] = False
    return cfg


def build_runner(cfg: Config):
    """The runner of ``tools/train.py`` / ``tools/test.py``: the config's
    ``runner_type`` (mmcoop's ``default_runtime.py`` names
    ``MMCoopRunner``), else ``MMCoopRunner`` -- a config that does not
    inherit that base still gets mmcoop's keys interpreted, which MMEngine's
    default ``Runner`` would silently drop."""
    from mmcoop.engine.runner import MMCoopRunner
    from mmcoop.registry import RUNNERS
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return MMCoopRunner.from_cfg(cfg)


def merge_train_args(cfg: Config, args) -> Config:
    """Merge the arguments of ``tools/train.py`` into ``cfg``."""
    if args.no_validate:
        cfg.val_cfg = None
        cfg.val_dataloader = None
        cfg.val_evaluator = None
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg:
            raise ValueError(
                '--auto-scale-lr needs `auto_scale_lr = dict(base_batch_size='
                '...)` in the config (mmcoop schedules set 32).')
        cfg.auto_scale_lr.enable = True
    cfg = _merge_common(
        cfg, args, ('train_dataloader', 'val_dataloader', 'test_dataloader'))
    # after --cfg-options: a `load_from` there (the weights a run starts
    # from) must not replace what --resume continues. `--resume` without a
    # path is resume='auto': the work dir's latest checkpoint if it has
    # one, else `load_from` as the initial weights (MMCoopRunner.
    # load_or_resume; resume=True with a load_from resumes *from* it, as
    # in MMEngine: `--resume PATH`)
    if args.resume == 'auto':
        cfg.resume = 'auto'
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    # optim_wrapper.type='AmpOptimWrapper' from the config or --cfg-options
    # (--amp: check_amp_device), before the runner makes the work dir
    from mmcoop.engine.train_checks import check_amp_optim_wrapper
    check_amp_optim_wrapper(cfg)
    if args.auto_scale_lr:  # after --cfg-options, which may set it
        base = cfg.auto_scale_lr.get('base_batch_size', None)
        if isinstance(base, bool) or not isinstance(base, int) or base < 1:
            raise ValueError(
                '--auto-scale-lr: auto_scale_lr.base_batch_size must be an '
                f'int >= 1 (the batch size the lr was tuned for), got '
                f'{base!r}. Fix: set it in the config or with --cfg-options '
                'auto_scale_lr.base_batch_size=32.')
    return cfg


def merge_test_args(cfg: Config, args) -> Config:
    """Merge the arguments of ``tools/test.py`` into ``cfg``.

    Without a checkpoint argument the config's own ``load_from`` (if any)
    is used; :func:`check_test_weights` refuses a model with trainable
    parameters and nothing to load.
    """
    if args.amp:
        cfg.test_cfg = cfg.get('test_cfg', None) or ConfigDict()
        cfg.test_cfg.fp16 = True
    cfg = _merge_common(cfg, args, ('test_dataloader', ))
    # after --cfg-options: the checkpoint argument is what is tested, a
    # `load_from` there (e.g. a sweep's initial weights) does not replace it
    if args.checkpoint is not None:
        cfg.load_from = args.checkpoint
    cfg.resume = False  # testing loads weights, never training state
    return cfg


def check_test_weights(model, load_from: Optional[str], config: str) -> None:
    """Refuse to test a model with trainable parameters and no checkpoint.

    A model whose parameters are all frozen (e.g. ``ZeroShotHead`` on the
    frozen CLIP) is fully defined by its config and needs no checkpoint;
    any other would be scored with its random initialisation.

    Args:
        model (nn.Module): the built model (a DDP wrapper is unwrapped).
        load_from (str, optional): the checkpoint to be loaded.
        config (str): the config path, for the message.

    Raises:
        ValueError: naming the config, the trainable tensors and the fix.
    """
    if load_from:
        return
    model = getattr(model, 'module', model)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if names:
        shown = ', '.join(names[:3]) + (f' (+{len(names) - 3} more)'
                                        if len(names) > 3 else '')
        raise ValueError(
            f'{config}: the model has trainable parameters ({shown}) and no '
            'checkpoint was given; testing it would score its random '
            'initialisation. Fix: pass the trained checkpoint '
            '(tools/test.py CONFIG CHECKPOINT) or set `load_from` in the '
            'config. Only a model without trainable parameters (e.g. '
            "model.head.type='ZeroShotHead') is tested without one.")


#: what ``tools/test.py --out`` may end with, per ``--out-item``: mmengine's
#: DumpResults writes pickles only, ``mmengine.dump`` (metrics) json / yaml
#: / pickle.
OUT_SUFFIXES = {
    'pred': ('.pkl', '.pickle'),
    'metrics': ('.json', '.yaml', '.yml', '.pkl', '.pickle'),
}


def check_out_suffix(parser: argparse.ArgumentParser, args) -> None:
    """``tools/test.py``: an ``--out`` whose extension the chosen
    ``--out-item`` cannot be written as stops at argument parsing (the
    dump would fail only after the whole test). An empty ``--out`` or
    ``--show-dir`` (an unset shell variable) is refused too: it was
    ignored, and nothing written."""
    for option, path in (('--out', args.out),
                         ('--show-dir', getattr(args, 'show_dir', None))):
        if path is not None and not path.strip():
            parser.error(
                f'{option} {path!r} is empty: nothing would be written (the '
                f'option was ignored). Fix: give a path, or leave {option} '
                'out.')
    if args.out is None:
        return
    item = args.out_item or 'pred'
    suffixes = OUT_SUFFIXES[item]
    if not args.out.endswith(suffixes):
        parser.error(
            f'--out {args.out!r}: --out-item {item} is written as '
            f'{" / ".join(suffixes)} (the formats '
            f'{"DumpResults" if item == "pred" else "mmengine.dump"} '
            'writes); the extension decides the format. Fix: name the '
            f'file e.g. {osp.splitext(args.out)[0] + suffixes[0]!r}.')


def check_test_inputs_and_outputs(args, cfg: Config) -> None:
    """``tools/test.py``: refuse a checkpoint that is missing, a folder or
    a URL, an ``--out`` or ``--show-dir`` inside a folder of the test
    dataset, an ``--out`` that exists (without ``--force``) or is an input
    (:func:`mmcoop.utils.paths.claim_outputs`) and a ``--show-dir`` that is
    a file or not empty (without ``--force``), before the Runner is built
    (and makes the work dir) and the test runs; the folder of ``--out`` is
    made when writing."""
    from mmcoop.apis.model_zoo import check_local_checkpoint
    from mmcoop.datasets.utils import check_outside_dataset
    from mmcoop.engine.config_checks import dataset_dirs
    from mmcoop.engine.hooks.prediction_draw_hook import check_draw_dir
    from mmcoop.utils.paths import claim_outputs
    checkpoint = args.checkpoint if args.checkpoint is not None else \
        cfg.get('load_from')
    what = 'Checkpoint' if args.checkpoint is not None else \
        'Checkpoint (`load_from` of the config)'
    local = check_local_checkpoint(checkpoint, what) if checkpoint else None
    # never into the test set's folders (as the work dir): a later run
    # would find the files there (e.g. the demo refuses a tree it did not
    # write)
    loader = cfg.get('test_dataloader', None)
    test_dirs = dataset_dirs(loader.get('dataset', None)) if isinstance(
        loader, dict) else []
    for what, path, example in (
            ('output file (--out)', args.out, "'work_dirs/results.pkl'"),
            ('drawing folder (--show-dir)', getattr(args, 'show_dir', None),
             "'work_dirs/show'")):
        if path:
            check_outside_dataset(path, test_dirs, what, example=example)
    if args.out:
        claim_outputs([args.out],
                      inputs=[args.config] + ([local] if local else []),
                      force=args.force,
                      option='--out',
                      create_dirs=False)
    if getattr(args, 'show_dir', None):
        check_draw_dir(args.show_dir, args.force)


def check_amp_device(args) -> None:
    """``tools/train.py --amp`` needs an accelerator (mmengine's
    ``AmpOptimWrapper``); say so before the runner is built (an
    ``optim_wrapper.type`` set in the config or with ``--cfg-options`` is
    refused when training starts, :func:`mmcoop.engine.train_checks.
    check_amp_optim_wrapper`)."""
    if not args.amp:
        return
    from mmcoop.engine.train_checks import AMP_DEVICES, amp_device_available
    if not amp_device_available():
        raise SystemExit(
            f'train.py: error: --amp needs {AMP_DEVICES}; none is available '
            'here. Fix: drop --amp to train in fp32 on the CPU.')

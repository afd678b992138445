# Copyright (c) mmcoop contributors. All rights reserved.
"""``compile``: the frozen towers' opt-in ``torch.compile``.

:class:`~.FrozenCLIP` and :class:`~.FrozenCLIPTextEncoder` take
``compile=False`` (default, eager), ``True`` (``torch.compile`` with its
defaults) or a dict of ``torch.compile`` keyword arguments, e.g.
``dict(mode='reduce-overhead')`` (CUDA graphs: the text tower's forward and
backward, launch-bound at a batch of 32, become one replay each).

What is compiled is each tower's pure tensor function with the tower as its
first argument (:func:`tower_call`): the image tower's dense forward, the
text tower's transformer, final norm, pooling and projection *after* the
exact truncation (whose length is read on the host, so the compiled graph
has static shapes and no break). It runs inside the towers' autocast
region. Nothing is stored on the module (``state_dict``, ``deepcopy``,
pickling and the feature-cache key of an eager tower are unchanged): the
compiled functions live in one cache here, keyed by function and options.

Under tracing, scripting, export or an outer ``torch.compile`` (MMEngine's
``cfg.compile``, ONNX export) the eager function runs, so the tower is
traced as written. Outputs of a compiled call on CUDA are cloned: a CUDA
graph replay may overwrite its output buffers, and the heads keep text
features across calls (the evaluation text cache).
"""
import inspect
import json
from typing import Callable, Dict, Optional, Tuple

import torch

__all__ = ['parse_compile', 'tower_call', 'compile_desc']

_COMPILED: Dict[Tuple[Callable, str], Callable] = {}
# where torch.compile's own errors come from (dynamo, inductor, the
# backends), as opposed to the model's errors, which it re-raises as eager
_COMPILER_MODULES = ('torch._dynamo', 'torch._inductor', 'torch._functorch')


def _compile_params() -> Tuple[str, ...]:
    """The keyword arguments of this torch's ``torch.compile``."""
    return tuple(name
                 for name in inspect.signature(torch.compile).parameters
                 if name != 'model')


def parse_compile(owner: Optional[str], value) -> Optional[dict]:
    """``compile`` checked -> None (eager) or the ``torch.compile`` kwargs.

    ``False`` / ``None`` -> None; ``True`` -> ``{}``; a dict of
    ``torch.compile``'s keyword arguments that ``torch.compile`` accepts
    (its mode, backend and options checked by torch itself, the types of
    the others here, and no inductor setting with another backend) -> a
    copy. Anything else is refused naming ``owner``'s ``compile`` field
    (``owner`` None: the config's top-level ``compile``, MMEngine's) and
    the fix.
    """
    if value is None or value is False:
        return None
    if value is True:
        return {}
    field = f'{owner}.compile' if owner else 'compile'
    fix = (f'Fix: set {field} to False (eager, default), True or a '
           "dict of torch.compile arguments, e.g. dict(mode='reduce-"
           "overhead').")
    if not isinstance(value, dict):
        raise ValueError(f'{field} must be a bool or a dict, got '
                         f'{value!r} ({type(value).__name__}). {fix}')
    known = _compile_params()
    unknown = sorted(set(map(str, value)) - set(known))
    if unknown:
        raise ValueError(
            f'{field} has keys torch.compile does not take: '
            f'{unknown}; it takes {list(known)}. {fix}')
    try:  # torch checks the mode, backend and options where it is built
        torch.compile(_check_only, **value)
    except Exception as e:  # noqa: BLE001 - torch's own refusal
        raise ValueError(f'{field}={value!r}: torch.compile refuses '
                         f'it: {_torch_says(e)} {fix}') from e
    # what torch only reads at a first call or a recompile (an error
    # there, or nothing at all)
    for key, what, ok in _ARGUMENT_TYPES:
        if key in value and not ok(value[key]):
            raise ValueError(f'{field}: {key} must be {what}, got '
                             f'{value[key]!r}. {fix}')
    backend = value.get('backend')
    ignored = sorted({'mode', 'options'} & set(value))
    if backend not in (None, 'inductor') and ignored:
        raise ValueError(
            f'{field}: {ignored} apply to the inductor backend (the '
            f'default) only; backend={backend!r} ignores them, so they '
            f'would do nothing. Fix: drop backend (inductor), or drop '
            f'{" and ".join(ignored)}.')
    return dict(value)


def _is_flag(v) -> bool:
    return isinstance(v, bool)


#: ``(argument, what it must be, check)`` for the ``torch.compile``
#: arguments whose type torch does not check when it is called
_ARGUMENT_TYPES = (
    ('fullgraph', 'True or False', _is_flag),
    ('disable', 'True or False', _is_flag),
    ('isolate_recompiles', 'True or False', _is_flag),
    ('recompile_limit', 'an int >= 1 or None',
     lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)
                             and v >= 1)),
    ('name', 'a string or None', lambda v: v is None or isinstance(v, str)),
    ('backend', 'a backend name, a callable or None',
     lambda v: v is None or isinstance(v, str) or callable(v)),
)


def _torch_says(e: Exception) -> str:
    """``'Type: message'`` of torch's error on one line, without its
    debugging advice, cut to 300 characters (its option lists are long)."""
    said = ' '.join(str(e).split('Set TORCHDYNAMO_VERBOSE')[0].split())
    said = said if len(said) <= 300 else f'{said[:297]}...'
    return f'{type(e).__name__}: {said}'


def _check_only(x):
    """What :func:`parse_compile` has ``torch.compile`` wrap (never run)."""
    return x


def compile_desc(options: Optional[dict]) -> Optional[str]:
    """The options as a stable string (None when eager): the cache key of
    the compiled functions and the feature-cache key's ``compile``."""
    if options is None:
        return None
    return json.dumps(options, sort_keys=True, default=repr)


def _eager_here() -> bool:
    """Run eager: being traced, scripted, exported or compiled already."""
    return (torch.jit.is_tracing() or torch.jit.is_scripting()
            or torch.compiler.is_compiling())


def tower_call(tower: torch.nn.Module, fn: Callable, *args) -> torch.Tensor:
    """``fn(tower, *args)``, compiled with ``tower.compile_options`` when
    they are set (see the module doc); ``fn`` is an unbound method of the
    tower's class, so the compiled function is shared, not stored."""
    options = getattr(tower, 'compile_options', None)
    if options is None or _eager_here():
        return fn(tower, *args)
    key = (fn, compile_desc(options))
    compiled = _COMPILED.get(key)
    if compiled is None:
        compiled = _COMPILED[key] = torch.compile(fn, **options)
    try:
        out = compiled(tower, *args)
    except Exception as e:  # noqa: BLE001 - only torch.compile's own
        if not type(e).__module__.startswith(_COMPILER_MODULES):
            raise  # the model's error, as eager mode would raise it
        # dynamo also wraps the model's own errors (a shape mismatch met
        # while tracing): the eager call tells them apart, and raises them
        # as eager mode does
        try:
            fn(tower, *args)
        except Exception as eager_error:  # noqa: BLE001 - re-raised as is
            raise eager_error from None
        raise RuntimeError(
            f'{type(tower).__name__}.compile={options!r}: torch.compile '
            f'failed ({_torch_says(e)}). Fix: set the '
            f'{type(tower).__name__}\'s compile=False (eager, the same '
            'function), or fix what torch names (e.g. a C++ compiler for '
            'inductor on the CPU, Triton on CUDA).') from e
    return out.clone() if out.is_cuda else out

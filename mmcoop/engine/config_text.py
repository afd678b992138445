# Copyright (c) mmcoop contributors. All rights reserved.
"""The config text stored in checkpoints: a :class:`mmengine.config.Config`
that formats its text once, and the stored text read back safely.

MMEngine's runner reads ``cfg.pretty_text`` when it dumps the config, logs
it, and at **every checkpoint save** (``meta['cfg']``). ``pretty_text``
runs yapf over the whole config each time. Measured on the 2-core
development CPU: 0.26 s for the COCO PositiveCoOp paper config (13 s over
50 epochs), and 2 s for the demo config with the feature cache, where six
checkpoint saves took 12 of the 30 s of a 6-epoch run. With the feature
cache an epoch can take seconds, so that is no longer negligible.

:func:`stored_config_values` reads such a stored text back without running
it.
"""
import ast
from typing import Any, Dict

from mmengine.config import Config

__all__ = ['FormatOnceConfig', 'stored_config_values']


class FormatOnceConfig(Config):
    """``Config`` whose yapf-formatted ``pretty_text`` is memoised.

    The memo is keyed by the *unformatted* text (cheap to build), so a
    config changed after the first call is formatted again; the result is
    always equal to :attr:`Config.pretty_text`.
    """

    @classmethod
    def from_config(cls, cfg: Config) -> 'FormatOnceConfig':
        """Wrap ``cfg`` (shares its content; no copy)."""
        new = cls.__new__(cls)
        new.__setstate__(cfg.__getstate__())
        return new

    @property
    def pretty_text(self) -> str:
        if not self._format_python_code:
            return super().pretty_text
        object.__setattr__(self, '_format_python_code', False)
        try:
            raw = super().pretty_text
        finally:
            object.__setattr__(self, '_format_python_code', True)
        memo = self.__dict__.get('_formatted_text_memo')
        if memo is None or memo[0] != raw:
            memo = (raw, super().pretty_text)
            object.__setattr__(self, '_formatted_text_memo', memo)
        return memo[1]


def _literal(node: ast.AST) -> Any:
    """The value of a literal expression, ``dict(k=v, ...)`` included;
    ``ValueError`` for anything else (names, attributes, other calls)."""
    if isinstance(node, ast.Call):
        if not (isinstance(node.func, ast.Name) and node.func.id == 'dict'
                and not node.args
                and all(k.arg is not None for k in node.keywords)):
            raise ValueError('not a literal')
        return {k.arg: _literal(k.value) for k in node.keywords}
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        items = [_literal(e) for e in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else (
            set(items) if isinstance(node, ast.Set) else items)
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise ValueError('not a literal')
        return {_literal(k): _literal(v) for k, v in zip(node.keys,
                                                         node.values)}
    return ast.literal_eval(node)  # constants, -1, 1e-3 (or ValueError)


def stored_config_values(text: str) -> Dict[str, Any]:
    """The top-level values of a config text stored in a checkpoint
    (``meta['cfg']`` / ``meta['config']``), read without running it.

    ``Config.fromstring`` executes the text as Python: a checkpoint from
    elsewhere could run code that way. Here the text is only parsed: each
    top-level ``name = value`` whose value is a literal (numbers, strings,
    lists, tuples, dicts, ``dict(k=v)`` as MMEngine writes configs) is
    returned; any other statement or value is left out. Text that does not
    parse gives ``{}``.
    """
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, TypeError):
        return {}
    values = {}
    for stmt in tree.body:
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name)):
            continue
        try:
            values[stmt.targets[0].id] = _literal(stmt.value)
        except (ValueError, TypeError, SyntaxError, RecursionError):
            continue
    return values

# Copyright (c) mmcoop contributors. All rights reserved.
"""Paths given by users: ``~`` in inputs, and the policy for the files a
tool writes.

Every command-line tool of mmcoop that writes files (``demo/image_demo.py
--show-dir``, ``tools/model_converters/*``, ``tools/analysis/*``,
``tools/visualization/*``) passes its output paths through
:func:`claim_outputs` before writing anything:

* no two inputs may map to the same output file (the error names both);
* an output may not be one of the inputs, ``--force`` or not;
* an existing file is overwritten only with ``--force``;
* missing output folders are created.
"""
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence

__all__ = ['expand_user', 'claim_outputs', 'OutputPathError']


class OutputPathError(ValueError):
    """A tool's output path collides with an input, another output or an
    existing file."""


def expand_user(path, field: str):
    """``path`` with a leading ``~`` / ``~user`` expanded (other values are
    returned as they are).

    Args:
        path: a path (str) or anything else (returned unchanged).
        field (str): what the path is, for the error (e.g.
            ``'COCO2014MultiLabel.data_root'``).

    Raises:
        ValueError: the ``~`` cannot be expanded (no home directory, unknown
            user).
    """
    if not isinstance(path, str) or not path.startswith('~'):
        return path
    expanded = osp.expanduser(path)
    if expanded.startswith('~'):
        raise ValueError(
            f'{field}={path!r}: "~" cannot be expanded here (no home '
            'directory or no such user). Fix: give the full path.')
    return expanded


def _key(path: str) -> str:
    return osp.normcase(osp.realpath(osp.abspath(path)))


def claim_outputs(outputs: Sequence[str],
                  sources: Optional[Sequence[str]] = None,
                  inputs: Sequence[str] = (),
                  force: bool = False,
                  force_flag: str = '--force') -> List[str]:
    """Check the files a tool is about to write; create their folders.

    Args:
        outputs (Sequence[str]): the files the tool will write.
        sources (Sequence[str], optional): for outputs made one per input,
            the input each output is made from (same length as
            ``outputs``), to name the inputs of colliding outputs.
        inputs (Sequence[str]): every file the tool reads; none of them may
            be an output.
        force (bool): allow overwriting existing files.
        force_flag (str): the option that sets ``force``, for messages.

    Returns:
        list[str]: ``outputs``, unchanged.

    Raises:
        OutputPathError: two outputs are the same file, an output is an
            input, or an output exists and ``force`` is False.
    """
    outputs = [str(p) for p in outputs]
    if sources is not None and len(sources) != len(outputs):
        raise ValueError('claim_outputs: one source per output expected.')
    read = {_key(p): p for p in inputs}
    seen: Dict[str, int] = {}
    for i, out in enumerate(outputs):
        if osp.isdir(out):
            raise OutputPathError(
                f'output {out!r} is a folder; give a file name.')
        key = _key(out)
        if key in read:
            raise OutputPathError(
                f'output {out!r} is the input {read[key]!r}: refusing to '
                'overwrite an input. Fix: choose another output name.')
        if key in seen:
            j = seen[key]
            what = (f'inputs {sources[j]!r} and {sources[i]!r}'
                    if sources is not None else 'two outputs')
            raise OutputPathError(
                f'{what} would both be written to {out!r}. Fix: rename one '
                'of them or process them in separate runs with other output '
                'folders.')
        seen[key] = i
    if not force:
        existing = [p for p in outputs if osp.lexists(p)]
        if existing:
            shown = ', '.join(repr(p) for p in existing[:5])
            more = f' and {len(existing) - 5} more' if len(existing) > 5 \
                else ''
            raise OutputPathError(
                f'{len(existing)} output file(s) already exist: {shown}'
                f'{more}. Nothing was written. Fix: pass {force_flag} to '
                'overwrite them, or choose another output.')
    for out in outputs:
        folder = osp.dirname(osp.abspath(out))
        os.makedirs(folder, exist_ok=True)
    return outputs

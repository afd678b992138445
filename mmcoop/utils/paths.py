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
* an output folder that is a file, or cannot be created, is refused
  naming the option and the path;
* missing output folders are created (or, with ``create_dirs=False``,
  only checked, and created by :func:`make_output_dirs` when writing);
* the files are then written atomically
  (:func:`mmcoop.utils.checkpoint.atomic_open`), so a run killed mid-write
  leaves the previous file or none, never a truncated output.
"""
import os
import os.path as osp
from typing import Dict, Iterable, List, Optional, Sequence

__all__ = [
    'expand_user', 'claim_outputs', 'make_output_dirs', 'missing_folders',
    'check_output_folder', 'dangling_link',
    'OutputPathError', 'remove_own_tree'
]


class OutputPathError(ValueError):
    """A tool's output path collides with an input, another output or an
    existing file."""


#: how to keep a comma in a ``--cfg-options`` value (a path)
COMMA_HINT = ('A comma splits a --cfg-options value into a list: quote a '
              "text that holds one, e.g. \"key='/data/a,b'\" (the shell "
              'removes the outer quotes).')


def check_not_a_list(path, field: str) -> None:
    """Refuse a list or tuple given as the path ``field`` (a comma-split
    ``--cfg-options`` value), naming :data:`COMMA_HINT`."""
    if isinstance(path, (list, tuple)):
        raise ValueError(f'{field} must be a path (a string), got the list '
                         f'{list(path)!r}. {COMMA_HINT}')


def expand_user(path, field: str):
    """``path`` with a leading ``~`` / ``~user`` expanded (other values are
    returned as they are).

    Args:
        path: a path (str) or anything else (returned unchanged).
        field (str): what the path is, for the error (e.g.
            ``'COCO2014MultiLabel.data_root'``).

    Raises:
        ValueError: the ``~`` cannot be expanded (no home directory, unknown
            user); a list or tuple (a comma-split ``--cfg-options`` value).
    """
    check_not_a_list(path, field)
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
                  force_flag: str = '--force',
                  option: Optional[str] = None,
                  create_dirs: bool = True) -> List[str]:
    """Check the files a tool is about to write; create their folders.

    Call it after the tool has checked its other inputs: a run that stops
    on a bad input should leave no folder behind. A tool whose later steps
    may still fail (a class missing from a model) passes
    ``create_dirs=False`` and calls :func:`make_output_dirs` just before
    writing.

    Args:
        outputs (Sequence[str]): the files the tool will write.
        sources (Sequence[str], optional): for outputs made one per input,
            the input each output is made from (same length as
            ``outputs``), to name the inputs of colliding outputs.
        inputs (Sequence[str]): every file the tool reads; none of them may
            be an output.
        force (bool): allow overwriting existing files.
        force_flag (str): the option that sets ``force``, for messages.
        option (str, optional): the option that gives the outputs (e.g.
            ``'--out-dir'``), for messages about their folders.
        create_dirs (bool): create the missing folders now. With False they
            are only checked to be creatable (made and removed again).
            Defaults to True.

    Returns:
        list[str]: ``outputs``, unchanged.

    Raises:
        OutputPathError: two outputs are the same file, an output is an
            input, an output exists and ``force`` is False, or the folder
            of an output is a file or cannot be created.
    """
    outputs = [str(p) for p in outputs]
    if sources is not None and len(sources) != len(outputs):
        raise ValueError('claim_outputs: one source per output expected.')
    read = {_key(p): p for p in inputs}
    seen: Dict[str, int] = {}
    for i, out in enumerate(outputs):
        if osp.isdir(out):
            raise OutputPathError(
                f'{_named(out, option)} is a folder; give a file name.')
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
        _check_folder(out, option)
    if create_dirs:
        make_output_dirs(outputs, option)
    else:  # made and removed again: the same errors, nothing left behind
        for out in outputs:
            _probe_folder(out, option)
    return outputs


def missing_folders(out: str) -> List[str]:
    """The folders above the file ``out`` that do not exist yet, deepest
    first (what writing it would create; a tool that fails may remove
    them again, as long as they are empty)."""
    missing = []
    folder = osp.dirname(osp.abspath(out))
    while not osp.exists(folder):
        missing.append(folder)
        up = osp.dirname(folder)
        if up == folder:
            break
        folder = up
    return missing


def _probe_folder(out: str, option: Optional[str]) -> None:
    missing = missing_folders(out)
    if not missing:
        return
    try:
        make_output_dirs([out], option)
    finally:
        for path in missing:  # deepest first
            try:
                os.rmdir(path)
            except OSError:
                pass


def _named(out: str, option: Optional[str]) -> str:
    return f'{option}: output {out!r}' if option else f'output {out!r}'


def _check_folder(out: str, option: Optional[str]) -> None:
    """Refuse an output whose folder (or one above it) is a file, or whose
    nearest existing folder is not writable; nothing is created."""
    check_output_folder(osp.dirname(osp.abspath(out)), _named(out, option))


def dangling_link(path: str) -> Optional[str]:
    """``path`` or the nearest folder above it that is a symbolic link to
    nothing (storage not mounted, a target moved or deleted), or None:
    ``os.makedirs`` stops there with a bare ``FileExistsError``
    (``osp.exists`` is False for such a link, so it looks missing)."""
    path = osp.abspath(path)
    while not osp.exists(path):
        if osp.islink(path):
            return path
        up = osp.dirname(path)
        if up == path:
            break
        path = up
    return None


def _refuse_dangling(what: str, folder: str) -> None:
    """:class:`OutputPathError` when ``folder`` is or lies below a
    symbolic link to nothing (:func:`dangling_link`), naming ``what``."""
    link = dangling_link(folder)
    if link is not None:
        raise OutputPathError(_dangling_message(what, link, folder))


def _dangling_message(what: str, link: str, folder: str) -> str:
    try:
        target = os.readlink(link)
    except OSError:
        target = '?'
    shown = osp.normpath(osp.join(osp.dirname(link), target))
    return (f'{what}: {link!r} is a symbolic link to {target!r}'
            + (f' ({shown!r})' if shown != target else '') +
            ', which does not exist (storage not mounted, or its target '
            f'moved or deleted), so the output folder {folder!r} cannot be '
            f'made. Fix: mount or create {shown!r}, or point the option to '
            'another folder (or remove the link).')


def check_output_folder(folder: str, what: str) -> None:
    """Refuse an output folder (a work dir, a drawing folder, the folder of
    an output file) that is a file or lies below one, that is or lies below
    a symbolic link to nothing (:func:`dangling_link`), or whose nearest
    existing folder is not writable, with an :class:`OutputPathError`
    that begins with ``what`` (e.g. ``'--work-dir'``); nothing is
    created."""
    folder = osp.abspath(folder)
    _refuse_dangling(what, folder)
    missing = missing_folders(osp.join(folder, '_'))
    parent = osp.dirname(missing[-1]) if missing else folder
    if osp.exists(parent) and not osp.isdir(parent):
        raise OutputPathError(
            f'{what}: {parent!r} is a file, not a folder, so the output '
            f'folder {folder!r} cannot be made. Fix: choose another output '
            'path (or move that file away).')
    if osp.isdir(parent) and not os.access(parent, os.W_OK | os.X_OK):
        verb = 'write in' if parent == folder else 'create folders in'
        raise OutputPathError(
            f'{what}: no permission to {verb} {parent!r}. Fix: choose an '
            'output path in a folder you can write to.')


def make_output_dirs(outputs: Sequence[str],
                     option: Optional[str] = None) -> None:
    """Create the folders of ``outputs`` (see :func:`claim_outputs`).

    Raises:
        OutputPathError: a folder cannot be created; names ``option``, the
            path and the reason.
    """
    for out in outputs:
        out = str(out)
        folder = osp.dirname(osp.abspath(out))
        _refuse_dangling(_named(out, option), folder)
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            reason = e.strerror or type(e).__name__
            if isinstance(e, FileExistsError) or (osp.exists(folder)
                                                  and not osp.isdir(folder)):
                reason = 'a file of that name exists'
            raise OutputPathError(
                f'{_named(out, option)}: cannot create the output folder '
                f'{folder!r} ({reason}). Fix: choose an output path in a '
                'folder that exists or can be created.') from e


def remove_own_tree(root: str, files: Iterable[str], marker: str) -> None:
    """Delete a folder tree that a tool wrote and marks as its own with
    the file ``marker`` (a manifest): the ``files`` (paths relative to
    ``root``, ``'/'``-separated; those already gone are skipped), then the
    folders below ``root`` (empty by then: anything else in them raises
    ``OSError`` and is kept), then ``marker``, then ``root``.

    The marker goes last, so a run killed midway leaves a tree that still
    carries it: the next run recognises the tree as its own and finishes
    the job, instead of finding files without a marker and refusing them as
    someone else's for ever.
    """
    for rel in files:
        path = osp.join(root, *rel.split('/'))
        if osp.lexists(path):
            os.remove(path)
    for folder, _, _ in sorted(os.walk(root), key=lambda w: -len(w[0])):
        if folder != root:
            os.rmdir(folder)
    os.remove(osp.join(root, marker))
    os.rmdir(root)

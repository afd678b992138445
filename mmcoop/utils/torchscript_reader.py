# Copyright (c) mmcoop contributors. All rights reserved.
"""Read the parameters of a TorchScript archive without running it.

OpenAI distributes CLIP weights (``RN101.pt`` ...) as TorchScript archives.
``torch.jit.load`` would compile and keep the archive's ``code/`` -- code
chosen by whoever wrote the file. :func:`read_torchscript_state_dict` reads
only data:

* ``<root>/data.pkl`` is unpickled by a restricted unpickler that knows the
  few globals a TorchScript module pickle uses (its own ``__torch__.*``
  classes, which become inert attribute holders, tensor rebuilding from
  storages, ``OrderedDict`` and the typed-container tags of
  ``torch.jit._pickle``). Any other global is refused with an error that
  names it; nothing named by the file is imported or called.
* storages are read from ``<root>/data/<key>`` as raw little-endian bytes;
* which attributes are parameters and buffers (what ``state_dict()``
  returns) is read from the ``__parameters__`` / ``__buffers__`` lines of
  the class definitions in ``<root>/code/`` -- parsed as text, never run.

The result equals ``torch.jit.load(path).state_dict()`` (tested).
"""
import collections
import pickle
import re
import zipfile
from typing import Dict, List, Tuple

import torch

__all__ = ['read_torchscript_state_dict', 'TorchScriptReadError']


class TorchScriptReadError(RuntimeError):
    """A TorchScript archive could not be read as data."""


_STORAGE_DTYPES = {
    'FloatStorage': torch.float32,
    'DoubleStorage': torch.float64,
    'HalfStorage': torch.float16,
    'BFloat16Storage': torch.bfloat16,
    'LongStorage': torch.int64,
    'IntStorage': torch.int32,
    'ShortStorage': torch.int16,
    'CharStorage': torch.int8,
    'ByteStorage': torch.uint8,
    'BoolStorage': torch.bool,
}

_CLASS_RE = re.compile(r'^class\s+([A-Za-z_]\w*)\s*\(([^)]*)\)\s*:', re.M)
_LIST_RE = r'^\s+{}\s*=\s*\[([^\]]*)\]'


class _ScriptObject:
    """Inert stand-in for a pickled TorchScript object: keeps its state."""
    _qualname = ''

    def __setstate__(self, state):
        self._state = state if isinstance(state, dict) else {}


class _StorageType:

    def __init__(self, dtype):
        self.dtype = dtype


def _rebuild_tensor(storage, offset, size, stride, *args, **kwargs):
    return storage.as_strided(tuple(size), tuple(stride), offset)


def _identity(value, *args, **kwargs):
    return value


def _parse_classes(zf: zipfile.ZipFile,
                   root: str) -> Dict[str, Tuple[List[str], List[str], bool]]:
    """Qualified class name -> (parameters, buffers, is_module)."""
    classes = {}
    code = f'{root}/code/'
    for name in zf.namelist():
        if not (name.startswith(code) and name.endswith('.py')):
            continue
        module = name[len(code):-len('.py')].replace('/', '.')
        text = zf.read(name).decode('utf-8', errors='replace')
        starts = list(_CLASS_RE.finditer(text))
        for i, m in enumerate(starts):
            end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
            body = text[m.end():end]
            lists = []
            for field in ('__parameters__', '__buffers__'):
                found = re.search(_LIST_RE.format(field), body, re.M)
                lists.append(
                    re.findall(r'"([^"]*)"', found.group(1)) if found else [])
            is_module = m.group(2).strip() == 'Module'
            classes[f'{module}.{m.group(1)}'] = (lists[0], lists[1],
                                                 is_module)
    return classes


def read_torchscript_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """``torch.jit.load(path).state_dict()``, read as data only.

    Args:
        path (str): a TorchScript archive (zip with ``data.pkl``, ``data/``
            and ``code/``).

    Returns:
        dict: parameter / buffer name -> tensor (the archive's dtypes).

    Raises:
        TorchScriptReadError: not a readable archive, or its ``data.pkl``
            names a global other than those of a TorchScript module pickle.
    """
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        raise TorchScriptReadError(
            f'{path!r} is not a readable TorchScript archive ({e}).') from e
    with zf:
        pickles = [n for n in zf.namelist() if n.endswith('/data.pkl')]
        if len(pickles) != 1 or pickles[0].count('/') != 1:
            raise TorchScriptReadError(
                f'{path!r}: expected one <root>/data.pkl in the archive, '
                f'found {pickles}.')
        root = pickles[0].split('/')[0]
        names = set(zf.namelist())
        if f'{root}/byteorder' in names and \
                zf.read(f'{root}/byteorder').strip() != b'little':
            raise TorchScriptReadError(
                f'{path!r}: big-endian archives are not supported.')
        classes = _parse_classes(zf, root)
        storages: Dict[str, torch.Tensor] = {}
        script_types: Dict[str, type] = {}

        class Unpickler(pickle.Unpickler):

            def find_class(self, module, name):
                if module == '__torch__' or module.startswith('__torch__.'):
                    qualname = f'{module}.{name}'
                    if qualname not in script_types:
                        script_types[qualname] = type(
                            name, (_ScriptObject, ), {'_qualname': qualname})
                    return script_types[qualname]
                if module == 'torch._utils' and name == '_rebuild_tensor_v2':
                    return _rebuild_tensor
                if module == 'torch' and name in _STORAGE_DTYPES:
                    return _StorageType(_STORAGE_DTYPES[name])
                if module == 'collections' and name == 'OrderedDict':
                    return collections.OrderedDict
                typed_container = name.startswith('build_') or \
                    name == 'restore_type_tag'
                if module == 'torch.jit._pickle' and typed_container:
                    return _identity
                raise TorchScriptReadError(
                    f'{path!r}: data.pkl needs the global {module}.{name}, '
                    'which a TorchScript module of weights never uses; the '
                    'file was refused and nothing from it was run. Obtain '
                    'the weights from a trusted source.')

            def persistent_load(self, pid):
                if not (isinstance(pid, tuple) and len(pid) >= 3
                        and pid[0] == 'storage'
                        and isinstance(pid[1], _StorageType)):
                    raise TorchScriptReadError(
                        f'{path!r}: unexpected persistent id in data.pkl.')
                dtype, key = pid[1].dtype, str(pid[2])
                if key not in storages:
                    entry = f'{root}/data/{key}'
                    if entry not in names:
                        raise TorchScriptReadError(
                            f'{path!r}: storage {entry} is missing; the '
                            'file is truncated. Re-download it.')
                    raw = bytearray(zf.read(entry))
                    storages[key] = torch.frombuffer(
                        raw, dtype=dtype) if raw else torch.empty(
                            0, dtype=dtype)
                return storages[key]

        try:
            obj = Unpickler(zf.open(pickles[0])).load()
        except TorchScriptReadError:
            raise
        except Exception as e:  # noqa: BLE001 - corrupt pickle
            raise TorchScriptReadError(
                f'{path!r}: could not read data.pkl ({type(e).__name__}: '
                f'{e}). Re-download the file; it may be truncated.') from e

    state_dict: Dict[str, torch.Tensor] = collections.OrderedDict()

    def collect(node: _ScriptObject, prefix: str) -> None:
        info = classes.get(node._qualname)
        if info is None:
            raise TorchScriptReadError(
                f'{path!r}: the archive code does not define '
                f'{node._qualname}, which data.pkl uses.')
        params, buffers, is_module = info
        if not is_module:
            return
        state = getattr(node, '_state', {})
        for name in params + buffers:
            value = state.get(name)
            if isinstance(value, torch.Tensor):
                state_dict[prefix + name] = value
        for name, value in state.items():
            if isinstance(value, _ScriptObject):
                collect(value, f'{prefix}{name}.')

    if not isinstance(obj, _ScriptObject):
        raise TorchScriptReadError(
            f'{path!r}: data.pkl does not hold a TorchScript module.')
    collect(obj, '')
    return dict(state_dict)

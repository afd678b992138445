# Copyright (c) mmcoop contributors. All rights reserved.
"""mmcoop's model zoo: the model index (``model-index.yml`` and the
``configs/*/metafile.yml`` it imports) by config name, and released
checkpoints by local path or URL.

>>> from mmcoop.apis import list_models, get_model
>>> list_models('positivecoop*coco14*p50')
['positivecoop_clip-rn101_openai-pre_1xb32-coslr-50e_coco14-448px-p50']
>>> model = get_model('positivecoop_..._coco14-448px-p50', pretrained='x.pth')

The index is read from the installed package (``mmcoop/.mim``, written by
``setup.py``) or, in a clone, from the repository root.
:func:`register_to_mmpretrain` adds the index to mmpretrain's ``ModelHub``,
so that ``mmpretrain.get_model(name)`` and
``ImageClassificationInferencer(name)`` accept mmcoop names too.
"""
import difflib
import fnmatch
import hashlib
import os
import os.path as osp
import re
from typing import Dict, List, Optional, Union
from urllib.parse import urlparse

import torch

INDEX_FILE = 'model-index.yml'


def model_index_root() -> str:
    """The folder of ``model-index.yml``, ``configs/`` and ``tools/`` (the
    index's config paths are relative to it): the repository root in a
    clone (whose ``mmcoop/.mim``, if any, links or copies it), else
    ``mmcoop/.mim`` of the install."""
    package = osp.dirname(osp.dirname(osp.abspath(__file__)))
    for root in (osp.dirname(package), osp.join(package, '.mim')):
        if osp.isfile(osp.join(root, INDEX_FILE)):
            return root
    raise FileNotFoundError(
        f'No {INDEX_FILE} next to the mmcoop package ({package}/.mim or '
        f'{osp.dirname(package)}). Fix: install mmcoop from a wheel or with '
        '`pip install -e .` from the repository (setup.py puts the index in '
        'mmcoop/.mim).')


def _load_index() -> Dict[str, object]:
    """name (lower case) -> modelindex ``Model`` with an absolute config
    path."""
    from modelindex.load_model_index import load
    root = model_index_root()
    index = load(osp.join(root, INDEX_FILE))
    index.build_models_with_collections()
    models = {}
    for model in index.models:
        if model.config and not osp.isabs(model.config):
            model.config = osp.join(root, model.config)
        models[model.name.lower()] = model
    return models


def list_models(pattern: Optional[str] = None) -> List[str]:
    """Names of the configs in the model index, sorted.

    Args:
        pattern (str, optional): ``fnmatch`` pattern (``*``, ``?``), case
            insensitive, e.g. ``'dualcoop*voc07*'``. None lists every model.
    """
    names = [m.name for m in _load_index().values()]
    if pattern is not None and not isinstance(pattern, str):
        raise TypeError(f'list_models: pattern must be a str (an fnmatch '
                        f"pattern such as 'dualcoop*voc07*') or None, got "
                        f'{pattern!r}.')
    if pattern is not None:
        names = [n for n in names if fnmatch.fnmatch(n.lower(),
                                                     pattern.lower())]
    return sorted(names)


def model_info(name: str):
    """The ``modelindex`` entry of ``name`` (``config`` absolute,
    ``weights``, ``results``, ``metadata``)."""
    models = _load_index()
    if isinstance(name, str) and name.endswith('.py') and \
            osp.basename(name) == name and name[:-3].lower() in models:
        name = name[:-3]  # the name written as mim does (no folder)
    elif not isinstance(name, str) or name.endswith('.py') or \
            osp.isfile(name):
        raise TypeError(
            f'{name!r} is not a model name of the index. Fix: pass a name '
            'from mmcoop.apis.list_models(); build a model from a config '
            '(a file or a Config) with mmcoop.apis.init_model(config, '
            'checkpoint).')
    if name.lower() not in models:
        close = close_model_names(name)
        raise ValueError(
            f'No model {name!r} in {osp.join(model_index_root(), INDEX_FILE)}'
            f'{"; close: " + ", ".join(close) if close else ""}. Fix: pick '
            'a name from mmcoop.apis.list_models() (`mim search mmcoop`).')
    return models[name.lower()]


def close_model_names(name: str, limit: int = 5) -> List[str]:
    """Index names containing ``name``, else the nearest spellings of the
    whole name or of its beginning (a typo in a full name, or in a short
    one such as ``positivecop_clip-rn101``)."""
    models = sorted(_load_index())
    key = str(name).lower()
    inside = fnmatch.filter(models, f'*{key}*')
    if inside:
        return inside[:limit]

    def score(model: str) -> float:
        return max(difflib.SequenceMatcher(None, key, text).ratio()
                   for text in (model, model[:len(key)]))

    scored = sorted((-score(m), m) for m in models)
    return [m for s, m in scored if -s >= 0.8][:limit]


def is_url(path: str) -> bool:
    return urlparse(str(path)).scheme in ('http', 'https')


#: ``name-<sha256 prefix>.ext`` (what ``publish_model.py`` writes, and the
#: torch.hub convention): the download is checked against the prefix.
_HASH_SUFFIX = re.compile(r'-([0-9a-f]{8,64})\.[^.]+$')


def url_cache_path(url: str) -> str:
    """Where :func:`fetch_checkpoint` keeps the download of ``url``:
    ``<torch hub dir>/checkpoints/<sha256(url)[:16]>/<file name>``.

    The folder is keyed on the whole URL, so ``https://x/runA/epoch_2.pth``
    and ``https://x/runB/epoch_2.pth`` are two files; the file keeps its
    name (and with it a ``-<sha256 prefix>`` suffix to check).
    """
    key = hashlib.sha256(str(url).encode('utf-8')).hexdigest()[:16]
    name = osp.basename(urlparse(str(url)).path) or 'checkpoint.pth'
    return osp.join(torch.hub.get_dir(), 'checkpoints', key, name)


def _folder_hint(folder: str) -> str:
    """The checkpoint file to pass instead of the folder ``folder``."""
    pointer = osp.join(folder, 'last_checkpoint')
    try:
        with open(pointer) as f:
            named = f.read().strip()
    except (OSError, UnicodeDecodeError):
        named = ''
    for named in ([named, osp.join(folder, osp.basename(named))]
                  if named else []):
        if osp.isfile(named):
            return (f'pass the checkpoint file inside it, e.g. {named!r} '
                    f'(the last one, named in {pointer!r}).')
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith('.pth'))
    except OSError:
        names = []
    if names:
        def epoch(name):
            digits = re.findall(r'\d+', name)
            return (int(digits[-1]) if digits else -1, name)
        best = max(names, key=epoch)
        return ('pass the checkpoint file inside it, e.g. '
                f'{osp.join(folder, best)!r}.')
    return ('pass a checkpoint file (.pth); this folder holds none (a work '
            'dir has epoch_N.pth files once an epoch was saved).')


def check_checkpoint_path(path: str,
                          what: str = 'Checkpoint',
                          urls: bool = True) -> str:
    """``path`` if it is an existing file; else a clear error (``urls``:
    whether the caller also takes an http(s) URL, for the fix it names).

    Raises:
        IsADirectoryError: ``path`` is a folder (e.g. a work dir); the
            message names the checkpoint file to pass instead.
        FileNotFoundError: nothing exists at ``path``.
    """
    if osp.isdir(path):
        raise IsADirectoryError(
            f'{what} {path!r} is a folder, not a checkpoint file. Fix: '
            f'{_folder_hint(path)}')
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'{what} {path!r} does not exist. Fix: give an existing file' +
            (' or an http(s) URL.' if urls else ' (a downloaded one: '
             'checkpoints are read from local files only).'))
    return path


def check_local_checkpoint(path: str, what: str = 'Checkpoint') -> str:
    """``path`` if it is an existing local file: the runner's checkpoints
    (``load_from``, ``--resume PATH``, the test checkpoint) are never read
    from a URL or other remote storage, whose loaders unpickle without
    ``weights_only``; a folder or a missing file as in
    :func:`check_checkpoint_path`."""
    if '://' in str(path):
        raise ValueError(
            f'{what} {path!r}: mmcoop loads local files only (remote '
            'loaders unpickle without weights_only). Fix: download it and '
            'pass the local path.')
    return check_checkpoint_path(path, what, urls=False)


def fetch_checkpoint(path_or_url: str) -> str:
    """A local checkpoint path for a path or an ``http(s)`` URL.

    URLs are downloaded once into ``<torch hub dir>/checkpoints/<key>/``
    (``TORCH_HOME`` moves the hub dir), where ``<key>`` is a hash of the
    whole URL (see :func:`url_cache_path`), and the local copy is returned.
    A file name ending in ``-<hex>.<ext>`` (8 to 64 hex digits, e.g. the
    ``-{sha256[:8]}`` of ``publish_model.py``) is checked against the
    sha256 of the download. Local paths are returned as they are (a
    leading ``~`` expanded).

    Raises:
        IsADirectoryError: a local path is a folder (the message names the
            checkpoint file inside it).
        FileNotFoundError: a local path does not exist.
        RuntimeError: the download does not match its hash suffix.
    """
    if not is_url(path_or_url):
        from mmcoop.utils.paths import expand_user
        return check_checkpoint_path(
            expand_user(str(path_or_url), 'checkpoint'))
    local = url_cache_path(path_or_url)
    if not osp.isfile(local):
        os.makedirs(osp.dirname(local), exist_ok=True)
        match = _HASH_SUFFIX.search(osp.basename(local))
        prefix = match.group(1) if match else None
        try:
            torch.hub.download_url_to_file(
                path_or_url, local, hash_prefix=prefix, progress=False)
        except OSError as e:  # URLError and other network failures
            raise OSError(
                f'Cannot download the checkpoint {path_or_url!r} '
                f'({type(e).__name__}: {e}). Fix: download it elsewhere and '
                f'put it at {local!r} (where it is looked up), or pass the '
                'local file instead of the URL.') from e
        except RuntimeError as e:
            if prefix is None or 'hash' not in str(e):
                raise
            raise RuntimeError(
                f'The download of {path_or_url!r} does not match the sha256 '
                f'prefix {prefix!r} in its name ({e}); nothing was kept. '
                'Fix: download it again, or check the URL.') from e
    return local


def get_model(name: str,
              pretrained: Union[bool, str] = False,
              device: Union[str, torch.device] = 'cpu',
              cfg_options: Optional[dict] = None) -> torch.nn.Module:
    """Build a model of the index by config name.

    Args:
        name (str): a name from :func:`list_models`.
        pretrained (bool | str): False: no checkpoint (frozen towers from
            the config's CLIP weights, heads initial). True: the
            metafile's ``Weights`` (an error while none is released). A
            str: a checkpoint path or URL.
        device (str | torch.device): where to put the model.
        cfg_options (dict, optional): config overrides.

    Returns:
        nn.Module: as :func:`mmcoop.apis.init_model`.
    """
    from .inference import init_model
    info = model_info(name)
    checkpoint = None
    if pretrained is True:
        if not info.weights:
            raise ValueError(
                f'{info.name} has no released checkpoint (`Weights` is empty '
                f'in {info.filepath}). Fix: train it, then '
                '`tools/model_converters/publish_model.py` fills `Weights`; '
                'or pass pretrained=<checkpoint path or URL>.')
        checkpoint = info.weights
    elif pretrained:
        checkpoint = str(pretrained)
    return init_model(info.config, checkpoint, device, cfg_options)


def register_to_mmpretrain() -> None:
    """Add mmcoop's index to mmpretrain's ``ModelHub`` (once), so that
    ``mmpretrain.get_model(name)`` / ``ImageClassificationInferencer(name)``
    build mmcoop models by name."""
    from mmpretrain.apis.model import ModelHub
    root = model_index_root()
    if all(ModelHub.has(n.lower()) for n in list_models()):
        return
    ModelHub.register_model_index(
        osp.join(root, INDEX_FILE), config_prefix=root)

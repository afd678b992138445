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
import fnmatch
import os.path as osp
from typing import Dict, List, Optional, Union
from urllib.parse import urlparse

import torch

INDEX_FILE = 'model-index.yml'


def model_index_root() -> str:
    """The folder of ``model-index.yml`` (its config paths are relative to
    it): ``mmcoop/.mim`` in an install, else the repository root."""
    package = osp.dirname(osp.dirname(osp.abspath(__file__)))
    for root in (osp.join(package, '.mim'), osp.dirname(package)):
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
    if pattern is not None:
        names = [n for n in names if fnmatch.fnmatch(n.lower(),
                                                     pattern.lower())]
    return sorted(names)


def model_info(name: str):
    """The ``modelindex`` entry of ``name`` (``config`` absolute,
    ``weights``, ``results``, ``metadata``)."""
    models = _load_index()
    if name.lower() not in models:
        close = fnmatch.filter(models, f'*{name.lower()}*')[:5]
        raise ValueError(
            f'No model {name!r} in {osp.join(model_index_root(), INDEX_FILE)}'
            f'{"; close: " + ", ".join(close) if close else ""}. Fix: pick '
            'a name from mmcoop.apis.list_models() (`mim search mmcoop`).')
    return models[name.lower()]


def is_url(path: str) -> bool:
    return urlparse(str(path)).scheme in ('http', 'https')


def fetch_checkpoint(path_or_url: str) -> str:
    """A local checkpoint path for a path or an ``http(s)`` URL.

    URLs are downloaded once into ``<torch hub dir>/checkpoints`` (what
    ``torch.hub`` and mmengine use; ``TORCH_HOME`` moves it) and the local
    copy is returned. Local paths are returned as they are.
    """
    if not is_url(path_or_url):
        if not osp.isfile(path_or_url):
            raise FileNotFoundError(
                f'Checkpoint {path_or_url!r} does not exist. Fix: give an '
                'existing file or an http(s) URL.')
        return path_or_url
    folder = osp.join(torch.hub.get_dir(), 'checkpoints')
    local = osp.join(folder, osp.basename(urlparse(path_or_url).path))
    if not osp.isfile(local):
        import os
        os.makedirs(folder, exist_ok=True)
        torch.hub.download_url_to_file(path_or_url, local, progress=False)
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

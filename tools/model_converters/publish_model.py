# Copyright (c) mmcoop contributors. All rights reserved.
"""Turn a training checkpoint into a small, safely loadable release file.

    python tools/model_converters/publish_model.py IN.pth OUT.pth \\
        [--dataset-type COCO2014MultiLabel] [--no-date] [--trust-source]

* keeps ``state_dict`` (tensors only; mmcoop checkpoints hold just the
  trained parameters, the frozen CLIP towers are rebuilt from the config)
  and a plain-data ``meta``;
* drops ``optimizer``, ``param_schedulers``, ``message_hub``, ``hook_msgs``
  and anything else that is not a tensor or plain data (e.g. mmengine's
  ``HistoryBuffer`` and numpy objects, which ``torch.load(...,
  weights_only=True)`` refuses);
* ``meta`` gets ``mmcoop_version`` (and mmpretrain / mmengine / torch
  versions), ``dataset_meta`` (class names, from the checkpoint, from
  ``--dataset-type`` or from the stored config), ``config`` (the training
  config as text) and the training ``epoch``/``iter``/``seed``;
* writes ``OUT_{YYYYMMDD}-{sha256[:8]}.pth`` (``OUT-{sha256[:8]}.pth`` with
  ``--no-date``), the hash being that of the final file, and checks that
  it loads with ``torch.load(..., weights_only=True)``. The file is
  serialised in memory (fixed archive name) and written atomically, so the
  same checkpoint published twice gives the same bytes and sha;
* refuses an input that is not a checkpoint (no dict with a ``state_dict``
  of tensors) with an error naming the file.

With ``--metafile configs/<method>/metafile.yml`` the release is recorded in
the model zoo (:func:`mmcoop.apis.metafile.record_release`): the entry of
the run's config gets ``Weights`` (``--weights-url``, else the published
file's path) and the measured ``mAP`` that the run logged at the
checkpoint's epoch (``--work-dir``, default: the checkpoint's folder). The
paper's numbers are left as they are. Then refresh the README tables with
``python .dev_scripts/gen_model_zoo_tables.py``.

Reading the input never runs code from the file: it is unpickled with
``torch.load(weights_only=True)``, MMEngine's runtime state (``HistoryBuffer``,
numpy arrays) through inert stand-ins (:func:`mmcoop.utils.safe_torch_load`
``(runtime_state=True)``). A file that pickles anything else is refused;
``--trust-source`` reads it with an unrestricted ``torch.load`` instead --
only for files you made yourself.
"""
import argparse
import datetime
import hashlib
import io
import os.path as osp
import warnings
from collections import OrderedDict

import torch

import mmcoop
import mmcoop.datasets  # noqa: F401  (registers the dataset types)
from mmcoop.engine.cli import user_path
from mmcoop.engine.hooks.protocol_check_hook import META_KEY as PROTOCOL_KEY
from mmcoop.engine.hooks.threshold_calibration_hook import \
    META_KEY as CALIBRATION_KEY

#: checkpoint keys that are never published
DROP_KEYS = ('optimizer', 'param_schedulers', 'message_hub', 'hook_msgs',
             'ema_state_dict')
#: training facts copied from the checkpoint meta (if plain data);
#: ``clip_towers``: the frozen CLIP towers the load policy compares; the
#: per-class thresholds calibrated in training (``threshold='calibrated'``
#: of inference and export) and the evaluation protocol (named when the
#: checkpoint is tested under another)
META_KEYS = ('epoch', 'iter', 'seed', 'experiment_name', 'time',
             'mmengine_version', 'clip_towers', CALIBRATION_KEY,
             PROTOCOL_KEY)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Strip a checkpoint to tensors + plain meta and name it '
        'with its sha256.')
    parser.add_argument('in_file', help='input checkpoint filename')
    parser.add_argument(
        'out_file',
        help='output checkpoint filename; `_{date}-{sha8}` is appended '
        'before .pth')
    parser.add_argument(
        '--dataset-type',
        help='registered dataset type whose METAINFO gives the class names '
        '(e.g. COCO2014MultiLabel), if the checkpoint has none')
    parser.add_argument(
        '--no-date',
        action='store_true',
        help='name the file OUT-{sha8}.pth instead of OUT_{date}-{sha8}.pth')
    parser.add_argument(
        '--trust-source',
        action='store_true',
        help='read an input that pickles more than tensors and MMEngine '
        'runtime state with an unrestricted torch.load. Only for files you '
        'made yourself.')
    zoo = parser.add_argument_group(
        'model zoo', 'record the release in a metafile (see the module doc)')
    zoo.add_argument('--metafile', help='configs/<method>/metafile.yml')
    zoo.add_argument(
        '--work-dir',
        type=user_path,
        help='work dir of the run (its logs give the measured mAP); '
        'default: the folder of in_file')
    zoo.add_argument(
        '--model-name',
        help='metafile entry; default: the config file saved in the work '
        'dir')
    zoo.add_argument(
        '--weights-url',
        help='where the published file will be downloadable (http(s)): its '
        'URL (ending in its published name) or the URL of its folder, '
        "ending in '/'; default: its local path")
    return parser.parse_args(argv)


def _run_config_name(work_dir: str) -> str:
    """The config name of a run: the ``<name>.py`` mmcoop saves in its work
    dir."""
    import glob
    names = [
        osp.basename(p)[:-3]
        for p in glob.glob(osp.join(glob.escape(work_dir), '*.py'))
    ]
    if len(names) != 1:
        raise ValueError(
            f'Expected one config file in {work_dir}, found {names}. Fix: '
            'pass --model-name.')
    return names[0]


def release_entry(args) -> str:
    """The metafile entry the release is recorded in (``--model-name`` or
    the run's config name), checked before anything is published: the
    metafile exists and has that entry."""
    from mmcoop.apis.metafile import metafile_entry, read_metafile
    if not osp.isfile(args.metafile):
        raise FileNotFoundError(
            f'--metafile {args.metafile!r} is not a file. Fix: give the '
            'metafile of the method, e.g. configs/positivecoop/metafile.yml '
            '(nothing was published).')
    work_dir = args.work_dir or osp.dirname(osp.abspath(args.in_file))
    name = args.model_name or _run_config_name(work_dir)
    metafile_entry(read_metafile(args.metafile), name, args.metafile)
    return name


def check_release_fits(args, name: str, meta: dict) -> None:
    """The published checkpoint is a model of the entry's config: the same
    class names and the same CLIP image tower (``meta``: the published
    meta). Before, any checkpoint was recorded under any entry."""
    from mmcoop.apis.inference import config_classnames, load_config
    from mmcoop.apis.metafile import metafile_entry, read_metafile
    from mmcoop.datasets.utils import same_class_names
    entry = metafile_entry(read_metafile(args.metafile), name, args.metafile)
    fix = ('Fix: pass --model-name NAME, the metafile entry (the config '
           'name, without .py) of the config this checkpoint was trained '
           f'with (nothing was recorded in {args.metafile}, and no file '
           'was written).')
    config = _entry_config(args.metafile, entry.get('Config'))
    if config is None:
        raise ValueError(
            f'{args.metafile}: the config of entry {name!r} '
            f'({entry.get("Config")!r}) is found neither in a folder above '
            'the metafile nor in the installed mmcoop, so the checkpoint '
            'cannot be checked against it (nothing was recorded, and no '
            'file was written). Fix: record the release in the metafile of '
            'the repository or package whose configs/ has that config, '
            'e.g. configs/<method>/metafile.yml.')
    cfg = load_config(config)
    classes = (meta.get('dataset_meta') or {}).get('classes')
    wanted = config_classnames(cfg)
    if classes and wanted and not same_class_names(classes, wanted):
        raise ValueError(
            f'{args.in_file} is not a model of {name!r}: its {len(classes)} '
            f'classes ({", ".join(map(str, classes[:4]))}, ...) are not the '
            f'{len(wanted)} of {config}. {fix}')
    then = ((meta.get('clip_towers') or {}).get('backbone') or {}).get(
        'model_name')
    now = (cfg.model.get('backbone') or {}).get('model_name')
    if then and now and then != now:
        raise ValueError(
            f'{args.in_file} is not a model of {name!r}: it was trained on '
            f'CLIP {then!r}, the entry\'s config {config} uses {now!r}. '
            f'{fix}')


def _entry_config(metafile: str, config: str):
    """The entry's ``Config`` path (relative to the repository or package
    root): in a folder above the metafile, else in the installed mmcoop's
    model-index root (a copy of a metafile kept elsewhere); None when not
    found."""
    from mmcoop.apis.model_zoo import model_index_root
    if not config:
        return None
    folder = osp.dirname(osp.abspath(metafile))
    while True:
        if osp.isfile(osp.join(folder, config)):
            return osp.join(folder, config)
        parent = osp.dirname(folder)
        if parent == folder:
            break
        folder = parent
    try:
        root = model_index_root()
    except FileNotFoundError:
        return None
    path = osp.join(root, config)
    return path if osp.isfile(path) else None


def metafile_record(args, final: str, epoch, name: str = None) -> tuple:
    """``(name, weights, mAP, epoch)`` that ``--metafile`` records for the
    published file ``final``; raises before anything is written."""
    from mmcoop.apis.metafile import measured_map
    work_dir = args.work_dir or osp.dirname(osp.abspath(args.in_file))
    name = name or args.model_name or _run_config_name(work_dir)
    if not isinstance(epoch, int):
        raise ValueError(f'{args.in_file} has no epoch in its meta; cannot '
                         'find the measured mAP of that epoch.')
    value = measured_map(work_dir, epoch)
    # a local file as an absolute path: the zoo reads it from any folder
    weights = release_url(args.weights_url, final) if args.weights_url \
        else osp.abspath(final)
    return name, weights, value, epoch


def release_url(url: str, final: str) -> str:
    """The URL ``--weights-url`` records for the published file ``final``:
    a folder URL (ending in ``/``) gets the file's name; a file URL must end
    in that name, since the name carries the SHA-256 prefix that the zoo
    checks after a download (``get_model(..., pretrained=True)``): another
    name would be a file that fails that check, or none at all."""
    from urllib.parse import urlsplit
    name = osp.basename(final)
    if url.endswith('/'):
        return url + name
    given = osp.basename(urlsplit(url).path)
    if given != name:
        raise ValueError(
            f'--weights-url {url!r} names the file {given!r}, but the '
            f'published file is {name!r} (its name ends in the first hex '
            'digits of its SHA-256, which the model zoo checks after a '
            f'download); nothing was recorded. Fix: upload {name} and give '
            f'its URL, or the URL of its folder ending in /.')
    return url


def load_input(path: str, trust_source: bool = False):
    """Load ``path`` without running code from it (see the module doc).

    Returns:
        tuple: ``(checkpoint, safe)``; ``safe`` is False only when
        ``trust_source`` was needed.
    """
    from mmcoop.utils.checkpoint import UnsafeCheckpointError, safe_torch_load
    try:
        return safe_torch_load(
            path, 'cpu', 'input checkpoint', runtime_state=True), True
    except UnsafeCheckpointError as e:
        if not trust_source:
            raise UnsafeCheckpointError(
                f'{e} If you made this file yourself, pass --trust-source '
                'to publish_model.py.') from None
    return torch.load(path, map_location='cpu', weights_only=False), False


def to_plain(obj, where: str = 'meta', dropped=None):
    """Recursively keep str/int/float/bool/None/list/dict/tensors.

    Tuples become lists, numpy scalars and arrays become Python values;
    anything else is dropped (its path is appended to ``dropped``).
    """
    if dropped is None:
        dropped = []
    if obj is None or isinstance(obj, bool):
        return obj
    for plain in (str, int, float):  # also subclasses (e.g. TorchVersion)
        if isinstance(obj, plain):
            return plain(obj)
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    try:
        import numpy as np
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray) and obj.dtype.kind in 'biuf':
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, (list, tuple)):
        out = []
        for i, v in enumerate(obj):
            v = to_plain(v, f'{where}[{i}]', dropped)
            if v is not _DROP:
                out.append(v)
        return out
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                dropped.append(f'{where}[{k!r}]')
                continue
            v = to_plain(v, f'{where}.{k}', dropped)
            if v is not _DROP:
                out[k] = v
        return out
    dropped.append(f'{where} ({type(obj).__name__})')
    return _DROP


_DROP = object()


def _classes_from_config(cfg_text: str):
    """Class names of ``model.head.classnames`` in a stored config, read
    without running its text (:func:`stored_config_values`)."""
    from mmcoop.engine.config_text import stored_config_values
    from mmcoop.models.heads import resolve_classnames
    model = stored_config_values(cfg_text).get('model')
    head = model.get('head') if isinstance(model, dict) else None
    classnames = head.get('classnames') if isinstance(head, dict) else None
    if classnames is None:
        return None
    try:
        return list(resolve_classnames(classnames))
    except Exception:  # noqa: BLE001 - best effort only
        return None


class NotACheckpointError(ValueError):
    """The input file loads, but is not a model checkpoint."""


_FIX = ('Fix: pass a training checkpoint (work_dirs/<run>/epoch_N.pth) or a '
        "dict with a 'state_dict' of tensors.")


def build_published(checkpoint, dataset_type=None, source='the input'):
    """The published dict ``{'state_dict', 'meta'}`` and dropped keys.

    Raises:
        NotACheckpointError: ``checkpoint`` (read from ``source``, named in
            the message) is not a dict with a state dict of tensors.
    """
    if not isinstance(checkpoint, dict):
        raise NotACheckpointError(
            f'{source} is not a checkpoint: it holds a '
            f'{type(checkpoint).__name__}, not a dict. {_FIX}')
    if 'state_dict' not in checkpoint:  # a bare state dict
        if checkpoint and all(
                isinstance(v, torch.Tensor) for v in checkpoint.values()):
            checkpoint = dict(state_dict=checkpoint)
        else:
            keys = ', '.join(map(repr, list(checkpoint)[:5]))
            raise NotACheckpointError(
                f"{source} has no 'state_dict' (its keys: {keys or 'none'}) "
                f'and is not a state dict of tensors. {_FIX}')
    if not isinstance(checkpoint['state_dict'], dict):
        raise NotACheckpointError(
            f"{source}: 'state_dict' is a "
            f"{type(checkpoint['state_dict']).__name__}, not a dict of "
            f'tensors. {_FIX}')
    if checkpoint.get('meta') is not None and not isinstance(
            checkpoint['meta'], dict):
        raise NotACheckpointError(
            f"{source}: 'meta' is a {type(checkpoint['meta']).__name__}, "
            f'not a dict. {_FIX}')
    dropped = [k for k in checkpoint if k not in ('state_dict', 'meta')]

    state_dict = OrderedDict()
    for key, value in checkpoint['state_dict'].items():
        if not isinstance(value, torch.Tensor):
            dropped.append(f'state_dict.{key} ({type(value).__name__})')
            continue
        if key.startswith('module.'):
            key = key[len('module.'):]
        state_dict[key] = value.detach().cpu().clone()
    if not state_dict:
        raise NotACheckpointError(
            f"{source} holds no tensors in 'state_dict'. {_FIX}")

    meta_in = checkpoint.get('meta') or {}
    meta = {}
    for key in META_KEYS:
        if key in meta_in:
            value = to_plain(meta_in[key], f'meta.{key}', dropped)
            if value is not _DROP:
                meta[key] = value
    cfg_text = meta_in.get('cfg', meta_in.get('config'))
    if isinstance(cfg_text, str):
        meta['config'] = cfg_text

    dataset_meta = to_plain(
        meta_in.get('dataset_meta') or {}, 'meta.dataset_meta', dropped)
    if not dataset_meta.get('classes'):
        classes = None
        if dataset_type is not None:
            dataset_cls = _dataset_class(dataset_type)
            classes = list(
                getattr(dataset_cls, 'METAINFO', {}).get('classes', []))
        elif isinstance(cfg_text, str):
            classes = _classes_from_config(cfg_text)
        if classes:
            dataset_meta['classes'] = classes
    if not dataset_meta.get('classes'):
        warnings.warn('No class names found (checkpoint meta, '
                      '--dataset-type, stored config); `dataset_meta` is '
                      'empty.')
    meta['dataset_meta'] = dataset_meta

    import mmengine
    import mmpretrain
    meta['mmcoop_version'] = str(mmcoop.__version__)
    meta['mmpretrain_version'] = str(mmpretrain.__version__)
    meta['mmengine_version'] = meta.get('mmengine_version',
                                        str(mmengine.__version__))
    meta['torch_version'] = str(torch.__version__)
    return dict(state_dict=state_dict, meta=meta), dropped


def _dataset_class(dataset_type: str):
    from mmcoop.registry import DATASETS
    dataset_cls = DATASETS.get(dataset_type)
    if dataset_cls is None:
        raise KeyError(f'--dataset-type {dataset_type!r} is not a '
                       'registered dataset.')
    return dataset_cls


def serialize(published: dict) -> bytes:
    """The bytes of ``torch.save(published)``, the same for the same
    content: saved into memory, the zip's root folder is torch's fixed
    ``archive/`` (saving to a path names it after the file, so a temporary
    file name would change the bytes and the sha in the name)."""
    buffer = io.BytesIO()
    torch.save(published, buffer)
    return buffer.getvalue()


def prepare(in_file: str,
            out_file: str,
            dataset_type=None,
            with_date: bool = True,
            trust_source: bool = False) -> tuple:
    """The release of ``in_file``, not yet written: ``(final path, bytes,
    published checkpoint, dropped keys)``."""
    from mmcoop.utils.paths import claim_outputs
    if dataset_type is not None:  # an option error before the load
        _dataset_class(dataset_type)
    # the final name carries the content's sha256, so an existing file of
    # that name holds the same tensors: only the input itself is refused
    claim_outputs([out_file], inputs=[in_file], force=True)
    checkpoint, _ = load_input(in_file, trust_source)
    published, dropped = build_published(
        checkpoint, dataset_type, f'input checkpoint {in_file!r}')

    stem = out_file[:-4] if out_file.endswith('.pth') else out_file
    data = serialize(published)
    # the point of publishing: it must load without unpickling code
    reloaded = torch.load(
        io.BytesIO(data), map_location='cpu', weights_only=True)
    if set(reloaded['state_dict']) != set(published['state_dict']):
        raise RuntimeError('the written file does not round-trip.')
    sha = hashlib.sha256(data).hexdigest()[:8]
    suffix = (f'_{datetime.datetime.now():%Y%m%d}' if with_date else '')
    final = f'{stem}{suffix}-{sha}.pth'
    claim_outputs([final], inputs=[in_file], force=True)
    return final, data, reloaded, dropped


def write_release(final: str, data: bytes, published: dict,
                  dropped) -> str:
    """Write the release :func:`prepare` made; returns its path."""
    from mmcoop.utils.checkpoint import atomic_write
    atomic_write(final, lambda f: f.write(data))
    print(f'Dropped: {", ".join(dropped) if dropped else "nothing"}.')
    print(f'Kept {len(published["state_dict"])} tensors '
          f'({sum(v.numel() for v in published["state_dict"].values()):,} '
          'values).')
    print(f'Successfully generated the publish-ckpt as {final}.')
    return final


def publish(in_file: str,
            out_file: str,
            dataset_type=None,
            with_date: bool = True,
            trust_source: bool = False) -> str:
    """Publish ``in_file``; returns the path of the written file."""
    return write_release(
        *prepare(in_file, out_file, dataset_type, with_date, trust_source))


def main(argv=None):
    from mmcoop.apis.metafile import record_release
    args = parse_args(argv)
    # a wrong --metafile / --model-name / --weights-url, or a run without
    # the measured mAP, stops before the release is written
    name = release_entry(args) if args.metafile else None
    release = prepare(
        args.in_file,
        args.out_file,
        dataset_type=args.dataset_type,
        with_date=not args.no_date,
        trust_source=args.trust_source)
    final, meta = release[0], release[2]['meta']
    if args.metafile:
        check_release_fits(args, name, meta)
        name, weights, value, epoch = metafile_record(
            args, final, meta.get('epoch'), name)
    write_release(*release)
    if args.metafile:
        record_release(args.metafile, name, weights, value)
        print(f'Recorded in {args.metafile}: {name} mAP {value:.2f} (epoch '
              f'{epoch}), Weights {weights}.')
    return final


if __name__ == '__main__':
    main()

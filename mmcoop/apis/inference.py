# Copyright (c) mmcoop contributors. All rights reserved.
"""Multi-label inference with an mmcoop config and checkpoint.

>>> from mmcoop.apis import init_model, inference_model
>>> model = init_model('configs/...py', 'ckpt.pth', device='cpu')
>>> results = inference_model(model, ['a.jpg', rgb_array], threshold=0.5)
>>> results[0]['classes'], results[0]['scores'].shape
(['person', 'dog'], (80,))

Inputs are image paths, ``numpy`` arrays or PIL images.

* A **path** runs the whole test pipeline of the config
  (``cfg.test_dataloader.dataset.pipeline``), ``LoadImageFromFile``
  included, exactly as ``tools/test.py`` would.
* An **array** must be ``HWC`` (or ``HW`` for grey), ``uint8`` (integer
  arrays within 0..255 are converted; float arrays, e.g. in [0, 1], are
  refused with the fix), in **RGB** channel order (what PIL, matplotlib
  and ``imageio`` give). It is converted
  to BGR, the order ``LoadImageFromFile`` (OpenCV) produces, and the
  pipeline runs without its loading transform; the model's
  ``data_preprocessor`` (``to_rgb=True`` in mmcoop configs) flips it back.
  The same picture as a file or as an RGB array gives the same scores.
  A 4-channel (RGBA) array loses its alpha channel.
  Note: mmpretrain's ``ImageClassificationInferencer`` takes arrays as BGR.
* A **PIL image** is converted to an RGB array.

Each result is a dict:

* ``scores``: ``(C,)`` float32 ``numpy`` array, p(present) per class
  (``softmax`` over [negative, positive] logits, the model's
  ``pred_score``);
* ``labels``: indices with ``score >= threshold``, by decreasing score;
* ``classes``: the names of ``labels`` (same order);
* ``img_path``: the path, or None for arrays.

Checkpoints are read with ``weights_only=True`` (:func:`mmcoop.utils.
safe_torch_load`); a checkpoint with only the trained head (the default of
mmcoop runs: frozen CLIP towers are not saved) is complete, the towers come
from the weights named in the config.
"""
import copy
import os
import os.path as osp
import warnings
from typing import Any, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.logging import MMLogger
from mmengine.registry import DefaultScope

from mmcoop.datasets.data_path import restore_cpu_data_path
from mmcoop.datasets.feature_cache import restore_image_model
from mmcoop.engine.checkpoint_fit import (CHECKS, check_checkpoint_fits,
                                          load_checkpoint_weights)
from mmcoop.engine.cli import merge_cfg_options
from mmcoop.engine.config_checks import (check_clip_towers, check_nested_keys,
                                         check_normalization)
from mmcoop.engine.hooks.threshold_calibration_hook import stored_thresholds
from mmcoop.utils.checkpoint import CheckpointMismatchError, safe_torch_load
from mmcoop.utils.value_checks import check_device, check_int
from .model_zoo import fetch_checkpoint

ImageType = Union[str, np.ndarray, Any]

#: the ``threshold`` of ``inference_model`` / ``MultiLabelInferencer`` when
#: none (or None) is given.
DEFAULT_THRESHOLD = 0.5
ConfigType = Union[str, Config, dict]

_LOAD_PREFIX = 'LoadImageFrom'


def load_config(config: ConfigType,
                cfg_options: Optional[dict] = None) -> Config:
    """The config of a path, ``Config`` or dict (a copy: the caller's is
    left unchanged), with ``cfg_options`` merged the way ``tools/train.py``
    merges ``--cfg-options`` (:func:`mmcoop.engine.cli.merge_cfg_options`:
    a value of another type than the one it replaces is refused). Used by
    :func:`init_model` and by every tool that reads a config outside a
    runner. A key that the constructor of its ``type`` does not take
    (``model.head.n_ctxx``, a dataset's or a transform's) is then named
    with its path, as ``MMCoopRunner.from_cfg`` names it
    (:func:`mmcoop.engine.config_checks.check_nested_keys`)."""
    cfg = merge_cfg_options(_read_config(config), cfg_options)
    check_nested_keys(cfg)
    return cfg


def _read_config(config: ConfigType) -> Config:
    if isinstance(config, (str, os.PathLike)):
        from mmcoop.utils.paths import expand_user
        path = expand_user(str(config), 'config')
        if not osp.isfile(path):
            from .model_zoo import close_model_names
            close = close_model_names(osp.basename(path).rsplit('.py', 1)[0])
            hint = (' For a model-zoo name, use mmcoop.apis.get_model(name)'
                    f'; close names: {close}.' if close else '')
            raise FileNotFoundError(
                f'Config {path!r} is not a file. Fix: give the path of a '
                f'config file (configs/<method>/<name>.py).{hint}')
        return Config.fromfile(path)
    if isinstance(config, Config):
        return copy.deepcopy(config)
    if isinstance(config, dict):
        return Config(copy.deepcopy(dict(config)))
    raise TypeError('config must be a file path, a Config or a dict, not '
                    f'{type(config).__name__}.')


def _model_config(config: ConfigType,
                  cfg_options: Optional[dict]) -> Config:
    """The config (:func:`load_config`), which must have a ``model``."""
    cfg = load_config(config, cfg_options)
    if 'model' not in cfg:
        raise KeyError('The config has no `model` field.')
    return cfg


def inference_config(config: ConfigType,
                     cfg_options: Optional[dict] = None) -> Config:
    """The config :func:`init_model` builds from: :func:`load_config`, with
    the image model and the CPU test path of a feature-cache or
    device-path config restored (what such runs dump in their work dirs:
    :func:`~mmcoop.datasets.feature_cache.restore_image_model`,
    :func:`~mmcoop.datasets.data_path.restore_cpu_data_path`). Tools read
    it to check the test pipeline before the model is built."""
    cfg = _model_config(config, cfg_options)
    restore_image_model(cfg)
    restore_cpu_data_path(cfg)
    return cfg


def config_classnames(config: ConfigType,
                      cfg_options: Optional[dict] = None
                      ) -> Optional[List[str]]:
    """The class names of the model :func:`init_model` would build from
    ``config`` and ``cfg_options``, without building it: the config's
    ``model.head.classnames`` resolved as the head resolves them
    (:func:`mmcoop.models.heads.resolve_classnames`); None when the head
    gives none. Lets a tool check a class subset (``export.py --classes``)
    before the model is built."""
    head = _model_config(config, cfg_options).model.get('head')
    names = head.get('classnames') if isinstance(head, dict) else None
    if names is None:
        return None
    _register_modules()
    from mmcoop.models.heads import resolve_classnames
    return resolve_classnames(names)


def _scope(cfg: Config) -> str:
    return cfg.get('default_scope', None) or 'mmcoop'


def _register_modules() -> None:
    import mmcoop.datasets  # noqa: F401 (transforms, dataset METAINFO)
    import mmcoop.models  # noqa: F401


def init_model(config: ConfigType,
               checkpoint: Optional[str] = None,
               device: Union[str, torch.device] = 'cpu',
               cfg_options: Optional[dict] = None,
               strict: bool = True) -> nn.Module:
    """Build a model from a config and load a checkpoint.

    Args:
        config (str | Config | dict): config file, Config or plain dict
            (needs ``model`` and, for inference, a test pipeline). The
            config a ``feature_cache`` run dumps in its work dir gives the
            image model: the tower and preprocessor its
            ``CachedFeatureDataset`` holds replace ``PrecomputedFeatures``
            and ``FeatureDataPreprocessor``.
        checkpoint (str, optional): checkpoint file or http(s) URL
            (downloaded once into the torch hub cache), read with
            ``weights_only=True``. None keeps the initial weights.
        device (str | torch.device): where to put the model.
        cfg_options (dict, optional): overrides merged into the config
            (``{'model.head.thr': 0.3}``).
        strict (bool): apply mmcoop's load policy
            (:mod:`mmcoop.engine.checkpoint_fit`, the same as ``load_from``
            and ``tools/test.py``, with the config's ``checkpoint_check``):
            a checkpoint that leaves a trainable
            parameter unloaded, has tensors of other shapes or was trained
            for other classes than the head's raises
            ``CheckpointMismatchError`` naming the keys (and the converter
            command for an official checkpoint). ``strict=False`` (explicit
            request only) turns these into warnings and loads what fits.
            Keys the model does not have are always a warning.

    A config key that the constructor of its ``type`` does not take (a
    typo such as ``model.head.n_ctxx``) is named with its path before
    anything is built (:func:`load_config`).

    If the config sets ``randomness.seed`` (mmcoop's ``default_runtime.py``
    sets 0), the model is built right after ``torch.manual_seed(seed)``, as
    the training Runner does. Frozen towers with ``pretrained=None`` (tests,
    the offline demo), which head-only checkpoints do not carry, then get
    the same random weights as in training. The caller's RNG state is
    restored afterwards.

    Returns:
        nn.Module: the model in eval mode, with ``cfg`` (the config) and
        ``dataset_meta`` (``{'classes': [...]}``) attributes; ``_config`` and
        ``_dataset_meta`` are set too, so it can be handed to mmpretrain's
        inferencers.
    """
    device = check_device('device', device)  # before anything is built
    cfg = inference_config(config, cfg_options)
    # one CLIP for both towers, and its statistics (MMCoopRunner.from_cfg's
    # checks): a zero-shot model has no checkpoint that would show it
    check_clip_towers(cfg)
    check_normalization(cfg)
    # a missing file, or a folder given for it, is named before the build
    local = fetch_checkpoint(checkpoint) if checkpoint is not None else None
    _register_modules()
    from mmcoop.registry import MODELS
    model_cfg = copy.deepcopy(cfg.model)
    if 'data_preprocessor' not in model_cfg and cfg.get('data_preprocessor'):
        model_cfg['data_preprocessor'] = cfg.data_preprocessor
    seed = (cfg.get('randomness') or {}).get('seed')
    with torch.random.fork_rng(devices=[]), \
            DefaultScope.overwrite_default_scope(_scope(cfg)):
        if seed is not None:
            # as the Runner, which seeds before it builds the model
            torch.manual_seed(seed)
        model = MODELS.build(model_cfg)

    dataset_meta = {}
    if checkpoint is not None:
        ckpt = safe_torch_load(local, map_location='cpu', runtime_state=True)
        if not isinstance(ckpt, dict):
            raise RuntimeError(f'{checkpoint!r} is not a checkpoint dict.')
        # the checks the config switched off (`checkpoint_check`, read as
        # MMCoopRunner reads it) stay off here too; strict=False switches
        # them all off, and still refuses a checkpoint of which nothing fits
        checks = cfg.get('checkpoint_check', None) if strict else \
            dict.fromkeys(CHECKS, False)
        for problem in check_checkpoint_fits(model, ckpt, str(checkpoint),
                                             checks):
            warnings.warn(problem)
        if not strict:
            _warn_unloaded(model, ckpt, str(checkpoint))
        load_checkpoint_weights(
            model,
            ckpt,
            str(checkpoint),
            strict=False,
            logger=MMLogger.get_current_instance())
        meta = ckpt.get('meta') or {}
        dataset_meta = dict(meta.get('dataset_meta') or {})
        # per-class thresholds calibrated on a validation split (clean
        # protocol, ThresholdCalibrationHook): threshold='calibrated'
        calibrated = stored_thresholds(meta)
        if calibrated is not None:
            # float64: off the fp32 grid, so '>=' labels as the metric's '>'
            model.calibrated_thresholds = np.asarray(calibrated, np.float64)
    classes = _classes_of(model)
    if classes is not None:  # the head's names define the prompts
        dataset_meta['classes'] = classes
    model.cfg = cfg
    model._config = cfg
    model.dataset_meta = dataset_meta
    model._dataset_meta = dataset_meta
    model.to(device)
    model.eval()
    return model


def _warn_unloaded(model: nn.Module, ckpt: dict, filename: str) -> None:
    """``strict=False``: say what the policy would have refused."""
    try:
        check_checkpoint_fits(model, ckpt, filename)
    except CheckpointMismatchError as error:
        warnings.warn(f'{error} (strict=False: loading what fits; the rest '
                      'keeps its initial values.)')


def _classes_of(model: nn.Module) -> Optional[List[str]]:
    head = getattr(model, 'head', None)
    names = getattr(head, 'classnames', None)
    if names is not None:
        return list(names)
    meta = getattr(model, 'dataset_meta', None) or {}
    return list(meta['classes']) if meta.get('classes') else None


def _find_pipeline(cfg: Config) -> list:
    """``test_dataloader.dataset.pipeline`` (through dataset wrappers)."""
    dataset = cfg.get('test_dataloader', {}).get('dataset') \
        if cfg.get('test_dataloader') else None
    while isinstance(dataset, dict):
        if 'pipeline' in dataset:
            return list(dataset['pipeline'])
        dataset = dataset.get('dataset')
    if cfg.get('test_pipeline'):
        return list(cfg.test_pipeline)
    raise KeyError('The config has no test pipeline: set '
                   '`test_dataloader.dataset.pipeline` (or `test_pipeline`).')


def _is_loading(transform: dict, registry) -> bool:
    """Whether a transform config loads the image from a file
    (``LoadImageFromFile`` or a subclass such as mmcoop's
    ``LoadImageFromFileChecked``)."""
    from mmcv.transforms import LoadImageFromFile
    t = transform.get('type', '')
    cls = t if isinstance(t, type) else None
    if cls is None and isinstance(t, str):
        try:
            cls = registry.get(t)
        except Exception:  # noqa: BLE001 - unknown here: decide by name
            cls = None
    if isinstance(cls, type):
        return issubclass(cls, LoadImageFromFile)
    name = t.split('.')[-1] if isinstance(t, str) else ''
    return name.startswith(_LOAD_PREFIX)


def build_test_pipeline(cfg: Config, from_array: bool = False):
    """The config's test pipeline as a callable.

    Args:
        cfg (Config): the model config.
        from_array (bool): drop the image loading transform (inputs are
            already decoded ``dict(img=BGR array)``).
    """
    from mmcv.transforms import Compose

    from mmcoop.registry import TRANSFORMS
    _register_modules()
    pipeline = _find_pipeline(cfg)
    with DefaultScope.overwrite_default_scope(_scope(cfg)):
        if from_array:
            pipeline = [t for t in pipeline if not _is_loading(t, TRANSFORMS)]
        return Compose([TRANSFORMS.build(copy.deepcopy(t)) for t in pipeline])


def _as_rgb_array(image: Any, name: str = 'image') -> Optional[np.ndarray]:
    """RGB ``HWC`` ``uint8`` array of an array / PIL input, None for paths.

    ``name`` (e.g. ``'images[2]'``) is used in errors.
    """
    if isinstance(image, (str, os.PathLike)):
        return None
    from mmcoop.datasets.transforms.rgb import is_wide_mode
    from_pil = False
    try:
        from PIL import Image
        if isinstance(image, Image.Image):
            if is_wide_mode(image.mode):
                from_pil = True
                # 16-bit / 32-bit / float: convert('RGB') would saturate it
                # to white/black; checked as the same data as an array is
                # (the rule of every loader, mmcoop.datasets.transforms.rgb)
                name = f'{name} (a PIL image of mode {image.mode!r})'
                image = np.asarray(image)
            else:
                image = np.asarray(image.convert('RGB'))
    except ImportError:  # pragma: no cover
        pass
    if isinstance(image, torch.Tensor):
        raise TypeError('Pass images as paths or HWC RGB numpy arrays, not '
                        'tensors (the config pipeline does the resizing).')
    given, image = image, np.asarray(image)
    if image.ndim == 0 or image.dtype.kind not in 'biuf':
        # None, a number, bytes, a dict: not an array of pixel values (the
        # shape check below would say only "got shape ()")
        raise TypeError(
            f'{name} is {given!r:.80} ({type(given).__name__}), not an '
            'image: inference takes an image file path (str or '
            'os.PathLike), an HxWx3 RGB uint8 numpy array or a PIL image, '
            'or a list of them. Fix: pass one of those (None: check the '
            'call that should have given the image).')
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f'{name}: array images must be HxWx3 (RGB), HxWx4 '
                         f'(RGBA) or HxW (grey); got shape {image.shape}.')
    if not image.shape[0] or not image.shape[1]:
        raise ValueError(
            f'{name} is an empty image (shape {image.shape}, no pixels). Fix: '
            'pass an image with height and width >= 1 (check the crop or '
            'decode that made it).')
    return np.ascontiguousarray(_as_uint8(image, name, from_pil)[..., :3])


def _as_uint8(image: np.ndarray, name: str,
              from_pil: bool = False) -> np.ndarray:
    """``image`` as ``uint8``; arrays that are not 0..255 integers are
    refused (a float image in [0, 1] would silently become black).

    ``from_pil``: the array is a 16-bit / float PIL image; the fix does not
    suggest its file (the config's loader refuses it too)."""
    other = '' if from_pil else ' or the image file'
    if image.dtype == np.uint8:
        return image
    kind = image.dtype.kind
    if kind in 'iu' and image.size and 0 <= image.min() and \
            image.max() <= 255:
        return image.astype(np.uint8)
    if kind == 'f' and image.size and np.isfinite(image).all() and \
            0 <= image.min() and image.max() <= 1:
        raise ValueError(
            f'{name} is a {image.dtype} array with values in [0, 1]; '
            'inference expects uint8 RGB values 0..255. Fix: pass '
            f'(img * 255).round().astype(np.uint8){other and ","}{other}.')
    low, high = (image.min(), image.max()) if image.size else (0, 0)
    raise ValueError(
        f'{name} is a {image.dtype} array with values in [{low}, {high}]; '
        'inference expects uint8 RGB values 0..255. Fix: convert it to '
        f'uint8 (scaled to 0..255){other}.')


class MultiLabelInferencer:
    """Callable multi-label inferencer.

    Args:
        model (str | Config | dict | nn.Module): a config (built with
            :func:`init_model`) or a model returned by :func:`init_model`
            (or any mmpretrain classifier with a ``cfg`` / ``_config``).
        checkpoint (str, optional): checkpoint for a config ``model``.
        device (str): device for a config ``model``.
        cfg_options (dict, optional): config overrides.
        threshold (float | str | array): default score threshold for
            ``labels``: one value, ``(C,)`` per-class values, or
            ``'calibrated'`` for the per-class thresholds calibrated on the
            validation split and stored in the checkpoint
            (``meta['calibrated_thresholds']``). Values must be in [0, 1];
            None (default): :func:`default_threshold`, the config's
            ``model.head.thr`` (0.5 unless set). Checked here
            (``ValueError`` naming the value), not at the first call.

    Call with one image or a list; returns a list of result dicts (see the
    module docstring), in input order.
    """

    def __init__(self,
                 model: Union[ConfigType, nn.Module],
                 checkpoint: Optional[str] = None,
                 device: Union[str, torch.device] = 'cpu',
                 cfg_options: Optional[dict] = None,
                 threshold: Union[None, float, str,
                                  Sequence[float]] = None):
        if not isinstance(model, nn.Module):
            model = init_model(model, checkpoint, device, cfg_options)
        cfg = getattr(model, 'cfg', None) or getattr(model, '_config', None)
        if cfg is None:
            raise ValueError('The model carries no config; build it with '
                             'mmcoop.apis.init_model.')
        self.model = model
        self.cfg = cfg
        self.classes = _classes_of(model)
        self.threshold = self._thresholds(threshold)
        self._pipelines = {}

    def pipeline(self, from_array: bool):
        if from_array not in self._pipelines:
            self._pipelines[from_array] = build_test_pipeline(
                self.cfg, from_array)
        return self._pipelines[from_array]

    def preprocess(self, image: ImageType, name: str = 'image') -> dict:
        """One input -> packed ``dict(inputs, data_samples)``."""
        rgb = _as_rgb_array(image, name)
        if rgb is None:
            path = str(image)
            if osp.isdir(path):
                raise IsADirectoryError(
                    f'{name} {path!r} is a folder, not an image. Fix: pass '
                    'the image files, e.g. sorted(glob.glob(folder + '
                    '"/*.jpg")) (in a shell: folder/*.jpg).')
            if not osp.isfile(path):
                raise FileNotFoundError(f'Image {path!r} does not exist.')
            return self.pipeline(False)(dict(img_path=path))
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        return self.pipeline(True)(
            dict(img=bgr, img_shape=bgr.shape[:2], ori_shape=bgr.shape[:2]))

    @torch.no_grad()
    def __call__(self,
                 images: Union[ImageType, Sequence[ImageType]],
                 batch_size: int = 1,
                 threshold: Optional[float] = None) -> List[dict]:
        if isinstance(images, (list, tuple)):
            images = list(images)
            names = [f'images[{i}]' for i in range(len(images))]
        else:
            images, names = [images], ['image']
        batch_size = check_int('MultiLabelInferencer', 'batch_size',
                               batch_size)
        threshold = self.threshold if threshold is None else \
            self._thresholds(threshold)
        results = []
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            data = pseudo_collate([
                self.preprocess(img, name) for img, name in zip(
                    chunk, names[start:start + batch_size])
            ])
            samples = self.model.test_step(data)
            for img, sample in zip(chunk, samples):
                results.append(self.postprocess(sample, img, threshold))
        return results

    def _thresholds(self, threshold):
        """The one check of a ``threshold`` argument
        (:func:`resolve_threshold`)."""
        return resolve_threshold(self.model, threshold, self.classes)

    def postprocess(self, sample, image: ImageType,
                    threshold: float) -> dict:
        scores = sample.pred_score.detach().float().cpu().numpy()
        order = np.argsort(-scores, kind='stable')
        if np.ndim(threshold) and np.shape(threshold) != scores.shape:
            raise ValueError(
                f'threshold has {np.size(threshold)} values, but the model '
                f'gives {scores.size} scores. Fix: pass one number or one '
                'value per class.')
        above = scores >= np.broadcast_to(threshold, scores.shape)
        labels = [int(i) for i in order if above[i]]
        names = [self.classes[i] for i in labels] if self.classes else []
        return dict(
            scores=scores,
            labels=labels,
            classes=names,
            img_path=str(image) if isinstance(image, (str, os.PathLike)) else
            None)


def resolve_threshold(model: nn.Module, threshold,
                      classes: Optional[Sequence[str]] = None):
    """The label threshold(s) a ``threshold`` argument of inference means
    for ``model`` (from :func:`init_model`): None -> the config's
    (:func:`default_threshold`); ``'calibrated'`` -> the per-class
    thresholds of its checkpoint; a number or one per class, checked.

    Returns:
        float | np.ndarray: a number in [0, 1] or a ``(C,)`` float64
        array of them.

    Raises:
        ValueError: not a number, ``'calibrated'`` or a flat sequence of
            one number per class, a value outside [0, 1] (nan included),
            or ``'calibrated'`` for a checkpoint without them; the message
            names the value and the fix.
    """
    if threshold is None:
        return default_threshold(model)
    if isinstance(threshold, str):
        if threshold != 'calibrated':
            raise ValueError(f"threshold must be a number, per-class "
                             f"values or 'calibrated', got {threshold!r}.")
        calibrated = getattr(model, 'calibrated_thresholds', None)
        if calibrated is None:
            protocol = (getattr(model, 'cfg', None) or {}).get('protocol')
            clean = isinstance(protocol, dict) and \
                protocol.get('name') == 'clean'
            raise ValueError(
                "threshold='calibrated': the checkpoint has no "
                "meta['calibrated_thresholds']. " + (
                    'Its config trained with the clean protocol, which '
                    'stores them in the training checkpoints: this file '
                    'was made from one without them (a release of an '
                    'earlier publish_model.py dropped them). Fix: publish '
                    'the training checkpoint again with tools/'
                    'model_converters/publish_model.py, use it directly, '
                    'or pass a number.' if clean else
                    'Fix: train with the clean protocol '
                    '(configs/_base_/protocols/clean.py), which calibrates '
                    'them on the validation split, or pass a number.'))
        threshold = calibrated
    return check_threshold_values(
        threshold, classes if classes is not None else _classes_of(model))


def default_threshold(model: nn.Module) -> float:
    """The label threshold of the model's config: ``model.head.thr`` (0.5
    unless set; what ``tools/test.py`` labels with), so that inference and
    testing give one model the same labels. A head that labels its top k
    classes instead (``model.head.topk``) is named in a warning:
    inference labels by threshold, at 0.5."""
    head = getattr(model, 'head', None)
    thr = getattr(head, 'thr', None)
    if thr is not None:
        return float(thr)
    topk = getattr(head, 'topk', None)
    if topk is not None:
        warnings.warn(
            f'The config labels the top {topk} classes of each image '
            f'(model.head.topk); inference labels the classes whose score '
            f'is >= the threshold, {DEFAULT_THRESHOLD} here. Pass a '
            'threshold to choose another.')
    return DEFAULT_THRESHOLD


def check_threshold_values(threshold, classes: Optional[Sequence[str]] = None):
    """The one check of label threshold values (inference and export): a
    number in [0, 1] or one per class of ``classes`` (a flat list or
    ``(C,)`` array), nan refused; the message names the value, the class
    and the fix.

    Returns:
        float | np.ndarray: the number, or a ``(C,)`` float64 array (not
        rounded to fp32: a calibrated threshold would then equal a score).
    """
    num = len(classes) if classes else None
    what = (f'a number in [0, 1] or {num} per-class numbers in [0, 1] '
            if num else 'a number in [0, 1] or one per class ') + \
        "(a list or (C,) array), or 'calibrated'"
    if isinstance(threshold, (bool, np.bool_)):
        raise ValueError(f'threshold must be {what}; got {threshold!r}.')
    try:
        values = np.asarray(threshold, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f'threshold must be {what}; got {threshold!r}.') from None
    if np.asarray(threshold).dtype.kind not in 'iuf':  # str, bool, None
        raise ValueError(f'threshold must be {what}; got {threshold!r}.')
    if values.ndim > 1:
        raise ValueError(
            f'threshold must be {what}; got an array of shape '
            f'{values.shape}. Fix: pass a flat list (one value per '
            'class).')
    if values.ndim == 1 and num is not None and len(values) != num:
        raise ValueError(
            f'threshold has {len(values)} values, but the model has '
            f'{num} classes. Fix: pass one number, or one value per '
            f'class in the order of the model\'s classes '
            f'({", ".join(map(repr, classes[:5]))}'
            f'{", ..." if num > 5 else ""}).')
    bad = ~((values >= 0) & (values <= 1))  # nan is bad too
    if bad.any():
        if values.ndim == 0:
            raise ValueError(
                f'threshold must be {what}; got {threshold!r}. Scores '
                'are probabilities in [0, 1].')
        i = int(np.flatnonzero(bad)[0])
        label = f' ({classes[i]!r})' if classes else ''
        more = int(bad.sum()) - 1
        raise ValueError(
            'threshold values must be in [0, 1] (scores are '
            f'probabilities); got {float(values[i])!r} for class '
            f'{i}{label}{f" and {more} more" if more else ""}.')
    if values.ndim == 0:
        return float(values)
    return values


def inference_model(model: nn.Module,
                    images: Union[ImageType, Sequence[ImageType]],
                    batch_size: int = 1,
                    threshold: Union[None, float, str,
                                     Sequence[float]] = None
                    ) -> List[dict]:
    """Run a model from :func:`init_model` on images.

    Args:
        model (nn.Module): from :func:`init_model`.
        images: a path / RGB array / PIL image, or a list of them.
        batch_size (int): images per forward pass.
        threshold (float | str | array): score threshold for ``labels``:
            a number, ``(C,)`` per-class values or ``'calibrated'`` (see
            :class:`MultiLabelInferencer`), in [0, 1]. None (default): the
            config's ``model.head.thr`` (:func:`default_threshold`).

    Returns:
        list[dict]: one result per image, in input order (see module doc).
    """
    inferencer = MultiLabelInferencer(model, threshold=threshold)
    return inferencer(images, batch_size=batch_size)

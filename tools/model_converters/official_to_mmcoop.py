#!/usr/bin/env python
# Copyright (c) mmcoop contributors. All rights reserved.
"""Convert an official DualCoOp / PositiveCoOp checkpoint to mmcoop.

Official checkpoints (``utils/helper.py::save_checkpoint`` in both repos) are
``torch.save({'epoch', 'arch', 'state_dict', 'best_mAP', 'optimizer',
'scheduler'})`` of the whole model, frozen CLIP included. Only the learned
parameters are kept and renamed:

==============================  ===============================  ===========
official key                    mmcoop key                       method
==============================  ===============================  ===========
``prompt_learner.ctx_pos``      ``head.pos_prompt.ctx``          pos, dual
``prompt_learner.ctx_neg``      ``head.neg_prompt.ctx``          neg, dual
``txt_prompt_neg``              ``head.neg_embedding``           pos
``txt_prompt_pos``              ``head.pos_embedding``           neg
``txt_prompt_learn``            ``head.pos_residual``            pos
``txt_prompt_learn``            ``head.neg_residual``            neg
``linear_layer.{weight,bias}``  ``head.fc.{weight,bias}``        baseline
==============================  ===============================  ===========

Dropped: the frozen CLIP (``image_encoder.*``, ``text_encoder.*``,
``clip_model.*``), the prompt-learner buffers (``token_prefix*``,
``token_suffix*``, ``tokenized_prompts``; mmcoop rebuilds them from the class
names) and, for the Baseline, the prompt contexts it builds but never trains.
A ``module.`` prefix (DataParallel) is removed.

Loading is safe by default (``weights_only=True``). Real official checkpoints
also pickle a ``numpy.float64`` (``best_mAP``) and the Dassl scheduler state
(a ``CosineAnnealingLR`` holding an ``SGD`` object), which ``weights_only``
refuses. Those globals are then mapped to inert placeholders, still under
``weights_only=True`` (no code from the file runs); the ``state_dict`` must
consist of tensors only. ``--trust-source`` switches to an unrestricted
``torch.load`` and should only be used for files you made yourself.

Usage::

    python tools/model_converters/official_to_mmcoop.py \\
        checkpoint.pth.tar positivecoop_coco_mmcoop.pth --method positivecoop

The result ``{'state_dict', 'meta'}`` loads with ``weights_only=True``, with
``load_from=...`` / ``tools/test.py`` (``MMCoopRunner``) and mmengine's
``load_checkpoint`` into an ``ImageClassifier`` whose head matches the method,
class count, ``n_ctx`` and CSC setting (recorded in ``meta``). The class names
and their order must match the official run: ``meta['classnames']`` holds the
names decoded from the checkpoint's prompt tokens when it has them.
"""
import argparse
import os.path as osp
import pickle
import re
import sys
import warnings
from collections import OrderedDict
from typing import List, Optional, Tuple

import torch

METHODS = ('positivecoop', 'negativecoop', 'dualcoop', 'baseline')

#: learned official parameter -> mmcoop key, per method.
KEY_MAP = {
    'positivecoop': {
        'prompt_learner.ctx_pos': 'head.pos_prompt.ctx',
        'txt_prompt_neg': 'head.neg_embedding',
        'txt_prompt_learn': 'head.pos_residual',
    },
    'negativecoop': {
        'prompt_learner.ctx_neg': 'head.neg_prompt.ctx',
        'txt_prompt_pos': 'head.pos_embedding',
        'txt_prompt_learn': 'head.neg_residual',
    },
    'dualcoop': {
        'prompt_learner.ctx_neg': 'head.neg_prompt.ctx',
        'prompt_learner.ctx_pos': 'head.pos_prompt.ctx',
    },
    'baseline': {
        'linear_layer.weight': 'head.fc.weight',
        'linear_layer.bias': 'head.fc.bias',
    },
}

#: frozen CLIP towers (the model holds them under three names).
FROZEN_PREFIXES = ('image_encoder.', 'text_encoder.', 'clip_model.')
#: prompt-learner buffers derived from the class names and the CLIP weights.
BUFFER_RE = re.compile(r'^prompt_learner\.(token_prefix|token_suffix)'
                       r'(_pos|_neg)?$|^prompt_learner\.tokenized_prompts$')
#: parameters built but never optimised (official ``prompt_params()``).
UNTRAINED = {'baseline': ('prompt_learner.ctx_pos', 'prompt_learner.ctx_neg')}


class ConversionError(RuntimeError):
    """The source checkpoint cannot be converted as asked."""


class _Inert:
    """Stand-in for a global that ``weights_only`` refuses.

    It accepts any constructor arguments and state and does nothing with
    them, so no code named by the checkpoint is run.
    """

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        self.state = state

    def __repr__(self):
        return '<unreadable object (not loaded)>'


def _plain_dict(*args, **kwargs) -> dict:
    """Stand-in for ``collections.defaultdict`` (optimizer state): the
    unpickler then fills a plain dict."""
    return {}


def _placeholder(name: str):
    return _plain_dict if name in ('collections.defaultdict',
                                   'builtins.dict') else _Inert


def load_official(path: str,
                  trust_source: bool = False) -> Tuple[dict, List[str]]:
    """Load an official checkpoint.

    Returns:
        tuple: the loaded object and the list of pickled globals that were
        replaced by inert placeholders (empty if none).
    """
    if not osp.isfile(path):
        raise ConversionError(f'Source checkpoint {path!r} does not exist.')
    if osp.getsize(path) == 0:
        raise ConversionError(f'Source checkpoint {path!r} is empty.')
    if trust_source:
        warnings.warn(
            f'--trust-source: loading {path!r} with weights_only=False. '
            'Unpickling can run arbitrary code; only do this for files you '
            'created yourself.')
        return torch.load(path, map_location='cpu', weights_only=False), []
    try:
        return torch.load(path, map_location='cpu', weights_only=True), []
    except pickle.UnpicklingError as e:
        first_error = _reason(e)
    except Exception as e:  # noqa: BLE001 - e.g. KeyError of a text file
        raise ConversionError(
            f'Could not read {path!r} ({type(e).__name__}: {e}); the file is '
            'probably truncated or not a PyTorch checkpoint. Fix: pass the '
            "official checkpoint (the 'checkpoint.pth.tar' its training "
            'saved).') from e
    unsafe = _unsafe_globals(path)
    if not unsafe and 'GLOBAL' not in first_error:
        raise ConversionError(
            f'Could not read {path!r} ({first_error}); it is not a PyTorch '
            'checkpoint or it is corrupted.')
    if unsafe:
        try:
            with torch.serialization.safe_globals([(_placeholder(name), name)
                                                   for name in unsafe]):
                obj = torch.load(path, map_location='cpu', weights_only=True)
            return obj, unsafe
        except pickle.UnpicklingError as e:
            first_error = _reason(e)
    what = (f'even with placeholders for the objects {unsafe} it'
            if unsafe else 'it')
    raise ConversionError(
        f'Refusing to load {path!r}: {what} needs Python code to unpickle '
        f'({first_error}). Loading it fully can execute arbitrary code from '
        'the file. If (and only if) you trust where it comes from, re-run '
        'with --trust-source.')


def _reason(error: Exception) -> str:
    """The informative line of torch's weights_only error (its first line is
    a generic preamble)."""
    generic = ('Weights only load failed', 'Check the documentation',
               'Please file an issue', 'WeightsUnpickler error:')
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    for line in lines:
        if line.startswith('WeightsUnpickler error:') and line[23:].strip():
            return line[23:].strip()
        if not line.startswith(generic):
            return line
    return lines[0] if lines else type(error).__name__


def _unsafe_globals(path: str) -> List[str]:
    getter = getattr(torch.serialization, 'get_unsafe_globals_in_checkpoint',
                     None)
    if getter is None:  # torch < 2.5
        return []
    try:
        return list(getter(path))
    except Exception:  # noqa: BLE001 - not a zip checkpoint, etc.
        return []


def extract_state_dict(ckpt) -> 'OrderedDict[str, torch.Tensor]':
    """The model state dict of a checkpoint, ``module.`` prefixes removed."""
    if isinstance(ckpt, dict) and 'state_dict' in ckpt:
        state_dict = ckpt['state_dict']
    elif isinstance(ckpt, dict) and 'model' in ckpt:
        state_dict = ckpt['model']
    else:
        state_dict = ckpt
    if not isinstance(state_dict, dict) or not state_dict:
        raise ConversionError(
            'The source holds no model state dict (expected a dict with a '
            f"'state_dict' entry, found {type(state_dict).__name__}).")
    bad = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ConversionError(
            f'The state dict has non-tensor entries {bad[:5]}; this is not an '
            'official DualCoOp / PositiveCoOp model state dict.')
    out = OrderedDict()
    for key, value in state_dict.items():
        key = key[len('module.'):] if key.startswith('module.') else key
        out[key] = value
    return out


def detect_method(keys) -> Optional[str]:
    """Guess the official method from its learned-parameter names."""
    keys = set(keys)
    if 'linear_layer.weight' in keys:
        return 'baseline'
    has_pos = 'prompt_learner.ctx_pos' in keys
    has_neg = 'prompt_learner.ctx_neg' in keys
    if 'txt_prompt_neg' in keys and has_pos and not has_neg:
        return 'positivecoop'
    if 'txt_prompt_pos' in keys and has_neg and not has_pos:
        return 'negativecoop'
    if has_pos and has_neg:
        return 'dualcoop'
    return None


def _is_dropped(key: str, method: str) -> bool:
    return (key.startswith(FROZEN_PREFIXES) or bool(BUFFER_RE.match(key))
            or key in UNTRAINED.get(method, ()))


def _shape_error(msg: str) -> ConversionError:
    return ConversionError(msg + ' The checkpoint does not fit an mmcoop head '
                           'with these settings.')


def _infer_layout(state_dict, method: str) -> dict:
    """Class count, context length / CSC, widths; checks consistency."""
    counts = {}  # tensor name -> class count it implies
    info = {}
    for name in ('txt_prompt_neg', 'txt_prompt_pos', 'txt_prompt_learn'):
        if name in state_dict and name in KEY_MAP[method]:
            t = state_dict[name]
            if t.dim() != 2:
                raise _shape_error(f'{name} has shape {tuple(t.shape)}, '
                                   'expected (num_classes, embed_dim).')
            counts[name] = t.shape[0]
            info['embed_dim'] = t.shape[1]
    ctx_shapes = {}
    for name in ('prompt_learner.ctx_pos', 'prompt_learner.ctx_neg'):
        if name in state_dict and name in KEY_MAP[method]:
            t = state_dict[name]
            if t.dim() == 3:
                counts[name] = t.shape[0]
            elif t.dim() != 2:
                raise _shape_error(
                    f'{name} has shape {tuple(t.shape)}, expected '
                    '(num_classes, n_ctx, width) or (n_ctx, width).')
            ctx_shapes[name] = tuple(t.shape)
    if ctx_shapes:
        shapes = set(ctx_shapes.values())
        if len(shapes) > 1:
            raise _shape_error(
                f'The positive and negative contexts differ in shape '
                f'{ctx_shapes}; mmcoop uses one n_ctx and one CSC setting for '
                'both prompts.')
        shape = shapes.pop()
        info['class_specific'] = len(shape) == 3
        info['n_ctx'] = shape[-2]
        info['ctx_width'] = shape[-1]
    if method == 'baseline':
        w, b = state_dict['linear_layer.weight'], state_dict[
            'linear_layer.bias']
        if w.dim() != 2 or w.shape[0] % 2 or tuple(b.shape) != (w.shape[0], ):
            raise _shape_error(
                f'linear_layer.weight {tuple(w.shape)} / bias '
                f'{tuple(b.shape)}: expected (2*num_classes, D) / '
                '(2*num_classes,).')
        counts['linear_layer.weight'] = w.shape[0] // 2
        info['in_channels'] = w.shape[1]
    # Buffers (dropped) still tell the class count, e.g. for shared contexts.
    for name, t in state_dict.items():
        if BUFFER_RE.match(name) and t.dim() >= 2 and 'prefix' in name:
            counts.setdefault(name, t.shape[0])
    if len(set(counts.values())) > 1:
        raise _shape_error(f'Inconsistent class counts {counts}.')
    info['num_classes'] = next(iter(counts.values())) if counts else None
    if method == 'positivecoop' or method == 'negativecoop':
        a, b = ('txt_prompt_neg' if method == 'positivecoop' else
                'txt_prompt_pos'), 'txt_prompt_learn'
        if state_dict[a].shape != state_dict[b].shape:
            raise _shape_error(
                f'{a} {tuple(state_dict[a].shape)} and {b} '
                f'{tuple(state_dict[b].shape)} must have the same shape.')
    return info


def decode_prompts(state_dict) -> Optional[List[str]]:
    """The prompt texts stored as ``prompt_learner.tokenized_prompts``."""
    tokens = state_dict.get('prompt_learner.tokenized_prompts')
    if tokens is None or tokens.dim() != 2:
        return None
    try:
        from open_clip.tokenizer import SimpleTokenizer
        tok = SimpleTokenizer()
        sot = tok.encoder['<start_of_text>']
        eot = tok.encoder['<end_of_text>']
    except Exception:  # noqa: BLE001 - decoding is informative only
        return None
    texts = []
    for n, row in enumerate(tokens.tolist()):
        ids = [i for i in row if i not in (0, sot)]
        ids = ids[:ids.index(eot)] if eot in ids else ids
        unknown = [i for i in ids if i not in tok.decoder]
        try:
            if unknown:
                raise KeyError(unknown[0])
            texts.append(tok.decode(ids).strip())
        except Exception:  # noqa: BLE001 - decoding is informative only
            shown = unknown[:5] if unknown else ids[:5]
            warnings.warn(
                'prompt_learner.tokenized_prompts: row '
                f'{n} has token ids CLIP\'s vocabulary cannot decode '
                f'({shown}{", ..." if len(unknown) > 5 else ""}); the class '
                'names are not recorded in meta (the weights are converted '
                'as usual). Check the class names and their order against '
                'the official run.')
            return None
    return texts


def classnames_from_prompts(prompts: List[str], n_ctx: Optional[int],
                            num_classes: Optional[int]) -> Optional[List[str]]:
    """Class names from ``"x x ... x {name} ."`` prompts (lowercase)."""
    if not prompts or not n_ctx or not num_classes:
        return None
    # [neg; pos] prompts for models with two prompt learners.
    prompts = prompts[-num_classes:]
    prefix = 'x ' * n_ctx
    names = []
    for text in prompts:
        if not text.startswith(prefix) or not text.endswith('.'):
            return None  # initialised from words: names are not separable
        names.append(text[len(prefix):-1].strip())
    return names


def convert_state_dict(
    state_dict,
    method: str,
    num_classes: Optional[int] = None
) -> Tuple['OrderedDict[str, torch.Tensor]', dict]:
    """Map an official model state dict to mmcoop keys.

    Args:
        state_dict (dict): official ``model.state_dict()`` (``module.``
            prefixes already removed).
        method (str): one of :data:`METHODS`.
        num_classes (int, optional): expected class count, checked against
            every class-sized tensor.

    Returns:
        tuple: the mmcoop state dict and a dict of facts for ``meta``.
    """
    if method not in METHODS:
        raise ConversionError(f'--method must be one of {METHODS}, got '
                              f'{method!r}.')
    mapping = KEY_MAP[method]
    learned = [k for k in state_dict if not _is_dropped(k, method)]
    unknown = [k for k in learned if k not in mapping]
    missing = [k for k in mapping if k not in state_dict]
    if unknown or missing:
        msg = (f'The checkpoint does not match --method {method}: ')
        if unknown:
            msg += f'unexpected learned keys {unknown}'
        if missing:
            msg += ('; ' if unknown else '') + f'missing keys {missing}'
        guess = detect_method(state_dict.keys())
        if guess and guess != method:
            msg += f'. Its keys look like --method {guess}'
            if guess == 'baseline' and method == 'dualcoop':
                msg += (' (the PositiveCoOp repo\'s `--method_name dualcoop` '
                        'runs a renamed copy of the Baseline, models/'
                        'dualcoop.py there; the real DualCoOp is '
                        'sunxm2357/DualCoOp)')
        raise ConversionError(msg + '.')
    info = _infer_layout(state_dict, method)
    if num_classes is not None and info['num_classes'] is not None \
            and info['num_classes'] != num_classes:
        shapes = {k: tuple(state_dict[k].shape) for k in mapping}
        raise ConversionError(
            f'--num-classes {num_classes} does not match the checkpoint, '
            f'which has {info["num_classes"]} classes (shapes {shapes}).')
    if info['num_classes'] is None:
        info['num_classes'] = num_classes
    if info['num_classes'] == 0:
        shapes = {k: tuple(state_dict[k].shape) for k in mapping}
        raise ConversionError(
            f'The checkpoint has 0 classes (shapes {shapes}): a model that '
            'predicts nothing. Fix: pass the checkpoint of a trained run '
            '(80 classes for COCO, 20 for VOC).')
    out = OrderedDict(
        (mapping[k], state_dict[k].detach().clone().float()) for k in mapping)
    prompts = decode_prompts(state_dict)
    if prompts is not None:
        # the Baseline's (untrained, dropped) contexts still tell n_ctx
        n_ctx = info.get('n_ctx') or next(
            (state_dict[k].shape[-2]
             for k in ('prompt_learner.ctx_pos', 'prompt_learner.ctx_neg')
             if k in state_dict and state_dict[k].dim() >= 2), None)
        names = classnames_from_prompts(prompts, n_ctx, info['num_classes'])
        if names is not None:
            info['classnames'] = names
        else:
            info['prompts'] = prompts
    return out, info


def convert_checkpoint(src: str,
                       dst: str,
                       method: str,
                       num_classes: Optional[int] = None,
                       trust_source: bool = False) -> dict:
    """Convert ``src`` (official) to ``dst`` (mmcoop). Returns ``meta``."""
    from mmcoop.utils.checkpoint import atomic_torch_save
    from mmcoop.version import __version__

    ckpt, stubbed = load_official(src, trust_source)
    state_dict = extract_state_dict(ckpt)
    new_state_dict, info = convert_state_dict(state_dict, method, num_classes)
    meta = dict(
        converted_from=f'official {method}',
        mmcoop_version=__version__,
        num_classes=info.pop('num_classes'),
        source=osp.basename(src),
    )
    if isinstance(ckpt, dict):
        for key in ('epoch', 'arch'):
            if isinstance(ckpt.get(key), (int, str)):
                meta[f'source_{key}'] = ckpt[key]
    meta.update(info)
    if stubbed:
        meta['unread_source_objects'] = stubbed
    atomic_torch_save({'state_dict': new_state_dict, 'meta': meta}, dst)
    return meta


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert an official DualCoOp / PositiveCoOp / '
        'NegativeCoOp / Baseline checkpoint to an mmcoop checkpoint.')
    parser.add_argument('src', help='official checkpoint (checkpoint.pth.tar)')
    parser.add_argument('dst', help='output mmcoop checkpoint (.pth)')
    parser.add_argument(
        '--method',
        required=True,
        choices=METHODS,
        help='the official --method_name the checkpoint was trained with '
        "(DualCoOp: sunxm2357/DualCoOp's model)")
    from mmcoop.engine.cli import positive_int
    parser.add_argument(
        '--num-classes',
        type=positive_int,
        default=None,
        help='expected number of classes (80 COCO, 20 VOC); checked against '
        'the tensor shapes')
    parser.add_argument(
        '--trust-source',
        action='store_true',
        help='load with weights_only=False. Unpickling can execute arbitrary '
        'code: only for files you created yourself')
    parser.add_argument(
        '--force', action='store_true', help='overwrite an existing dst')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    from mmcoop.utils.paths import OutputPathError, claim_outputs
    args = parse_args(argv)
    try:
        claim_outputs([args.dst], inputs=[args.src], force=args.force)
        meta = convert_checkpoint(args.src, args.dst, args.method,
                                  args.num_classes, args.trust_source)
    except (ConversionError, OutputPathError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    if meta.get('unread_source_objects'):
        print('note: objects outside the model state dict were not loaded '
              f'(placeholders used): {meta["unread_source_objects"]}')
    shown = {k: v for k, v in meta.items() if k != 'classnames'}
    print(f'wrote {args.dst}: {shown}')
    if 'classnames' in meta:
        print(f'class order in the checkpoint: {meta["classnames"]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())

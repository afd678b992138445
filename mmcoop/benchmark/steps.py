# Copyright (c) mmcoop contributors. All rights reserved.
"""Train/eval steps, the text encoder and the image-tower options: the
measurements of ``benchmark.py --mode steps text amp``.

The step codes of :func:`measure_steps`:

======  ===========================================================
T0      image encoder + text transformer over all 77 tokens
        ("straightforward", the official recipe minus its waste)
T1      image encoder + exact text truncation (``truncate=True``)
T2      feature cache (no image encoder) + truncation
E0      eval: image encoder, 77-token text re-encoded every batch
E1      eval: image encoder, truncated text re-encoded every batch
E2      eval: image encoder, text features computed once (eval cache)
E3      eval: feature cache + eval text cache
E4      eval: feature cache, truncated text re-encoded every batch
======  ===========================================================

Each function takes the command's options (``opts``: an
``argparse.Namespace`` of ``tools/analysis/benchmark.py``) and returns a
JSON-serialisable dict. Random weights unless ``opts.pretrained`` is given
(times do not depend on the weight values).
"""
from typing import List

import torch

from mmcoop.datasets.categories import COCO2014_CATEGORIES, VOC2007_CATEGORIES
from .memory import PeakMemory
from .timing import run_configs

__all__ = [
    'METHODS', 'HEADS', 'measure_steps', 'measure_text', 'measure_amp',
    'head_cfg', 'backbone_cfg', 'model_pair', 'cached_model',
    'clip_preprocessor', 'device_of'
]

METHODS = ('positivecoop', 'negativecoop', 'dualcoop', 'baseline')
HEADS = dict(
    positivecoop='PositiveCoOpHead',
    negativecoop='NegativeCoOpHead',
    dualcoop='DualCoOpHead',
    baseline='BaselineHead')


def classnames(num_classes: int) -> List[str]:
    """COCO's names for 80 classes, VOC's for 20, else ``class i``."""
    if num_classes == 80:
        return list(COCO2014_CATEGORIES)
    if num_classes == 20:
        return list(VOC2007_CATEGORIES)
    return [f'class {i}' for i in range(num_classes)]


def device_of(opts) -> torch.device:
    if opts.device == 'cuda' and not torch.cuda.is_available():
        raise RuntimeError('--device cuda: no CUDA device is available.')
    return torch.device(opts.device)


def autocast_kwargs(opts) -> dict:
    """The towers' autocast and compile arguments of ``--autocast`` and
    ``--compile``: on the CPU, bf16 needs ``autocast_cpu=True`` (else the
    towers would run fp32)."""
    out = dict(autocast_dtype=opts.autocast)
    if opts.autocast and getattr(opts, 'device', 'cpu') == 'cpu':
        out['autocast_cpu'] = True
    if getattr(opts, 'compile', None):
        out['compile'] = compile_options(opts)
    return out


def compile_options(opts) -> dict:
    """The towers' ``compile`` of ``--compile``: ``default`` -> the
    ``torch.compile`` defaults; a backend name (``cudagraphs``: CUDA graphs
    without inductor, so without Triton) -> that backend; else a mode
    (``reduce-overhead``, ``max-autotune``, ...)."""
    if opts.compile == 'default':
        return {}
    if opts.compile in torch.compiler.list_backends(exclude_tags=()):
        return dict(backend=opts.compile)
    return dict(mode=opts.compile)


def head_cfg(method, num_classes, opts, embed_dim):
    if method == 'baseline':
        return dict(
            type='BaselineHead',
            classnames=classnames(num_classes),
            in_channels=embed_dim)
    return dict(
        type=HEADS[method],
        classnames=classnames(num_classes),
        text_encoder=dict(
            type='FrozenCLIPTextEncoder',
            model_name=opts.model_name,
            pretrained=opts.pretrained,
            truncate=True,
            **autocast_kwargs(opts)))


def backbone_cfg(opts, resolution=None):
    return dict(
        type='FrozenCLIP',
        model_name=opts.model_name,
        pretrained=opts.pretrained,
        input_resolution=resolution or opts.resolution,
        channels_last=opts.channels_last,
        **autocast_kwargs(opts))


def _image_batch(batch_size, resolution, num_classes, seed=0):
    from mmpretrain.structures import DataSample
    g = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for _ in range(batch_size):
        inputs.append(
            torch.randint(
                0,
                256, (3, resolution, resolution),
                generator=g,
                dtype=torch.uint8))
        score = torch.randint(-1, 2, (num_classes, ), generator=g).float()
        samples.append(DataSample().set_gt_score(score))
    return dict(inputs=inputs, data_samples=samples)


def clip_preprocessor() -> dict:
    """The image data preprocessor of CLIP (mean/std on 0-255, BGR->RGB)."""
    return dict(type='mmcoop.CLIPDataPreprocessor')


def model_pair(backbone, head, device, preprocessor=None):
    """``ImageClassifier``s sharing ``head``: one on images (``backbone``,
    ``preprocessor``: default :func:`clip_preprocessor`), one on cached
    features (``PrecomputedFeatures``)."""
    from mmpretrain.models import ImageClassifier
    img_model = ImageClassifier(
        backbone=backbone, head=head,
        data_preprocessor=preprocessor or clip_preprocessor()).to(device)
    return img_model, cached_model(head, device)


def cached_model(head, device):
    """An ``ImageClassifier`` of ``head`` on cached features
    (``PrecomputedFeatures``, ``FeatureDataPreprocessor``)."""
    from mmpretrain.models import ImageClassifier

    from mmcoop.registry import MODELS
    return ImageClassifier(
        backbone=MODELS.build(dict(type='PrecomputedFeatures')),
        head=head,
        data_preprocessor=MODELS.build(
            dict(type='FeatureDataPreprocessor'))).to(device)


def _feature_batch(batch, feats):
    """The batch as a feature-cache loader gives it: fp16 (D, N) on CPU."""
    return dict(
        inputs=list(feats.to('cpu', torch.float16).unbind(0)),
        data_samples=batch['data_samples'])


def measure_steps(method: str, num_classes: int, opts) -> dict:
    """T0-T2, E0-E4 and ``extract`` of one method (see the module
    docstring)."""
    from mmengine.optim import OptimWrapper

    import mmcoop.models  # noqa: F401
    from mmcoop.registry import MODELS
    device = device_of(opts)
    torch.manual_seed(0)
    backbone = MODELS.build(backbone_cfg(opts))
    head = MODELS.build(
        head_cfg(method, num_classes, opts, backbone.embed_dim))
    img_model, cache_model = model_pair(backbone, head, device)
    params = [p for p in head.parameters() if p.requires_grad]
    optim = OptimWrapper(torch.optim.SGD(params, lr=1e-3, momentum=0.9))
    memory = PeakMemory(device)
    train_batch = _image_batch(opts.batch_size, opts.resolution, num_classes)
    eval_batch = _image_batch(
        opts.eval_batch_size, opts.resolution, num_classes, seed=1)
    with torch.no_grad():
        feats = [
            img_model.extract_feat(
                img_model.data_preprocessor(b, False)['inputs'])[0]
            for b in (train_batch, eval_batch)
        ]
    train_cached = _feature_batch(train_batch, feats[0])
    eval_cached = _feature_batch(eval_batch, feats[1])
    del feats
    prompt = method != 'baseline'
    text = head.text_encoder if prompt else None
    with torch.no_grad():
        extract_inputs = img_model.data_preprocessor(eval_batch,
                                                     False)['inputs']

    def setup(train_mode, truncate=True, text_cache=True):

        def run():
            img_model.train(train_mode)
            cache_model.train(train_mode)
            if text is not None:
                text.truncate = truncate
            if prompt and not text_cache:
                head._cache = head._cache_key = None
            elif prompt and not train_mode:
                # an eval after training steps: the first batch computes
                # the text features once per evaluation; later batches
                # (the timed one) reuse them
                with torch.no_grad():
                    head.cached_class_features()

        return run

    def train(model, batch):
        return lambda: model.train_step(batch, optim)

    def evaluate(model, batch):

        def run():
            with torch.no_grad():  # as mmengine's ValLoop
                return model.val_step(batch)

        return run

    def extract():
        with torch.no_grad():
            img_model.extract_feat(extract_inputs)

    configs = dict(
        T0=(setup(True, truncate=False), train(img_model, train_batch)),
        T1=(setup(True), train(img_model, train_batch)),
        T2=(setup(True), train(cache_model, train_cached)),
        E0=(setup(False, truncate=False,
                  text_cache=False), evaluate(img_model, eval_batch)),
        E1=(setup(False, text_cache=False), evaluate(img_model, eval_batch)),
        E2=(setup(False), evaluate(img_model, eval_batch)),
        E3=(setup(False), evaluate(cache_model, eval_cached)),
        E4=(setup(False, text_cache=False), evaluate(cache_model,
                                                     eval_cached)),
        extract=(setup(False), extract))
    if not prompt:  # no text encoder: T0 = T1, E0 = E1 = E2, E4 = E3
        for name in ('T0', 'E0', 'E1', 'E4'):
            del configs[name]
    results = run_configs(configs, device, opts.warmup, opts.iters, memory)
    if not prompt:
        results['T0'] = results['T1']
        results['E0'] = results['E1'] = results['E2']
        results['E4'] = results['E3']
    return dict(
        method=method,
        num_classes=num_classes,
        embed_dim=backbone.embed_dim,
        positions=backbone.num_positions,
        results=results)


def measure_text(method: str, num_classes: int, opts) -> dict:
    """Text fwd+bwd over the method's prompts: 77 tokens vs truncation
    (and, with ``--compile``, truncation with the text tower compiled)."""

    import mmcoop.models  # noqa: F401
    from mmcoop.registry import MODELS
    device = device_of(opts)
    torch.manual_seed(0)
    head = MODELS.build(head_cfg(method, num_classes, opts, 512)).to(device)
    text = head.text_encoder
    memory = PeakMemory(device)
    prompts = [
        m for m in (getattr(head, 'neg_prompt', None),
                    getattr(head, 'pos_prompt', None)) if m is not None
    ]

    def step():
        feats = head.encode_prompts(*prompts)
        feats.square().sum().backward()

    compiled = text.compile_options  # --compile: a third configuration
    text.compile_options = None

    def setup(flag, options=None):

        def run():
            text.truncate = flag
            text.compile_options = options

        return run

    configs = dict(full=(setup(False), step), truncated=(setup(True), step))
    if compiled is not None:
        configs['compiled'] = (setup(True, compiled), step)
    out = run_configs(configs, device, opts.warmup, opts.iters, memory)
    # exactness: the same weights and prompts, every way
    grads, feats = {}, {}
    for name, (set_up, _) in configs.items():
        set_up()
        for p in prompts:
            p.ctx.grad = None
        f = head.encode_prompts(*prompts)
        f.square().sum().backward()
        feats[name] = f.detach().double()
        grads[name] = torch.cat([p.ctx.grad.flatten()
                                 for p in prompts]).double()

    def rel(a, b):
        return float((a - b).norm() / b.norm())

    extra = {}
    if compiled is not None:
        extra = dict(
            compile=compiled,
            speedup_compiled=out['truncated']['time_s'] /
            out['compiled']['time_s'],
            rel_diff_output_compiled=rel(feats['compiled'],
                                         feats['truncated']),
            rel_diff_input_grad_compiled=rel(grads['compiled'],
                                             grads['truncated']))
    tokens = torch.cat([p.tokens for p in prompts])
    return dict(
        method=method,
        num_classes=num_classes,
        prompts=int(tokens.shape[0]),
        length_full=int(tokens.shape[1]),
        length_truncated=int(text.end_positions(tokens).max()) + 1,
        results=out,
        speedup=out['full']['time_s'] / out['truncated']['time_s'],
        rel_diff_output=rel(feats['truncated'], feats['full']),
        rel_diff_input_grad=rel(grads['truncated'], grads['full']),
        **extra)


# --------------------------------------------------------------------------

def measure_amp(opts) -> dict:
    """Image-encoder forward with the mixed-precision / memory options."""

    import mmcoop.models  # noqa: F401
    from mmcoop.registry import MODELS
    device = device_of(opts)
    memory = PeakMemory(device)
    x = torch.randn(
        opts.amp_batch_size,
        3,
        opts.resolution,
        opts.resolution,
        device=device)
    # CUDA: both autocast dtypes; CPU: fp32 and bf16 with autocast_cpu
    # (the other settings would be fp32 there).
    cpu = device.type == 'cpu'
    models = {}
    for autocast in ((None, 'bf16') if cpu else (None, 'fp16', 'bf16')):
        for cl in (False, True):
            torch.manual_seed(0)
            # each configuration's own autocast (not --autocast's, whose
            # autocast_cpu would refuse the fp32 one)
            cfg = dict(
                backbone_cfg(opts), autocast_dtype=autocast, channels_last=cl)
            cfg.pop('autocast_cpu', None)
            name = f'autocast={autocast},channels_last={cl}'
            if cpu and autocast:
                cfg['autocast_cpu'] = True
                name += ',autocast_cpu=True'
            models[name] = MODELS.build(cfg).to(device)
    with torch.no_grad():
        # interleaved: the ratios are robust to drifts of machine load
        out = run_configs(
            {k: (lambda: None, lambda m=m: m(x))
             for k, m in models.items()}, device, opts.warmup, opts.iters,
            memory)
        ref = None
        for k, model in models.items():
            y = model(x)[0]
            ref = y if ref is None else ref
            out[k]['max_rel_diff_vs_fp32'] = float(
                (y - ref).abs().max() / ref.abs().max())
    return out


# --------------------------------------------------------------------------

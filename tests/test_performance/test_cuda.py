# Copyright (c) mmcoop contributors. All rights reserved.
"""CUDA paths: towers, autocast, truncation, feature cache and a train step
on the GPU against the CPU. Skipped (with this reason) without a CUDA
device; ``tools/analysis/gpu/check.sh`` runs them on a GPU machine."""
import os
import os.path as osp

import numpy as np
import pytest
import torch
from _perf_helpers import (CLASSES, TINY, build_backbone,
                           clip_preprocessor_cfg, head_cfg, make_dataset)
from mmengine.dataset import pseudo_collate
from mmengine.optim import OptimWrapper
from mmpretrain.models import ImageClassifier

from mmcoop.datasets.feature_cache import CachedFeatureDataset
from mmcoop.models import FrozenCLIPTextEncoder
from mmcoop.registry import MODELS

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason='needs a CUDA device (tools/analysis/gpu/check.sh)')


@pytest.fixture(autouse=True)
def _exact_fp32():
    """fp32 comparisons: no TF32 in cuBLAS / cuDNN."""
    old = (torch.backends.cuda.matmul.allow_tf32,
           torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    (torch.backends.cuda.matmul.allow_tf32,
     torch.backends.cudnn.allow_tf32) = old


def _rel(a, b):
    """Relative difference (norm-wise); 0 for two zero tensors."""
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    return float((a - b).norm() / b.norm().clamp(min=1e-12))


def test_image_tower_cuda_matches_cpu():
    x = torch.randn(2, 3, 64, 64)
    backbone = build_backbone(seed=0)
    with torch.no_grad():
        cpu = backbone(x)[0]
        gpu = backbone.cuda()(x.cuda())[0]
    assert gpu.device.type == 'cuda' and gpu.dtype == torch.float32
    assert _rel(gpu, cpu) < 1e-5


@pytest.mark.parametrize('dtype', ['fp16', 'bf16'])
def test_image_autocast_on_cuda(dtype):
    x = torch.randn(2, 3, 64, 64).cuda()
    plain = build_backbone(seed=0).cuda()
    amp = build_backbone(
        seed=0, autocast_dtype=dtype, channels_last=True).cuda()
    with torch.no_grad():
        ref, out = plain(x)[0], amp(x)[0]
    assert out.dtype == torch.float32  # cast back
    assert not torch.equal(out, ref)  # the option really acts on CUDA
    assert _rel(out, ref) < (1e-2 if dtype == 'fp16' else 3e-2)


@pytest.mark.parametrize('autocast', [None, 'bf16'])
def test_text_truncation_on_cuda(autocast):
    enc = FrozenCLIPTextEncoder(TINY, autocast_dtype=autocast).cuda()
    tokens = enc.tokenize(['X X X a dog.', 'X X X a red car on a road.'])
    tokens = tokens.cuda()
    outs, grads = [], []
    for truncate in (False, True):
        enc.truncate = truncate
        prompts = enc.embed_tokens(tokens).clone().requires_grad_()
        out = enc(prompts, tokens)
        out.square().sum().backward()
        outs.append(out.detach())
        grads.append(prompts.grad)
    assert outs[1].dtype == torch.float32
    tol = 1e-5 if autocast is None else 2e-2
    assert _rel(outs[1], outs[0]) < tol
    assert _rel(grads[1], grads[0]) < tol


def test_feature_cache_extracted_on_cuda(image_root, tmp_path):
    dataset = make_dataset(image_root)
    kwargs = dict(
        batch_size=4,
        progress=False,
        dtype='float32',
        data_preprocessor=clip_preprocessor_cfg())
    cpu = CachedFeatureDataset(dataset, build_backbone(seed=0),
                               str(tmp_path / 'cpu'), device='cpu', **kwargs)
    gpu = CachedFeatureDataset(dataset, build_backbone(seed=0),
                               str(tmp_path / 'gpu'), device='cuda', **kwargs)
    # the device is not part of the key: one cache serves both
    assert gpu.manifest['key'] == cpu.manifest['key']
    for i in range(len(dataset)):
        assert _rel(gpu.read(i), cpu.read(i)) < 1e-5


def test_train_step_on_cuda_matches_cpu(image_root):
    dataset = make_dataset(image_root)
    batch = pseudo_collate([dataset[i] for i in range(4)])
    models, optims = [], []
    for device in ('cpu', 'cuda'):
        torch.manual_seed(1)
        model = ImageClassifier(
            backbone=build_backbone(seed=0),
            head=MODELS.build(head_cfg('PositiveCoOpHead')),
            data_preprocessor=clip_preprocessor_cfg()).to(device)
        params = [p for p in model.parameters() if p.requires_grad]
        models.append(model)
        optims.append(OptimWrapper(torch.optim.SGD(params, lr=0.05)))
    losses = [m.train_step(batch, o)['loss'] for m, o in zip(models, optims)]
    assert losses[1].device.type == 'cuda'
    assert abs(float(losses[1]) - float(losses[0])) < 1e-4 * max(
        1., abs(float(losses[0])))
    for (name, p_cpu), (_, p_gpu) in zip(models[0].head.named_parameters(),
                                         models[1].head.named_parameters()):
        assert _rel(p_gpu, p_cpu) < 1e-5, name
    scores = [m.val_step(batch) for m in models]
    for s_cpu, s_gpu in zip(*scores):
        assert _rel(s_gpu.pred_score, s_cpu.pred_score) < 1e-5


@pytest.mark.parametrize('kind', ['PositiveCoOpHead', 'DualCoOpHead'])
def test_compiled_towers_train_and_evaluate_as_eager_on_cuda(
        image_root, kind):
    """``compile=dict(mode='reduce-overhead')`` on both towers (CUDA graphs
    replayed for the text tower's forward and backward; torch's
    ``cudagraphs`` backend where Triton, which inductor needs, is missing):
    three training steps with evaluations between them (the eval text cache
    keeps a compiled output across replays) give the eager losses, weights
    and scores."""
    import importlib.util
    graphs = (dict(mode='reduce-overhead') if importlib.util.find_spec(
        'triton') else dict(backend='cudagraphs'))
    dataset = make_dataset(image_root)
    batch = pseudo_collate([dataset[i] for i in range(4)])
    runs = []
    for options in (None, graphs):
        torch.manual_seed(1)
        model = ImageClassifier(
            backbone=build_backbone(seed=0, compile=options or False),
            head=MODELS.build(head_cfg(kind, compile=options or False)),
            data_preprocessor=clip_preprocessor_cfg()).cuda()
        optim = OptimWrapper(torch.optim.SGD(
            [p for p in model.parameters() if p.requires_grad], lr=0.05))
        losses, scores = [], []
        for _ in range(3):
            losses.append(float(model.train_step(batch, optim)['loss']))
            scores.append(torch.stack(
                [s.pred_score for s in model.val_step(batch)]))
            scores.append(torch.stack(  # the cached text features again
                [s.pred_score for s in model.val_step(batch)]))
        runs.append((losses, scores, dict(model.head.named_parameters())))
    (losses, scores, params), (c_losses, c_scores, c_params) = runs
    for a, b in zip(c_losses, losses):
        assert abs(a - b) < 1e-4 * max(1., abs(b))
    for a, b in zip(c_scores, scores):
        assert _rel(a, b) < 1e-4
    for name, p in params.items():
        assert _rel(c_params[name], p) < 1e-4, name


@pytest.fixture(scope='module')
def photo_root(tmp_path_factory):
    """4 photo-like 640x480 JPEGs (the benchmark's generated images)."""
    from mmcoop.benchmark.data import make_images
    root = tmp_path_factory.mktemp('photos')
    make_images(str(root), 4, len(CLASSES))
    return str(root)


def _grey_diff(a, b):
    """``(mean, fraction over one grey level)`` of two uint8 images."""
    diff = (a.cpu().int() - b.cpu().int()).abs().float()
    return float(diff.mean()), float((diff > 1).float().mean())


def test_device_decode_and_resize_on_cuda_match_cpu(photo_root):
    """The two stages of ``data_path='device-decode'`` that differ from the
    CPU: nvJPEG against libjpeg-turbo (PIL's pixels; on an H200 1.9 grey
    levels on average, over one at half of the pixels, its chroma
    upsampling: docs/benchmarks.md section 5), and the float resize
    against the CPU's uint8 kernel on the same decoded image (within about
    a grey level)."""
    from mmcoop.datasets.transforms.jpeg import decode_jpegs
    from mmcoop.datasets.transforms.tensor_augment import resize
    files = [torch.from_numpy(np.fromfile(osp.join(photo_root, f), np.uint8))
             for f in sorted(os.listdir(photo_root)) if f.endswith('.jpg')]
    cpu = decode_jpegs(files, torch.device('cpu'))
    gpu = decode_jpegs(files, torch.device('cuda'))
    for a, b in zip(gpu, cpu):
        mean, over = _grey_diff(a, b)
        assert mean < 2.5, ('decode', mean, over)  # the documented bound
        for size in ((448, 448), (224, 224)):
            mean, over = _grey_diff(resize(b.cuda(), size), resize(b, size))
            assert mean < 0.5 and over < 1e-3, ('resize', size, mean, over)


def test_device_augmentation_on_cuda_is_the_cpu_one():
    """Every official RandAugment op at every magnitude and sign, and
    CutoutPIL, on the same uint8 images: the GPU gives the CPU's pixels
    exactly (the ops are integer or IEEE float64/32 arithmetic in one
    order on both devices). All failing ops are named at once."""
    from mmcoop.datasets.transforms.tensor_augment import (RANDAUG_OPS,
                                                           apply_op, cutout)
    gen = torch.Generator().manual_seed(0)
    small = torch.randint(0, 256, (4, 3, 12, 15), generator=gen,
                          dtype=torch.uint8)
    img = torch.nn.functional.interpolate(
        small.float(), size=(60, 75), mode='bicubic',
        align_corners=False).clamp(0, 255).round().to(torch.uint8)
    img[1] //= 4  # a low-contrast image (AutoContrast, Equalize)
    wrong = []
    for op in RANDAUG_OPS:
        for index in range(1, 10):
            signs = [1, -1, -1, 1]
            centres = [(0.1, 0.9), (0.5, 0.5), (0.9, 0.2), (0.3, 0.7)]
            cpu = apply_op(img, op, [index] * 4, signs, centres)
            gpu = apply_op(img.cuda(), op, [index] * 4, signs, centres).cpu()
            if not torch.equal(gpu, cpu):
                wrong.append((op, index, int((gpu != cpu).sum()),
                              int((gpu.int() - cpu.int()).abs().max())))
    centres, colours = [(5, 7), (0, 0), (59, 74), (30, 40)], [
        (1, 2, 3), (200, 100, 0), (125, 122, 113), (0, 0, 0)]
    if not torch.equal(cutout(img.cuda(), centres, colours).cpu(),
                       cutout(img, centres, colours)):
        wrong.append(('CutoutPIL', ))
    assert not wrong, f'(op, index, pixels differing, max diff): {wrong}'


def test_device_data_path_on_cuda_matches_cpu(image_root, photo_root):
    """``DeviceAugmentPreprocessor`` on the GPU gives, for the same draws,
    the images it gives on CPU tensors: with ``data_path='device'``
    (``LoadImageBytes(decode='cpu')``: decoded and resized in the workers)
    the same pixels, augmented or not; with ``'device-decode'`` (nvJPEG)
    unaugmented within the decode's documented bound on photo-like JPEGs,
    and augmented the same pixels from the same decoded and resized batch
    (a grey level of decoding can be amplified by an op at a threshold,
    e.g. Posterize or Solarize, so the whole path is only compared
    unaugmented)."""
    from mmpretrain.registry import TRANSFORMS

    from mmcoop.benchmark.data import pipeline_cfg
    from mmcoop.datasets.transforms.jpeg import decode_jpegs
    from mmcoop.datasets.transforms.tensor_augment import (
        augment_batch, resize_augment_batch)
    pre = MODELS.build(dict(type='mmcoop.DeviceAugmentPreprocessor'))
    std = pre.std.clone()
    for path_name, root, augment in [
            (p, r, a) for p in ('device', 'bytes')
            for r in (image_root, photo_root) for a in (True, False)]:
        dataset = make_dataset(root)
        paths = [dataset.get_data_info(i)['img_path']
                 for i in range(len(dataset))]
        load, pack = [TRANSFORMS.build(c)
                      for c in pipeline_cfg(path_name, 64, augment)]
        batch = []
        for seed, path in enumerate(paths):
            np.random.seed(seed)
            batch.append(pack(load(dict(img_path=path))))
        where = (path_name, root, augment)
        if path_name == 'bytes' and augment:
            draws = [b['data_samples'].device_aug for b in batch]
            imgs = decode_jpegs([b['inputs'] for b in batch],
                                torch.device('cpu'))
            plain = resize_augment_batch(imgs, draws, augment=False)
            gpu = augment_batch(plain.cuda(), draws).cpu()
            assert torch.equal(gpu, augment_batch(plain.clone(), draws)), where
            continue
        cpu = pre.to('cpu')(pseudo_collate(batch))['inputs']
        gpu = pre.to('cuda')(pseudo_collate(batch))['inputs'].cpu()
        grey = (gpu - cpu).abs() * std  # the 0-255 scale
        if path_name == 'device':
            assert float(grey.max()) < 1e-3, where
        elif root == photo_root:
            assert float(grey.mean()) < 2.5, (where, float(grey.mean()))

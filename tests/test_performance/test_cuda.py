# Copyright (c) mmcoop contributors. All rights reserved.
"""CUDA paths: towers, autocast, truncation, feature cache and a train step
on the GPU against the CPU. Skipped (with this reason) without a CUDA
device; ``tools/analysis/gpu/check.sh`` runs them on a GPU machine."""
import pytest
import torch
from _perf_helpers import (TINY, build_backbone, clip_preprocessor_cfg,
                           head_cfg, make_dataset)
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


def test_device_data_path_on_cuda_matches_cpu(image_root):
    """``DeviceAugmentPreprocessor`` on the GPU (nvJPEG decode, float
    resize, batched Cutout + RandAugment) gives the images it gives on CPU
    tensors (libjpeg-turbo, the CPU tensor pipeline's pixels) within about
    a grey level, for the same draws, augmented and not."""
    import numpy as np
    from mmpretrain.registry import TRANSFORMS

    from mmcoop.benchmark.data import pipeline_cfg
    dataset = make_dataset(image_root)
    paths = [dataset.get_data_info(i)['img_path'] for i in range(len(dataset))]
    pre = MODELS.build(dict(type='mmcoop.DeviceAugmentPreprocessor'))
    for augment in (True, False):
        load, pack = [TRANSFORMS.build(c)
                      for c in pipeline_cfg('bytes', 64, augment)]
        batch = []
        for seed, path in enumerate(paths):
            np.random.seed(seed)
            batch.append(pack(load(dict(img_path=path))))
        cpu = pre.to('cpu')(pseudo_collate(batch))['inputs']
        gpu = pre.to('cuda')(pseudo_collate(batch))['inputs'].cpu()
        grey = (gpu - cpu).abs() * pre.to('cpu').std  # the 0-255 scale
        assert float(grey.mean()) < 1.0, (augment, float(grey.mean()))
        assert float((grey > 8).float().mean()) < 0.01, augment

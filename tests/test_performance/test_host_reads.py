# Copyright (c) mmcoop contributors. All rights reserved.
"""A training step reads nothing back from the device, and an evaluation
batch reads twice, whatever its size.

Each read of a device tensor on the host (``.item()``, ``bool(t)``, a
boolean index, ``torch.where`` of one argument) makes the host wait until
the device has run everything queued before it. A cached step on a GPU is
latency-bound (docs/benchmarks.md section 5), so such waits cost time at
every step and stop a whole-step CUDA graph. On the ``meta`` device every
such read raises, so a step that runs there reads nothing.
"""
from types import SimpleNamespace

import pytest
import torch
from _common import every_op_draws
from mmengine.optim import OptimWrapper
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from mmcoop.benchmark import steps
from mmcoop.models.losses import PartialAsymmetricLoss
from mmcoop.registry import MODELS

OPTS = SimpleNamespace(
    model_name='mmcoop-tiny-RN',
    pretrained=None,
    resolution=32,
    channels_last=False,
    autocast=None,
    device='cpu',
    compile=None)


def _cached_model(method, num_classes=6, batch=4, class_subset=None):
    torch.manual_seed(0)
    backbone = MODELS.build(steps.backbone_cfg(OPTS))
    cfg = steps.head_cfg(method, num_classes, OPTS, backbone.embed_dim)
    if class_subset is not None:
        cfg['class_subset'] = class_subset
    head = MODELS.build(cfg)
    img_model, cache_model = steps.model_pair(backbone, head, 'cpu')
    images = steps._image_batch(batch, OPTS.resolution, num_classes)
    with torch.no_grad():
        feats = img_model.extract_feat(
            img_model.data_preprocessor(images, False)['inputs'])[0]
    return cache_model, head, steps._feature_batch(images, feats)


def _meta_train_step(model, head, batch):
    model.to('meta')
    # the loss reads device targets at its first call only (the check of
    # a configuration that mixes them): that one read is allowed
    head.loss_module._device_checked = True
    optim = OptimWrapper(
        torch.optim.SGD([p for p in head.parameters() if p.requires_grad],
                        lr=1e-3,
                        momentum=0.9))
    model.train()
    return model.train_step(batch, optim)


@pytest.mark.parametrize('method', steps.METHODS)
def test_a_cached_training_step_reads_nothing_from_the_device(method):
    out = _meta_train_step(*_cached_model(method))
    assert out['loss'].device.type == 'meta'


@pytest.mark.parametrize('method', ['positivecoop', 'negativecoop',
                                    'dualcoop'])
@pytest.mark.parametrize('num_classes', [1, 3, 7])
def test_a_class_subset_step_reads_nothing_from_the_device(
        method, num_classes):
    """``class_subset`` (``fill=True``): the classes are drawn on the host
    and ranked on the device, the prompts are truncated at a length kept
    on the host, the loss factor stays on the device: nothing is read back
    (before: the indices of the known and of the other classes were, and
    the drawn indices, for their prompts' end positions). K < C = 8; the
    batch's targets are random, so K known classes are drawn out of
    more."""
    model, head, batch = _cached_model(
        method, num_classes=8, class_subset=dict(num_classes=num_classes))
    out = _meta_train_step(model, head, batch)
    assert out['loss'].device.type == 'meta'


def test_a_class_subset_step_without_fill_reads_the_device():
    """``fill=False``: the step's number of classes is the batch's, read
    back once (documented; on ``meta`` the read raises)."""
    model, head, batch = _cached_model(
        'dualcoop', num_classes=8, class_subset=dict(num_classes=3,
                                                     fill=False))
    with pytest.raises((RuntimeError, NotImplementedError), match='meta'):
        _meta_train_step(model, head, batch)


def test_the_loss_reads_device_targets_at_its_first_call_only():
    loss = PartialAsymmetricLoss()
    logits = torch.zeros(2, 2, 3, device='meta')
    target = torch.zeros(2, 3, device='meta')
    with pytest.raises((RuntimeError, NotImplementedError), match='meta'):
        loss(logits, target)  # the check reads the values
    assert not loss._device_checked
    loss(torch.zeros(2, 2, 3), torch.zeros(2, 3))  # the CPU: every call
    assert not loss._device_checked
    with pytest.raises(ValueError, match='found \\[0.5\\]'):
        loss(torch.zeros(2, 2, 3), torch.full((2, 3), 0.5))


class _Reads(TorchDispatchMode):
    """Counts the operators that read a tensor's values on the host."""
    READS = ('_local_scalar_dense', 'nonzero', 'equal', 'is_nonzero')

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split('.')[0]
        bool_index = name.startswith('index') and any(
            getattr(t, 'dtype', None) == torch.bool
            for t in (args[1] if len(args) > 1
                      and isinstance(args[1], (list, tuple)) else ()))
        self.count += name in self.READS or bool_index
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize('method', ['positivecoop', 'dualcoop', 'baseline'])
@pytest.mark.parametrize('batch', [3, 9])
def test_an_evaluation_batch_reads_the_device_twice_at_most(method, batch):
    """The predictions' labels are read once for the batch (they were read
    once per image), the evaluation text cache's key once for every
    parameter (once per parameter)."""
    model, head, data = _cached_model(method, batch=batch)
    model.eval()
    with torch.no_grad():
        feats = model.extract_feat(model.data_preprocessor(data)['inputs'])
        head.predict(feats)  # fills the evaluation text cache
        reads = _Reads()
        with reads:
            out = head.predict(feats)
    assert reads.count <= (2 if method != 'baseline' else 1)
    # the labels are those of the threshold, on every image
    for sample in out:
        expected = torch.where(sample.pred_score >= head.thr)[0]
        assert torch.equal(sample.pred_label, expected)
    head.thr, head.topk = None, 2  # the top-k labels: read once too
    with torch.no_grad():
        reads = _Reads()
        with reads:
            out = head.predict(feats)
    assert reads.count <= (2 if method != 'baseline' else 1)
    for sample in out:
        assert torch.equal(sample.pred_label,
                           sample.pred_log_odds.topk(2).indices)


class _HostToDevice(TorchFunctionMode):
    """Counts the copies of host data to another device: tensors made from
    host values there, and CPU tensors moved there."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, '__name__', '')
        if isinstance(out, torch.Tensor) and out.device.type != 'cpu':
            source = args[1] if name == 'copy_' else args[0] if args else None
            from_host = (not isinstance(source, torch.Tensor)
                         or source.device.type == 'cpu')
            self.count += from_host and name in ('tensor', 'as_tensor',
                                                 'asarray', 'to', 'cuda',
                                                 'copy_', 'new_tensor')
        return out


def test_the_device_augmentation_reads_nothing_and_copies_once():
    """A batch's Cutout + RandAugment on the device (every op, in both
    slots) reads no value back (on ``meta`` every such read raises) and
    sends its parameters in one copy (before: a blocking copy per op and
    per parameter, and reads; counted in docs/benchmarks.md, "No waits for
    the device in a step")."""
    from mmcoop.datasets.transforms.tensor_augment import augment_batch
    draws = every_op_draws()
    imgs = torch.zeros(len(draws), 3, 48, 64, dtype=torch.uint8,
                       device='meta')
    augment_batch(imgs.clone(), draws)  # Rotate's indices: kept after
    copies = _HostToDevice()
    with copies:
        out = augment_batch(imgs.clone(), draws)
    assert out.shape == imgs.shape and out.device.type == 'meta'
    assert copies.count == 1


def test_the_device_path_preprocessor_reads_nothing(image_root):
    """``DeviceAugmentPreprocessor`` on ``meta``: the images and each
    sample's labels are copied (asynchronously from the loader's pinned
    memory on CUDA), the augmentation's parameters once, and nothing is
    read back."""
    import os.path as osp

    import numpy as np
    from mmengine.dataset import pseudo_collate

    from mmcoop.registry import TRANSFORMS
    pipeline = [TRANSFORMS.build(c) for c in (
        dict(type='LoadImageBytes', scale=(32, 32)),
        dict(type='PackInputs', meta_keys=('img_path', 'device_aug')))]
    samples = []
    for i in range(4):
        np.random.seed(i)
        results = dict(img_path=osp.join(image_root, f'img{i}.jpg'),
                       gt_label=[0, 1])
        for t in pipeline:
            results = t(results)
        samples.append(results)
    pre = MODELS.build(dict(type='DeviceAugmentPreprocessor')).to('meta')
    pre(pseudo_collate(samples), True)  # Rotate's indices: kept after
    copies = _HostToDevice()
    with copies:
        out = pre(pseudo_collate(samples), True)['inputs']
    assert out.shape == (4, 3, 32, 32) and out.device.type == 'meta'
    assert copies.count == 2 * len(samples) + 1

# Copyright (c) mmcoop contributors. All rights reserved.
"""The tensor augmentation against the official PIL operations (re-derived
in mmcoop.benchmark.official from pip randaugment 1.0.2 and CutoutPIL):
same parameters -> same image (the resize within one grey level); the
same policy distribution; batched = per image."""
import re

import numpy as np
import pytest
import torch
from _builders import photo
from _common import every_op_draws
from PIL import Image

from mmcoop.benchmark.official import (OfficialTrainTransform, official_cutout,
                                       official_op)
from mmcoop.datasets.transforms.tensor_augment import (RANDAUG_OPS, apply_op,
                                                       cutout,
                                                       draw_randaugment,
                                                       magnitude, sharpness,
                                                       shear)
from mmcoop.registry import TRANSFORMS

as_tensor = OfficialTrainTransform.as_tensor


@pytest.mark.parametrize('op', RANDAUG_OPS)
def test_each_op_matches_official_pil(op):
    """``apply_op`` (the device path's ops, here on CPU tensors) gives PIL's
    pixels for every magnitude and sign (Rotate: before, a few pixels on
    the rotated border differed)."""
    img = photo()
    for index in range(1, 10):
        for sign in (1, -1):
            ref = as_tensor(official_op(img, op, index, sign, (0.3, 0.7)))
            out = apply_op(as_tensor(img), op, index, sign, (0.3, 0.7))
            assert torch.equal(out, ref), (op, index, sign)


@pytest.mark.parametrize('seed', range(4))
def test_bicubic_affine_is_pils(seed):
    """Any affine map with PIL's bicubic filter: PIL's pixels exactly
    (its cubic with a = -1, clamped taps, double precision, truncation,
    128 outside)."""
    from mmcoop.datasets.transforms.tensor_augment import _affine
    rng = np.random.default_rng(seed)
    img = photo(seed=seed)
    img.paste((200, 17, 90), (10, 10, 60, 40))  # flat areas: exact values
    coeffs = tuple(rng.normal([1, 0, 0, 0, 1, 0], [.3, .3, 20, .3, .3, 20]))
    ref = as_tensor(img.transform(img.size, Image.AFFINE, coeffs,
                                  Image.BICUBIC, fillcolor=(128, ) * 3))
    assert torch.equal(_affine(as_tensor(img), [coeffs], 'bicubic'), ref)


def _shear_contents(h, w):
    """Photo-like content with a flat box (Cutout's), saturated 0 / 255
    patches and a band of 0 / 255 noise; and uniform noise (every tap
    pattern): PIL images of ``w`` x ``h``."""
    rng = np.random.default_rng(h * 1000 + w)
    img = photo(h, w, seed=h)
    img.paste((200, 17, 90), (w // 4, h // 4, w // 2 + 1, h // 2 + 1))
    img.paste((255, 255, 255), (0, 0, w // 5 + 1, h // 5 + 1))
    img.paste((0, 0, 0), (w - w // 5 - 1, 0, w, h // 5 + 1))
    band = (rng.integers(0, 2, (h // 6 + 1, w, 3)) * 255).astype(np.uint8)
    img.paste(Image.fromarray(band), (0, h - len(band)))
    noise = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    return img, noise


@pytest.mark.parametrize('size', [(448, 448), (224, 224), (200, 300),
                                  (300, 200), (3, 5), (5, 3), (1, 7),
                                  (7, 1)])
def test_shear_is_pils_for_every_official_magnitude(size):
    """``shear`` (the CPU pipeline's shears: float32 per line, float64 where
    PIL's truncation is close) gives PIL's pixels exactly for the 18 signed
    magnitudes of each shear, on every kind of content and size, for a
    contiguous tensor or a strided view."""
    for img, contiguous in zip(_shear_contents(*size), (True, False)):
        src = as_tensor(img)[0]  # a permuted (strided) view
        if contiguous:
            src = src.contiguous()
        for op in ('ShearX', 'ShearY'):
            for index in range(1, 10):
                for sign in (1, -1):
                    ref = as_tensor(official_op(img, op, index, sign))[0]
                    out = shear(src, op, magnitude(op, index) * sign)
                    assert out.shape == src.shape and out.is_contiguous()
                    assert torch.equal(out, ref), (size, op, index, sign)


def test_smooth_rounding_is_pils_for_every_sum():
    """SMOOTH's pixel is ``round(S / 13)`` of its integer sum ``S`` (never a
    tie): ``floor(S * (1 / 13) + 0.5)`` in float32 equals ``(2 S + 13) //
    26`` for every sum ``0..13 * 255``."""
    from mmcoop.datasets.transforms.tensor_augment import _smooth_interior
    s = torch.arange(13 * 255 + 1)
    # one 3 x 3 image per sum: S // 13 everywhere, the rest on a corner
    img = (s // 13).to(torch.int16).reshape(-1, 1, 1).repeat(1, 3, 3)
    img[:, 0, 0] += (s % 13).to(torch.int16)
    out = _smooth_interior(img)[:, 0, 0]
    assert torch.equal(out.long(), (2 * s + 13) // 26)


@pytest.mark.parametrize('size', [(448, 448), (224, 224), (200, 300),
                                  (3, 3), (3, 5), (1, 7), (7, 1), (2, 9)])
def test_sharpness_is_pils_for_every_official_magnitude(size):
    """``sharpness`` (the CPU pipeline's Sharpness: integer SMOOTH, PIL's
    float32 blend) gives PIL's pixels exactly for the 18 signed magnitudes,
    on photo-like content with flat and 0 / 255 areas, noise, a flat image
    and 0 / 255 noise, for a contiguous tensor or a strided view; so does
    ``apply_op`` (the device path's)."""
    h, w = size
    rng = np.random.default_rng(h * 7 + w)
    binary = (rng.integers(0, 2, (h, w, 3)) * 255).astype(np.uint8)
    imgs = (*_shear_contents(h, w), Image.new('RGB', (w, h), (37, 200, 91)),
            Image.fromarray(binary))
    for k, img in enumerate(imgs):
        src = as_tensor(img)[0]
        if k % 2 == 0:
            src = src.contiguous()
        for index in range(1, 10):
            for sign in (1, -1):
                ref = as_tensor(official_op(img, 'Sharpness', index, sign))
                m = magnitude('Sharpness', index) * sign
                out = sharpness(src, 1 + m)
                assert out.shape == src.shape and out.is_contiguous()
                assert torch.equal(out, ref[0]), (size, k, index, sign)
                if k == 0:
                    out = apply_op(src[None], 'Sharpness', index, sign)
                    assert torch.equal(out, ref), (size, index, sign)


@pytest.mark.parametrize('mode', ['RGB', 'L', 'P', 'CMYK', 'RGBA'])
def test_decode_is_the_official_loader(tmp_path, mode):
    """``decode_rgb`` gives ``Image.open(f).convert('RGB')``'s pixels for
    every image mode, as a (3, H, W) tensor."""
    from mmcoop.datasets.transforms.tensor_augment import decode_rgb
    img = photo(40, 56).convert(mode)
    fmt = 'PNG' if mode in ('P', 'RGBA') else 'JPEG'
    path = tmp_path / f'x.{fmt.lower()}'
    img.save(path, fmt)
    data = path.read_bytes()
    ref = np.asarray(Image.open(path).convert('RGB'))
    out = decode_rgb(data)
    assert out.shape == (3, 40, 56) and out.dtype == torch.uint8
    assert np.array_equal(out.permute(1, 2, 0).numpy(), ref)


@pytest.mark.parametrize('cy,cx', [(40, 50), (0, 0), (95, 3), (20, 95)])
def test_cutout_matches_official_cutout_pil(cy, cx):
    img = photo(96, 96)
    ref = as_tensor(official_cutout(img, cy, cx, (9, 200, 31)))
    out = cutout(as_tensor(img), [(cy, cx)], [(9, 200, 31)])
    assert torch.equal(ref, out)


def _frequencies(draws):
    ops = np.array([RANDAUG_OPS.index(d['op']) for d in draws])
    index = np.array([d['index'] for d in draws])
    applied = np.array([d['applied'] for d in draws])
    sign = np.array([d['sign'] for d in draws])
    return (np.bincount(ops, minlength=15) / len(draws),
            np.bincount(index, minlength=10)[1:] / len(draws),
            applied.mean(), (sign == 1).mean(), set(index.tolist()))


def test_draws_follow_the_official_policy():
    """15 ops x indices 1..9 uniform, p = 0.5 each; the same frequencies as
    the official ``RandAugment()`` draw (4 standard errors)."""
    n = 6000
    rs = np.random.RandomState(0)
    ours = [d for _ in range(n // 2) for d in draw_randaugment(rs)]
    import random
    random.seed(0)
    np.random.seed(0)
    official = OfficialTrainTransform(normalize=False)
    theirs = [d for _ in range(n // 2) for d in official.draw()]
    for draws in (ours, theirs):
        ops, index, applied, plus, values = _frequencies(draws)
        assert values == set(range(1, 10))
        assert np.abs(ops - 1 / 15).max() < 4 * np.sqrt(1 / 15 / n)
        assert np.abs(index - 1 / 9).max() < 4 * np.sqrt(1 / 9 / n)
        assert abs(applied - 0.5) < 4 * np.sqrt(0.25 / n)
        assert abs(plus - 0.5) < 4 * np.sqrt(0.25 / n)


@pytest.mark.parametrize('op', RANDAUG_OPS)
def test_batched_equals_per_image(op):
    """The GPU path applies ops to a batch with per-image parameters."""
    imgs = torch.cat([as_tensor(photo(seed=s)) for s in range(3)])
    index, sign = [2, 9, 5], [1, -1, -1]
    centre = [(0.1, 0.2), (0.5, 0.5), (0.9, 0.99)]
    batched = apply_op(imgs, op, index, sign, centre)
    for i in range(3):
        single = apply_op(imgs[i:i + 1], op, index[i], sign[i], centre[i])
        assert torch.equal(batched[i:i + 1], single), (op, i)


def _jpeg(path, w=640, h=480):
    photo(h, w).save(path, quality=90)
    return str(path)


def test_tensor_pipeline_matches_mmcv_pipeline(tmp_path):
    path = _jpeg(tmp_path / 'a.jpg')
    mmcv_load = [
        TRANSFORMS.build(dict(type='LoadImageFromFileChecked')),
        TRANSFORMS.build(
            dict(type='Resize', scale=(448, 448), keep_ratio=False,
                 backend='pillow', interpolation='bilinear'))
    ]
    res = dict(img_path=path)
    for t in mmcv_load:
        res = t(res)
    ref = torch.from_numpy(res['img']).permute(2, 0, 1)  # BGR
    out = TRANSFORMS.build(dict(type='LoadImageTensor', scale=(448, 448)))(
        dict(img_path=path))
    assert out['img'].dtype == torch.uint8 and out['img_shape'] == (448, 448)
    assert out['img'].is_contiguous()
    # the same pixels within one grey level (torchvision's uint8 resize
    # kernel vs PIL's), both BGR
    diff = (out['img'].int() - ref.int()).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3
    # draft (DCT scaling) at a quarter of the size: within tolerance
    small = [
        TRANSFORMS.build(
            dict(type='LoadImageTensor', scale=(160, 120), draft=d))(
                dict(img_path=path))['img'] for d in (False, True)
    ]
    assert small[0].shape == small[1].shape == (3, 120, 160)
    assert (small[0].int() - small[1].int()).abs().float().mean() < 2.0
    # CPU RandAugment (PIL ops) == tensor ops within tolerance, same draw
    cut = TRANSFORMS.build(dict(type='TensorCutout'))
    aug = TRANSFORMS.build(dict(type='TensorRandAugment'))
    for seed in range(12):
        np.random.seed(seed)
        res = aug(cut(dict(out, img=out['img'].clone())))
        assert res['img'].shape == (3, 448, 448)
        img = res['img']
        draws = res['randaugment']
        np.random.seed(seed)
        res = cut(dict(out, img=out['img'].clone()))
        rgb = res['img'].flip(0)[None]
        for d in draws:
            if d['applied']:
                rgb = apply_op(rgb, d['op'], d['index'], d['sign'],
                               d['centre'])
        diff = (rgb[0].flip(0).int() - img.int()).abs()
        assert diff.float().mean() < 1.0, draws
    packed = TRANSFORMS.build(dict(type='PackInputs'))(res)
    assert packed['inputs'].dtype == torch.uint8


def _assert_cpu_randaugment_is_official(seed: int, h: int = 60,
                                        w: int = 84, box: bool = True,
                                        strided: bool = False) -> list:
    """TensorRandAugment on the CPU with NumPy seeded by ``seed``, on an
    ``h`` x ``w`` photo (with a flat box), equals the official ops of its
    draw applied in PIL, in BGR channel order and (h, w) layout; returns
    the applied ops. ``strided``: the input is a channels-last view."""
    img = photo(h, w)
    if box:
        img.paste((200, 17, 90), (10, 20, 50, 45))
    bgr = as_tensor(img)[0].flip(0)
    if not strided:
        bgr = bgr.contiguous()
    np.random.seed(seed)
    res = TRANSFORMS.build(dict(type='TensorRandAugment'))(dict(img=bgr))
    ref, ops = img, []
    for d in res['randaugment']:
        if d['applied']:
            ops.append(d['op'])
            ref = official_op(ref, d['op'], d['index'], d['sign'],
                              d['centre'])
    assert res['img'].shape == (3, h, w) and res['img'].is_contiguous()
    assert torch.equal(res['img'].flip(0), as_tensor(ref)[0]), ops
    return ops


def test_cpu_randaugment_is_official_on_non_square_images():
    """On the CPU, TensorRandAugment gives the official ops' pixels, channel
    order and (h, w) layout kept, for a non-square image."""
    applied = [
        _assert_cpu_randaugment_is_official(seed, 37, 52, box=False)
        for seed in range(6)
    ]
    assert sum(map(len, applied)) >= 3


def test_cpu_randaugment_is_official_for_every_op_first_and_second():
    """On the CPU, TensorRandAugment runs every op on the tensor
    (``_CPU_TENSOR_OPS``): the official ops' pixels for every op first and
    second (seeds picked by their draw), on a non-square image with a flat
    box, and for a channels-last (strided) input."""
    from mmcoop.datasets.transforms.tensor_augment import _CPU_TENSOR_OPS
    assert set(_CPU_TENSOR_OPS) == set(RANDAUG_OPS)
    wanted = {(k, op) for k in range(2) for op in RANDAUG_OPS}
    for seed in range(3000):
        np.random.seed(seed)
        ops = [d['op'] for d in draw_randaugment(np.random) if d['applied']]
        new = {(k, op) for k, op in enumerate(ops)} & wanted
        if new:
            assert _assert_cpu_randaugment_is_official(
                seed, strided=len(wanted) % 2 == 0) == ops
            wanted -= new
        if not wanted:
            break
    assert not wanted


def test_official_translations_are_one_shift_for_every_size():
    """PIL's nearest TranslateX samples column ``x`` at ``(x + 0.5) + m W``
    (float64, PIL's order): for every official magnitude and every size up
    to 1024 its floor is ``x`` plus one shift, the premise of the CPU
    path's translations (a copy of the shifted columns / rows)."""
    x = torch.arange(1024, dtype=torch.float64)
    for index in range(1, 10):
        for sign in (1, -1):
            m = magnitude('TranslateX', index) * sign
            for n in range(1, 1025):
                src = ((x[:n] + 0.5) + m * n).floor() - x[:n]
                assert (src == src[0]).all(), (index, sign, n)


@pytest.mark.parametrize('size', [(448, 448), (37, 52), (200, 300), (1, 1),
                                  (1, 7), (7, 1), (3, 5)])
def test_cpu_tensor_ops_are_pils_for_every_official_magnitude(size):
    """Each op as TensorRandAugment runs it on the CPU tensor (the value
    tables of Invert, Posterize, Solarize and Brightness made by PIL on the
    256 values, the per-channel tables of AutoContrast and Equalize, the
    Contrast table of the luma's mean, Color's float32 blend, the
    translations as one shift, Rotate by PIL's rotation of the pixels'
    indices, RandAugment's Cutout; the shears and Sharpness, tested above
    at 448 px too) gives PIL's pixels on the BGR tensor, for every
    magnitude and sign, on photo-like content with flat and 0 / 255 areas,
    noise, a flat image, 0 / 255 noise and a narrow range (AutoContrast
    stretches it), for a contiguous tensor or a strided view, and leaves
    its input as it was."""
    from mmcoop.datasets.transforms.tensor_augment import _CPU_TENSOR_OPS
    h, w = size
    rng = np.random.default_rng(h * 7 + w)
    imgs = (*_shear_contents(h, w), Image.new('RGB', (w, h), (37, 200, 91)),
            Image.fromarray((rng.integers(0, 2, (h, w, 3)) *
                             255).astype(np.uint8)),
            Image.fromarray(rng.integers(100, 140, (h, w, 3), np.uint8)))
    ops = [op for op in _CPU_TENSOR_OPS
           if size[0] < 448 or not op.startswith(('Shear', 'Sharp'))]
    for k, img in enumerate(imgs):
        bgr = as_tensor(img)[0].flip(0)
        if k % 2 == 0:
            bgr = bgr.contiguous()
        for op in ops:
            for index in range(1, 10):
                for sign in (1, -1):
                    centre = tuple(rng.random(2))
                    ref = as_tensor(official_op(img, op, index, sign,
                                                centre))[0]
                    out = _CPU_TENSOR_OPS[op](bgr, index, sign, centre)
                    assert out.shape == bgr.shape and out.is_contiguous()
                    assert torch.equal(out.flip(0), ref), (size, k, op,
                                                           index, sign)
                    assert torch.equal(bgr.flip(0), as_tensor(img)[0])


def test_exact_recipe_is_the_official_transform_pixel_for_pixel(tmp_path):
    """LoadImageTensor(resize_backend='pillow') + TensorCutout +
    TensorRandAugment give the official Resize + CutoutPIL + RandAugment
    image bit for bit for the same draws; the default torchvision resize
    gives the same pixels within one grey level."""
    path = _jpeg(tmp_path / 'a.jpg')
    resized = Image.open(path).convert('RGB').resize((448, 448),
                                                     Image.BILINEAR)
    applied = set()
    for backend in ('pillow', 'torchvision'):
        pipe = [
            TRANSFORMS.build(c) for c in (
                dict(type='LoadImageTensor', scale=(448, 448),
                     resize_backend=backend),
                dict(type='TensorCutout'), dict(type='TensorRandAugment'))
        ]
        # 8 seeds, and 3 that draw shears (ShearY then Cutout, Rotate then
        # ShearX, ShearX twice): the CPU path runs those on the tensor
        for seed in (*range(8), 9, 20, 37):
            np.random.seed(seed)
            res = dict(img_path=path)
            for t in pipe:
                res = t(res)
            # the official drawing with TensorCutout's draw (centre, RGB
            # colour) and TensorRandAugment's recorded ops
            np.random.seed(seed)
            cy, cx = np.random.randint(448), np.random.randint(448)
            colour = tuple(int(c) for c in np.random.randint(0, 256, 3))
            ref = official_cutout(resized, cy, cx, colour)
            for d in res['randaugment']:
                if d['applied']:
                    applied.add(d['op'])
                    ref = official_op(ref, d['op'], d['index'], d['sign'],
                                      d['centre'])
            rgb, ref = res['img'].flip(0), as_tensor(ref)[0]  # both RGB
            if backend == 'pillow':
                assert torch.equal(rgb, ref), res['randaugment']
            else:  # one grey level, which some ops can amplify locally
                diff = (rgb.int() - ref.int()).abs()
                assert (diff > 0).float().mean() < 1e-3, res['randaugment']
                assert diff.max() <= 4, res['randaugment']
    assert len(applied) >= 4  # the seeds exercise several ops
    assert {'ShearX', 'ShearY'} <= applied
    with pytest.raises(ValueError, match="resize_backend.*'cv2'"):
        TRANSFORMS.build(
            dict(type='LoadImageTensor', scale=(8, 8), resize_backend='cv2'))


@pytest.mark.parametrize('cfg, match', [
    (dict(type='LoadImageTensor', scale=(0, 448)), r'LoadImageTensor: scale'),
    (dict(type='LoadImageTensor', scale=(448., 448)), r'scale.*448\.0'),
    (dict(type='LoadImageTensor', scale=(448, )), r'scale.*\(w, h\)'),
    (dict(type='LoadImageBytes', scale='448'), r'LoadImageBytes: scale'),
    (dict(type='LoadImageBytes', scale=64, cutout_factor=2),
     r'LoadImageBytes: cutout_factor.*\(0, 1\]'),
    (dict(type='TensorCutout', cutout_factor=0), r'TensorCutout: cutout'),
    # a flag that is not a bool ('no' is true: augmentation would be on)
    (dict(type='LoadImageBytes', scale=64, augment='no'),
     r"LoadImageBytes: augment must be True or False, got 'no'"),
    (dict(type='LoadImageBytes', scale=64, augment=None),
     r'LoadImageBytes: augment must be True or False, got None'),
    (dict(type='LoadImageTensor', scale=64, draft='yes'),
     r"LoadImageTensor: draft must be True or False, got 'yes'"),
    (dict(type='LoadImageTensor', scale=64, ignore_empty=1),
     r'LoadImageTensor: ignore_empty must be True or False, got 1'),
])
def test_tensor_transforms_refuse_bad_arguments(cfg, match):
    with pytest.raises(ValueError, match=match):
        TRANSFORMS.build(cfg)


@pytest.mark.parametrize('kw, match', [
    (dict(mean=(1., 2.)), r'mean must be 3 finite numbers .*got \(1\.0, 2'),
    (dict(std=(1., 1., 1., 1.)), r'std must be 3 finite numbers'),
    (dict(mean=None), r'mean must be 3 finite numbers .*got None'),
    (dict(mean='clip'), r"mean must be 3 .*got 'clip'"),
    (dict(mean=[[1, 2, 3]]), r'mean must be 3 finite numbers'),
    (dict(std=(float('nan'), ) * 3), r'std must be 3 finite numbers'),
    (dict(std=(0., 1., 1.)), r'std must be positive \(each channel is '
     r'divided by it\), got \(0\.0'),
    (dict(non_blocking='yes'), r"non_blocking must be True or False"),
    (dict(mean=(0.48, 0.46, 0.41), std=(0.27, 0.26, 0.28)),
     r'std=\[0\.27, .*is on the 0-1 scale'),
])
def test_device_preprocessor_refuses_bad_statistics(kw, match):
    """Before: a wrong-length mean/std failed in torch's view() ("shape
    '[1, 3, 1, 1]' is invalid for input of size 2"), a zero or NaN std
    was accepted and turned every input into Inf/NaN."""
    from mmcoop.registry import MODELS
    with pytest.raises(ValueError,
                       match='DeviceAugmentPreprocessor: ' + match):
        MODELS.build(dict(type='DeviceAugmentPreprocessor', **kw))
    # the defaults and any 3 finite numbers with a positive std work
    pre = MODELS.build(dict(type='DeviceAugmentPreprocessor',
                            mean=[0, 0, 0], std=(1, 2, 4)))
    assert pre.std.flatten().tolist() == [1., 2., 4.]
    assert pre.mean.dtype == pre.std.dtype == torch.float32  # given as ints


def test_tensor_loaders_take_an_int_scale_as_mmcv_resize():
    for name in ('LoadImageTensor', 'LoadImageBytes'):
        assert TRANSFORMS.build(dict(type=name, scale=64)).scale == (64, 64)
        assert TRANSFORMS.build(dict(type=name, scale=[64, 48])).scale == (
            64, 48)


@pytest.mark.parametrize('name', ['LoadImageTensor', 'LoadImageBytes'])
def test_tensor_loaders_need_a_file(name):
    """An image decoded by the caller (inference on arrays with these
    loaders in the test pipeline). Before: KeyError: 'img_path'."""
    t = TRANSFORMS.build(dict(type=name, scale=32))
    img = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match=rf'{name} reads the image file at '
                       r'results\["img_path"\], got results with keys '
                       r"\['img'\]. Fix: .*LoadImageFromFileChecked"):
        t(dict(img=img))


def test_load_tensor_errors_name_the_file(tmp_path):
    bad = tmp_path / 'bad.jpg'
    bad.write_bytes(b'\xff\xd8\xff not a jpeg')
    t = TRANSFORMS.build(dict(type='LoadImageTensor', scale=(32, 32)))
    with pytest.raises(OSError, match='bad.jpg'):
        t(dict(img_path=str(bad)))
    with pytest.raises(OSError, match='missing.jpg'):
        t(dict(img_path=str(tmp_path / 'missing.jpg')))


def test_device_path_matches_cpu_tensor_path(tmp_path):
    """LoadImageBytes + DeviceAugmentPreprocessor (run here on CPU tensors)
    give the CPU tensor pipeline's images, normalised, for the same seeds:
    the same draws and the same pixels; in a batch that mixes JPEGs with
    files the device decoders do not take (PNG, CMYK JPEG: decoded by PIL
    in LoadImageBytes)."""
    from mmengine.dataset import pseudo_collate

    from mmcoop.registry import MODELS
    paths = [str(tmp_path / n) for n in ('0.jpg', '1.jpg', '2.png', '3.jpg')]
    for i, p in enumerate(paths):
        img = photo(480, 640, seed=i)
        (img.convert('CMYK') if i == 3 else img).save(p, quality=90)
    size = (224, 224)
    cpu = [TRANSFORMS.build(c) for c in (
        dict(type='LoadImageTensor', scale=size),
        dict(type='TensorCutout'), dict(type='TensorRandAugment'),
        dict(type='PackInputs'))]
    dev = [TRANSFORMS.build(c) for c in (
        dict(type='LoadImageBytes', scale=size),
        dict(type='PackInputs', meta_keys=('img_path', 'device_aug')))]
    ref, batch, draws = [], [], []
    for seed, p in enumerate(paths):
        np.random.seed(seed)
        res = dict(img_path=p)
        for t in cpu[:3]:
            res = t(res)
        draws.append(res['randaugment'])
        ref.append(cpu[3](res)['inputs'].flip(0).float())  # BGR -> RGB
        np.random.seed(seed)
        res = dict(img_path=p)
        for t in dev:
            res = t(res)
        batch.append(res)
        assert res['data_samples'].device_aug['randaugment'] == draws[-1]
    pre = MODELS.build(dict(type='DeviceAugmentPreprocessor'))
    out = pre(pseudo_collate(batch), training=True)['inputs']
    ref = (torch.stack(ref) - pre.mean) / pre.std
    assert out.shape == (4, 3, 224, 224)
    diff = (out - ref).abs() * pre.std  # back on the 0-255 scale
    # on CPU tensors the same decoder, resize and ops: equal
    assert diff.max() < 1e-3, diff.max()
    # the pipeline decides, not `training` (as on the CPU path, so that a
    # feature cache of the train pipeline stores augmented views) ...
    assert torch.equal(pre(pseudo_collate(batch), training=False)['inputs'],
                       out)
    # ... and the test pipeline (no draw) is decode + resize + normalise,
    # the CPU test pipeline's image
    val_load = TRANSFORMS.build(
        dict(type='LoadImageBytes', scale=size, augment=False))
    plain = pre(pseudo_collate([dev[1](val_load(dict(img_path=p)))
                                for p in paths]), training=True)['inputs']
    cpu_val = [TRANSFORMS.build(dict(type='LoadImageTensor', scale=size)),
               cpu[3]]
    ref_val = torch.stack([
        cpu_val[1](cpu_val[0](dict(img_path=p)))['inputs'].flip(0).float()
        for p in paths])
    torch.testing.assert_close(plain * pre.std + pre.mean, ref_val,
                               rtol=0, atol=1e-3)
    # one batch, one pipeline
    mixed = pseudo_collate([batch[0], dev[1](val_load(dict(
        img_path=paths[1])))])
    with pytest.raises(ValueError, match='1 of 2 samples of the batch carry '
                       r'an augmentation draw.*augment=True\) and '
                       r'\(augment=False\)'):
        pre(mixed, training=True)


def test_device_path_bad_files_are_named(tmp_path):
    """A file that is no image is refused when it is read (it is not a
    JPEG, so PIL decodes it there); a truncated JPEG when the batch is
    decoded (``decode='device'``) or when it is read (``decode='cpu'``):
    each error names the file and the fix."""
    from mmengine.dataset import pseudo_collate

    from mmcoop.registry import MODELS
    load = [TRANSFORMS.build(c) for c in (
        dict(type='LoadImageBytes', scale=(32, 32), decode='device'),
        dict(type='PackInputs', meta_keys=('img_path', 'device_aug')))]
    junk = tmp_path / 'a.png'
    junk.write_bytes(b'\x89PNG not really')
    with pytest.raises(OSError, match=r"Cannot decode image file '.*a\.png'"
                       r'.*corrupt.*Fix: re-download'):
        load[0](dict(img_path=str(junk)))
    good = _jpeg(tmp_path / 'good.jpg', 40, 30)
    cut = tmp_path / 'cut.jpg'
    data = open(good, 'rb').read()
    from mmcoop.datasets.transforms.jpeg import parse_header
    head_end = data.index(b'\xff\xda')  # the scan: the header is whole
    cut.write_bytes(data[:len(data) // 3])  # cut inside the header
    assert parse_header(cut.read_bytes()) is None
    with pytest.raises(OSError, match=r"Cannot decode image file '.*cut\.jpg"
                       r"'.*truncated"):
        load[0](dict(img_path=str(cut)))
    cut.write_bytes(data[:head_end + (len(data) - head_end) // 2])
    batch = []
    for p in (good, str(cut)):
        res = dict(img_path=p)
        for t in load:
            res = t(res)
        batch.append(res)
    pre = MODELS.build(dict(type='DeviceAugmentPreprocessor'))
    with pytest.raises(OSError, match=r"cannot decode '.*cut\.jpg'") as err:
        pre(pseudo_collate(batch), training=True)
    assert 'good.jpg' not in str(err.value)
    in_worker = TRANSFORMS.build(dict(type='LoadImageBytes', scale=(32, 32)))
    with pytest.raises(OSError, match=r"Cannot decode image file '.*cut\.jpg"
                       r"'.*truncated.*Fix: re-download"):
        in_worker(dict(img_path=str(cut)))


def test_device_path_samples_need_the_device_preprocessor(tmp_path):
    """Samples of LoadImageBytes given to CLIPDataPreprocessor (the
    configs' default) stop with the fix, with either collate function:
    file bytes (``decode='device'``), which it would normalise as
    1-pixel-high images, and, by their draws, RGB images decoded in the
    worker (``decode='cpu'``), which it would take for BGR; image batches
    of the CPU loaders pass."""
    from mmengine.dataset import default_collate, pseudo_collate

    from mmcoop.registry import MODELS
    path = _jpeg(tmp_path / 'a.jpg', 40, 30)
    pre = MODELS.build(dict(type='CLIPDataPreprocessor'))
    for decode, meta_keys in (('device', ('img_path', 'device_aug')),
                              ('device', ('img_path', )),
                              ('cpu', ('img_path', 'device_aug'))):
        load = [TRANSFORMS.build(c) for c in (
            dict(type='LoadImageBytes', scale=(32, 32), decode=decode),
            dict(type='PackInputs', meta_keys=meta_keys))]
        res = dict(img_path=path)
        for t in load:
            res = t(res)
        for collate in (pseudo_collate, default_collate):
            with pytest.raises(ValueError, match=r'got samples of the '
                               r'device path \(LoadImageBytes.*Fix: set '
                               r'model\.data_preprocessor=.*'
                               r'DeviceAugmentPreprocessor'):
                pre(collate([res, res]), training=True)
    res = dict(img_path=path)
    for c in (dict(type='LoadImageTensor', scale=32),
              dict(type='PackInputs')):
        res = TRANSFORMS.build(c)(res)
    out = pre(pseudo_collate([res, res]), training=True)['inputs']
    assert out.shape == (2, 3, 32, 32) and out.dtype == torch.float32


@pytest.mark.parametrize('name, kind', [('TensorCutout', 'array'),
                                        ('TensorRandAugment', 'array'),
                                        ('RandomCutout', 'tensor'),
                                        ('DualCoOpRandAugment', 'tensor')])
def test_array_and_tensor_transforms_do_not_mix(name, kind):
    """An array transform given a tensor (or the reverse) stops with an
    error naming the transform, what it got and the loader to use, not an
    error from inside NumPy, OpenCV or torch."""
    img = (np.zeros((32, 32, 3), np.uint8) if kind == 'array' else
           torch.zeros(3, 32, 32, dtype=torch.uint8))
    t = TRANSFORMS.build(dict(type=name))
    loader = 'LoadImageTensor' if kind == 'array' else \
        'LoadImageFromFileChecked'
    with pytest.raises(TypeError, match=rf'{name} takes .*{loader}.*got a '
                       rf'{type(img).__name__}.*do not mix'):
        for seed in range(4):  # whatever the draw (p = 0.5 per op)
            np.random.seed(seed)
            t(dict(img=img, img_shape=(32, 32)))


def test_autocontrast_lut_is_pils_for_every_range():
    """Every ``(lo, hi)``, ``0 <= lo < hi <= 255`` (32640 pairs): the LUT
    is PIL's ``ImageOps.autocontrast`` formula in its float64 operation
    order (``scale = 255.0 / (hi - lo)``, ``offset = -lo * scale``,
    ``int(i * scale + offset)`` clipped), vectorised; and PIL itself on a
    sample of the pairs, its whole LUT read through a mask. Before: a
    rounded reciprocal put 3511 pairs a grey level off (lo 51, hi 101:
    255 at 101, PIL 254)."""
    from PIL import ImageOps

    from mmcoop.datasets.transforms.tensor_augment import _autocontrast_lut
    lo, hi = np.triu_indices(256, 1)
    rows = np.arange(len(lo))
    hist = torch.zeros(len(lo), 256, dtype=torch.int32)
    hist[rows, lo] = 1
    hist[rows, hi] = 5
    ours = torch.cat([_autocontrast_lut(h.long())  # 4 chunks: less memory
                      for h in hist.chunk(4)]).numpy()
    assert ours.shape == (32640, 256)
    scale = 255.0 / (hi - lo)[:, None].astype(np.float64)
    offset = -lo[:, None] * scale
    ref = np.clip((np.arange(256) * scale + offset).astype(np.int64), 0, 255)
    mismatch = (ours != ref).any(1)
    assert not mismatch.any(), list(zip(lo[mismatch], hi[mismatch]))[:5]
    assert ours[rows[(lo == 51) & (hi == 101)][0], 101] == 254
    # PIL itself: the 256 levels are masked out of the histogram, so
    # (lo, hi) alone set the LUT, and its output on them is the LUT
    mask = Image.frombytes('L', (258, 1), bytes(256) + b'\xff\xff')
    sample = np.random.default_rng(0).choice(len(lo), 1500, replace=False)
    sample = np.append(sample, rows[(lo == 51) & (hi == 101)])
    for k in sample:
        img = Image.frombytes('L', (258, 1),
                              bytes(range(256)) + bytes([lo[k], hi[k]]))
        pil = ImageOps.autocontrast(img, mask=mask).tobytes()[:256]
        assert list(pil) == ours[k].tolist(), (lo[k], hi[k])
    # identity for a flat channel (hi == lo) and for an empty one
    flat = torch.zeros(2, 256, dtype=torch.long)
    flat[0, 7] = 3
    assert torch.equal(_autocontrast_lut(flat),
                       torch.arange(256).expand(2, 256))


@pytest.mark.parametrize('size', [(1, 1), (2, 2), (1, 5), (5, 1), (2, 7),
                                  (3, 3)])
def test_sharpness_on_tiny_images_is_pils(size):
    """PIL's SMOOTH keeps the border pixels, so an image less than 3 pixels
    high or wide is unchanged by it (Sharpness then keeps it: every factor
    blends it with itself). Before: a RuntimeError from conv2d."""
    h, w = size
    rgb = np.random.default_rng(h * 10 + w).integers(0, 256, (h, w, 3),
                                                     dtype=np.uint8)
    img = Image.fromarray(rgb)
    for index in (1, 5, 9):
        for sign in (1, -1):
            ref = as_tensor(official_op(img, 'Sharpness', index, sign))
            out = apply_op(as_tensor(img), 'Sharpness', index, sign)
            assert out.shape == (1, 3, h, w)
            assert torch.equal(out, ref), (size, index, sign)
            if min(size) < 3:
                assert torch.equal(out, as_tensor(img))
    if size == (3, 3):  # the centre pixel is smoothed: a real blend
        ref = as_tensor(official_op(img, 'Sharpness', 9, -1))
        assert not torch.equal(ref, as_tensor(img))


LOADERS = ['LoadImageTensor', 'LoadImageBytes', 'LoadImageFromFileChecked']


def _loader(name, **kwargs):
    """One of the three image loaders (the tensor ones at 32 px)."""
    if name != 'LoadImageFromFileChecked':
        kwargs['scale'] = 32
    return TRANSFORMS.build(dict(type=name, **kwargs))


@pytest.mark.parametrize('name', LOADERS)
@pytest.mark.parametrize('backend_args', ['disk', 123, ['local']])
def test_loaders_refuse_bad_backend_args(name, backend_args):
    """Before: accepted, then every read failed blaming the path (and with
    ignore_empty=True every sample was silently dropped)."""
    with pytest.raises(ValueError, match=rf'{name}: backend_args must be '
                       r'None or a dict .*got ' +
                       re.escape(repr(backend_args)) +
                       r".*Fix: .*backend_args=dict\(backend='local'\)"):
        _loader(name, backend_args=backend_args)
    for ok in (None, dict(backend='local')):
        assert _loader(name, backend_args=ok).backend_args == ok


@pytest.mark.parametrize('name', LOADERS)
def test_read_errors_blame_the_path_or_backend_args(tmp_path, name):
    """A missing file or a directory: the OSError naming the file (skipped
    with ignore_empty); a file backend that fails otherwise (an unknown
    backend, wrong arguments): a RuntimeError naming backend_args, which
    ignore_empty does not hide."""
    path = _jpeg(tmp_path / 'a.jpg', 40, 30)
    extra = {} if name == 'LoadImageBytes' else dict(ignore_empty=True)
    for bad in (dict(backend='nope'), dict(backend='local', root='/data')):
        t = _loader(name, backend_args=bad, **extra)
        with pytest.raises(RuntimeError, match=rf'{name}: the file backend '
                           r'of backend_args=' + re.escape(repr(bad)) +
                           r" failed to read '.*a\.jpg'.*Fix: check "
                           r'backend_args'):
            t(dict(img_path=path))
    good = _loader(name, backend_args=dict(backend='local'))
    assert good(dict(img_path=path))['img_shape'] in ((32, 32), (30, 40))
    for missing in (str(tmp_path / 'missing.jpg'), str(tmp_path)):
        with pytest.raises(OSError, match=r"Cannot read image file '" +
                           re.escape(missing) + r"' \((FileNotFound|"
                           r'IsADirectory)Error.*Fix: check data_root'):
            good(dict(img_path=missing))
    if name != 'LoadImageBytes':
        skip = _loader(name, ignore_empty=True)
        assert skip(dict(img_path=str(tmp_path / 'missing.jpg'))) is None


def test_device_forms_of_the_ops_are_the_host_forms(monkeypatch):
    """The batched ops have two forms where the CPU can read values for
    free (a bincount per plane, a slice per box) and a device must not
    (one scatter_add, a masked where): forced here on CPU tensors, the
    device forms give PIL's pixels too, and a whole batch of every op the
    host forms' batch."""
    from mmcoop.datasets.transforms import tensor_augment
    from mmcoop.datasets.transforms.tensor_augment import augment_batch
    imgs = torch.cat([as_tensor(photo(48, 64, seed=s)) for s in range(30)])
    draws = every_op_draws()
    host = augment_batch(imgs.clone(), draws)
    assert not torch.equal(host, imgs)
    monkeypatch.setattr(tensor_augment, '_on_host', lambda img: False)
    assert torch.equal(augment_batch(imgs.clone(), draws), host)
    img = photo(48, 48)  # square: the official CutoutPIL swaps h and w
    for op in ('AutoContrast', 'Equalize', 'Cutout'):
        for index in range(1, 10):
            ref = as_tensor(official_op(img, op, index, 1, (0.3, 0.7)))
            assert torch.equal(
                apply_op(as_tensor(img), op, index, 1, (0.3, 0.7)), ref)
    for cy, cx in ((0, 0), (47, 47), (20, 3)):
        ref = as_tensor(official_cutout(img, cy, cx, (9, 200, 31)))
        assert torch.equal(cutout(as_tensor(img), [(cy, cx)], [(9, 200, 31)]),
                           ref)


def test_host_params_come_back_exactly_in_one_buffer():
    """``HostParams``: float32 (denormals, -0), float64, negative and large
    ints come back exactly, each as the dtype asked for; an int outside
    its dtype is refused (a wrapped colour or index would be silent)."""
    from mmcoop.datasets.transforms.batch_params import HostParams
    host = HostParams()
    f32 = np.float32([1e-45, -0.0, 227.55556, 3.4e38])
    keys = [host.add(f32, torch.float32),
            host.add([0.1, -2.5e300], torch.float64),
            host.add([[-3, 2**40]], torch.long),
            host.add([(125, 122, 113)], torch.uint8)]
    params = host.to('cpu')
    out = [params[k] for k in keys]
    assert out[0].dtype == torch.float32 and np.array_equal(
        out[0].numpy().view(np.int32), f32.view(np.int32))
    assert out[1].tolist() == [0.1, -2.5e300]
    assert out[2].tolist() == [[-3, 2**40]] and out[2].shape == (1, 2)
    assert out[3].dtype == torch.uint8 and out[3].tolist() == [[125, 122,
                                                               113]]
    with pytest.raises(ValueError, match=r'values -1\.\.300 do not fit '
                       'torch.uint8'):
        host.add([300, -1], torch.uint8)
    # a NaN or a fraction for an integer dtype: refused, never truncated
    # (before: 1.7 came back as 1, NaN as -2**63)
    for bad in (1.7, float('nan'), float('inf')):
        with pytest.raises(ValueError, match=rf'^HostParams\.add: {bad} is '
                           r'not an integer, for torch\.(int64|uint8)'):
            host.add([2., bad], torch.long)
    key = host.add(np.float64([3., -2.]), torch.long)  # whole: kept
    assert host.to('cpu')[key].tolist() == [3, -2]
    # a complex value: its real part when the imaginary one is 0, else
    # refused (before: a TypeError from inside the check for an integer
    # dtype, the imaginary part dropped without a word for a float one)
    keys = [host.add(np.complex128([3 + 0j]), torch.long),
            host.add(np.complex64([0.5 + 0j]), torch.float32)]
    params = host.to('cpu')
    assert params[keys[0]].tolist() == [3] and params[keys[1]].tolist() == [
        0.5]
    for dtype in (torch.long, torch.float32):
        with pytest.raises(ValueError, match=r'^HostParams\.add: \(?2\+1j\)? '
                           r'is not a real number'):
            host.add([1 + 0j, 2 + 1j], dtype)

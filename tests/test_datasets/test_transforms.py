# Copyright (c) mmcoop contributors. All rights reserved.
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.dataset import default_collate, pseudo_collate
from PIL import Image, ImageDraw, ImageOps

from mmcoop.datasets.transforms import (DUALCOOP_RANDAUG_POLICIES,
                                        DualCoOpRandAugment,
                                        LoadImageFromFileChecked, RandomCutout)
from mmcoop.registry import MODELS, TRANSFORMS

# CLIP's statistics (OpenAI preprocessing, 0..1 scale)
OFFICIAL_MEAN = [0.48145466, 0.4578275, 0.40821073]
OFFICIAL_STD = [0.26862954, 0.26130258, 0.27577711]


def _rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(
        0, 256, size=(h, w, 3), dtype=np.uint8)


# ------------------------------------------------------------------ Resize
def test_square_resize_matches_torchvision_pil():
    """mmcv Resize(pillow, bilinear, keep_ratio=False) == the official
    torchvision ``Resize((S, S))`` on a PIL image, bit for bit."""
    import torchvision.transforms as tv  # a dependency: never skipped
    rgb = _rgb(61, 97)
    resize = TRANSFORMS.build(
        dict(
            type='Resize',
            scale=(448, 448),
            keep_ratio=False,
            backend='pillow',
            interpolation='bilinear'))
    out = resize(dict(img=rgb[..., ::-1].copy()))  # mmcv images are BGR
    assert out['img'].shape == (448, 448, 3)
    ref = np.asarray(tv.Resize((448, 448))(Image.fromarray(rgb)))
    assert np.array_equal(out['img'][..., ::-1], ref)
    # the cv2 backend is *not* identical (no antialiasing when shrinking)
    cv = TRANSFORMS.build(
        dict(
            type='Resize',
            scale=(32, 32),
            keep_ratio=False,
            interpolation='bilinear'))(
                dict(img=rgb[..., ::-1].copy()))
    ref32 = np.asarray(tv.Resize((32, 32))(Image.fromarray(rgb)))
    assert not np.array_equal(cv['img'][..., ::-1], ref32)


# ------------------------------------------------------------- RandomCutout
def _official_cutout_pil(rgb, yc, xc, color, factor=0.5):
    """The official CutoutPIL drawing for a given centre and colour."""
    img = Image.fromarray(rgb.copy())
    h, w = img.size[0], img.size[1]
    hc, wc = int(factor * h + 0.5), int(factor * w + 0.5)
    y1, y2 = np.clip(yc - hc // 2, 0, h), np.clip(yc + hc // 2, 0, h)
    x1, x2 = np.clip(xc - wc // 2, 0, w), np.clip(xc + wc // 2, 0, w)
    ImageDraw.Draw(img).rectangle([x1, y1, x2, y2], fill=tuple(color))
    return np.asarray(img)


@pytest.mark.parametrize('cy,cx', [(200, 300), (0, 0), (447, 5), (120, 447)])
def test_cutout_matches_official_geometry(cy, cx, monkeypatch):
    rgb = _rgb(448, 448)
    color = np.array([1, 2, 3])
    t = RandomCutout(cutout_factor=0.5)
    monkeypatch.setattr(t, '_sample', lambda h, w, c: (True, cy, cx, color))
    out = t(dict(img=rgb.copy()))['img']
    painted = (out != rgb).any(-1)
    rows, cols = np.nonzero(painted)
    assert rows.min() == max(cy - 112, 0) and rows.max() == min(cy + 112, 447)
    assert cols.min() == max(cx - 112, 0) and cols.max() == min(cx + 112, 447)
    assert (out[painted] == color).all()
    # bit-identical to the official PIL drawing (rows from y_c, columns
    # from x_c; ImageDraw.rectangle includes both end points)
    assert np.array_equal(out, _official_cutout_pil(rgb, cy, cx, color))


def test_cutout_random_fill_and_always_applied():
    np.random.seed(0)
    t = TRANSFORMS.build(dict(type='RandomCutout', cutout_factor=0.5))
    img = np.zeros((100, 100, 3), np.uint8)
    colors, areas = set(), []
    for _ in range(200):
        out = t(dict(img=img.copy()))['img']
        painted = (out != 0).any(-1)
        areas.append(painted.sum())
        if painted.any():
            colors.add(tuple(out[painted][0]))
    assert len(colors) > 150  # a fresh random colour each call
    # an unclipped patch is 51x51 (inclusive ends); clipped ones are smaller
    assert max(areas) == 51 * 51
    assert np.mean(areas) > 0.4 * 51 * 51
    # prob=0 never paints, fixed pad_val paints that colour
    assert (RandomCutout(prob=0.)(dict(img=img.copy()))['img'] == 0).all()
    out = RandomCutout(pad_val=7)(dict(img=img.copy()))['img']
    assert set(np.unique(out)) == {0, 7}
    with pytest.raises(ValueError):
        RandomCutout(cutout_factor=0)


@pytest.mark.parametrize('kw, match', [
    (dict(prob='0.5'), r"prob must be a number in \[0, 1\], got '0.5'"),
    (dict(prob=float('nan')), r'prob must be a number in \[0, 1\], got nan'),
    (dict(prob=True), r'prob must be a number in \[0, 1\], got True'),
    (dict(pad_val=300), r'pad_val must be an int in 0\.\.255 or 3 of them.*'
     r'got 300'),
    (dict(pad_val=-1), r'pad_val must be .*got -1'),
    (dict(pad_val=1.5), r'pad_val must be .*got 1\.5'),
    (dict(pad_val=(1, 2)), r'pad_val must be .*got \(1, 2\)'),
    (dict(pad_val='red'), r"pad_val must be .*got 'red'"),
])
def test_cutout_refuses_bad_arguments(kw, match):
    """Before: pad_val=300 painted 44 (uint8 wrap-around), -1 painted 255,
    1.5 painted 1, a 2-value pad_val failed in NumPy's broadcast on the
    first image; prob='0.5' failed with "'<=' not supported"."""
    with pytest.raises(ValueError, match='RandomCutout: ' + match):
        RandomCutout(**kw)


def test_cutout_fixed_colour_per_channel_and_on_grey_images():
    out = RandomCutout(pad_val=(1, 2, 3))(dict(img=np.zeros(
        (20, 20, 3), np.uint8)))['img']
    painted = out[out.any(-1)]
    assert len(painted) > 0 and (painted == [1, 2, 3]).all()
    # a one-channel image gets the first value (was a NumPy broadcast error)
    out = RandomCutout(pad_val=(9, 2, 3))(dict(img=np.zeros(
        (20, 20), np.uint8)))['img']
    assert set(np.unique(out)) == {0, 9}


@pytest.mark.parametrize('kw, match', [
    (dict(num_policies=0), r'num_policies must be an int >= 1, got 0'),
    (dict(num_policies=2.5), r'num_policies must be an int >= 1, got 2\.5'),
    (dict(num_policies=True), r'num_policies must be an int >= 1, got True'),
    (dict(magnitude_level=20), r'magnitude_level must be a number in '
     r'\[0, 9\] \(levels above total_level are clipped to it\), got 20'),
    (dict(magnitude_level=float('nan')), r'magnitude_level .*got nan'),
    (dict(magnitude_std=-1), r"magnitude_std must be a finite number >= 0 "
     r"\(or 'inf'.*got -1"),
    (dict(magnitude_std='foo'), r"magnitude_std .*got 'foo'"),
    (dict(total_level=0), r'total_level must be a finite number > 0, got 0'),
    (dict(policies=[]), r'policies must be a non-empty list of transform '
     r'dicts or None'),
    (dict(policies='Invert'), r"policies must be .*got 'Invert'"),
    (dict(hparams=None), r'hparams must be a dict such as '
     r'dict\(pad_val=128\), got None'),
])
def test_randaugment_refuses_bad_arguments(kw, match):
    """Before: num_policies=2.5 / True and policies=[] failed inside
    NumPy on the first image; hparams=None with an AttributeError;
    magnitude_level=20 (> total_level 9) and magnitude_std=-1 were
    accepted and silently clipped / ignored."""
    with pytest.raises(ValueError, match='DualCoOpRandAugment: ' + match):
        DualCoOpRandAugment(**kw)


@pytest.mark.parametrize('kw, match', [
    (dict(imdecode_backend='PIL'), r"imdecode_backend must be one of "
     r"\[.*'pillow'.*\] \(installed\), got 'PIL'. Fix: use 'pillow'"),
    (dict(color_type='rgb'), r"color_type must be one of \[.*\] \(the "
     r"models take 3-channel colour images\), got 'rgb'. Fix: use "
     r"'color_ignore_orientation'"),
    # before: a (1, H, W) grey input broadcast over the colour statistics
    (dict(color_type='grayscale'), r"color_type must be one of "
     r"\['color_ignore_orientation', 'color'\].*got 'grayscale'"),
    (dict(color_type='unchanged'), r"color_type .*got 'unchanged'"),
    # before: accepted, and ignore_empty='no' (true) hid missing images
    (dict(ignore_empty='no'), r"ignore_empty must be True or False, got "
     r"'no'"),
    (dict(to_float32='yes'), r"to_float32 must be True or False"),
])
def test_load_refuses_unknown_decoder_settings(kw, match):
    """Before: accepted, then every image failed as 'Cannot decode image
    file ... The file is corrupt, truncated or not an image. Fix:
    re-download it' (the wrong fix)."""
    with pytest.raises(ValueError, match='LoadImageFromFileChecked: ' +
                       match):
        TRANSFORMS.build(dict(type='LoadImageFromFileChecked', **kw))


@pytest.mark.parametrize('kw, match', [
    (dict(mean=(1., 2.)), r'mean must be 3 finite numbers \(one per RGB '
     r'channel, 0-255 scale\), got \(1\.0, 2\.0\)'),
    (dict(std=(0., 1., 1.)), r'std must be positive'),
    (dict(std=(float('inf'), 1., 1.)), r'std must be 3 finite numbers'),
    (dict(mean=None), r'std is given without mean, so the images would not '
     r'be normalised at all. Fix: give both mean and std, or set both to '
     r'None'),
    (dict(to_rgb='yes'), r"to_rgb must be True or False, got 'yes'"),
    # CLIP's published statistics are on the 0-1 scale: the inputs were
    # 255 times too large (|x| up to 488 instead of 2), without a word
    (dict(mean=[0.48145466, 0.4578275, 0.40821073],
          std=[0.26862954, 0.26130258, 0.27577711]),
     r'std=\[0\.2686.*is on the 0-1 scale, but the images here are '
     r'0\.\.255.*Fix: multiply mean and std by 255'),
    (dict(mean=[0.5] * 3, std=[0.5] * 3), r'std=\[0\.5, .*on the 0-1 scale'),
])
def test_clip_preprocessor_refuses_bad_statistics(kw, match):
    """Before: a 2-value mean failed in the first forward ("The size of
    tensor a (3) must match ..."), std=0 gave -inf inputs, mean=None with
    CLIP's std silently skipped the normalisation."""
    with pytest.raises(ValueError, match='CLIPDataPreprocessor: ' + match):
        MODELS.build(dict(type='CLIPDataPreprocessor', **kw))
    # both None: no normalisation (mmpretrain's meaning), allowed
    pre = MODELS.build(
        dict(type='CLIPDataPreprocessor', mean=None, std=None))
    img = torch.full((3, 4, 4), 200, dtype=torch.uint8)
    out = pre(dict(inputs=[img], data_samples=None))['inputs']
    assert out.unique().tolist() == [200.]
    # a std of 1 is no scaling: allowed
    pre = MODELS.build(dict(type='CLIPDataPreprocessor', mean=[0] * 3,
                            std=[1] * 3))
    out = pre(dict(inputs=[img], data_samples=None))['inputs']
    assert out.unique().tolist() == [200.]


# -------------------------------------------------------------- RandAugment
def test_randaugment_policy_mirrors_pip():
    t = TRANSFORMS.build(dict(type='DualCoOpRandAugment'))
    assert isinstance(t, DualCoOpRandAugment)
    assert t.num_policies == 2 and t.magnitude_std == 'inf'
    assert t.magnitude_level == 9 and t.total_level == 9
    names = [p['type'] for p in t.policies]
    assert len(names) == 15
    assert sorted(set(names)) == sorted([
        'Invert', 'Cutout', 'Sharpness', 'AutoContrast', 'Posterize', 'Shear',
        'Translate', 'Rotate', 'Equalize', 'Contrast', 'ColorTransform',
        'Solarize', 'Brightness'
    ])
    assert all(p['prob'] == 0.5 for p in t.policies)
    rot = [p for p in t.policies if p['type'] == 'Rotate'][0]
    assert rot['magnitude_range'] == (0, -30)
    assert rot['random_negative_prob'] == 0
    # official magnitude index m -> lo + (hi - lo) * m / 9: m=9 is the max
    for tr in t.transforms:
        if tr.magnitude_range is not None:
            tr.magnitude_std = 0.
            tr.magnitude_level = 9
            lo, hi = tr.magnitude_range
            assert tr.random_magnitude() == pytest.approx(hi)
    assert DUALCOOP_RANDAUG_POLICIES[0]['prob'] == 0.5


def test_randaugment_runs_and_keeps_shape():
    np.random.seed(1)
    t = DualCoOpRandAugment()
    img = _rgb(64, 64)
    changed = 0
    for _ in range(40):
        out = t(dict(img=img.copy(), img_shape=(64, 64)))['img']
        assert out.shape == img.shape and out.dtype == np.uint8
        changed += not np.array_equal(out, img)
    # P(no op applied) = 0.25 (+ no-op draws): most images change
    assert 20 <= changed < 40


# ------------------------------------------------------------ image loading
def _save(path, img, **kw):
    img.save(path, **kw)
    return str(path)


def test_load_converts_to_three_channels(tmp_path):
    load = TRANSFORMS.build(dict(type='LoadImageFromFileChecked'))
    gray = _save(tmp_path / 'g.png', Image.new('L', (5, 4), 77))
    rgba = _save(tmp_path / 'a.png', Image.new('RGBA', (5, 4),
                                               (10, 20, 30, 0)))
    pal = _save(
        tmp_path / 'p.png',
        Image.new('RGB', (5, 4),
                  (200, 100, 50)).convert('P', palette=Image.Palette.ADAPTIVE))
    cmyk = _save(
        tmp_path / 'c.jpg',
        Image.new('CMYK', (5, 4), (0, 255, 255, 0)),
        quality=95)
    gray_jpg = _save(tmp_path / 'g.jpg', Image.new('L', (5, 4), 77))
    for path, bgr in [(gray, (77, 77, 77)), (rgba, (30, 20, 10)),
                      (pal, (50, 100, 200)), (cmyk, None),
                      (gray_jpg, (77, 77, 77))]:
        out = load(dict(img_path=path))
        img = out['img']
        assert img.shape == (4, 5, 3) and img.dtype == np.uint8, path
        assert out['ori_shape'] == (4, 5)
        if bgr is not None:
            assert np.abs(img.astype(int) - bgr).max() <= 1, path
        # identical to the official Image.open(p).convert('RGB')
        ref = np.asarray(Image.open(path).convert('RGB'))[..., ::-1]
        assert np.array_equal(img, ref), path
    # CMYK (0, 255, 255, 0) is red
    img = load(dict(img_path=cmyk))['img']
    assert img[..., 2].min() > 200 and img[..., :2].max() < 60
    # the cv2 decoder too: the modes other than RGB and grey follow the RGB
    # rule (before: OpenCV's CMYK conversion, a grey level off everywhere)
    cv2_load = TRANSFORMS.build(dict(type='LoadImageFromFileChecked',
                                     imdecode_backend='cv2'))
    noisy = np.random.default_rng(0).integers(0, 256, (4, 5, 4), np.uint8)
    cmyk_noisy = _save(tmp_path / 'cn.jpg', Image.fromarray(noisy, 'CMYK'),
                       quality=95)
    for path in (gray, rgba, pal, cmyk, gray_jpg, cmyk_noisy):
        ref = np.asarray(Image.open(path).convert('RGB'))[..., ::-1]
        assert np.array_equal(cv2_load(dict(img_path=path))['img'], ref), \
            path


def _every_loader_rgb(path, size):
    """``path`` through the array, tensor and device-path loaders -> RGB
    ``(H, W, 3)`` arrays (no resize: ``size`` is the image's ``(w, h)``)."""
    from mmcoop.datasets.transforms import LoadImageBytes, LoadImageTensor
    return [
        LoadImageFromFileChecked()(dict(img_path=path))['img'][..., ::-1],
        LoadImageTensor(scale=size)(dict(img_path=path))['img'].flip(0)
        .permute(1, 2, 0).numpy(),
        LoadImageBytes(scale=size, augment=False)(dict(
            img_path=path))['img'].permute(1, 2, 0).numpy(),
    ]


@pytest.mark.parametrize('mode', ['LA', 'RGBA'])
def test_every_loader_drops_alpha_like_official(tmp_path, mode):
    """An image with (partly) transparent pixels gives the official
    ``convert('RGB')`` pixels (alpha dropped) in every loader: the array
    loader used mmcv's decoder, which puts an LA image on (124, 117, 104)
    where the tensor and device loaders (and run_onnx.py) drop the alpha."""
    rgb = Image.fromarray(_rgb(4, 6))
    alpha = Image.fromarray(np.tile(np.array([0, 90, 255], np.uint8), (4, 2)))
    img = rgb.convert('L') if mode == 'LA' else rgb
    img.putalpha(alpha)
    path = _save(tmp_path / 'a.png', img)
    assert Image.open(path).mode == mode
    ref = np.asarray(Image.open(path).convert('RGB'))
    for out in _every_loader_rgb(path, (6, 4)):
        np.testing.assert_array_equal(out, ref)


def test_every_loader_refuses_16bit_values_instead_of_saturating(tmp_path):
    """A 16-bit grey PNG: PIL's convert('RGB') saturates every value above
    255 (an almost white picture, which every loader trained on) while the
    inference doors and run_onnx.py refuse it. Now every loader refuses it
    naming the file and the fix; 0..255 values in 16 bits are accepted as
    those grey levels. The cv2 decoder, which scaled 16 bits down to 8,
    follows the same rule."""
    from mmcoop.datasets.transforms import LoadImageBytes, LoadImageTensor
    wide = _save(tmp_path / 'w.png',
                 Image.fromarray(np.arange(0, 60000, 2500,
                                           np.uint16).reshape(4, 6)))
    assert Image.open(wide).mode == 'I;16'
    for load in (LoadImageFromFileChecked(), LoadImageTensor(scale=(6, 4)),
                 LoadImageBytes(scale=(6, 4), augment=False),
                 LoadImageFromFileChecked(imdecode_backend='cv2')):
        with pytest.raises(OSError, match=r"w\.png' .*'I;16' holds uint16 "
                           r'values in \[0, 57500\].*saturate.*Fix: convert '
                           r'the file to 8-bit'):
            load(dict(img_path=wide))
    grey = _rgb(4, 6)[..., 0]
    low = _save(tmp_path / 'l.png', Image.fromarray(grey.astype(np.uint16)))
    assert Image.open(low).mode == 'I;16'
    cv2 = LoadImageFromFileChecked(imdecode_backend='cv2')
    for out in _every_loader_rgb(low, (6, 4)) + [cv2(dict(img_path=low))
                                                 ['img'][..., ::-1]]:
        np.testing.assert_array_equal(out, np.dstack([grey] * 3))


@pytest.mark.parametrize('values,fix', [
    ((200., 200.), r'img\.round\(\) for values already in 0\.\.255'),
    ((0., .5), r'\(img \* 255\)\.round\(\) for values in \[0, 1\]'),
])
def test_float_image_refusal_says_why_and_the_fix(tmp_path, values, fix):
    """A float TIFF (mode F) is refused by every loader whatever its values.
    Within 0..255 nothing would saturate, and the fix is not 16-bit's
    ``/ 257``: the message says neither (it said both)."""
    arr = np.array(values, np.float32).repeat(12).reshape(4, 6)
    path = _save(tmp_path / 'f.tif', Image.fromarray(arr))
    assert Image.open(path).mode == 'F'
    message = (r"'F' holds float32 .*Fix: convert the file to 8-bit "
               r'\(scaled to 0\.\.255, e\.g\. ' + fix)
    with pytest.raises(OSError, match=message) as e:
        LoadImageFromFileChecked()(dict(img_path=path))
    assert 'saturate' not in str(e.value) and '257' not in str(e.value)


def test_load_ignores_exif_orientation_like_official(tmp_path):
    img = Image.new('RGB', (8, 4), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 8, 2))  # red top half: rotations show
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 on display
    path = _save(tmp_path / 'e.jpg', img, exif=exif, quality=100)
    out = LoadImageFromFileChecked()(dict(img_path=path))
    assert out['img'].shape == (4, 8, 3)  # not rotated (official)
    # the stored pixels, as the official Image.open(p).convert('RGB'), BGR
    ref = np.asarray(Image.open(path).convert('RGB'))[..., ::-1]
    np.testing.assert_array_equal(out['img'], ref)
    # red on top, blue below (BGR)
    assert np.abs(out['img'][0].astype(int) - (0, 0, 255)).max() <= 3
    assert np.abs(out['img'][-1].astype(int) - (255, 0, 0)).max() <= 3
    rotated = TRANSFORMS.build(dict(type='LoadImageFromFile'))(
        dict(img_path=path))
    assert rotated['img'].shape == (8, 4, 3)  # mmcv default rotates
    # orientation 6: displayed turned 90 degrees clockwise (PIL's own
    # exif_transpose): red on the right
    shown = np.asarray(ImageOps.exif_transpose(
        Image.open(path)).convert('RGB'))[..., ::-1]
    diff = np.abs(rotated['img'].astype(int) - shown).max()
    assert diff <= 3, diff
    assert np.abs(rotated['img'][:, -1].astype(int) - (0, 0, 255)).max() <= 3
    assert np.abs(rotated['img'][:, 0].astype(int) - (255, 0, 0)).max() <= 3


@pytest.mark.parametrize('loader', [
    dict(type='LoadImageFromFileChecked'),
    dict(type='LoadImageTensor', scale=(16, 16))
], ids=lambda c: c['type'])
@pytest.mark.parametrize('case', ['missing', 'garbage', 'truncated', 'empty'])
def test_load_errors_name_the_file(tmp_path, case, loader):
    path = tmp_path / f'{case}.jpg'
    if case == 'garbage':
        path.write_bytes(b'this is not an image at all')
    elif case == 'truncated':
        Image.fromarray(_rgb(64, 64)).save(path, quality=95)
        path.write_bytes(path.read_bytes()[:300])
    elif case == 'empty':
        path.write_bytes(b'')
    load = TRANSFORMS.build(loader)
    with pytest.raises(OSError) as e:
        load(dict(img_path=str(path)))
    assert str(path) in str(e.value) and 'Fix' in str(e.value)
    assert TRANSFORMS.build(dict(loader, ignore_empty=True))(
        dict(img_path=str(path))) is None


# ------------------------------------------- tri-state targets end to end
def test_tristate_through_pack_and_preprocessor():
    pack = TRANSFORMS.build(dict(type='PackInputs'))
    scores = [
        np.array([1, 0, -1, -1, 1], np.float32),
        np.array([-1, -1, -1, -1, -1], np.float32),  # nothing known
        np.array([0, 1, 0, -1, 0], np.float32),
    ]
    imgs = [_rgb(4, 6, seed=k) for k in range(3)]  # BGR as mmcv loads
    packed = []
    for img, s in zip(imgs, scores):
        out = pack(
            dict(
                img=img, gt_score=s, gt_label=np.flatnonzero(s == 1).tolist()))
        ds = out['data_samples']
        assert ds.gt_score.dtype == torch.float32
        assert ds.gt_score.tolist() == s.tolist()
        assert ds.gt_label.tolist() == np.flatnonzero(s == 1).tolist()
        packed.append(out)
    for collate in (default_collate, pseudo_collate):
        for onehot in (False, True):
            pre = MODELS.build(
                dict(
                    type='mmcoop.CLIPDataPreprocessor',
                    to_onehot=onehot,
                    num_classes=5))
            data = pre(collate(packed), training=True)
            for sample, s in zip(data['data_samples'], scores):
                assert sample.gt_score.tolist() == s.tolist()
            # CLIP normalisation of RGB = flipped BGR
            x = data['inputs']
            assert tuple(x.shape) == (3, 3, 4, 6)
            rgb = torch.from_numpy(imgs[1][..., ::-1].copy()).permute(2, 0, 1)
            ref = (rgb.float() / 255 -
                   torch.tensor(OFFICIAL_MEAN)[:, None, None]) / \
                torch.tensor(OFFICIAL_STD)[:, None, None]
            assert torch.allclose(x[1], ref, atol=1e-5)


def test_train_pipeline_end_to_end(tmp_path):
    path = _save(tmp_path / 'x.jpg', Image.fromarray(_rgb(50, 70)))
    pipeline = [
        dict(type='LoadImageFromFileChecked'),
        dict(
            type='Resize',
            scale=(96, 96),
            keep_ratio=False,
            backend='pillow',
            interpolation='bilinear'),
        dict(type='RandomCutout', cutout_factor=0.5),
        dict(type='DualCoOpRandAugment'),
        dict(type='PackInputs'),
    ]
    ts = [TRANSFORMS.build(t) for t in pipeline]
    results = dict(
        img_path=path, gt_score=np.array([1, -1, 0], np.float32), gt_label=[0])
    for t in ts:
        results = t(results)
    assert tuple(results['inputs'].shape) == (3, 96, 96)
    assert results['data_samples'].gt_score.tolist() == [1., -1., 0.]
    assert osp.basename(results['data_samples'].img_path) == 'x.jpg'

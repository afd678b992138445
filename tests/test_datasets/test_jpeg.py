# Copyright (c) mmcoop contributors. All rights reserved.
"""JPEG headers, EXIF removal and the decoders: TorchCodec gives the
official loader's pixels (``Image.open(f).convert('RGB')``, no EXIF
rotation) for every kind of JPEG it is used on; PIL decodes the rest."""
import io

import numpy as np
import pytest
import torch
from _builders import photo
from PIL import Image

from mmcoop.datasets.transforms import jpeg
from mmcoop.datasets.transforms.tensor_augment import decode_rgb
from mmcoop.registry import TRANSFORMS

needs_torchcodec = pytest.mark.skipif(
    jpeg.torchcodec_decode_jpeg() is None,
    reason='torchcodec is not installed or does not load with this torch '
    '(pip install torchcodec: the release matching torch)')


def _photo():
    return photo(75, 101)


def _exif(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _jpeg(img=None, **kw):
    buf = io.BytesIO()
    (img or _photo()).save(buf, 'JPEG', **kw)
    return buf.getvalue()


def _official(data):
    rgb = np.asarray(Image.open(io.BytesIO(data)).convert('RGB'))
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)


#: the JPEG kinds of real datasets (COCO, VOC, NUS-WIDE, Open Images)
KINDS = {
    '4:2:0': dict(quality=90),
    '4:4:4': dict(quality=95, subsampling=0),
    '4:2:2': dict(quality=85, subsampling=1),
    'progressive': dict(quality=90, progressive=True),
    'optimized': dict(quality=75, optimize=True),
    'greyscale': dict(mode='L', quality=90),
    'EXIF rotate 90': dict(quality=90, exif=_exif(6)),
    'EXIF rotate 180': dict(quality=90, exif=_exif(3)),
    'EXIF mirror': dict(quality=90, exif=_exif(2)),
}


def _kind(name):
    kw = dict(KINDS[name])
    img = _photo()
    if kw.pop('mode', None) == 'L':
        img = img.convert('L')
    return _jpeg(img, **kw)


@needs_torchcodec
@pytest.mark.parametrize('kind', list(KINDS))
def test_torchcodec_gives_the_official_loaders_pixels(kind):
    data = _kind(kind)
    ref = _official(data)
    assert ref.shape == (3, 75, 101)  # the official loader never rotates
    out = jpeg.decode_jpeg_cpu(data, 'torchcodec')
    assert out is not None, 'TorchCodec must decode this JPEG'
    assert torch.equal(out, ref), kind
    assert torch.equal(decode_rgb(data, backend='auto'), ref)
    assert torch.equal(decode_rgb(data, backend='pillow'), ref)
    (batch, ) = jpeg.decode_jpegs(
        [torch.frombuffer(bytearray(jpeg.without_exif(data)),
                          dtype=torch.uint8)], torch.device('cpu'))
    assert torch.equal(batch, ref)


def test_parse_header_reads_size_components_and_exif():
    head = jpeg.parse_header(_jpeg(quality=90, exif=_exif(6)))
    assert head.size == (75, 101) and head.components == 3
    assert head.precision == 8 and head.device_decodable
    assert not jpeg.parse_header(_jpeg(_photo().convert('CMYK'))
                                 ).device_decodable
    data = bytearray(_jpeg())
    sof = data.index(b'\xff\xc0')
    data[sof + 4] = 12  # a 12-bit frame: left to PIL
    twelve = jpeg.parse_header(bytes(data))
    assert twelve.precision == 12 and not twelve.device_decodable
    assert jpeg.decode_jpeg_cpu(bytes(data)) is None
    assert len(head.exif) == 1
    assert jpeg.parse_header(_jpeg(_photo().convert('L'))).components == 1
    assert jpeg.parse_header(_jpeg(_photo().convert('CMYK'))).components == 4
    assert jpeg.parse_header(_jpeg()).exif == ()
    png = io.BytesIO()
    _photo().save(png, 'PNG')
    for data in (png.getvalue(), b'', b'\xff\xd8\xff', _jpeg()[:20]):
        assert jpeg.parse_header(data) is None


def test_without_exif_drops_only_the_exif_segments():
    data = _jpeg(quality=90, exif=_exif(3))
    plain = _jpeg(quality=90)
    out = jpeg.without_exif(data)
    assert len(out) < len(data) and b'Exif\x00\x00' not in out
    assert jpeg.parse_header(out).exif == ()
    assert not Image.open(io.BytesIO(out)).getexif()
    assert torch.equal(_official(out), _official(data))
    assert out == plain  # the same file as one saved without EXIF
    assert jpeg.without_exif(plain) is plain  # nothing to remove: no copy


def test_pil_decodes_what_torchcodec_is_not_used_for(monkeypatch):
    """CMYK (PIL's own conversion), non-JPEG files, ``'pillow'``, and
    every file where TorchCodec is missing: PIL's decode, as the official
    loader."""
    cmyk = _jpeg(_photo().convert('CMYK'))
    assert jpeg.decode_jpeg_cpu(cmyk) is None
    assert torch.equal(decode_rgb(cmyk), _official(cmyk))
    png = io.BytesIO()
    _photo().save(png, 'PNG')
    assert jpeg.decode_jpeg_cpu(png.getvalue()) is None
    assert jpeg.decode_jpeg_cpu(_jpeg(), 'pillow') is None
    monkeypatch.setattr(jpeg, 'torchcodec_decode_jpeg', lambda: None)
    data = _kind('EXIF rotate 90')
    assert jpeg.decode_jpeg_cpu(data) is None
    assert torch.equal(decode_rgb(data), _official(data))
    (batch, ) = jpeg.decode_jpegs(  # torchvision's decoder
        [torch.frombuffer(bytearray(jpeg.without_exif(data)),
                          dtype=torch.uint8)], torch.device('cpu'))
    assert torch.equal(batch, _official(data))
    with pytest.raises(ImportError, match=r"LoadImageTensor: decode_backend="
                       r"'torchcodec' needs TorchCodec.*pip install "
                       r"torchcodec.*decode_backend='auto'"):
        TRANSFORMS.build(dict(type='LoadImageTensor', scale=32,
                              decode_backend='torchcodec'))


@needs_torchcodec
def test_a_file_torchcodec_refuses_is_left_to_pil(tmp_path):
    """PIL decides, so the error (or the image) is the official loader's."""
    bad = _jpeg()[:-300]
    assert jpeg.decode_jpeg_cpu(bad) is None
    path = tmp_path / 'cut.jpg'
    path.write_bytes(bad)
    with pytest.raises(OSError, match=r'cut\.jpg.*truncated'):
        TRANSFORMS.build(dict(type='LoadImageTensor', scale=32))(
            dict(img_path=str(path)))


def test_load_image_tensor_decode_backends(tmp_path):
    path = tmp_path / 'rot.jpg'
    path.write_bytes(_kind('EXIF rotate 90'))
    from mmcoop.datasets.feature_cache.key import pipeline_key
    outs, keys = [], []
    for backend in ('auto', 'pillow') + (
            ('torchcodec', ) if jpeg.torchcodec_decode_jpeg() else ()):
        t = TRANSFORMS.build(
            dict(type='LoadImageTensor', scale=(101, 75),
                 decode_backend=backend))
        outs.append(t(dict(img_path=str(path)))['img'])
        keys.append(pipeline_key(t))
    ref = _official(path.read_bytes()).flip(0)  # BGR
    for out in outs:
        assert torch.equal(out, ref)
    # the same pixels, so one feature cache serves every decoder
    assert all(k == keys[0] for k in keys)
    other = TRANSFORMS.build(dict(type='LoadImageTensor', scale=(101, 74)))
    assert pipeline_key(other) != keys[0]
    with pytest.raises(ValueError, match=r'decode_backend must be one of '
                       r"\('auto', 'pillow', 'torchcodec'\), got 'cv2'"):
        TRANSFORMS.build(dict(type='LoadImageTensor', scale=32,
                              decode_backend='cv2'))


def test_device_path_bytes_carry_no_exif(tmp_path):
    """``LoadImageBytes`` drops the EXIF, so no device decoder rotates."""
    path = tmp_path / 'rot.jpg'
    path.write_bytes(_kind('EXIF rotate 180'))
    t = TRANSFORMS.build(dict(type='LoadImageBytes', scale=32,
                              augment=False, decode='device'))
    data = bytes(t(dict(img_path=str(path)))['img'].numpy())
    assert jpeg.parse_header(data).exif == ()
    assert data == jpeg.without_exif(path.read_bytes())


def test_device_decode_falls_back_when_torchcodec_fails(monkeypatch):
    """A TorchCodec that cannot decode (e.g. built without CUDA decoding)
    hands the batch to torchvision's decoder; a file no decoder takes is a
    ``RuntimeError`` (the preprocessor then names the file)."""
    calls = []

    def failing(inputs, mode, device):
        calls.append(len(inputs))
        raise RuntimeError('no nvJPEG in this build')

    monkeypatch.setattr(jpeg, 'torchcodec_decode_jpeg', lambda: failing)
    data = _jpeg()
    (out, ) = jpeg.decode_jpegs(
        [torch.frombuffer(bytearray(data), dtype=torch.uint8)],
        torch.device('cpu'))
    assert calls == [1] and torch.equal(out, _official(data))
    with pytest.raises(RuntimeError):
        jpeg.decode_jpegs(
            [torch.frombuffer(bytearray(data[:-300]), dtype=torch.uint8)],
            torch.device('cpu'))
    assert calls == [1, 1]


def test_device_path_decodes_what_pil_reads_and_its_decoders_refuse(
        tmp_path):
    """A JPEG without its end-of-image marker: PIL (so the CPU paths)
    decodes it, TorchCodec and torchvision refuse it. The device path gave
    the whole batch up (training stopped on a file every other path reads);
    now PIL decodes that file, the others of the batch stay on the device
    decoders, and a file PIL refuses too is still named."""
    from mmengine.structures import BaseDataElement

    from mmcoop.registry import MODELS
    good = _jpeg()
    bad = _jpeg(quality=90)[:-2] + b'\0\0'  # no EOI marker
    assert _official(bad).shape == (3, 75, 101)  # PIL reads it
    for decode in (jpeg.torchcodec_decode_jpeg(),
                   jpeg._torchvision_decode_jpeg):
        if decode is not None:  # the device decoders refuse it
            with pytest.raises(RuntimeError):
                decode(_as_tensor(bad), mode='RGB')
    cut = tmp_path / 'cut.jpg'
    cut.write_bytes(good[:-300])
    out = jpeg.decode_jpegs([_as_tensor(good), _as_tensor(bad)],
                            torch.device('cpu'))
    assert torch.equal(out[0], _official(good))
    assert torch.equal(out[1], _official(bad))
    pre = MODELS.build(dict(type='DeviceAugmentPreprocessor'))
    samples = [BaseDataElement(img_path=p, device_aug=dict(size=(8, 8)))
               for p in ('bad.jpg', str(cut))]
    with pytest.raises(OSError, match=r"cannot decode '.*cut\.jpg' \(PIL: "
                       r'.*truncated.*neither the device decoders nor PIL'):
        pre(dict(inputs=[_as_tensor(bad), _as_tensor(good[:-300])],
                 data_samples=samples), training=True)


# ------------------------------------------------ PIL's pixel limit (bombs)
def _bomb():
    """A small JPEG whose SOF header claims 32767 x 32767 pixels (a corrupt
    header): PIL refuses it (over twice ``MAX_IMAGE_PIXELS``); TorchCodec
    would decode it into a 3 GB grey tensor."""
    data = bytearray(_jpeg())
    sof = data.index(b'\xff\xc0')
    data[sof + 5:sof + 9] = (32767).to_bytes(2, 'big') * 2
    assert jpeg.parse_header(bytes(data)).size == (32767, 32767)
    return bytes(data)


def _spy_decoders(monkeypatch):
    """Replace both device decoders with ones that record their inputs (and
    refuse them): over the limit, neither may see a file."""
    calls = []

    def spy(inputs, mode='RGB', device='cpu'):
        calls.append(inputs)
        raise RuntimeError('spy')

    monkeypatch.setattr(jpeg, 'torchcodec_decode_jpeg', lambda: spy)
    monkeypatch.setattr(jpeg, '_torchvision_decode_jpeg', spy)
    return calls


def _as_tensor(data):
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def test_pixel_limit_is_pils_and_read_at_call_time(monkeypatch):
    """``within_pixel_limit`` counts as PIL (``max(1, w) * max(1, h)``)
    against ``Image.MAX_IMAGE_PIXELS`` as it is now; None is no limit."""
    head = jpeg.parse_header(_jpeg())  # 75 x 101 = 7575 pixels
    assert Image.MAX_IMAGE_PIXELS is not None  # PIL's default limit
    assert head.within_pixel_limit and head.device_decodable
    bomb = jpeg.parse_header(_bomb())
    assert not bomb.within_pixel_limit and not bomb.device_decodable
    assert bomb.precision == 8 and bomb.components == 3  # only the size
    for limit, within in ((7575, True), (7574, False), (None, True)):
        monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', limit)
        assert head.within_pixel_limit is within, limit
        assert head.device_decodable is within, limit
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', None)
    assert bomb.device_decodable  # the user lifted the limit


def test_a_decompression_bomb_reaches_no_device_decoder(monkeypatch):
    """Every decoder leaves a JPEG over the limit to PIL, which refuses it
    (before decoding: cheap); the device batch decode raises PIL's error
    as a RuntimeError with the fix."""
    calls = _spy_decoders(monkeypatch)
    data = _bomb()
    for backend in ('auto', 'torchcodec'):
        assert jpeg.decode_jpeg_cpu(data, backend) is None
    with pytest.raises(Image.DecompressionBombError):
        decode_rgb(data)
    with pytest.raises(RuntimeError, match=r'PIL: DecompressionBombError: '
                       r'Image size \(1073676289 pixels\).*MAX_IMAGE_PIXELS '
                       r'\(None: no limit\)'):
        jpeg.decode_jpegs([_as_tensor(data)], torch.device('cpu'))
    assert calls == []


def test_device_batch_decode_leaves_over_limit_files_to_pil(monkeypatch):
    """In a batch, a file over the limit is PIL's (its warning up to twice
    the limit, the image in its place); the others still go to the device
    decoder, in one call; without the limit all go there."""
    small = _jpeg(photo(10, 12))  # 120 pixels
    big = _jpeg()  # 7575 pixels
    refs = [_official(small), _official(big)]
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 7574)  # big: a warning
    seen = []

    def recording(inputs, mode, device):
        seen.append([bytes(t.numpy()) for t in inputs])
        return jpeg._torchvision_decode_jpeg(inputs, mode, device)

    monkeypatch.setattr(jpeg, 'torchcodec_decode_jpeg', lambda: recording)
    with pytest.warns(Image.DecompressionBombWarning):
        out = jpeg.decode_jpegs([_as_tensor(small), _as_tensor(big)],
                                torch.device('cpu'))
    assert seen == [[small]]
    assert all(torch.equal(o, r) for o, r in zip(out, refs))
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', None)
    jpeg.decode_jpegs([_as_tensor(small), _as_tensor(big)],
                      torch.device('cpu'))
    assert seen[1] == [small, big]


@pytest.mark.parametrize('name, decode', [('LoadImageTensor', None),
                                          ('LoadImageBytes', 'device'),
                                          ('LoadImageBytes', 'cpu')])
def test_loaders_honour_the_pixel_limit(tmp_path, monkeypatch, name, decode):
    """Over twice the limit (the bomb; or an ordinary image under a lowered
    limit) the loaders raise their OSError naming the file and the fix;
    between once and twice PIL warns and decodes; with the limit raised
    (or None) they decode as before."""
    bomb = tmp_path / 'bomb.jpg'
    bomb.write_bytes(_bomb())
    path = tmp_path / 'photo.jpg'
    path.write_bytes(_jpeg())  # 75 x 101 = 7575 pixels
    ref = _official(path.read_bytes())
    load = TRANSFORMS.build(dict(type=name, scale=(101, 75),
                                 **(dict(decode=decode) if decode else {})))
    calls = _spy_decoders(monkeypatch)
    for p in (bomb, path):
        if p == path:
            monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 7575 // 2 - 1)
        with pytest.raises(OSError, match=rf"Cannot decode image file '.*"
                           rf"{p.name}'.*DecompressionBombError.*raise "
                           r'PIL\.Image\.MAX_IMAGE_PIXELS'):
            load(dict(img_path=str(p)))
    assert calls == []
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 7574)
    with pytest.warns(Image.DecompressionBombWarning):
        img = load(dict(img_path=str(path)))['img']
    # PIL decoded it: BGR from LoadImageTensor, RGB (for the device) from
    # LoadImageBytes
    assert torch.equal(img, ref.flip(0) if name == 'LoadImageTensor' else ref)
    assert calls == []
    monkeypatch.undo()  # the default limit and the real decoders
    for limit in (7575, None):
        monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', limit)
        img = load(dict(img_path=str(path)))['img']
        if name == 'LoadImageTensor':
            assert torch.equal(img, ref.flip(0))
        elif decode == 'cpu':  # decoded here, RGB
            assert torch.equal(img, ref)
        else:  # the bytes, for the device decoders
            assert img.dim() == 1
            assert bytes(img.numpy()) == path.read_bytes()
    if name == 'LoadImageTensor':  # ignore_empty skips it, as any bad file
        monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 100)
        skip = TRANSFORMS.build(dict(type=name, scale=32, ignore_empty=True))
        assert skip(dict(img_path=str(path))) is None


def test_device_preprocessor_names_an_over_limit_file(monkeypatch):
    """Bytes read under a higher limit (or by another loader) that reach
    the device decode over the limit: PIL's refusal, naming the file."""
    from mmengine.structures import BaseDataElement

    from mmcoop.registry import MODELS
    calls = _spy_decoders(monkeypatch)
    samples = [BaseDataElement(img_path='bomb.jpg',
                               device_aug=dict(size=(8, 8)))]
    pre = MODELS.build(dict(type='DeviceAugmentPreprocessor'))
    with pytest.raises(OSError, match=r"cannot decode 'bomb\.jpg' \(PIL: "
                       r'DecompressionBombError.*MAX_IMAGE_PIXELS'):
        pre(dict(inputs=[_as_tensor(_bomb())], data_samples=samples),
            training=True)
    assert calls == []


def test_device_out_of_memory_is_not_a_file_for_pil(monkeypatch):
    """A device that runs out of memory while decoding raises
    ``torch.cuda.OutOfMemoryError`` (a ``RuntimeError``): it is raised as it
    is, not taken for files the device decoders refuse (which would decode
    every batch again file by file, then with PIL on the CPU, without a
    word), nor reported by the preprocessor as corrupt files."""
    calls = []

    def out_of_memory(inputs, mode='RGB', device='cpu'):
        calls.append(len(inputs))
        raise torch.cuda.OutOfMemoryError('CUDA out of memory')

    monkeypatch.setattr(jpeg, 'torchcodec_decode_jpeg', lambda: None)
    monkeypatch.setattr(jpeg, '_torchvision_decode_jpeg', out_of_memory)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        jpeg.decode_jpegs([_as_tensor(_jpeg())] * 3, torch.device('cpu'))
    assert calls == [3]
    # nor does the device preprocessor name the files as corrupt
    from mmengine.structures import BaseDataElement

    from mmcoop.registry import MODELS
    pre = MODELS.build(dict(type='DeviceAugmentPreprocessor'))
    samples = [BaseDataElement(img_path=f'{i}.jpg', device_aug=dict(
        size=(8, 8))) for i in range(2)]
    with pytest.raises(torch.cuda.OutOfMemoryError):
        pre(dict(inputs=[_as_tensor(_jpeg())] * 2, data_samples=samples),
            training=True)
    assert calls == [3, 2]

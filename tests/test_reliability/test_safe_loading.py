# Copyright (c) mmcoop contributors. All rights reserved.
"""Issue #6.3: every entry point that reads a file from elsewhere refuses a
crafted pickle that would write a file when unpickled -- and the file never
appears. Entry points: ``load_from``, ``--resume`` (also for a file planted
in the work dir), ``tools/test.py CONFIG CKPT``, ``mmcoop.apis.init_model``,
``tools/model_converters/*``, CLIP weights (``FrozenCLIP`` /
``FrozenCLIPTextEncoder(pretrained=path)``, state-dict and TorchScript
paths). A config text stored in a checkpoint is never run (``--resume``,
``publish_model.py``)."""
import os
import os.path as osp
import pickle
import shutil
import zipfile

import numpy as np
import pytest
import torch
from _common import WritesFile, load_tool
from _helpers import (TINY, base_cfg, make_data, model_cfg, save_tiny_clip,
                      write_config)

from mmcoop.utils.checkpoint import (CheckpointMismatchError,
                                     UnsafeCheckpointError, safe_torch_load)


class _ToFile:
    """A gadget through the globals the runtime-state loader allow-lists:
    ``getattr(numpy.ndarray, 'tofile')(array, path)``."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (np.ndarray.tofile, (np.zeros(1), self.path))


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('safe')
    data_root, classes = make_data(
        tmp / 'data', num_train=8, num_val=4, image_size=32, num_classes=8)
    clip = save_tiny_clip(tmp / 'clip.pt')
    settings = base_cfg(data_root, clip, classes, max_epochs=1, augment=False)
    settings['randomness'] = dict(seed=0)  # keep this process deterministic
    cfg = write_config(tmp / 'cfg.py', settings)
    return dict(
        tmp=tmp, cfg=cfg, clip=clip, classes=classes, data_root=data_root)


def _evil_files(tmp, marker):
    """The same payload as a plain pickle, a torch zip checkpoint, a
    training checkpoint with one extra entry and a numpy gadget."""
    files = {}
    files['legacy'] = tmp / 'legacy.pth'
    with open(files['legacy'], 'wb') as f:
        pickle.dump({'state_dict': {}, 'x': WritesFile(marker)}, f)
    files['zip'] = tmp / 'zip.pth'
    torch.save({'state_dict': {}, 'x': WritesFile(marker)}, files['zip'])
    files['gadget'] = tmp / 'gadget.pth'
    torch.save({'state_dict': {}, 'x': _ToFile(marker)}, files['gadget'])
    files['clip_like'] = tmp / 'clip_like.pt'
    sd = torch.load(tmp / 'clip.pt', weights_only=True)
    torch.save(dict(sd, x=WritesFile(marker)), files['clip_like'])
    return files


@pytest.fixture
def evil(setup, tmp_path):
    marker = str(tmp_path / 'PWNED')
    files = _evil_files(setup['tmp'], marker)
    yield files, marker
    assert not osp.exists(marker), 'a pickled payload was executed'


def test_helper_payload_really_writes(tmp_path):
    """Sanity: the payloads do write the file when loaded unsafely."""
    for cls in (WritesFile, _ToFile):
        marker = tmp_path / cls.__name__
        path = tmp_path / f'{cls.__name__}.pth'
        torch.save({'x': cls(str(marker))}, path)
        torch.load(path, weights_only=False)
        assert marker.exists()


@pytest.mark.parametrize('kind', ['legacy', 'zip', 'gadget'])
def test_safe_torch_load_runtime_state(evil, kind):
    files, marker = evil
    with pytest.raises(UnsafeCheckpointError, match=kind):
        safe_torch_load(str(files[kind]), runtime_state=True)


@pytest.mark.parametrize('kind', ['legacy', 'zip', 'gadget'])
def test_load_from(setup, evil, tmp_path, kind):
    files, marker = evil
    train = load_tool('tools/train.py')
    with pytest.raises(UnsafeCheckpointError, match=f'{kind}.pth'):
        train.main([
            setup['cfg'], '--work-dir',
            str(tmp_path / 'w'), '--cfg-options', f'load_from={files[kind]}'
        ])


def test_resume_of_a_file_planted_in_the_work_dir(setup, evil, tmp_path):
    files, marker = evil
    work = tmp_path / 'w'
    work.mkdir()
    shutil.copy(files['gadget'], work / 'epoch_1.pth')
    (work / 'last_checkpoint').write_text(str(work / 'epoch_1.pth'))
    train = load_tool('tools/train.py')
    with pytest.raises(UnsafeCheckpointError, match='epoch_1.pth'):
        train.main([setup['cfg'], '--work-dir', str(work), '--resume'])


@pytest.mark.parametrize('kind', ['legacy', 'zip', 'gadget'])
def test_tools_test(setup, evil, tmp_path, kind):
    files, marker = evil
    test = load_tool('tools/test.py')
    with pytest.raises(UnsafeCheckpointError, match=f'{kind}.pth'):
        test.main([
            setup['cfg'],
            str(files[kind]), '--work-dir',
            str(tmp_path / 'w')
        ])


def test_tools_test_refuses_a_checkpoint_of_other_classes(setup, tmp_path):
    import mmcoop.models  # noqa: F401
    from mmcoop.registry import MODELS
    classes = setup['classes']
    model = MODELS.build(model_cfg(setup['clip'], classes))
    other = list(reversed(classes))
    path = tmp_path / 'other_classes.pth'
    torch.save(
        {
            'state_dict': model.state_dict(),
            'meta': {
                'dataset_meta': {
                    'classes': other
                }
            }
        }, path)
    test = load_tool('tools/test.py')
    with pytest.raises(CheckpointMismatchError) as err:
        test.main([setup['cfg'], str(path), '--work-dir', str(tmp_path / 'w')])
    msg = str(err.value)
    assert 'the test dataset' in msg and 'another order' in msg
    assert repr(other[0]) in msg and repr(classes[0]) in msg


@pytest.mark.parametrize('kind', ['legacy', 'zip', 'gadget'])
def test_apis_init_model(setup, evil, kind):
    from mmcoop.apis import init_model
    files, marker = evil
    with pytest.raises(UnsafeCheckpointError):
        init_model(setup['cfg'], str(files[kind]))


@pytest.mark.parametrize('kind', ['legacy', 'zip', 'gadget'])
def test_official_converter(evil, tmp_path, kind, capsys):
    files, marker = evil
    conv = load_tool('tools/model_converters/official_to_mmcoop.py')
    out = tmp_path / 'out.pth'
    rc = conv.main([str(files[kind]), str(out), '--method', 'positivecoop'])
    assert rc != 0 and not out.exists()


def _publish():
    return load_tool('tools/model_converters/publish_model.py')


@pytest.mark.parametrize('kind', ['legacy', 'zip', 'gadget'])
def test_publish_model_refuses(evil, tmp_path, kind):
    publish = _publish()
    files, marker = evil
    out = tmp_path / 'published.pth'
    with pytest.raises(UnsafeCheckpointError, match=f'{kind}.pth'):
        publish.main([str(files[kind]), str(out)])
    assert not any(p.startswith('published') for p in os.listdir(tmp_path))


def _plain(obj, where='ckpt'):
    """Assert ``obj`` holds only tensors and plain Python values."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert isinstance(k, (str, int)), f'{where}: key {k!r}'
            _plain(v, f'{where}[{k!r}]')
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _plain(v, f'{where}[{i}]')
    else:
        assert obj is None or isinstance(
            obj, (torch.Tensor, str, int, float, bool)), \
            f'{where}: {type(obj).__name__}'


def test_published_checkpoints_hold_tensors_and_plain_metadata(
        setup, tmp_path):
    publish = _publish()
    train = load_tool('tools/train.py')
    work = tmp_path / 'w'
    train.main([setup['cfg'], '--work-dir', str(work), '--no-validate'])
    out = tmp_path / 'published.pth'
    publish.main([str(work / 'epoch_1.pth'), str(out)])
    published = [p for p in os.listdir(tmp_path) if p.startswith('published')]
    assert published
    for name in published:
        ckpt = torch.load(tmp_path / name, weights_only=True)  # bare torch
        assert 'state_dict' in ckpt
        assert not {
            'optimizer', 'message_hub', 'param_schedulers', 'rng_state'
        } & set(ckpt)
        _plain(ckpt)


# ------------------------------------------------------------ CLIP weights
def _torchscript_disguise(src, dst):
    """``src`` (a torch zip) with TorchScript markers, so that the CLIP
    loader takes its ``torch.jit.load`` path."""
    shutil.copy(src, dst)
    with zipfile.ZipFile(dst) as zf:
        prefix = zf.namelist()[0].split('/')[0]
    with zipfile.ZipFile(dst, 'a') as zf:
        zf.writestr(f'{prefix}/constants.pkl', pickle.dumps((), protocol=2))
        zf.writestr(f'{prefix}/code/__torch__.py', 'class X: pass\n')
    return dst


@pytest.mark.parametrize('kind', ['legacy', 'zip', 'clip_like', 'torchscript'])
@pytest.mark.parametrize('tower', ['FrozenCLIP', 'FrozenCLIPTextEncoder'])
def test_clip_weights(evil, tmp_path, kind, tower):
    from mmcoop.models import FrozenCLIP, FrozenCLIPTextEncoder
    files, marker = evil
    if kind == 'torchscript':
        path = _torchscript_disguise(files['clip_like'],
                                     tmp_path / 'RN-evil.pt')
    else:
        path = files[kind]
    cls = dict(
        FrozenCLIP=FrozenCLIP,
        FrozenCLIPTextEncoder=FrozenCLIPTextEncoder)[tower]
    with pytest.raises((UnsafeCheckpointError, RuntimeError)) as err:
        cls(TINY, pretrained=str(path))
    assert osp.basename(str(path)) in str(err.value)


# ----------------------------------------- config text stored in a checkpoint
def _config_text_payload(marker):
    """A stored config text that writes ``marker`` when run as Python."""
    return (f"run = __import__('pathlib').Path({marker!r}).write_text('r')\n"
            "model = dict(head=dict(classnames=['a', 'b']))\n")


def test_config_text_payload_really_writes(tmp_path):
    """Sanity: MMEngine's Config.fromstring runs the text."""
    from mmengine.config import Config
    marker = tmp_path / 'ran'
    Config.fromstring(_config_text_payload(str(marker)), '.py')
    assert marker.exists()


def test_stored_config_values_never_run_the_text(setup, tmp_path):
    from mmengine.config import Config

    from mmcoop.engine.config_text import stored_config_values
    marker = tmp_path / 'ran'
    values = stored_config_values(_config_text_payload(str(marker)))
    assert values == {'model': {'head': {'classnames': ['a', 'b']}}}
    assert not marker.exists()
    # a real stored text (MMEngine's pretty_text) reads back whole
    cfg = Config.fromfile(setup['cfg'])
    values = stored_config_values(cfg.pretty_text)
    assert values['model'] == cfg.model.to_dict()
    assert values['train_cfg'] == cfg.train_cfg.to_dict()
    assert stored_config_values('model = dict(') == {}


def test_resume_never_runs_a_stored_config_text(setup, tmp_path):
    """MMEngine's resume() runs Config.fromstring on meta['config']."""
    train = load_tool('tools/train.py')
    work = tmp_path / 'w'
    train.main([setup['cfg'], '--work-dir', str(work), '--no-validate'])
    ckpt = torch.load(work / 'epoch_1.pth', weights_only=False)  # our own
    marker = tmp_path / 'ran'
    ckpt['meta']['config'] = _config_text_payload(str(marker))
    crafted = tmp_path / 'crafted.pth'
    torch.save(ckpt, crafted)
    runner = train.main([
        setup['cfg'], '--work-dir',
        str(tmp_path / 'w2'), '--resume',
        str(crafted), '--no-validate', '--cfg-options',
        'train_cfg.max_epochs=2'
    ])
    assert runner.train_loop.epoch == 2
    assert not marker.exists(), 'the stored config text was executed'
    # the file itself is left as it was
    assert 'config' in torch.load(crafted, weights_only=False)['meta']


def test_publish_model_never_runs_a_stored_config_text(setup, tmp_path):
    publish = _publish()
    train = load_tool('tools/train.py')
    work = tmp_path / 'w'
    train.main([setup['cfg'], '--work-dir', str(work), '--no-validate'])
    ckpt = torch.load(work / 'epoch_1.pth', weights_only=False)  # our own
    marker = tmp_path / 'ran'
    text = _config_text_payload(str(marker))
    ckpt['meta'] = {k: v for k, v in ckpt['meta'].items()
                    if k not in ('cfg', 'dataset_meta')}
    ckpt['meta']['config'] = text
    crafted = tmp_path / 'crafted.pth'
    torch.save(ckpt, crafted)
    out = tmp_path / 'published.pth'
    publish.main([str(crafted), str(out)])
    assert not marker.exists(), 'the stored config text was executed'
    # the class names come from the text's literal model.head.classnames
    published = torch.load(
        [tmp_path / p for p in os.listdir(tmp_path)
         if p.startswith('published')][0], weights_only=True)
    assert published['meta']['dataset_meta']['classes'] == ['a', 'b']

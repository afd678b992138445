# Copyright (c) mmcoop contributors. All rights reserved.
"""Issue #6.4, end to end through ``tools/train.py`` / ``tools/test.py``:
bad input either works or fails fast naming the file/field and the fix.

The unit-level cases live next to their modules and are not repeated here
(see docs/reliability.md for the map): image decoding and odd image modes
(tests/test_datasets/test_transforms.py), annotation files
(test_coco2014.py, test_voc2007.py), label proportions and mask files
(test_partial_label.py), class-name lists (tests/test_models/test_heads.py),
CLIP names and weights files (tests/test_models/test_backbones.py)."""
import copy
import json
import os
import os.path as osp
import shutil

import pytest
import torch
from _common import load_tool
from _helpers import base_cfg, tree_fingerprint, write_config
from PIL import Image


@pytest.fixture(scope='module')
def setup(tiny_assets):
    return tiny_assets


_N = [0]


def _settings(setup, data_root=None, **kw):
    s = base_cfg(
        data_root or setup['data_root'],
        setup['clip'],
        setup['classes'],
        max_epochs=1,
        augment=True,
        size=32,
        **kw)
    s['randomness'] = dict(seed=0)  # keep the pytest process as it is
    return s


def _train(tmp_path, settings, *extra):
    _N[0] += 1
    cfg = write_config(tmp_path / f'bad_input_{_N[0]}.py', settings)
    work = tmp_path / 'work'
    load_tool('tools/train.py').main([cfg, '--work-dir', str(work), *extra])
    return work


def _checkpoints(work):
    return [n for n in os.listdir(work) if n.endswith('.pth')] \
        if osp.isdir(work) else []


def test_default_runtime_gives_the_safety_hooks(setup, tmp_path):
    from mmengine.config import Config

    from mmcoop.engine.hooks import (ClassCheckHook, FiniteCheckHook,
                                     RNGStateHook)
    from mmcoop.registry import RUNNERS
    _N[0] += 1
    cfg = Config.fromfile(
        write_config(tmp_path / f'hooks_{_N[0]}.py', _settings(setup)))
    cfg.work_dir = str(tmp_path / 'w')
    # from default_runtime.py
    assert cfg.runner_type == 'mmcoop.engine.MMCoopRunner'
    runner = RUNNERS.build(cfg)
    kinds = [type(h) for h in runner.hooks]
    for hook in (FiniteCheckHook, RNGStateHook, ClassCheckHook):
        assert kinds.count(hook) == 1, hook
    # and each can be switched off
    cfg.mmcoop_hooks = dict(finite_check=False)
    cfg.experiment_name = 'hooks_off'
    runner = RUNNERS.build(cfg)
    assert FiniteCheckHook not in [type(h) for h in runner.hooks]


def test_nan_inputs_stop_before_a_checkpoint(setup, tmp_path, monkeypatch):
    from mmcoop.engine.hooks import NonFiniteError
    from mmcoop.models import CLIPDataPreprocessor
    s = _settings(setup)
    # std=0 (x / 0) is refused when the preprocessor is built
    # (tests/test_datasets/test_transforms.py), so NaN inputs are made here
    forward = CLIPDataPreprocessor.forward

    def nan_inputs(self, data, training=False):
        out = forward(self, data, training)
        return dict(out, inputs=out['inputs'] * float('nan'))

    monkeypatch.setattr(CLIPDataPreprocessor, 'forward', nan_inputs)
    with pytest.raises(NonFiniteError) as err:
        _train(tmp_path, s)
    msg = str(err.value)
    assert 'epoch 1, iteration 1' in msg and 'check the inputs' in msg
    assert 'train again (the run had written no checkpoint yet)' in msg
    assert _checkpoints(tmp_path / 'work') == []


def test_diverging_parameters_stop_with_the_iteration(setup, tmp_path):
    from mmcoop.engine.hooks import NonFiniteError
    s = _settings(setup)
    s['param_scheduler'] = []
    with pytest.raises(NonFiniteError, match='iteration 1') as err:
        _train(tmp_path, s, '--cfg-options', 'optim_wrapper.optimizer.lr=inf')
    assert 'lower the learning rate' in str(err.value).lower()
    assert _checkpoints(tmp_path / 'work') == []


@pytest.mark.parametrize('case', ['count', 'order', 'val_count', 'names'])
def test_head_and_dataset_classes_must_agree(setup, tmp_path, case):
    s = _settings(setup)
    classes = setup['classes']
    if case == 'names':  # anything but order is an error (issue #13.5)
        s['model']['head']['classnames'] = ['red disc'] + classes[1:]
    elif case == 'count':
        s['model']['head']['classnames'] = classes[:-1]
    elif case == 'order':
        s['model']['head']['classnames'] = classes[1:2] + classes[:1] + \
            classes[2:]
    else:
        val = copy.deepcopy(s['val_dataloader'])
        val['dataset']['classes'] = classes[:-1]
        val['dataset']['strict_class_names'] = False
        val['dataset']['ann_file'] = _fewer_categories(setup, tmp_path)
        s['val_dataloader'] = val
    with pytest.raises(ValueError) as err:
        _train(tmp_path, s)
    msg = str(err.value)
    assert 'model.head.classnames' in msg and 'Fix' in msg
    if case == 'order':
        assert 'another order' in msg and "#0: 'red circle'" in msg
    elif case == 'names':
        assert "only in the dataset: ['red circle']" in msg
        assert "only in the head: ['red disc']" in msg
    elif case == 'count':
        assert 'has 8 classes' in msg and 'has 7' in msg
    else:
        assert '`val_dataloader.dataset`' in msg
    # failed before the first iteration
    assert _checkpoints(tmp_path / 'work') == []
    assert not any('Epoch(train)' in open(p).read()
                   for p in _logs(tmp_path / 'work'))


def _fewer_categories(setup, tmp_path):
    """A val annotation file without the last category."""
    src = osp.join(setup['data_root'], 'annotations', 'instances_val2014.json')
    with open(src) as f:
        data = json.load(f)
    last = max(c['id'] for c in data['categories'])
    data['categories'] = [c for c in data['categories'] if c['id'] != last]
    data['annotations'] = [
        a for a in data['annotations'] if a['category_id'] != last
    ]
    # in a folder of its own: the work dir must not lie in a dataset tree
    dst = tmp_path / 'ann' / 'val_fewer.json'
    dst.parent.mkdir()
    with open(dst, 'w') as f:
        json.dump(data, f)
    return str(dst)


def _logs(work):
    out = []
    for d, _, files in os.walk(work):
        out += [osp.join(d, f) for f in files if f.endswith('.log')]
    return out


@pytest.mark.parametrize('serialize', [True, False])
def test_empty_training_set(setup, tmp_path, serialize):
    s = _settings(setup)
    s['train_dataloader']['dataset']['dataset'].update(
        indices=0, serialize_data=serialize)
    with pytest.raises(ValueError) as err:
        _train(tmp_path, s)
    msg = str(err.value)
    assert 'COCO2014MultiLabel' in msg and 'no samples' in msg
    assert 'instances_train2014.json' in msg and 'Fix' in msg


def test_empty_test_split(setup, tmp_path):
    from mmcoop.datasets.utils import AnnotationError
    root = tmp_path / 'data'
    shutil.copytree(setup['data_root'], root)
    ann = root / 'annotations' / 'instances_val2014.json'
    data = json.loads(ann.read_text())
    data['annotations'] = []
    ann.write_text(json.dumps(data))
    _N[0] += 1
    cfg = write_config(tmp_path / f'empty_val_{_N[0]}.py',
                       _settings(setup, data_root=str(root)))
    ckpt = tmp_path / 'head.pth'
    torch.save({'state_dict': {}}, ckpt)
    with pytest.raises(AnnotationError) as err:
        load_tool('tools/test.py').main(
            [cfg, str(ckpt), '--work-dir',
             str(tmp_path / 'w')])
    assert 'instances_val2014.json' in str(err.value)
    assert 'no image has an annotation' in str(err.value)


def _copy_data(setup, tmp_path):
    root = tmp_path / 'data'
    shutil.copytree(setup['data_root'], root)
    images = sorted((root / 'train2014').iterdir())
    return root, images


def test_corrupt_image_in_a_run_names_the_file(setup, tmp_path):
    root, images = _copy_data(setup, tmp_path)
    bad = images[3]
    bad.write_bytes(bad.read_bytes()[:120])  # truncated JPEG
    s = _settings(setup, data_root=str(root))
    s['train_dataloader']['sampler']['shuffle'] = False
    with pytest.raises(OSError) as err:
        _train(tmp_path, s)
    assert str(bad) in str(err.value) and 'Fix' in str(err.value)
    assert _checkpoints(tmp_path / 'work') == []


def test_missing_image_in_a_run_names_the_file(setup, tmp_path):
    root, images = _copy_data(setup, tmp_path)
    os.remove(images[0])
    s = _settings(setup, data_root=str(root))
    with pytest.raises(OSError) as err:
        _train(tmp_path, s)
    assert str(images[0]) in str(err.value)
    assert 'data_root' in str(err.value)


def test_odd_image_modes_train_and_test(setup, tmp_path):
    """Grayscale, CMYK and palette JPEG/PNG content and PNG with alpha
    (behind the .jpg names of the annotation file) train and test."""
    root, images = _copy_data(setup, tmp_path)
    for path, mode, fmt in zip(images, ['L', 'CMYK', 'RGBA', 'P', 'LA'],
                               ['JPEG', 'JPEG', 'PNG', 'PNG', 'PNG']):
        img = Image.open(path).convert('RGB')
        if mode == 'RGBA':
            img = img.convert('RGBA')
            img.putalpha(Image.new('L', img.size, 0))  # fully transparent
        else:
            img = img.convert(mode)
        img.save(path, format=fmt)
    before = tree_fingerprint(root)
    s = _settings(setup, data_root=str(root))
    work = _train(tmp_path, s)
    assert _checkpoints(work) == ['epoch_1.pth']
    metrics = load_tool('tools/test.py').main([
        write_config(tmp_path / 'odd_test.py', s),
        str(work / 'epoch_1.pth'), '--work-dir',
        str(tmp_path / 'test')
    ])
    assert 'multi-label/mAP' in metrics
    assert tree_fingerprint(root) == before


def test_unknown_clip_name_and_unreadable_weights(setup, tmp_path):
    s = _settings(setup)
    s['model']['backbone']['model_name'] = 'RN101-quickgleu'
    with pytest.raises(ValueError, match="Unknown open_clip model name "
                       "'RN101-quickgleu' \\(field `model.backbone."
                       "model_name`\\)"):
        _train(tmp_path, s)
    bad = tmp_path / 'RN101.pt'
    bad.write_bytes(b'<html>404 Not Found</html>')
    s = _settings(setup)
    # both towers (one CLIP; check_clip_towers refuses two)
    s['model']['backbone']['pretrained'] = str(bad)
    s['model']['head']['text_encoder']['pretrained'] = str(bad)
    with pytest.raises(RuntimeError) as err:
        _train(tmp_path, s)
    assert 'RN101.pt' in str(err.value)
    assert 'not a PyTorch checkpoint' in str(err.value)

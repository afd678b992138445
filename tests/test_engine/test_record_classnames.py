# Copyright (c) mmcoop contributors. All rights reserved.
"""``model.head.classnames`` given as a class file or a dataset is recorded
as the names (MMCoopRunner.from_cfg): the work dir's config and every
checkpoint hold them, so a trained model is tested and deployed without the
class file. Before, ``init_model`` with the work dir's config stopped
(``classnames='...txt' is neither ...``) where the file was not at hand."""
import glob
import os
import os.path as osp
import sys
import uuid

import numpy as np
import torch
from _common import load_tool
from mmengine.config import Config

from mmcoop.datasets.categories import COCO2014_CATEGORIES
from mmcoop.engine.runner import record_classnames

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))),
                            'test_tools'))
import _tool_helpers as H  # noqa: E402


def _cfg(classnames):
    return Config(dict(model=dict(head=dict(classnames=classnames))))


def test_files_and_datasets_become_the_names(tmp_path):
    path = tmp_path / 'classes.txt'
    path.write_text('\ufeffdog \ntraffic light\n\n')
    cfg = _cfg(str(path))
    record_classnames(cfg)
    assert cfg.model.head.classnames == ['dog', 'traffic light']
    cfg = _cfg('COCO2014MultiLabel')
    record_classnames(cfg)
    assert cfg.model.head.classnames == list(COCO2014_CATEGORIES)
    names = ['a', 'b']
    cfg = _cfg(names)
    record_classnames(cfg)
    assert cfg.model.head.classnames == names
    # a model without a head (or without class names) is left as it is
    for model in (dict(type='X'), dict(head=dict(type='Y'))):
        cfg = Config(dict(model=model))
        record_classnames(cfg)
        assert cfg.model == model


def test_trained_model_loads_without_its_class_file(tmp_path):
    from mmcoop.apis import init_model
    clip = H.make_tiny_clip(str(tmp_path / 'clip.pt'))
    classes = tmp_path / 'lists' / 'classes.txt'
    classes.parent.mkdir()
    classes.write_text(''.join(n + '\n' for n in H.DEMO_CLASSES))
    cfg_path = H.write_config(
        str(tmp_path / 'cfg.py'),
        H.METHOD_CONFIGS['positivecoop'],
        str(tmp_path / 'demo'),
        clip=clip,
        num_train=16,
        num_val=8,
        max_epochs=1,
        extra=f"model['head']['classnames'] = {str(classes)!r}\n")
    work = str(tmp_path / 'work')
    load_tool('tools/train.py').main([
        cfg_path, '--work-dir', work, '--no-pin-memory', '--cfg-options',
        f'experiment_name=run-{uuid.uuid4().hex[:8]}'
    ])
    ckpt = osp.join(work, 'epoch_1.pth')
    meta = torch.load(ckpt, map_location='cpu', weights_only=False)['meta']
    meta_cfg = Config.fromstring(meta['cfg'], '.py')
    assert meta_cfg.model.head.classnames == H.DEMO_CLASSES
    os.remove(classes)  # another machine: the class file is not there
    dumped, = glob.glob(osp.join(work, 'cfg.py'))  # MMEngine's dump
    model = init_model(dumped, ckpt)
    assert list(model.head.classnames) == H.DEMO_CLASSES
    assert list(model.dataset_meta["classes"]) == H.DEMO_CLASSES
    x = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        probs = model.test_step(dict(inputs=[x[0]]))[0].pred_score
    assert probs.shape == (10, ) and np.isfinite(probs.numpy()).all()

# Copyright (c) mmcoop contributors. All rights reserved.
"""The "your own data" bases (CSV, COCO-style JSON) under the method config
of docs/get_started.md section 6: ``classnames={{_base_.classes}}`` parses
and gives the prompts the dataset's names, or says what to give."""
import os
import os.path as osp

import pytest
from mmengine.config import Config

from mmcoop.models.heads import resolve_classnames

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
BASE = osp.join(REPO, 'configs', '_base_')


def method_config(tmp_path, dataset_base):
    path = tmp_path / 'method.py'
    path.write_text(f"""_base_ = [
    {osp.join(BASE, 'models', 'positivecoop_clip-rn101.py')!r},
    {osp.join(BASE, 'datasets', dataset_base)!r},
]
model = dict(head=dict(classnames={{{{_base_.classes}}}}))
""")
    return Config.fromfile(str(path))


def test_csv_base_gives_the_head_its_class_file(tmp_path, monkeypatch):
    cfg = method_config(tmp_path, 'multilabel_csv_partial_448.py')
    inner = cfg.train_dataloader.dataset.dataset
    assert cfg.model.head.classnames == inner.classes
    os.makedirs(tmp_path / osp.dirname(inner.classes))
    (tmp_path / inner.classes).write_text('dog\ntraffic light\n')
    monkeypatch.chdir(tmp_path)
    assert resolve_classnames(cfg.model.head.classnames) == [
        'dog', 'traffic light'
    ]


def test_json_base_parses_and_asks_for_the_names(tmp_path):
    """Before: ``KeyError: 'classes'`` when the config was read."""
    cfg = method_config(tmp_path, 'multilabel_json_partial_448.py')
    assert cfg.model.head.classnames is None
    assert cfg.train_dataloader.dataset.dataset.classes is None
    with pytest.raises(ValueError, match=r"classnames is None: .* Fix: "
                       r"give them, e\.g\. model\.head\.classnames="):
        resolve_classnames(cfg.model.head.classnames)

# Copyright (c) mmcoop contributors. All rights reserved.
"""The NUS-WIDE 925/81 zero-shot vocabulary: the 925 seen tags derived from
a tag list in the form of the official ``TagList1k.txt``, and
``NUSWIDEMultiLabel(tags='925')`` on tag files in the official format."""
import os
import os.path as osp

import numpy as np
import pytest
from _builders import (build_nus_wide, build_nus_wide_tags, nus_tag_list,
                       write_text)

from mmcoop.datasets import AnnotationError, NUSWIDEMultiLabel
from mmcoop.datasets.categories import NUSWIDE_CONCEPTS
from mmcoop.datasets.unseen_splits import nuswide_925_seen
from mmcoop.models.heads import resolve_classnames

ROWS = {'Train': [('a\\1.jpg', (55, 75)), ('b\\2.jpg', ()), ('c\\3.jpg', ())],
        'Test': [('d\\4.jpg', (80, ))]}
TAGS = {'Train': [{'tag000', 'sky'}, {'tag924'}, set()],
        'Test': [{'tag001', 'tag002'}]}


def _tag_list(tmp_path, tags):
    return write_text(
        str(tmp_path / 'TagList1k.txt'), ''.join(t + '\r\n' for t in tags))


def test_925_seen_are_the_tags_that_are_no_concept(tmp_path):
    tags = nus_tag_list()
    assert len(tags) == len(set(tags)) == 1000
    seen = nuswide_925_seen(_tag_list(tmp_path, tags))
    # the generated tags, in file order; no concept name, no line end
    assert seen == tuple(f'tag{i:03d}' for i in range(925))
    concepts = write_text(
        str(tmp_path / 'Concepts81.txt'),
        ''.join(c + '\r\n' for c in NUSWIDE_CONCEPTS))
    assert nuswide_925_seen(_tag_list(tmp_path, tags), concepts) == seen


def test_925_count_is_checked(tmp_path):
    # a concept renamed: 926 others
    renamed = ['sky_' if t == 'sky' else t for t in nus_tag_list()]
    with pytest.raises(AnnotationError,
                       match=r'TagList1k.txt: 1000 tags, 74 of them concept '
                       r'names, 926 distinct.*Fix: use NUS_WID_Tags/'):
        nuswide_925_seen(_tag_list(tmp_path, renamed))
    # a tag missing: 924
    with pytest.raises(AnnotationError, match=r'999 tags, 75 of them'):
        nuswide_925_seen(_tag_list(tmp_path, nus_tag_list()[1:]))
    # a repeated tag: named with the file (the class-list check)
    repeated = nus_tag_list()
    repeated[0] = repeated[1]
    tag = repeated[1]
    with pytest.raises(ValueError, match=r"TagList1k\.txt' \(classes\) has "
                       rf"duplicates: \[\['{tag}', '{tag}'\]\]"):
        nuswide_925_seen(_tag_list(tmp_path, repeated))
    with pytest.raises(FileNotFoundError,
                       match=r'nope.txt.*Fix: unpack NUS_WID_Tags.zip'):
        nuswide_925_seen(str(tmp_path / 'nope.txt'))


def _root(tmp_path):
    root = build_nus_wide(
        tmp_path / 'nus', splits=ROWS, concepts=NUSWIDE_CONCEPTS)
    build_nus_wide_tags(root, TAGS)
    return root


def test_dataset_with_the_925_seen_tags(tmp_path):
    root = _root(tmp_path)
    seen = tuple(f'tag{i:03d}' for i in range(925))
    ds = NUSWIDEMultiLabel(root, tags='925')
    assert ds.CLASSES == NUSWIDE_CONCEPTS + seen and len(ds.CLASSES) == 1006
    # image 1: sky, water and the tags tag000 (sky is a concept: its tag
    # column is not a class); image 2: only tag924, kept; image 3: dropped
    assert [ds.get_data_info(i)['gt_label'] for i in range(len(ds))] == [
        [55, 75, 81], [81 + 924]]
    assert ds.num_dropped == 1
    test = NUSWIDEMultiLabel(root, split='test', tags='925', test_mode=True)
    assert test.get_data_info(0)['gt_label'] == [80, 82, 83]
    # the classes without reading labels: for model.head.classnames
    assert NUSWIDEMultiLabel.class_names(root, tags='925') == ds.CLASSES
    assert resolve_classnames(
        dict(type='NUSWIDEMultiLabel', data_root=root,
             tags='925')) == list(ds.CLASSES)
    assert NUSWIDEMultiLabel.class_names(root) == NUSWIDE_CONCEPTS
    # without tags nothing of NUS_WID_Tags is read
    assert len(NUSWIDEMultiLabel(root).CLASSES) == 81
    with pytest.raises(ValueError, match="tags must be one of"):
        NUSWIDEMultiLabel(root, tags='1k')
    with pytest.raises(AnnotationError, match=r'81 concepts and 925 seen'):
        NUSWIDEMultiLabel(root, tags='925', classes=list(NUSWIDE_CONCEPTS))


def test_tag_file_errors(tmp_path):
    root = _root(tmp_path)
    path = osp.join(root, 'NUS_WID_Tags', 'Train_Tags1k.dat')
    with open(path, newline='') as f:
        lines = f.read().splitlines(keepends=True)
    write_text(path, ''.join(lines[:2]))
    with pytest.raises(AnnotationError,
                       match=r'Train_Tags1k.dat: 2 lines.*3 images'):
        NUSWIDEMultiLabel(root, tags='925')
    write_text(path, lines[0] + lines[1][2:] + lines[2])  # 999 values
    with pytest.raises(AnnotationError, match=r'line 2 is not 1000 values'):
        NUSWIDEMultiLabel(root, tags='925')
    write_text(path, lines[0] + '2' + lines[1][1:] + lines[2])
    with pytest.raises(AnnotationError, match=r'line 2 is not 1000 values'):
        NUSWIDEMultiLabel(root, tags='925')
    # one value moved from line 1 to line 2: the line count and the total
    # are right (before: read, every tag of both images shifted)
    write_text(path, lines[0][2:] + '0\t' + lines[1] + lines[2])
    with pytest.raises(AnnotationError, match=r'line 1 is not 1000 values'):
        NUSWIDEMultiLabel(root, tags='925')
    write_text(path, ''.join(v.replace('\n', '\r') for v in lines))
    ds = NUSWIDEMultiLabel(root, tags='925')  # lone \r line ends: read
    assert ds.get_data_info(1)['gt_label'] == [81 + 924]
    os.remove(path)
    with pytest.raises(FileNotFoundError,
                       match=r'Train_Tags1k.dat.*Fix: unpack NUS_WID_Tags'):
        NUSWIDEMultiLabel(root, tags='925')


def test_tag_matrix_is_parsed_in_bulk(tmp_path):
    """The fast path equals a line-by-line reading on random rows."""
    root = _root(tmp_path)
    rng = np.random.default_rng(0)
    tags = nus_tag_list()
    rows = [set(np.array(tags)[rng.random(1000) < 0.01]) for _ in range(3)]
    build_nus_wide_tags(root, {'Train': rows})
    ds = NUSWIDEMultiLabel(root, tags='925', empty='keep')
    col = {t: 81 + i for i, t in enumerate(f'tag{i:03d}' for i in range(925))}
    concept = {0: [55, 75], 1: [], 2: []}
    for i, row in enumerate(rows):
        assert ds.get_data_info(i)['gt_label'] == concept[i] + sorted(
            col[t] for t in row if t in col)


def test_resolve_classnames_dict_errors():
    with pytest.raises(ValueError, match=r'a dict must name .*class_names'):
        resolve_classnames(dict(type='COCO2014MultiLabel'))
    with pytest.raises(ValueError, match=r'a dict must name'):
        resolve_classnames(dict(data_root='x'))


def test_zero_shot_config_feeds_one_train_step(tmp_path):
    """The NUS-WIDE 925/81 config's training set (81 hidden, 925 tags) and
    head options on the demo-sized model: one step, only tags are known."""
    import torch
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmengine.optim import OptimWrapper

    from mmcoop.models.backbones import register_mmcoop_clip_configs
    from mmcoop.registry import DATASETS, MODELS
    from mmcoop.utils import register_all_modules
    register_all_modules()
    register_mmcoop_clip_configs()
    repo = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    cfg = Config.fromfile(
        osp.join(repo, 'configs', 'zero_shot',
                 'dualcoop-shared_clip-rn101_nuswide-925-81.py'))
    demo = Config.fromfile(
        osp.join(repo, 'configs', 'demo', 'positivecoop_clip-tiny-vit_'
                 '1xb16-coslr-20e_demo-shapes-p50.py'))
    root = _root(tmp_path)
    train = cfg.train_dataloader.dataset
    train.dataset.update(data_root=root, pipeline=demo.train_pipeline)
    dataset = DATASETS.build(train)
    model_cfg = demo.model
    model_cfg.head.classnames = list(dataset.metainfo['classes'])
    model_cfg.head.class_subset = cfg.model.head.class_subset
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    trainable = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trainable]
    optim = OptimWrapper(torch.optim.SGD(trainable, lr=0.5))
    batch = pseudo_collate([dataset[i] for i in range(len(dataset))])
    targets = torch.stack([s.gt_score for s in batch['data_samples']])
    assert targets.shape == (2, 1006)
    assert (targets[:, :81] == -1).all() and (targets[:, 81:] >= 0).all()
    model.train()
    log = model.train_step(batch, optim)
    assert torch.isfinite(log['loss']) and log['loss'] > 0
    assert any(not torch.equal(a, p.detach())
               for a, p in zip(before, trainable))

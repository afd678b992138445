# Copyright (c) mmcoop contributors. All rights reserved.
import json
import os
import os.path as osp

import numpy as np
import pytest
from _common import tree_listing
from PIL import Image, ImageDraw

from mmcoop.datasets import COCO2014MultiLabel
from mmcoop.demo import (DEMO_SHAPES, MANIFEST, chance_level_map,
                         chance_level_map_from_targets, demo_classes,
                         generate_demo_coco)
from mmcoop.demo.__main__ import main

KW = dict(num_train=24, num_val=12, image_size=64, seed=0)


@pytest.fixture(scope='module')
def demo_root(tmp_path_factory):
    return generate_demo_coco(str(tmp_path_factory.mktemp('d') / 'demo'), **KW)


def test_layout_and_coco_format(demo_root):
    assert sorted(os.listdir(demo_root)) == [
        'annotations', MANIFEST, 'train2014', 'val2014'
    ]
    for split, n, first in (('train', 24, 1), ('val', 12, 25)):
        with open(
                osp.join(demo_root, 'annotations',
                         f'instances_{split}2014.json')) as f:
            data = json.load(f)
        assert {'info', 'licenses', 'images', 'annotations',
                'categories'} <= set(data)
        assert [c['name'] for c in data['categories']] == demo_classes(10)
        assert [c['id'] for c in data['categories']] == list(range(1, 11))
        assert len(data['images']) == n
        assert data['images'][0]['file_name'] == \
            f'COCO_{split}2014_{first:012d}.jpg'
        files = sorted(os.listdir(osp.join(demo_root, f'{split}2014')))
        assert files == sorted(i['file_name'] for i in data['images'])
        img = Image.open(osp.join(demo_root, f'{split}2014', files[0]))
        assert img.format == 'JPEG' and img.size == (64, 64)
        assert img.mode == 'RGB'
        for a in data['annotations']:
            assert {
                'id', 'image_id', 'category_id', 'bbox', 'area', 'iscrowd',
                'segmentation'
            } <= set(a)
            x, y, w, h = a['bbox']
            assert 0 <= x and 0 <= y and x + w <= 64.01 and y + h <= 64.01
            assert 0 < a['area'] <= w * h + 1e-6 + 4 * (w + h)
            assert a['iscrowd'] == 0 and len(a['segmentation'][0]) >= 6
        per_image = {}
        for a in data['annotations']:
            per_image.setdefault(a['image_id'], set()).add(a['category_id'])
        # several objects per image on average
        assert np.mean([len(v) for v in per_image.values()]) > 1.3


def test_readable_by_coco_dataset(demo_root):
    ds = COCO2014MultiLabel(demo_root, split='train')
    assert ds.CLASSES == tuple(demo_classes(10))
    assert 20 <= len(ds) <= 24  # images without objects are dropped
    info = ds.get_data_info(0)
    assert osp.isfile(info['img_path'])
    assert info['gt_score'].shape == (10, ) and info['gt_score'].sum() >= 1


def test_deterministic_and_idempotent(demo_root, tmp_path):
    other = generate_demo_coco(str(tmp_path / 'again'), **KW)
    a = [(p, s) for p, s, _ in tree_listing(demo_root)]
    b = [(p, s) for p, s, _ in tree_listing(other)]
    assert a == b
    for rel, _ in a:
        with open(osp.join(demo_root, rel), 'rb') as f1, \
                open(osp.join(other, rel), 'rb') as f2:
            assert f1.read() == f2.read(), rel
    # a finished tree is reused as is
    before = tree_listing(other)
    assert generate_demo_coco(other, **KW) == other
    assert tree_listing(other) == before
    # another seed gives other images
    third = generate_demo_coco(str(tmp_path / 's1'), **dict(KW, seed=1))
    with open(osp.join(third, 'annotations', 'instances_val2014.json')) as f:
        with open(
                osp.join(demo_root, 'annotations',
                         'instances_val2014.json')) as g:
            assert f.read() != g.read()


def test_damaged_own_tree_is_rebuilt(tmp_path):
    root = generate_demo_coco(str(tmp_path / 'demo'), **KW)
    reference = [(p, s) for p, s, _ in tree_listing(root)]
    # files missing, everything else as written: rebuilt identically
    os.remove(osp.join(root, 'train2014', 'COCO_train2014_000000000003.jpg'))
    os.remove(osp.join(root, 'annotations', 'instances_val2014.json'))
    generate_demo_coco(root, **KW)
    assert [(p, s) for p, s, _ in tree_listing(root)] == reference
    assert not [f for f in os.listdir(tmp_path) if f.startswith('.')]
    # the manifest lists every file it wrote, with its size
    with open(osp.join(root, MANIFEST)) as f:
        listed = json.load(f)['files']
    assert sorted(listed.items()) == [(p.replace(os.sep, '/'), s)
                                      for p, s in reference if p != MANIFEST]


@pytest.mark.parametrize('kill_at', [0, 1, 2, 3])
def test_rebuild_killed_while_removing_the_damaged_tree(
        tmp_path, monkeypatch, kill_at):
    """A run killed at any folder removal of a damaged tree leaves
    something the next run still rebuilds (before: bare folders without a
    manifest, refused for ever as not the generator's)."""
    from mmcoop.demo import shapes
    kw = dict(num_train=3, num_val=2, image_size=32, seed=0)
    root = generate_demo_coco(str(tmp_path / 'demo'), **kw)
    reference = [(p, s) for p, s, _ in tree_listing(root)]
    os.remove(osp.join(root, 'annotations', 'instances_val2014.json'))
    calls, rmdir = [], os.rmdir

    def killed(path):
        calls.append(path)
        if len(calls) > kill_at:
            raise KeyboardInterrupt
        rmdir(path)

    monkeypatch.setattr(shapes.os, 'rmdir', killed)
    with pytest.raises(KeyboardInterrupt):
        generate_demo_coco(root, **kw)
    monkeypatch.undo()
    generate_demo_coco(root, **kw)
    assert [(p, s) for p, s, _ in tree_listing(root)] == reference


@pytest.mark.parametrize('change', ['extra file', 'extra folder', 'changed',
                                    'no manifest'])
def test_never_deletes_what_it_did_not_write(tmp_path, change):
    root = generate_demo_coco(str(tmp_path / 'demo'), **KW)
    os.remove(osp.join(root, 'val2014', 'COCO_val2014_000000000025.jpg'))
    if change == 'extra file':
        (tmp_path / 'demo' / 'train2014' / 'mine.jpg').write_bytes(b'mine')
    elif change == 'extra folder':
        (tmp_path / 'demo' / 'results').mkdir()
    elif change == 'changed':
        with open(osp.join(root, 'annotations', 'instances_train2014.json'),
                  'a') as f:
            f.write(' ')
    else:
        os.remove(osp.join(root, MANIFEST))
    before = tree_listing(root)
    with pytest.raises(FileExistsError) as e:
        generate_demo_coco(root, **KW)
    assert root in str(e.value) and 'Fix:' in str(e.value)
    assert {'extra file': 'train2014/mine.jpg', 'extra folder': 'results/',
            'changed': 'instances_train2014.json (changed',
            'no manifest': f'has no {MANIFEST}'}[change] in str(e.value)
    assert tree_listing(root) == before  # nothing deleted or rewritten


def test_refuses_foreign_or_different_trees(tmp_path):
    foreign = tmp_path / 'mine'
    (foreign / 'annotations').mkdir(parents=True)  # a demo-like name
    (foreign / 'annotations' / 'notes.txt').write_text('keep me')
    with pytest.raises(FileExistsError, match='not written by the demo'):
        generate_demo_coco(str(foreign), **KW)
    assert (foreign / 'annotations' / 'notes.txt').read_text() == 'keep me'
    root = generate_demo_coco(str(tmp_path / 'demo'), **KW)
    with pytest.raises(FileExistsError, match='other parameters'):
        generate_demo_coco(root, **dict(KW, num_val=13))
    with pytest.raises(ValueError, match='num_classes'):
        generate_demo_coco(str(tmp_path / 'x'), num_classes=7)
    # an empty folder is used
    (tmp_path / 'empty').mkdir()
    assert generate_demo_coco(str(tmp_path / 'empty'), **KW)


def test_areas_match_the_drawn_shapes(tmp_path):
    """The COCO area (from the outline, not a raster) agrees with the
    pixels of the shape drawn alone (large images: small raster error)."""
    from mmcoop.demo.shapes import _draw_shape
    size = 256
    demo_root = generate_demo_coco(
        str(tmp_path / 'big'), num_train=12, num_val=1, image_size=size)
    with open(osp.join(demo_root, 'annotations',
                       'instances_train2014.json')) as f:
        data = json.load(f)
    rel = []
    for a in data['annotations']:
        name = DEMO_SHAPES[a['category_id'] - 1][2]
        seg = a['segmentation'][0]
        poly = list(zip(seg[::2], seg[1::2]))
        xs, ys = seg[::2], seg[1::2]
        if name in ('circle', 'ring'):  # the outline is a 32-gon
            cx, cy = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
            r = (max(xs) - min(xs)) / 2
        else:
            cx = cy = r = 0.
        mask = Image.new('L', (size, size), 0)
        _draw_shape(ImageDraw.Draw(mask), name, poly, cx, cy, r, 255)
        pixels = (np.asarray(mask) > 0).sum()
        if name in ('circle', 'ring') and min(min(xs), min(ys)) <= 0.5:
            continue  # clipped at the border: centre/radius not recoverable
        rel.append(abs(a['area'] - pixels) / pixels)
    assert len(rel) > 15
    assert np.median(rel) < 0.05 and max(rel) < 0.12, sorted(rel)[-5:]


def test_class_names_are_plain_words():
    names = demo_classes(12)
    assert len(set(names)) == 12 == len(DEMO_SHAPES)
    assert all(n.replace(' ', '').isalpha() and n == n.lower() for n in names)
    assert len({c for _, c, _ in DEMO_SHAPES}) == 12  # distinct colours


def test_chance_level_map():
    # one positive among N: E[AP] = H_N / N (harmonic number)
    n = 4
    targets = np.zeros((n, 1), np.int8)
    targets[0] = 1
    expected = 100 * sum(1 / k for k in range(1, n + 1)) / n  # 52.08
    got = chance_level_map_from_targets(targets, num_draws=4000, seed=0)
    assert got == pytest.approx(expected, abs=1.0)
    # fully positive class: AP is always 1
    assert chance_level_map_from_targets(
        np.ones((5, 2), np.int8), num_draws=3) == pytest.approx(100.)


def test_chance_level_of_demo_and_cli(demo_root, capsys):
    chance = chance_level_map(demo_root, 'val', num_draws=50, seed=0)
    assert chance == chance_level_map(demo_root, 'val', num_draws=50, seed=0)
    ds = COCO2014MultiLabel(demo_root, split='val')
    prevalence = np.stack(
        [ds.get_data_info(i)['gt_score'] for i in range(len(ds))]).mean(0)
    # random-score AP is a bit above the class prevalence on small sets
    assert prevalence.mean() * 100 < chance < prevalence.mean() * 100 + 25
    out = main([
        demo_root, '--num-train', '24', '--num-val', '12', '--image-size',
        '64', '--num-draws', '50'
    ])
    assert out['chance_map'] == pytest.approx(chance)
    printed = capsys.readouterr().out
    assert 'red circle' in printed and f'{chance:.2f}' in printed


def test_tree_of_an_older_version_without_file_list(tmp_path):
    root = generate_demo_coco(str(tmp_path / 'demo'), **KW)
    path = osp.join(root, MANIFEST)
    with open(path) as f:
        manifest = json.load(f)
    del manifest['files']
    with open(path, 'w') as f:
        json.dump(manifest, f)
    before = tree_listing(root)
    assert generate_demo_coco(root, **KW) == root  # complete: reused
    assert tree_listing(root) == before
    os.remove(osp.join(root, 'val2014', 'COCO_val2014_000000000025.jpg'))
    before = tree_listing(root)
    with pytest.raises(FileExistsError, match='older mmcoop'):
        generate_demo_coco(root, **KW)  # cannot tell: nothing deleted
    assert tree_listing(root) == before


def test_demo_data_in_a_read_only_folder_names_the_fix(tmp_path, monkeypatch):
    """The demo's data tree under a folder that cannot be written (the
    default ``data/`` of a read-only current folder): the error names the
    tree and the fix. Before: a bare ``OSError`` on ``<cwd>/data``."""
    import errno
    import os

    from mmcoop.demo.shapes import generate_demo_coco
    makedirs = os.makedirs

    def read_only(path, *args, **kwargs):
        if str(path).startswith(str(tmp_path)) and not os.path.isdir(path):
            raise OSError(errno.EROFS, 'Read-only file system', str(path))
        return makedirs(path, *args, **kwargs)

    monkeypatch.setattr(os, 'makedirs', read_only)
    root = str(tmp_path / 'data' / 'mmcoop_demo_shapes')
    with pytest.raises(OSError) as err:
        generate_demo_coco(root, num_train=2, num_val=2)
    msg = str(err.value)
    assert err.value.errno == errno.EROFS
    assert f'Cannot write the demo data {root}' in msg
    assert 'Fix: run from a writable folder, or set `data_root`' in msg
    assert os.listdir(tmp_path) == []

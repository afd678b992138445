# Copyright (c) mmcoop contributors. All rights reserved.
"""Partial-label mask files (mmcoop's own and external formats) and the
held-out validation split file of the clean protocol."""
import json
import os
import os.path as osp

import numpy as np
import pytest
from _builders import coco_cfg

from mmcoop.datasets import PartialLabelDataset
from mmcoop.datasets.held_out_split import (draw_held_out_keys, held_out_split,
                                            image_keys)


# ------------------------------------------------------------ mask files
def test_mask_file_round_trip_all_formats(coco_root, tmp_path):
    drawn = PartialLabelDataset(coco_cfg(coco_root), 0.5, seed=3)
    mask, targets = drawn.known_mask, drawn.complete_targets
    path = str(tmp_path / 'own.npy')
    assert drawn.save_mask(path)
    own = PartialLabelDataset(coco_cfg(coco_root), 0.5, mask_file=path)
    assert np.array_equal(own.known_mask, mask)
    # the same mask as {0, 1} ints and as official partial targets
    # (1 / 0 known, -1 unknown)
    np.save(tmp_path / 'ints.npy', mask.astype(np.int64))
    np.save(tmp_path / 'tri.npy', np.where(mask, targets, -1).astype(float))
    # keyed by image file name, rows in another order
    keys = image_keys(drawn.dataset)
    order = np.arange(len(keys))[::-1]
    np.savez(tmp_path / 'keyed.npz', mask=mask[order],
             keys=np.array(keys)[order])
    for name in ('ints.npy', 'tri.npy', 'keyed.npz'):
        ds = PartialLabelDataset(
            coco_cfg(coco_root), 0.5, mask_file=str(tmp_path / name))
        assert np.array_equal(ds.known_mask, mask), name
        # the training targets follow: unknown -> -1
        row = ds.get_data_info(0)['gt_score']
        assert np.array_equal(row, np.where(mask[0], targets[0], -1))


def test_mask_file_errors_name_file_and_field(coco_root, tmp_path):
    drawn = PartialLabelDataset(coco_cfg(coco_root), 0.5, seed=3)
    mask, targets = drawn.known_mask, drawn.complete_targets
    wrong = np.where(mask, targets, -1)
    i, c = np.argwhere(mask)[0]  # the first known label, flipped
    wrong[i, c] = 1 - targets[i, c]
    np.save(tmp_path / 'tri.npy', wrong)
    with pytest.raises(ValueError) as e:
        PartialLabelDataset(
            coco_cfg(coco_root), 0.5, mask_file=str(tmp_path / 'tri.npy'))
    assert 'tri.npy' in str(e.value)
    assert f'row {i}, class {c}' in str(e.value)
    # the label matrix itself (= partial targets at p = 1, no -1) is not a
    # known-mask: read as one it would hide every negative
    np.save(tmp_path / 'labels.npy', targets.astype(np.int64))
    with pytest.raises(ValueError, match=r"labels.npy.*dataset's labels.*"
                       r'hide every negative.*-1 for the unknown'):
        PartialLabelDataset(
            coco_cfg(coco_root), 1.0, mask_file=str(tmp_path / 'labels.npy'))
    np.save(tmp_path / 'all.npy', np.ones_like(mask))
    assert PartialLabelDataset(coco_cfg(coco_root), 1.0, mask_file=str(
        tmp_path / 'all.npy')).known_mask.all()
    np.savez(tmp_path / 'nomask.npz', known=mask)
    with pytest.raises(ValueError, match=r'nomask.npz.*field "mask"'):
        PartialLabelDataset(
            coco_cfg(coco_root), 0.5, mask_file=str(tmp_path / 'nomask.npz'))
    np.savez(tmp_path / 'keys.npz', mask=mask,
             keys=np.array(['a.jpg'] * len(mask)))
    with pytest.raises(ValueError, match=r'keys.npz.*field "keys"'):
        PartialLabelDataset(
            coco_cfg(coco_root), 0.5, mask_file=str(tmp_path / 'keys.npz'))


# ------------------------------------------------------- held-out split
def test_draw_held_out_keys_is_order_free_and_seeded():
    keys = [f'{i:03d}.jpg' for i in range(20)]
    a = draw_held_out_keys(keys, 0.25, seed=0)
    assert len(a) == 5 and a == sorted(a) and set(a) <= set(keys)
    assert draw_held_out_keys(keys[::-1], 0.25, seed=0) == a
    assert draw_held_out_keys(keys, 0.25, seed=1) != a
    # at least one image held out, at least one kept
    assert len(draw_held_out_keys(keys[:2], 0.01, 0)) == 1
    assert len(draw_held_out_keys(keys[:2], 0.99, 0)) == 1


def test_held_out_split_file_shared_and_checked(coco_root, tmp_path):
    split_file = str(tmp_path / 'splits' / 'coco.json')
    kw = dict(split_file=split_file, val_fraction=0.5, seed=0)
    val = held_out_split(coco_cfg(coco_root, test_mode=True), part='val',
                         **kw)
    assert osp.isfile(split_file)
    mtime = os.stat(split_file).st_mtime_ns
    train = held_out_split(coco_cfg(coco_root), part='train', **kw)
    names = lambda ds: {osp.basename(ds.get_data_info(i)['img_path'])  # noqa
                        for i in range(len(ds))}
    with open(split_file) as f:
        record = json.load(f)
    assert names(val) == set(record['val'])
    assert names(train).isdisjoint(names(val))
    assert len(train) + len(val) == record['num_images']
    assert type(train).__name__ == 'COCO2014MultiLabel'  # a real subset
    assert os.stat(split_file).st_mtime_ns == mtime  # read, not rewritten
    # the partial-label wrapper draws its mask on the train part only
    wrapped = PartialLabelDataset(
        dict(type='HeldOutSplit', dataset=coco_cfg(coco_root), part='train',
             **kw), 0.5)
    assert len(wrapped) == len(train)
    # a split made with other arguments is refused, naming the field
    with pytest.raises(ValueError, match=r'coco.json.*"seed" is 0'):
        held_out_split(coco_cfg(coco_root), split_file, 'train', 0.5, seed=1)
    kept = record['val']
    record['val'] = ['nope.jpg']
    with open(split_file, 'w') as f:
        json.dump(record, f)
    with pytest.raises(ValueError, match=r'field "val".*nope.jpg'):
        held_out_split(coco_cfg(coco_root), part='train', **kw)
    # fewer held-out images than its val_fraction holds out: edited (the
    # runs of one table would select on other images)
    record['val'] = kept[:1]
    with open(split_file, 'w') as f:
        json.dump(record, f)
    with pytest.raises(ValueError, match=r'"val" holds 1 distinct image.*'
                       r'holds out 2: the file was edited'):
        held_out_split(coco_cfg(coco_root), part='train', **kw)


def _edit_split(split_file, **fields):
    with open(split_file) as f:
        record = json.load(f)
    record.update(fields)
    with open(split_file, 'w') as f:
        json.dump(record, f)


def test_split_file_val_must_leave_both_parts(coco_root, tmp_path):
    split_file = str(tmp_path / 'split.json')
    kw = dict(split_file=split_file, val_fraction=0.5, seed=0)
    held_out_split(coco_cfg(coco_root), part='val', **kw)
    with open(split_file) as f:
        val = json.load(f)['val']
    keys = image_keys(held_out_split(coco_cfg(coco_root), part='train', **kw))
    everything = sorted(set(keys) | set(val))
    for edited, pattern in [
        ([], r'"val" holds 0 of the 4 images.*validation part would be '
         'empty'),
        (everything, r'"val" holds 4 of the 4 images.*training part would '
         'be empty'),
        ([[val[0]]], r'"val"\[0\] is \[.*non-empty string'),
        ([val[0], ''], r'"val"\[1\] is \'\''),
        ([val[0], val[0]], r'"val" lists \[.*more than once'),
    ]:
        _edit_split(split_file, val=edited)
        for part in ('train', 'val'):
            with pytest.raises(ValueError, match=pattern) as e:
                held_out_split(coco_cfg(coco_root), part=part, **kw)
            assert 'split.json' in str(e.value) and 'Fix' in str(e.value)
        with open(split_file) as f:  # never rewritten
            assert json.load(f)['val'] == edited


@pytest.mark.parametrize('fraction', ['0.2', True, None, float('nan'), 1.0,
                                      0, [0.2]])
def test_val_fraction_must_be_a_number(coco_root, tmp_path, fraction):
    split_file = str(tmp_path / 'split.json')
    with pytest.raises(ValueError, match=r'val_fraction must be a number in '
                       r'\(0, 1\)'):
        held_out_split(coco_cfg(coco_root), split_file, 'train', fraction)
    assert not osp.exists(split_file)
    with pytest.raises(ValueError, match='val_fraction must be a number'):
        draw_held_out_keys(['a.jpg', 'b.jpg'], fraction, 0)
    # also when the split file exists (was: '0.2' accepted there)
    held_out_split(coco_cfg(coco_root), split_file, 'train', 0.2)
    with pytest.raises(ValueError, match='val_fraction must be a number'):
        held_out_split(coco_cfg(coco_root), split_file, 'train', fraction)


def test_val_fraction_and_seed_numpy_scalars(coco_root, tmp_path):
    split_file = str(tmp_path / 'split.json')
    a = held_out_split(coco_cfg(coco_root), split_file, 'val',
                       np.float32(0.5), np.int64(3))
    b = held_out_split(coco_cfg(coco_root), split_file, 'val', 0.5, 3)
    assert image_keys(a) == image_keys(b) and len(a) == 2
    with pytest.raises(ValueError,
                       match=r"HeldOutSplit: seed must be an int >= 0, "
                       r"got '3'"):
        held_out_split(coco_cfg(coco_root), split_file, 'val', 0.5, '3')


def test_split_file_inside_the_dataset_is_refused(coco_root, tmp_path,
                                                  monkeypatch):
    from _builders import build_csv
    from _common import tree_listing
    before = tree_listing(coco_root)
    with pytest.raises(ValueError, match='never writes into a dataset tree') \
            as e:
        held_out_split(coco_cfg(coco_root),
                       osp.join(coco_root, 'annotations', 's.json'), 'train')
    # the example is a split-file path, not a mask path
    assert "'work_dirs/splits/" in str(e.value)
    assert 'mask.npy' not in str(e.value)
    assert tree_listing(coco_root) == before
    # a relative ann_file: the working directory is the dataset folder
    root = str(tmp_path / 'table')
    build_csv(root)
    before = tree_listing(root)
    monkeypatch.chdir(root)
    cfg = dict(type='MultiLabelCSVDataset', ann_file='train.csv',
               data_prefix='img')
    for path in ('s.json', osp.join('splits', 's.json')):
        with pytest.raises(ValueError, match=r'dataset tree'):
            held_out_split(cfg, path, 'train', 0.5)
    assert tree_listing(root) == before


def test_repeated_file_names_are_named_with_the_fix():
    """Images are keyed by file name: two folders with one name cannot be
    split (before: the names only, no file and no fix)."""
    from mmcoop.datasets.held_out_split import image_keys

    class Table:
        paths = ['a/x.jpg', 'b/x.jpg', 'a/y.jpg']

        def __len__(self):
            return len(self.paths)

        def get_data_info(self, i):
            return dict(img_path=self.paths[i])

    with pytest.raises(ValueError, match=r"Table: image file names are not "
                       r"unique \(1 repeated, e.g. 'x\.jpg': \['a/x\.jpg', "
                       r"'b/x\.jpg'\]\).*Fix: give the images unique file "
                       r"names.*protocol=dict\(name='official'\)"):
        image_keys(Table())


def test_a_held_out_part_that_cannot_rank_the_model_is_warned(
        coco_root, tmp_path, mm_log):
    """One held-out image: no class has both a positive and a negative, so
    the validation mAP is the same at every epoch and 'best' is epoch 1.
    Before: nothing said (only per-class warnings in the run's log)."""
    kw = dict(split_file=str(tmp_path / 'one.json'), seed=0)
    held_out_split(coco_cfg(coco_root, test_mode=True), part='val',
                   val_fraction=0.1, **kw)
    assert 'no class of the 1 held-out image(s) has both a positive and ' \
        'a known negative' in mm_log.getvalue()
    assert 'a larger val_fraction' in mm_log.getvalue()
    mm_log.truncate(0)
    mm_log.seek(0)
    held_out_split(coco_cfg(coco_root), part='train', val_fraction=0.1,
                   **kw)  # the train part is not judged
    assert 'held-out image' not in mm_log.getvalue()


def _read_only_below(monkeypatch, folder):
    """Writes below ``folder`` fail as on read-only storage (``EROFS``),
    whoever runs the test (root ignores file permissions)."""
    import builtins
    import errno

    from mmcoop.utils import checkpoint
    folder = osp.abspath(str(folder))

    def denied(path):
        return osp.abspath(str(path)).startswith(folder + os.sep)

    def fake_open(path, *args, **kwargs):
        if denied(path) and args and 'w' in args[0]:
            raise OSError(errno.EROFS, 'Read-only file system', str(path))
        return builtins.open(path, *args, **kwargs)

    makedirs = os.makedirs

    def fake_makedirs(path, *args, **kwargs):
        if denied(path) and not osp.isdir(path):
            raise OSError(errno.EROFS, 'Read-only file system', str(path))
        return makedirs(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, 'open', fake_open, raising=False)
    monkeypatch.setattr(os, 'makedirs', fake_makedirs)


def test_files_on_read_only_storage_are_named_with_their_option(
        coco_root, tmp_path, monkeypatch):
    """A held-out split file or a mask file that cannot be written (a
    read-only folder): the error names the file (not its temporary name),
    its folder and the option to change. Before: a bare ``OSError`` naming
    ``.mask.npy.tmp-<pid>`` or the folder only."""
    ro = tmp_path / 'ro'
    ro.mkdir()
    _read_only_below(monkeypatch, ro)
    split_file = str(ro / 'splits' / 'coco.json')
    with pytest.raises(OSError) as err:
        held_out_split(coco_cfg(coco_root), part='train',
                       split_file=split_file, val_fraction=0.5, seed=0)
    msg = str(err.value)
    assert f'Cannot write {split_file}' in msg and 'read-only' in msg
    assert '`protocol.split_file`' in msg and '.tmp-' not in msg
    mask_file = str(ro / 'mask.npy')
    with pytest.raises(OSError) as err:
        PartialLabelDataset(coco_cfg(coco_root), 0.5, mask_file=mask_file)
    msg = str(err.value)
    assert f'Cannot write {mask_file}: its folder {ro} is on read-only' in \
        msg
    assert '(`mask_file`' in msg and '.tmp-' not in msg
    assert os.listdir(ro) == []

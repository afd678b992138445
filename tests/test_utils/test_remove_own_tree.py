# Copyright (c) mmcoop contributors. All rights reserved.
"""Trees a tool marks as its own with a manifest (the feature cache, the
demo dataset) are deleted with the manifest last
(:func:`mmcoop.utils.paths.remove_own_tree`): a kill midway leaves a tree
the next run still recognises, never files without their manifest that it
must refuse as someone else's."""
import os
import os.path as osp

import numpy as np
import pytest


def _fake_cache(folder, shards=8):
    """A feature-cache folder: shard files and a manifest (the marker,
    written last as by a build)."""
    from mmcoop.datasets.feature_cache.store import MANIFEST
    os.makedirs(folder)
    for k in range(shards):
        np.save(osp.join(folder, f'v0_s{k:05d}.npy'), np.zeros(2))
    with open(osp.join(folder, MANIFEST), 'w') as f:
        f.write('{"format": "mmcoop-feature-cache"}')
    return folder


def test_cache_removal_killed_after_its_manifest(tmp_path, monkeypatch):
    """A kill right after the manifest is deleted: before, shards were left
    without it (the order of shutil.rmtree), and every later run refused
    the folder as 'foreign' until it was deleted by hand."""
    from mmcoop.datasets.feature_cache.store import (MANIFEST, check_cache,
                                                     remove_cache)
    cache = _fake_cache(str(tmp_path / 'cache'))

    def killed_after_manifest(delete):
        def wrapped(path, *args, **kwargs):
            delete(path, *args, **kwargs)
            if osp.basename(str(path)) == MANIFEST:
                raise KeyboardInterrupt
        return wrapped

    monkeypatch.setattr(os, 'unlink', killed_after_manifest(os.unlink))
    monkeypatch.setattr(os, 'remove', killed_after_manifest(os.remove))
    with pytest.raises(KeyboardInterrupt):
        remove_cache(cache)
    monkeypatch.undo()
    status, why, _ = check_cache(cache, {}, [], 'quick')
    assert status == 'missing', why  # an empty folder: rebuilt


def test_remove_own_tree_keeps_what_it_does_not_list(tmp_path):
    from mmcoop.utils.paths import remove_own_tree
    root = tmp_path / 'tree'
    (root / 'a').mkdir(parents=True)
    (root / 'a' / 'x.txt').write_text('x')
    (root / 'a' / 'mine.txt').write_text('not listed')
    (root / 'manifest.json').write_text('{}')
    with pytest.raises(OSError):
        remove_own_tree(str(root), ['a/x.txt'], 'manifest.json')
    # the unlisted file and the marker are still there
    assert sorted(p.name for p in root.rglob('*')) == [
        'a', 'manifest.json', 'mine.txt']
    os.remove(root / 'a' / 'mine.txt')
    remove_own_tree(str(root), ['a/x.txt'], 'manifest.json')
    assert not root.exists()

# Copyright (c) mmcoop contributors. All rights reserved.
"""The output-file policy of every tool and ``~`` expansion."""
import os

import pytest
import torch

from mmcoop.utils.paths import (OutputPathError, claim_outputs, expand_user,
                                make_output_dirs)


def test_claim_outputs(tmp_path):
    a, b = tmp_path / 'in' / 'a.jpg', tmp_path / 'other' / 'a.png'
    # missing folders are created, nothing is written
    outs = [str(tmp_path / 'new' / 'deep' / 'a.png')]
    assert claim_outputs(outs) == outs
    assert (tmp_path / 'new' / 'deep').is_dir()
    assert os.listdir(tmp_path / 'new' / 'deep') == []
    # two inputs mapping to one output, named (also through '..')
    same = [str(tmp_path / 'v' / 'a.png'), str(tmp_path / 'v/../v/a.png')]
    with pytest.raises(OutputPathError,
                       match=r"inputs '.*in/a.jpg' and '.*other/a.png' would "
                       r'both be written to'):
        claim_outputs(same, sources=[str(a), str(b)])
    with pytest.raises(OutputPathError, match='two outputs'):
        claim_outputs(same)
    # an input is never an output, even with force
    a.parent.mkdir()
    a.write_bytes(b'img')
    with pytest.raises(OutputPathError, match='is the input'):
        claim_outputs([str(tmp_path / 'in' / '.' / 'a.jpg')],
                      inputs=[str(a)],
                      force=True)
    # existing files need force; the error lists them
    with pytest.raises(OutputPathError,
                       match=r"1 output file\(s\) already exist: '.*a.jpg'"
                       r'.*Nothing was written.*--overwrite'):
        claim_outputs([str(a)], force_flag='--overwrite')
    assert claim_outputs([str(a)], force=True) == [str(a)]
    with pytest.raises(OutputPathError, match='is a folder'):
        claim_outputs([str(tmp_path)], force=True)


def test_claim_outputs_unusable_folders(tmp_path, monkeypatch):
    """Folders that cannot be made are refused naming the option and the
    path (before: a raw FileExistsError / FileNotFoundError)."""
    afile = tmp_path / 'afile'
    afile.write_text('mine')
    for create in (True, False):
        # --out-dir that is an existing file (or a file above the folder)
        for out in (afile / 'summary.csv', afile / 'deep' / 'summary.csv'):
            with pytest.raises(OutputPathError,
                               match=r"--out-dir: output '.*afile/.*"
                               r"summary.csv': '.*afile' is a file, not a "
                               r'folder.*Fix: choose another output path'):
                claim_outputs([str(out)], option='--out-dir',
                              create_dirs=create)
        assert afile.read_text() == 'mine'
        # a folder the system refuses (mocked, and /proc on Linux)
        real = os.makedirs

        def refuse(path, *args, **kwargs):
            raise PermissionError(13, 'Permission denied', path)

        monkeypatch.setattr(os, 'makedirs', refuse)
        with pytest.raises(OutputPathError,
                           match=r"--out: output '.*ro/a.png': cannot create "
                           r"the output folder '.*ro' \(Permission denied\)"
                           r'. Fix: choose an output path'):
            claim_outputs([str(tmp_path / 'ro' / 'a.png')], option='--out',
                          create_dirs=create)
        monkeypatch.setattr(os, 'makedirs', real)
        if os.path.isdir('/proc/self'):
            with pytest.raises(OutputPathError,
                               match=r"output '/proc/nonexistent/a.png': "
                               r"cannot create the output folder "
                               r"'/proc/nonexistent'"):
                claim_outputs(['/proc/nonexistent/a.png'],
                              create_dirs=create)
    # create_dirs=False checks without leaving the folders; they are made
    # by make_output_dirs when writing
    out = str(tmp_path / 'later' / 'deep' / 'a.png')
    assert claim_outputs([out], create_dirs=False) == [out]
    assert not (tmp_path / 'later').exists()
    make_output_dirs([out])
    assert (tmp_path / 'later' / 'deep').is_dir()
    with pytest.raises(OutputPathError, match=r"--out: output '.*' is a "
                       'folder; give a file name'):
        claim_outputs([str(tmp_path)], force=True, option='--out')


def test_expand_user(tmp_path, monkeypatch):
    monkeypatch.setenv('HOME', str(tmp_path))
    assert expand_user('~/data', 'x.data_root') == str(tmp_path / 'data')
    assert expand_user('data/~x', 'f') == 'data/~x'
    assert expand_user(None, 'f') is None
    with pytest.raises(ValueError, match=r"x.mask_file='~nobody_x9/m.npy'"):
        expand_user('~nobody_x9/m.npy', 'x.mask_file')


def test_publish_model_output(tmp_path, load_tool):
    publish = load_tool('tools/model_converters/publish_model.py')
    src = tmp_path / 'epoch_1.pth'
    torch.save(
        {
            'state_dict': {
                'head.w': torch.ones(2)
            },
            'meta': {
                'dataset_meta': {
                    'classes': ['a', 'b']
                }
            }
        }, src)
    # the output folder is created
    final = publish.main([str(src), str(tmp_path / 'out' / 'm.pth')])
    assert os.path.dirname(final) == str(tmp_path / 'out')
    again = publish.main([str(src), str(tmp_path / 'out' / 'm.pth')])
    assert again == final  # same content, same name
    assert len(os.listdir(tmp_path / 'out')) == 1

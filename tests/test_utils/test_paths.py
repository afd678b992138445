# Copyright (c) mmcoop contributors. All rights reserved.
"""The output-file policy of every tool and ``~`` expansion."""
import os

import pytest
import torch

from mmcoop.utils.paths import OutputPathError, claim_outputs, expand_user


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

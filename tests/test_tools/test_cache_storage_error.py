# Copyright (c) mmcoop contributors. All rights reserved.
"""tools/analysis/cache_storage_error.py: fp16 and int8 caches vs fp32."""
import os
import os.path as osp
import sys

import pytest

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import _tool_helpers as H  # noqa: E402
from _common import load_tool  # noqa: E402

tool = load_tool('tools/analysis/cache_storage_error.py')


def test_storage_error_of_fp16_and_int8(tmp_path):
    cfg = H.write_config(
        str(tmp_path / 'cfg.py'),
        H.METHOD_CONFIGS['positivecoop'],
        str(tmp_path / 'data'),
        num_val=8)
    root = tmp_path / 'fc'
    res = tool.main([cfg, '--cache-root', str(root), '--num-images', '6'])
    assert set(res) == {'float16', 'int8'}
    f16, i8 = res['float16'], res['int8']
    assert f16['images'] == i8['images'] == 6
    assert f16['max_logit'] == i8['max_logit'] > 0  # one model, one ref
    # fp16 rounds to 2^-11 relative, int8 to half a step of max|x| / 127
    assert 0 < f16['feature_rel_err'] < 1e-3 < i8['feature_rel_err'] < 2e-2
    for key in ('max_abs_logit_diff', 'max_rel_logit_diff',
                'max_abs_score_diff'):
        assert 0 < f16[key] < i8[key], key
    assert i8['max_abs_logit_diff'] < 0.5  # bound of docs/benchmarks.md
    # one cache per dtype of the val split, in the given root
    assert sorted(d.rsplit('_', 3)[-3]
                  for d in os.listdir(root)) == ['float16', 'float32', 'int8']


def test_bad_arguments_stop_at_argument_parsing(capsys):
    """Before: --num-images -1 gave an empty image list (range(-1)) and an
    unknown dtype was refused, both only after the float32 cache was
    built."""
    for argv, message in [
        (['--num-images', '-1'], "--num-images: must be an integer >= 1, "
         "got '-1'"),
        (['--dtypes', 'fp16'], "--dtypes: invalid choice: 'fp16' (choose "
         "from 'float16', 'float32', 'int8')"),
    ]:
        with pytest.raises(SystemExit):
            tool.parse_args(['cfg.py', '--cache-root', 'c', *argv])
        assert message in capsys.readouterr().err


def test_cache_root_that_is_a_file_is_refused(tmp_path):
    """Before: "FileExistsError: [Errno 17] File exists" from os.makedirs,
    without a fix."""
    path = tmp_path / 'notes.txt'
    path.write_text('mine')
    with pytest.raises(NotADirectoryError,
                       match=r"--cache-root '.*notes\.txt' is a file. Fix: "
                       r'give a folder'):
        tool.main([str(tmp_path / 'cfg.py'), '--cache-root', str(path)])
    assert path.read_text() == 'mine'

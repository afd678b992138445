# Copyright (c) mmcoop contributors. All rights reserved.
"""Bad command-line input stops with an error naming the option and the
fix: malformed --cfg-options, a bad auto_scale_lr.base_batch_size, --amp
without an accelerator, and analyze_results.py given a metrics file or a
missing file instead of a prediction dump."""
import argparse
import json
import os.path as osp
import sys

import pytest
import torch
from _common import load_tool
from mmengine.config import Config

from mmcoop.engine.cli import SpacedDictAction, merge_train_args

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import _tool_helpers as H  # noqa: E402

train_tool = load_tool('tools/train.py')
analyze_tool = load_tool('tools/analysis/analyze_results.py')


def _parser():
    parser = argparse.ArgumentParser(prog='tool')
    parser.add_argument('--cfg-options', nargs='+', action=SpacedDictAction)
    return parser


@pytest.mark.parametrize('value,words', [
    ('a.b.c=[1,,', ("unclosed '['", '--cfg-options')),
    ('a=(1,2', ("unclosed '('", )),
    ('a=[1,2]]', ("unmatched ']'", )),
    ('=b', ('key before "="', )),
    ('a..b=1', ('key before "="', )),
])
def test_malformed_cfg_options(value, words, capsys):
    with pytest.raises(SystemExit) as e:
        _parser().parse_args(['--cfg-options', value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err


def test_well_formed_cfg_options_still_parse():
    args = _parser().parse_args([
        '--cfg-options', 'a.b=[1,2]x', 'c=[traffic light,stop sign]',
        'd=(1,[2,3])', 'e=:)'
    ])
    assert args.cfg_options == {
        'a.b': '[1,2]x',
        'c': ['traffic light', 'stop sign'],
        'd': (1, [2, 3]),
        'e': ':)'
    }


def test_a_quoted_path_with_a_comma_stays_one_string(tmp_path):
    """``"data_root='/data/a,b'"``: a quoted text holding a comma is one
    string (a path); unquoted, it is a list, which a path field refuses
    naming the quoting (before: a comma-free path was impossible to give,
    and ``load_from`` / ``mask_file`` / ``protocol.split_file`` took the
    list and died later with a bare ``TypeError``)."""
    from mmcoop.engine.config_checks import check_load_from
    from mmcoop.experiments.protocols import apply_protocol
    from mmcoop.utils.paths import expand_user
    args = _parser().parse_args([
        '--cfg-options', "a='/data/a,b'", 'b="x, y"', "c='[1,2]'", 'd=p,q'
    ])
    assert args.cfg_options == {
        'a': '/data/a,b', 'b': 'x, y', 'c': [1, 2], 'd': ['p', 'q']}
    # quoted items of a list stay MMEngine's list
    assert SpacedDictAction.parse_value("'a','b'") == ['a', 'b']
    hint = r"quote a text that holds one, e\.g\. \"key='/data/a,b'\""
    with pytest.raises(ValueError, match=r"load_from must be a path .*got "
                       r"the list \['/a', 'b.pth'\]\. A comma .*" + hint):
        check_load_from(Config(dict(load_from=['/a', 'b.pth'])))
    with pytest.raises(ValueError, match='PartialLabelDataset.mask_file must'
                       ' be a path'):
        expand_user(['a', 'b'], 'PartialLabelDataset.mask_file')
    cfg = Config.fromfile(H.DEMO_CONFIG)
    cfg.protocol = dict(name='clean', split_file=['/s', 'x.json'])
    with pytest.raises(ValueError, match='protocol.split_file must be a'):
        apply_protocol(cfg)
    # a string key given a list: the type check names the quoting
    with pytest.raises(ValueError, match='the config has a string there.*'
                       + hint):
        _merged('--cfg-options', 'work_dir=a,b')


def _merged(*argv):
    cfg_path = H.METHOD_CONFIGS['baseline']
    args = train_tool.parse_args([cfg_path, *argv])
    return merge_train_args(Config.fromfile(cfg_path), args)


@pytest.mark.parametrize('base', ['0', '-32', '1.5'])
def test_auto_scale_lr_needs_a_positive_base_batch_size(base):
    with pytest.raises(ValueError, match='base_batch_size must be an int'):
        _merged('--auto-scale-lr', '--cfg-options',
                f'auto_scale_lr.base_batch_size={base}')
    cfg = _merged('--auto-scale-lr', '--cfg-options',
                  'auto_scale_lr.base_batch_size=16')
    assert cfg.auto_scale_lr.base_batch_size == 16


@pytest.mark.skipif(torch.cuda.is_available(), reason='needs a CPU host')
def test_amp_on_cpu_is_a_clear_error():
    with pytest.raises(SystemExit, match='--amp needs a GPU'):
        train_tool.main([H.METHOD_CONFIGS['baseline'], '--amp'])


def test_analyze_results_wants_a_prediction_dump(tmp_path):
    cfg = H.METHOD_CONFIGS['baseline']
    metrics = tmp_path / 'metrics.json'
    metrics.write_text(json.dumps({'multi-label/mAP': 50.0}))
    out = str(tmp_path / 'out')
    with pytest.raises(SystemExit, match=r'argument result .*a metrics file'
                       r'.*--out results\.pkl'):
        analyze_tool.main([cfg, str(metrics), '--out-dir', out])
    with pytest.raises(SystemExit, match=r'no such file.*--out results\.pkl'):
        analyze_tool.main([cfg, str(tmp_path / 'nope.pkl'), '--out-dir',
                           out])
    assert not osp.exists(out)


def test_prediction_dump_with_nan_scores_is_refused():
    """The metric's rule for the analysis of a dump: before, a NaN score
    was ranked first (AP 100 for that class) and the tables were written."""
    import numpy as np

    from mmcoop.evaluation.per_class import load_predictions
    results = [dict(pred_score=np.array([0.9, 0.1]),
                    gt_score=np.array([1., 0.])),
               dict(pred_score=np.array([np.nan, 0.2]),
                    gt_score=np.array([1., 1.]))]
    with pytest.raises(ValueError, match=r'The results file: .*pred_score.*'
                       r'NaN/inf'):
        load_predictions(results, 2)
    results[1]['pred_score'] = np.array([0.3, 0.2])
    results[1]['gt_score'] = np.array([0.5, 1.])  # not 1/0/-1
    with pytest.raises(ValueError, match=r'gt_score'):
        load_predictions(results, 2)

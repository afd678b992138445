# Copyright (c) mmcoop contributors. All rights reserved.
"""tools/analysis/cpu_bf16.py: bf16 towers on CPU vs fp32."""
import os.path as osp
import sys

import pytest

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import _tool_helpers as H  # noqa: E402
from _common import load_tool  # noqa: E402

tool = load_tool('tools/analysis/cpu_bf16.py')


def test_cpu_bf16_logit_error_and_step_times(tmp_path):
    cfg = H.write_config(
        str(tmp_path / 'cfg.py'),
        H.METHOD_CONFIGS['positivecoop'],
        str(tmp_path / 'data'),
        num_val=6)
    res = tool.main([cfg, '--batch-size', '4', '--iters', '1'])
    assert res['images'] == 6 and res['max_logit'] > 0
    # bf16 ran (outputs moved) and stayed near fp32: the demo tree measured
    # 1-2% of the largest logit (docs/benchmarks.md)
    assert 1e-4 < res['max_rel_logit_diff'] < 0.1
    assert 0 < res['max_abs_score_diff'] < 0.5
    for side in ('fp32', 'bf16'):
        assert res[f'{side}_step_s'] > 0
    assert res['fp32_over_bf16'] == res['fp32_step_s'] / res['bf16_step_s']


def test_bad_numbers_stop_at_argument_parsing(capsys):
    for argv, message in [
        (['--num-images', '0'], "--num-images: must be an integer >= 1, got "
         "'0'"),
        (['--batch-size', '-4'], '--batch-size: must be an integer >= 1'),
        (['--iters', '0'], '--iters: must be an integer >= 1'),
    ]:
        with pytest.raises(SystemExit):
            tool.parse_args(['cfg.py', *argv])
        assert message in capsys.readouterr().err


def test_baseline_and_a_backbone_without_towers(tmp_path):
    """The Baseline (an image tower, no text tower) is measured: before, the
    tool stopped with "'ConfigDict' object has no attribute 'text_encoder'".
    A config whose backbone is not FrozenCLIP is refused by name."""
    cfg = H.write_config(
        str(tmp_path / 'cfg.py'),
        H.METHOD_CONFIGS['baseline'],
        str(tmp_path / 'data'),
        num_val=4,
        text_encoder=False)
    res = tool.main([cfg, '--batch-size', '2', '--iters', '1'])
    assert res['images'] == 4 and res['max_logit'] > 0
    assert 0 < res['max_rel_logit_diff'] < 0.1  # bf16 ran, near fp32
    with pytest.raises(ValueError, match=r'model\.backbone is '
                       r'PrecomputedFeatures: .*Fix: give a config with '
                       r"model\.backbone=dict\(type='FrozenCLIP'"):
        tool.main([cfg, '--iters', '1', '--cfg-options',
                   'model.backbone._delete_=True',
                   'model.backbone.type=PrecomputedFeatures'])

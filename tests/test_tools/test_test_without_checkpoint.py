# Copyright (c) mmcoop contributors. All rights reserved.
"""tools/test.py without a checkpoint: allowed only for a model without
trainable parameters (the zero-shot head on the frozen CLIP)."""
import sys
import uuid

import pytest
import torch
from _common import load_tool

sys.path.insert(0, __file__.rsplit('/', 1)[0])
import _tool_helpers as H  # noqa: E402

from mmcoop.engine.cli import check_test_weights  # noqa: E402

test_tool = load_tool('tools/test.py')


def test_check_test_weights_names_the_trainable_tensors():
    frozen = torch.nn.Linear(2, 2).requires_grad_(False)
    check_test_weights(frozen, None, 'zs.py')  # nothing to load: fine
    model = torch.nn.Sequential(frozen, torch.nn.Linear(2, 3))
    with pytest.raises(
            ValueError,
            match=r'x\.py: the model has trainable parameters \(1\.weight, '
            r'1\.bias\) and no checkpoint.*ZeroShotHead'):
        check_test_weights(model, None, 'x.py')
    check_test_weights(model, 'epoch_1.pth', 'x.py')  # weights given


def _main(cfg, tmp_path, *args):
    return test_tool.main([
        cfg, *args, '--no-pin-memory', '--work-dir',
        str(tmp_path / uuid.uuid4().hex[:8]), '--cfg-options',
        f'experiment_name=t-{uuid.uuid4().hex[:8]}',
        'model.head.type=ZeroShotHead'
    ])


def test_zero_shot_config_tests_without_a_checkpoint(tmp_path):
    cfg = H.write_config(
        str(tmp_path / 'cfg.py'),
        H.METHOD_CONFIGS['positivecoop'],
        str(tmp_path / 'data'),
        num_val=8)
    metrics = _main(cfg, tmp_path)
    # the same scores as with an empty checkpoint (the former workaround)
    empty = str(tmp_path / 'empty.pth')
    torch.save({'state_dict': {}}, empty)
    with_empty = _main(cfg, tmp_path, empty)
    assert 0 < metrics['multi-label/mAP'] <= 100
    assert metrics['multi-label/mAP'] == with_empty['multi-label/mAP']
    # 'none' (what tools/dist_test.sh needs in the checkpoint's place), any
    # case, is no checkpoint (before: "Checkpoint 'none' does not exist")
    for none in ('none', 'None'):
        assert _main(cfg, tmp_path, none)['multi-label/mAP'] == \
            metrics['multi-label/mAP']
    # a prompt head has trained tensors: no checkpoint is an error
    with pytest.raises(
            ValueError,
            match=r'cfg\.py: the model has trainable '
            r"parameters \(head\.neg_embedding, .*head\.pos_prompt\.ctx\)"):
        test_tool.main([
            cfg, '--work-dir',
            str(tmp_path / 'w'), '--cfg-options',
            f'experiment_name=t-{uuid.uuid4().hex[:8]}'
        ])

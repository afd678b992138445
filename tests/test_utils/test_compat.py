# Copyright (c) mmcoop contributors. All rights reserved.
import importlib.util

import mmengine
import pytest
import torch
from mmengine.utils import digit_version

from mmcoop.utils import compat


def test_version_flags_match_installed_stack():
    torch_ge_26 = digit_version(
        torch.__version__.split('+')[0]) >= digit_version('2.6.0')
    assert compat.TORCH_DEFAULT_WEIGHTS_ONLY == torch_ge_26
    assert compat.MMENGINE_RESUME_NEEDS_TRUSTED_LOAD == (
        torch_ge_26
        and digit_version(mmengine.__version__) <= digit_version('0.10.7'))


def test_weights_only_default_is_not_disabled_process_wide(tmp_path):
    # mmcoop must never flip torch's protection globally.
    import os

    import mmcoop  # noqa: F401
    import mmcoop.engine.runner  # noqa: F401
    assert 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD' not in os.environ
    assert 'TORCH_FORCE_WEIGHTS_ONLY_LOAD' not in os.environ
    if compat.TORCH_DEFAULT_WEIGHTS_ONLY:
        import pickle

        from mmengine.logging import HistoryBuffer
        path = tmp_path / 'hb.pth'
        torch.save({'h': HistoryBuffer([1.0], [1])}, path)
        with pytest.raises(pickle.UnpicklingError):
            torch.load(path)  # torch's own default still refuses it


def test_external_base_error_without_pkg_resources(monkeypatch):
    real_find_spec = importlib.util.find_spec

    def fake_find_spec(name, *args, **kwargs):
        if name == 'pkg_resources':
            return None
        return real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, 'find_spec', fake_find_spec)
    assert not compat.has_pkg_resources()
    with pytest.raises(RuntimeError, match="setuptools<82"):
        compat.check_external_base('my_cfg.py', 'mmpretrain::_base_/x.py')
    # relative bases never need it
    compat.check_external_base('my_cfg.py', '../_base_/default_runtime.py')


def test_setuptools_pinned_below_82_in_this_env():
    if importlib.util.find_spec('setuptools') is None:
        pytest.skip('setuptools not installed')
    import setuptools
    assert digit_version(setuptools.__version__) < digit_version('82.0.0')
    assert compat.has_pkg_resources()

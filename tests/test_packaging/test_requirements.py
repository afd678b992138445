# Copyright (c) mmcoop contributors. All rights reserved.
"""The open_clip_torch range mmcoop refuses outside of is the range the
package declares: with open_clip_torch 2.23 (the declared minimum until
2026-12-05) to 3.0 the suite failed deep in the towers (a
``text_global_pool`` without ``eos_id``, non-batch-first transformers)."""
import configparser
import os.path as osp
import re

import pytest
from packaging.version import Version

from mmcoop.models.backbones.clip_loader import (OPEN_CLIP_RANGE,
                                                 _installed_open_clip,
                                                 check_open_clip_version)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


# a pre-release of the upper bound is outside it for pip (PEP 440), as
# '3.1.0rc1' is below 3.1; mmengine's digit_version let '4.0.0.dev0' pass
@pytest.mark.parametrize('version', ['2.23.0', '3.0.0', '4.0.0', '4.1',
                                     '4.0.0.dev0', '4.0.0rc1', '3.1.0rc1'])
def test_an_open_clip_outside_the_range_is_refused_naming_the_fix(version):
    with pytest.raises(ImportError, match=rf"open_clip_torch {version} is "
                       r"installed.*Fix: pip install 'open_clip_torch>="
                       r"3\.1\.0,<4\.0\.0'"):
        check_open_clip_version(version)


@pytest.mark.parametrize('version', [
    '3.1.0', '3.3.0', '3.9.1', '3.10.0', '3.2.0.dev0', '3.1.0+cpu',
    '3.1.0.post1', None])
def test_an_open_clip_in_the_range_or_unknown_passes(version):
    check_open_clip_version(version)


def test_a_version_that_is_no_version_number_is_named_not_checked():
    """Before: mmengine's ``InvalidVersion`` from inside the check, at
    ``import mmcoop.models``."""
    with pytest.warns(UserWarning, match=r"open_clip_torch reports the "
                      r"version 'local-build', which is not a version "
                      r'number: not checked'):
        check_open_clip_version('local-build')


def test_setup_cfg_declares_the_checked_range_and_this_one_is_in_it():
    cfg = configparser.ConfigParser()
    cfg.read(osp.join(REPO, 'setup.cfg'))
    lines = cfg['options']['install_requires'].splitlines()
    spec, = [line for line in lines if line.startswith('open_clip_torch')]
    low, high = re.fullmatch(r'open_clip_torch>=([\d.]+),<([\d.]+)',
                             spec).groups()
    assert (Version(low), Version(high)) == tuple(
        Version(v) for v in OPEN_CLIP_RANGE)
    check_open_clip_version(_installed_open_clip())

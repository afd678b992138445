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


def test_the_version_check_s_parser_is_declared():
    """``check_open_clip_version`` parses with ``packaging`` at ``import
    mmcoop.models``: a direct dependency, declared (it came only through
    matplotlib)."""
    from packaging.requirements import Requirement
    cfg = configparser.ConfigParser()
    cfg.read(osp.join(REPO, 'setup.cfg'))
    names = {
        Requirement(line.split('#')[0].strip()).name
        for line in cfg['options']['install_requires'].splitlines()
        if line.split('#')[0].strip()
    }
    assert 'packaging' in names


def test_gpu_wheels_satisfy_the_declared_ranges():
    """tools/analysis/gpu/fetch_wheels.sh pins the wheels carried to the
    GPU machine's image (no OpenMMLab packages, no open_clip there): each
    package mmcoop declares (install_requires, the `lite` extra) is pinned
    inside its declared range, so check.sh does not meet an import-time
    refusal (e.g. OPEN_CLIP_RANGE) only on the GPU machine."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    cfg = configparser.ConfigParser()
    cfg.read(osp.join(REPO, 'setup.cfg'))
    declared = {}
    for text in (cfg['options']['install_requires'],
                 cfg['options.extras_require']['lite']):
        for line in text.splitlines():
            line = line.split('#')[0].strip()
            if line:
                req = Requirement(line)
                declared[canonicalize_name(req.name)] = req.specifier
    with open(osp.join(REPO, 'tools', 'analysis', 'gpu',
                       'fetch_wheels.sh')) as f:
        script = f.read().replace('\\\n', ' ')
    command = re.search(r'pip download (.*)', script).group(1)
    pins = {}
    for word in command.split():
        word = word.strip("'")
        if not word.startswith('-') and re.match(r'[A-Za-z]', word):
            req = Requirement(word)
            pins[canonicalize_name(req.name)] = req.specifier
    assert {'mmengine', 'mmpretrain', 'mmcv-lite', 'open-clip-torch',
            'setuptools'} <= set(pins)
    for name, pin in pins.items():
        if name not in declared:
            continue  # a dependency of a declared package
        if str(pin).startswith('=='):
            version = str(pin)[2:]
            assert declared[name].contains(version), (name, version,
                                                      str(declared[name]))
        else:
            assert pin == declared[name], (name, str(pin))
    check_open_clip_version(str(pins['open-clip-torch'])[2:])

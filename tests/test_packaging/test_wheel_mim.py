# Copyright (c) mmcoop contributors. All rights reserved.
"""The wheel carries the ``.mim`` extension, and openmim drives an install
of it that lives outside the source tree (``pip install --target``).

One test (the build, the install and a 1-epoch ``mim train`` of the demo
take ~1 min on 2 CPU cores); everything runs in ``tmp_path``: the sources
are copied there first, so the build writes nothing into the checkout.
"""
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import zipfile
from glob import glob

import pytest
import yaml

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO = 'positivecoop_clip-tiny-vit_1xb16-coslr-20e_demo-shapes-p50.py'
SOURCES = ('mmcoop', 'configs', 'tools', 'setup.py', 'setup.cfg',
           'pyproject.toml', 'MANIFEST.in', 'model-index.yml', 'README.md')


def _run(cmd, cwd, env):
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f'{" ".join(cmd)} failed:\n{out[-4000:]}'
    return out


def _repo_files(sub, patterns):
    return sorted(
        osp.relpath(p, REPO) for pat in patterns
        for p in glob(osp.join(REPO, sub, '**', pat), recursive=True)
        if '__pycache__' not in p)


def _can_build_wheels_here() -> bool:
    """``pip wheel --no-build-isolation`` (no index here) builds with this
    environment's setuptools: its own ``bdist_wheel`` since 70.1, else the
    ``wheel`` package's (pyproject.toml's build requirements, which an
    isolated build would fetch)."""
    import importlib.util

    import setuptools
    from packaging.version import Version
    return Version(setuptools.__version__) >= Version('70.1') or \
        importlib.util.find_spec('wheel') is not None


@pytest.mark.skipif(
    not _can_build_wheels_here(),
    reason='this environment cannot build a wheel without build isolation '
    '(setuptools < 70.1 and no `wheel` package; pyproject.toml names them)')
def test_wheel_contents_and_mim_commands(tmp_path, http_folder):
    src = tmp_path / 'src'
    src.mkdir()
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc', '.mim')
    for name in SOURCES:
        path = osp.join(REPO, name)
        if osp.isdir(path):
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy(path, src / name)
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    env.pop('PYTHONPATH', None)
    _run([
        sys.executable, '-m', 'pip', 'wheel', '--no-deps',
        '--no-build-isolation', '--no-index', '-w',
        str(tmp_path / 'dist'), str(src)
    ], str(tmp_path), env)
    wheel, = glob(str(tmp_path / 'dist' / 'mmcoop-*.whl'))

    # contents: every config, metafile and tool, and the model index
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = _repo_files('configs', ('*.py', '*.yml')) + _repo_files(
        'tools', ('*.py', '*.sh')) + ['model-index.yml']
    missing = [f for f in expected if f'mmcoop/.mim/{f}' not in names]
    assert not missing, f'not in the wheel: {missing[:10]}'
    assert 'mmcoop/clip_configs/mmcoop-tiny-ViT.json' in names
    assert not any(n.startswith(('tests/', 'configs/', 'tools/'))
                   for n in names)  # only inside the package

    # install into a folder of its own; dependencies from this environment
    target = tmp_path / 'site'
    _run([
        sys.executable, '-m', 'pip', 'install', '--no-deps', '--no-index',
        '--target',
        str(target), wheel
    ], str(tmp_path), env)
    index = yaml.safe_load(
        (target / 'mmcoop/.mim/model-index.yml').read_text())
    assert len(index['Import']) == 4
    env['PYTHONPATH'] = str(target)
    work = tmp_path / 'work'
    work.mkdir()
    mim = [sys.executable, '-m', 'mim']
    # the sweep's configs and tools are the installed ones; an install
    # inside another git work tree (a virtualenv in a clone) records the
    # package version, not that tree's commit
    git = ['git', '-c', 'user.name=t', '-c', 'user.email=t@t']
    _run(git + ['init', '-q'], str(tmp_path), env)
    _run(git + ['commit', '-q', '--allow-empty', '-m', 'x'], str(tmp_path),
         env)
    where = _run([
        sys.executable, '-c', 'import mmcoop; from mmcoop.experiments.sweep '
        'import DEFAULT_TRAIN_CMD, _command, code_root, code_version, '
        'find_config as f; print("at", mmcoop.__file__, f(code_root() + '
        '"/configs", "positivecoop", "demo", 0.5), _command(DEFAULT_TRAIN_CMD,'
        ' config="C")[1], code_version(), sep="|")'
    ], str(work), env)
    where = re.search(r'^at\|(.*)$', where, re.M).group(1).split('|')
    assert all(p.startswith(str(target)) and osp.isfile(p)
               for p in where[:3]), where
    assert where[3].startswith('mmcoop '), where  # not the tree's commit

    listed = _run(mim + ['list'], str(work), env)
    assert re.search(r'^mmcoop\s+\d', listed, re.M), listed

    # mim search reads the installed model index: the 18 Baseline configs
    # are the only ones under 100k trainable parameters (82,080 / 20,520)
    found = _run(mim + [
        'search', 'mmcoop', '--field', 'parameters', 'training_data',
        '--condition', 'parameters<100000'
    ], str(work), env)
    ids = re.findall(r'config id: (\S+)', found)
    assert len(ids) == 18 and all(i.startswith('baseline_') for i in ids)
    assert '82080' in found and '20520' in found
    every = _run(mim + ['search', 'mmcoop', '--field', 'config'],
                 str(work), env)
    assert len(re.findall(r'config id: ', every)) == 72

    # mim download: a release recorded in the installed metafile with an
    # http URL (a local server) is downloaded, with the config dumped
    from mmcoop.apis.metafile import record_release
    served, base_url = http_folder
    name = 'baseline_clip-rn101_openai-pre_1xb32-coslr-50e_voc07-448px-p50'
    (served / 'baseline-voc07-p50.pth').write_bytes(b'released weights')
    record_release(
        str(target / 'mmcoop/.mim/configs/baseline/metafile.yml'), name,
        f'{base_url}/baseline-voc07-p50.pth')
    _run(mim + ['download', 'mmcoop', '--config', name, '--dest', 'zoo'],
         str(work), dict(env, NO_PROXY='127.0.0.1', no_proxy='127.0.0.1'))
    assert (work / 'zoo' / 'baseline-voc07-p50.pth').read_bytes() == \
        b'released weights'
    assert (work / 'zoo' / f'{name}.py').is_file()

    # mim train by config *name*: found inside the installed package
    out = _run(mim + [
        'train', 'mmcoop', DEMO, '--work-dir', 'wd', '--cfg-options',
        'train_cfg.max_epochs=1', 'train_cfg.val_interval=1'
    ], str(work), env)
    used = osp.join(str(target), 'mmcoop', '.mim', 'configs', 'demo', DEMO)
    assert f'will use {used} instead' in out
    assert re.search(r'\[mmcoop demo\] final val mAP \d+\.\d\d', out), out
    ckpt = work / 'wd' / 'epoch_1.pth'
    assert ckpt.is_file()

    out = _run(mim + [
        'test', 'mmcoop', DEMO, '--checkpoint',
        str(ckpt), '--work-dir', 'wd_test'
    ], str(work), env)
    assert re.search(r'multi-label/mAP: \d+\.\d+', out), out[-3000:]

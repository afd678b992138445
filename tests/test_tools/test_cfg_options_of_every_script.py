# Copyright (c) mmcoop contributors. All rights reserved.
"""Every script that takes ``--cfg-options`` reads it as tools/train.py
does, or forwards it verbatim to a script that does (tools/sweep.py):

* spaces inside values are kept (class names such as ``traffic light``;
  MMEngine's own ``DictAction`` would delete them);
* a value of another type than the config value it replaces is refused
  with tools/train.py's message (``mmcoop.engine.cli.merge_cfg_options``)
  before anything is built or written: ``randomness.seed=0,5`` (a decimal
  comma) is a list where the config holds a number."""
import argparse
import glob
import os.path as osp

import pytest
import torch
from _common import ROOT, load_tool
from mmengine.config import DictAction

SCRIPTS = sorted(
    osp.relpath(p, ROOT)
    for pattern in ('tools/**/*.py', 'demo/*.py')
    for p in glob.glob(osp.join(ROOT, pattern), recursive=True)
    if '--cfg-options' in open(p).read())


class _Parsed(Exception):
    pass


def _parser_of(relpath, monkeypatch):
    """The argparse parser a script builds in ``parse_args``."""
    module = load_tool(relpath)
    seen = {}

    def capture(self, *args, **kwargs):
        seen['parser'] = self
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, 'parse_args', capture)
    with pytest.raises(_Parsed):
        module.parse_args([])
    return seen['parser']


def test_the_scripts_are_found():
    assert {'tools/train.py', 'tools/test.py', 'demo/image_demo.py',
            'tools/deployment/export.py'} <= set(SCRIPTS)


@pytest.mark.parametrize('relpath', SCRIPTS)
def test_cfg_options_keep_spaces(relpath, monkeypatch):
    parser = _parser_of(relpath, monkeypatch)
    action, = [a for a in parser._actions if '--cfg-options' in
               a.option_strings]
    option = 'model.head.classnames=[traffic light,stop sign]'
    namespace = argparse.Namespace()
    action(parser, namespace, [option])
    if isinstance(action, DictAction):  # parsed here
        assert getattr(namespace, action.dest) == {
            'model.head.classnames': ['traffic light', 'stop sign']
        }
    else:  # forwarded verbatim to tools/train.py (tools/sweep.py)
        assert getattr(namespace, action.dest) == [option]


CONFIG = osp.join(
    ROOT, 'configs', 'demo',
    'positivecoop_clip-tiny-vit_1xb16-coslr-20e_demo-shapes-p50.py')
OPTION = 'randomness.seed=0,5'


def _argv(relpath, tmp):
    """Each script's arguments, its outputs under ``tmp``."""
    ckpt = osp.join(tmp, 'ckpt.pth')
    image = osp.join(tmp, 'image.jpg')
    return {
        'tools/train.py': [CONFIG, '--work-dir', osp.join(tmp, 'out')],
        'tools/test.py': [CONFIG, ckpt, '--work-dir', osp.join(tmp, 'out')],
        'tools/analysis/analyze_results.py':
        [CONFIG, osp.join(tmp, 'result.pkl'), '--out-dir',
         osp.join(tmp, 'out')],
        'tools/analysis/browse_dataset.py':
        [CONFIG, '--output-dir', osp.join(tmp, 'out')],
        'tools/analysis/cache_storage_error.py':
        [CONFIG, '--cache-root', osp.join(tmp, 'out')],
        'tools/analysis/cpu_bf16.py': [CONFIG],
        'tools/analysis/get_flops.py': [CONFIG],
        'tools/deployment/benchmark.py':
        [CONFIG, 'none', '--work-dir', osp.join(tmp, 'out')],
        'tools/deployment/export.py':
        [CONFIG, ckpt, '--out', osp.join(tmp, 'out', 'model.onnx')],
        'demo/image_demo.py': [image, CONFIG, ckpt, '--show-dir',
                               osp.join(tmp, 'out')],
    }[relpath]


# tools/sweep.py forwards the option to tools/train.py and checks it
# against every config before recording a run (tests/test_experiments)
@pytest.mark.parametrize('relpath', [s for s in SCRIPTS
                                     if s != 'tools/sweep.py'])
def test_every_script_refuses_an_option_of_another_type(
        relpath, tmp_path, capsys):
    torch.save({'state_dict': {}}, str(tmp_path / 'ckpt.pth'))
    (tmp_path / 'image.jpg').write_bytes(b'')
    (tmp_path / 'result.pkl').write_bytes(b'')
    argv = _argv(relpath, str(tmp_path)) + ['--cfg-options', OPTION]
    if relpath == 'tools/deployment/export.py':  # prints, exit status 2
        assert load_tool(relpath).main(argv) == 2
        message = capsys.readouterr().err
    elif relpath == 'tools/deployment/benchmark.py':  # prints, exits 2
        with pytest.raises(SystemExit) as exc:
            load_tool(relpath).main(argv)
        assert exc.value.code == 2
        message = capsys.readouterr().err
    else:
        with pytest.raises(ValueError) as err:
            load_tool(relpath).main(argv)
        message = str(err.value)
    assert '--cfg-options randomness.seed=[0, 5]' in message
    assert 'the config has a number there (0)' in message
    assert '0.5, not 0,5' in message
    assert not (tmp_path / 'out').exists()


def test_init_model_checks_cfg_options_too():
    from mmcoop.apis import init_model, load_config
    with pytest.raises(ValueError, match='randomness.seed'):
        init_model(CONFIG, cfg_options={'randomness.seed': [0, 5]})
    # a value of the same type is merged; the caller's config is a copy
    cfg = load_config(CONFIG, {'randomness.seed': 7})
    assert cfg.randomness.seed == 7
    assert load_config(cfg, {'randomness.seed': 8}).randomness.seed == 8
    assert cfg.randomness.seed == 7


def test_tools_outside_a_runner_name_a_misspelt_nested_key(tmp_path):
    """load_config (init_model and the analysis tools) runs the nested-key
    check of MMCoopRunner.from_cfg: a dataset key as well as a model key."""
    from mmcoop.apis import init_model, load_config
    from mmcoop.engine.config_checks import UnknownConfigKeyError
    option = {'train_dataloader.dataset.dataset.data_rot': 'x'}
    for call in (lambda: load_config(CONFIG, option),
                 lambda: init_model(CONFIG, cfg_options=option)):
        with pytest.raises(UnknownConfigKeyError,
                           match=r"`train_dataloader\.dataset\.dataset\."
                           r"data_rot` \(did you mean 'data_root'"):
            call()
    with pytest.raises(UnknownConfigKeyError, match=r'model\.head\.n_ctxx'):
        load_tool('tools/analysis/browse_dataset.py').main([
            CONFIG, '--output-dir',
            str(tmp_path / 'out'), '--cfg-options', 'model.head.n_ctxx=2'
        ])
    assert not (tmp_path / 'out').exists()

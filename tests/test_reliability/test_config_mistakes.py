# Copyright (c) mmcoop contributors. All rights reserved.
"""Config interpretation in ``MMCoopRunner.from_cfg`` (every launcher
behaves the same) and issue #12.4/#12.6/#13.5: config mistakes are named
before training starts, nothing is written into a dataset folder."""
import os
import os.path as osp
import re
import warnings

import pytest
from _common import load_tool
from _helpers import base_cfg, write_config
from mmengine.config import Config


@pytest.fixture(scope='module')
def setup(tiny_assets):
    return tiny_assets


def _cfg(setup, tmp_path, name='c.py', **over):
    s = base_cfg(setup['data_root'], setup['clip'], setup['classes'],
                 max_epochs=1, size=32)
    s['randomness'] = dict(seed=0)
    s.update(over)
    cfg = Config.fromfile(write_config(tmp_path / name, s))
    cfg.work_dir = str(tmp_path / 'work')
    return cfg


def test_every_launcher_applies_the_feature_cache(setup, tmp_path):
    """`RUNNERS.build` (tools, mim) and `MMCoopRunner.from_cfg` (notebooks)
    interpret `feature_cache` the same way; the config is not modified."""
    from mmcoop.engine import MMCoopRunner
    from mmcoop.registry import RUNNERS
    cfg = _cfg(setup, tmp_path, feature_cache=dict(dtype='float32'))
    before = cfg.to_dict()
    for build in (RUNNERS.build, MMCoopRunner.from_cfg):
        runner = build(cfg)
        assert type(runner.model.backbone).__name__ == 'PrecomputedFeatures'
        assert runner.cfg.train_dataloader.dataset.type.endswith(
            'CachedFeatureDataset')
    assert cfg.to_dict() == before


def _write(setup, tmp_path, name='c.py', **over):
    s = base_cfg(setup['data_root'], setup['clip'], setup['classes'],
                 max_epochs=1, size=32)
    s['randomness'] = dict(seed=0)
    s.update(over)
    return write_config(tmp_path / name, s)


def test_unknown_top_level_key_warns_or_stops(setup, tmp_path):
    from mmcoop.engine.config_checks import UnknownConfigKeyError
    from mmcoop.registry import RUNNERS
    cfg = _cfg(setup, tmp_path, modle=dict(type='ImageClassifier'))
    with pytest.warns(UserWarning) as record:
        RUNNERS.build(cfg)
    msg = ' '.join(str(w.message) for w in record)
    assert "'modle' (did you mean 'model'?)" in msg and 'c.py' in msg
    assert 'strict_config' in msg
    # strict: an error before the work dir is made
    work = tmp_path / 'strict'
    with pytest.raises(UnknownConfigKeyError, match="'modle'"):
        load_tool('tools/train.py').main([
            _write(setup, tmp_path, 's.py', modle=dict(type='X')),
            '--work-dir', str(work), '--strict-config'
        ])
    assert not work.exists()


def test_shipped_configs_have_no_unknown_keys(shipped_configs):
    """Helper variables (data_root, pipelines, ...) used by read keys do not
    count as unknown: no shipped config warns."""
    import copy

    from mmcoop.engine.config_checks import check_unknown_keys
    assert len(shipped_configs) > 50
    for path, cfg in shipped_configs.items():
        cfg = copy.deepcopy(cfg)
        cfg.strict_config = True
        # the bases' own helper variables too
        assert check_unknown_keys(cfg, inherited=True) == [], path


def test_shipped_configs_pair_one_clip(shipped_configs):
    """Every shipped config's image and text towers are one CLIP, and its
    Baseline width is the backbone's (``check_clip_towers`` passes)."""
    import open_clip

    from mmcoop.engine.config_checks import check_clip_towers
    from mmcoop.models.backbones import register_mmcoop_clip_configs
    register_mmcoop_clip_configs()
    heads = set()
    for path, cfg in shipped_configs.items():
        check_clip_towers(cfg)
        # the check returns early without a FrozenCLIP backbone: every
        # shipped config has one, so none passed unchecked
        backbone, head = cfg.model.backbone, cfg.model.head
        assert backbone.type.split('.')[-1] == 'FrozenCLIP', path
        heads.add(head.type)
        text = head.get('text_encoder')
        if head.type == 'BaselineHead':
            assert text is None, path
            # the width, read from open_clip's own model config
            width = open_clip.get_model_config(
                backbone.model_name)['embed_dim']
            assert head.in_channels == width, path
        else:
            assert text.type.split('.')[-1] == 'FrozenCLIPTextEncoder'
            for field in ('model_name', 'pretrained', 'force_quick_gelu'):
                assert text.get(field) == backbone.get(field), (path, field)
    assert heads == {'BaselineHead', 'PositiveCoOpHead', 'NegativeCoOpHead',
                     'DualCoOpHead', 'ZeroShotHead'}


def test_shipped_configs_take_every_nested_key(shipped_configs):
    """No shipped config has a key that the constructor of its type does
    not take (``check_nested_keys``: no error, no warning), and the check
    judged its model, text tower, loss, datasets and transforms."""
    import warnings

    from mmcoop.engine.config_checks import check_nested_keys
    for path, cfg in shipped_configs.items():
        with warnings.catch_warnings():
            warnings.simplefilter('error')
            judged = set(check_nested_keys(cfg))
        assert {'model', 'model.backbone', 'model.head',
                'model.head.loss'} <= judged, path
        assert ('model.head.text_encoder' in judged) == (
            cfg.model.head.type != 'BaselineHead'), path
        for loader in ('train_dataloader', 'val_dataloader',
                       'test_dataloader'):
            dataset = f'{loader}.dataset'
            assert dataset in judged, (path, dataset)
            assert any(p.startswith(dataset) and '.pipeline[' in p
                       for p in judged), (path, loader)
            assert f'{loader}.sampler' in judged, (path, loader)
        assert {'val_evaluator', 'test_evaluator', 'default_hooks.timer',
                'default_hooks.param_scheduler', 'param_scheduler[0]',
                'optim_wrapper', 'optim_wrapper.optimizer'} <= judged, path


@pytest.mark.parametrize('option,cls,close', [
    ('model.head.n_ctxx=2', 'PositiveCoOpHead', "'n_ctx'"),
    ('model.backbone.pretraind=x.pt', 'FrozenCLIP', "'pretrained'"),
    ('model.head.loss.gama_neg=3', 'PartialAsymmetricLoss', "'gamma_neg'"),
    ('model.data_preprocessor.mena=0', 'CLIPDataPreprocessor', "'mean'"),
    ('train_dataloader.dataset.dataset.data_rot=x', 'COCO2014MultiLabel',
     "'data_root'"),
    ('val_dataloader.dataset.pipeline.1.scal=32', 'Resize', "'scale'"),
    ('train_dataloader.sampler.shufle=False', 'DefaultSampler',
     "'shuffle'"),
    ('val_evaluator.thrr=0.3', 'PartialMultiLabelMetric', "'thr'"),
    ('custom_hooks.0.priorty=10', 'PartialLabelMaskHook', "'priority'"),
    ('param_scheduler.0.vale=0.1', 'ConstantAbsoluteLR', "'value'"),
    ('optim_wrapper.optimizer.momentun=0.8', 'SGD', "'momentum'"),
    ('optim_wrapper.clip_gard=1', 'OptimWrapper', "'clip_grad'"),
])
def test_misspelt_nested_key_is_named_before_anything_is_built(
        setup, tmp_path, option, cls, close):
    """A key that the constructor of its type does not take stops
    tools/train.py (``--cfg-options``), ``MMCoopRunner.from_cfg`` and, for
    the model, ``init_model``, naming its path, the class, the close names
    and the fix, before anything is built or written. Before: the
    constructor's bare ``TypeError: ... unexpected keyword argument``."""
    from mmcoop.apis import init_model
    from mmcoop.engine import MMCoopRunner
    from mmcoop.engine.config_checks import UnknownConfigKeyError
    key, value = option.split('=')
    path = key.replace('.1.', '[1].').replace('.0.', '[0].')

    def named(err, filename):
        msg = str(err.value)
        assert f'Unknown config key `{path}` (did you mean {close}' in msg
        assert f'in {filename}' in msg and f'is a {cls} (' in msg
        assert 'Fix: rename it, or remove it' in msg

    work = tmp_path / 'work'
    with pytest.raises(UnknownConfigKeyError) as err:
        load_tool('tools/train.py').main([
            _write(setup, tmp_path), '--work-dir', str(work),
            '--cfg-options', option])
    named(err, str(tmp_path / 'c.py'))
    assert not work.exists()
    cfg = _cfg(setup, tmp_path, 'r.py')
    cfg.merge_from_dict({key: value})
    with pytest.raises(UnknownConfigKeyError) as err:
        MMCoopRunner.from_cfg(cfg)
    named(err, cfg.filename)
    assert not (tmp_path / 'work').exists()
    if key.startswith('model.'):
        with pytest.raises(UnknownConfigKeyError) as err:
            init_model(cfg)
        named(err, cfg.filename)


def test_nested_key_a_constructor_may_remove_warns(setup, tmp_path):
    """A ``**kwargs`` on the way that may remove keys itself makes an
    unknown key only probable: a warning with path, class and close names,
    no error. Keys that cannot be judged pass silently: a constructor that
    keeps its ``**kwargs``, ``**kwargs`` up to ``nn.Module``, an
    unregistered type, ``*_cfg`` subtrees (initializers; mmcv's norm
    layer builder takes ``requires_grad`` itself) and ``_scope_``."""
    import warnings

    from torch import nn

    from mmcoop.engine.config_checks import check_nested_keys
    from mmcoop.models.losses import PartialAsymmetricLoss

    class PopsAKey(PartialAsymmetricLoss):

        def __init__(self, **kwargs):
            self.note = kwargs.pop('note', None)
            super().__init__(**kwargs)

    class KeepsKwargs(nn.Module):

        def __init__(self, **kwargs):
            super().__init__()
            self.options = kwargs

    class ToModule(nn.Module):

        def __init__(self, **kwargs):
            super().__init__(**kwargs)

    cfg = _cfg(setup, tmp_path)
    cfg.model.head.loss = dict(type=PopsAKey, note='n', gama_neg=3)
    with pytest.warns(UserWarning) as record:
        judged = check_nested_keys(cfg)
    msg = ' '.join(str(w.message) for w in record)
    assert "Probably unknown config keys `model.head.loss.note`, " \
        "`model.head.loss.gama_neg` (did you mean 'gamma_neg'" in msg
    assert 'is a PopsAKey (' in msg and 'unless it reads them' in msg
    assert 'model.head.loss' in judged
    cfg.model.head.loss = dict(type=KeepsKwargs, anything=1)
    cfg.model.head.text_encoder = dict(type=ToModule, anything=1)
    cfg.model.backbone._scope_ = 'mmcoop'
    cfg.model.backbone.init_cfg = dict(type='Normal', stdd=1)
    cfg.model.neck = dict(
        type='LinearNeck', in_channels=64, out_channels=64,
        norm_cfg=dict(type='BN1d', requires_grad=True))
    cfg.data_preprocessor = dict(type='NotRegistered', anything=1)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        judged = check_nested_keys(cfg)
    assert 'model.neck' in judged and 'model.backbone' in judged
    assert not {'model.head.loss', 'model.head.text_encoder',
                'data_preprocessor'} & set(judged)


@pytest.mark.parametrize('field,value', [
    ('model_name', 'mmcoop-tiny-RN-512'),
    ('pretrained', None),
    ('force_quick_gelu', True),
])
def test_image_and_text_towers_of_two_clips_are_refused(
        setup, tmp_path, field, value):
    """A backbone and a text encoder that differ in model, weights or
    activation (same width: it would train) stop the run before the
    feature cache extracts anything, naming both fields."""
    from mmcoop.registry import RUNNERS
    cfg = _cfg(setup, tmp_path, feature_cache=dict(dtype='float32'))
    cfg.model.head.text_encoder[field] = value
    assert cfg.model.backbone.get(field, False) != value
    with pytest.raises(ValueError, match=(
            rf'model\.backbone\.{field}=.* but model\.head\.text_encoder\.'
            rf'{field}={value!r} \(.*c\.py\): the image and text towers '
            rf'must be one CLIP.*Fix: give both the same {field}')):
        RUNNERS.build(cfg)
    assert not (tmp_path / 'work').exists()


def test_one_clip_spelled_two_ways_is_accepted(setup, tmp_path):
    """The same weights file by two paths, and a random CLIP's seed when
    weights are loaded, are one CLIP; the seeds of two random CLIPs are
    not; a Baseline width other than the backbone's stops the run."""
    from mmcoop.engine.config_checks import check_clip_towers
    cfg = _cfg(setup, tmp_path)
    clip = cfg.model.backbone.pretrained
    cfg.model.head.text_encoder.pretrained = osp.join(
        osp.dirname(clip), '.', osp.basename(clip))
    cfg.model.head.text_encoder.init_seed = 3
    check_clip_towers(cfg)
    cfg.model.backbone.pretrained = None
    cfg.model.head.text_encoder.pretrained = None
    with pytest.raises(ValueError, match=r'model\.backbone\.init_seed=0 but '
                       r'model\.head\.text_encoder\.init_seed=3'):
        check_clip_towers(cfg)
    cfg.model.head = dict(type='BaselineHead', classnames=['a', 'b'],
                          in_channels=512)
    with pytest.raises(ValueError, match=r'model\.head\.in_channels=512 '
                       r".*gives 64-d features\. Fix: model\.head\."
                       r'in_channels=64\.'):
        check_clip_towers(cfg)
    cfg.model.head.in_channels = 64
    check_clip_towers(cfg)


def test_base_variables_left_unused_by_overrides_are_not_reported(tmp_path):
    """The documented way to point a config at a dataset elsewhere (the
    dataloaders' data_root on the command line) leaves the `data_root`
    variable (the base's, or the file's own) unused: not a mistake, no
    warning, even strict.
    The same variable set by the user (on the command line, or in a config
    that inherits the paper config) does not reach the dataloaders: named,
    with the keys to set instead."""
    import warnings

    from _helpers import ROOT

    from mmcoop.engine.config_checks import (UnknownConfigKeyError,
                                             check_unknown_keys)
    paper = osp.join(ROOT, 'configs', 'positivecoop',
                     'positivecoop_clip-rn101_openai-pre_1xb32-coslr-50e_'
                     'coco14-448px-p50.py')
    documented = {  # docs/get_started.md
        'train_dataloader.dataset.dataset.data_root': '/data/coco',
        'val_dataloader.dataset.data_root': '/data/coco',
        'test_dataloader.dataset.data_root': '/data/coco'
    }
    cfg = Config.fromfile(paper)
    cfg.merge_from_dict(documented)
    cfg.strict_config = True
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert check_unknown_keys(cfg) == []
    # the base's variable itself is unused now (what inherited=True sees)
    cfg.strict_config = False
    with pytest.warns(UserWarning):
        assert check_unknown_keys(cfg, inherited=True) == ['data_root']
    # set on the command line: the user's key, reported with the fix
    cfg.merge_from_dict({'data_root': '/data/coco2'})
    with pytest.warns(UserWarning, match=r"'data_root'.*a base config's "
                      r'variable \(such as data_root\) set here does not '
                      r'change the keys the base built from it.*'
                      r'train_dataloader.dataset.data_root'):
        assert check_unknown_keys(cfg) == ['data_root']
    # in a config that inherits the paper config: reported as well, and a
    # typo on the command line still is
    mine = tmp_path / 'mine.py'
    mine.write_text(f"_base_ = [{paper!r}]\ndata_root = '/data/coco'\n")
    cfg = Config.fromfile(str(mine))
    cfg.merge_from_dict({'trian_cfg.max_epochs': 1})
    cfg.strict_config = True
    with pytest.raises(UnknownConfigKeyError,
                       match=r"'data_root'.*'trian_cfg' \(did you mean "
                       r"'train_cfg'\?\)"):
        check_unknown_keys(cfg)
    # a variable the config file assigns itself (the demo config's
    # data_root), left unused by command-line overrides: not reported
    demo = Config.fromfile(osp.join(
        ROOT, 'configs', 'demo',
        'positivecoop_clip-tiny-vit_1xb16-coslr-20e_demo-shapes-p50.py'))
    demo.merge_from_dict(documented)
    demo.strict_config = True
    assert 'data_root' in demo and check_unknown_keys(demo) == []
    # overriding the dataloaders in the file: nothing to report
    mine.write_text(
        f"_base_ = [{paper!r}]\n"
        "train_dataloader = dict(dataset=dict(dataset=dict(\n"
        "    data_root='/data/coco')))\n"
        "val_dataloader = dict(dataset=dict(data_root='/data/coco'))\n"
        "test_dataloader = val_dataloader\n")
    cfg = Config.fromfile(str(mine))
    cfg.strict_config = True
    assert check_unknown_keys(cfg) == []


@pytest.mark.parametrize('option,kind', [
    ('optim_wrapper.optimizer.lr=0,5', 'a list'),
    ('train_cfg.max_epochs=ten', 'a string'),
    ('train_dataloader.dataset.known_proportion=[0.5]', 'a list'),
])
def test_cfg_option_of_the_wrong_type_names_the_option(
        setup, tmp_path, option, kind):
    work = tmp_path / 'w'
    with pytest.raises(ValueError) as err:
        load_tool('tools/train.py').main([
            _write(setup, tmp_path), '--work-dir',
            str(work), '--cfg-options', option
        ])
    key = option.split('=')[0]
    assert f'--cfg-options {key}=' in str(err.value)
    assert f'the option gives {kind}' in str(err.value)
    if key.endswith('lr'):
        assert '0.5, not 0,5' in str(err.value)
    assert not work.exists()


def test_work_dir_inside_the_dataset_is_refused_before_any_write(
        setup, tmp_path):
    from _helpers import tree_fingerprint
    before = tree_fingerprint(setup['data_root'])
    ckpt = tmp_path / 'never_read.pth'  # exists; the work dir stops first
    ckpt.write_bytes(b'')
    for work in (osp.join(setup['data_root'], 'runs', 'x'),
                 osp.join(setup['data_root'], 'train2014', 'x')):
        with pytest.raises(ValueError) as err:
            load_tool('tools/train.py').main(
                [_write(setup, tmp_path), '--work-dir', work])
        assert 'work dir' in str(err.value) and 'dataset folder' in str(
            err.value)
        assert "'work_dirs/<experiment>'" in str(err.value)
        with pytest.raises(ValueError, match='dataset folder'):
            load_tool('tools/test.py').main([
                _write(setup, tmp_path), str(ckpt), '--work-dir', work])
    assert tree_fingerprint(setup['data_root']) == before


def test_test_outputs_inside_the_dataset_are_refused_before_any_write(
        setup, tmp_path):
    """tools/test.py --out / --show-dir, as the work dir: never into the
    test set's folders. Before: written there (a demo tree then refused
    every later run: 'files the demo generator did not write')."""
    from _helpers import tree_fingerprint
    before = tree_fingerprint(setup['data_root'])
    ckpt = tmp_path / 'never_read.pth'
    ckpt.write_bytes(b'')
    work = tmp_path / 'work'
    for option, path in (('--out', osp.join(setup['data_root'], 'r.pkl')),
                         ('--show-dir', osp.join(setup['data_root'], 's'))):
        with pytest.raises(ValueError,
                           match=rf'\({option}\).*dataset folder.*Fix'):
            load_tool('tools/test.py').main([
                _write(setup, tmp_path), str(ckpt), '--work-dir',
                str(work), option, path])
    assert tree_fingerprint(setup['data_root']) == before
    assert not work.exists()


def test_work_dir_and_show_dir_that_are_files_are_named(setup, tmp_path):
    """A --work-dir or --show-dir that is a file (or below one): the option
    and the file named before the run starts, the file kept. Before: a bare
    FileExistsError from os.makedirs (for --show-dir after the model was
    built and the first batch ran)."""
    from mmcoop.utils.paths import OutputPathError
    notes = tmp_path / 'notes.txt'
    notes.write_text('mine')
    ckpt = tmp_path / 'never_read.pth'
    ckpt.write_bytes(b'')
    for work in (notes, notes / 'sub'):
        with pytest.raises(OutputPathError,
                           match=rf"work_dir '{work}'.*'{notes}' is a file"):
            load_tool('tools/train.py').main(
                [_write(setup, tmp_path), '--work-dir', str(work)])
        with pytest.raises(OutputPathError,
                           match=rf"--show-dir '{work}'.*is a file"):
            load_tool('tools/test.py').main([
                _write(setup, tmp_path), str(ckpt), '--work-dir',
                str(tmp_path / 'w'), '--show-dir', str(work)])
    assert notes.read_text() == 'mine'
    assert not (tmp_path / 'w').exists()


def test_resume_path_that_is_a_folder_or_url_is_named_before_any_write(
        setup, tmp_path):
    """--resume PATH / load_from: a folder names the checkpoint inside it
    (as tools/test.py does), a URL is refused, both before the work dir is
    made. Before: a folder was reported as 'does not exist', and the run
    had made its work dir and built the model first."""
    run = tmp_path / 'run'
    run.mkdir()
    (run / 'epoch_3.pth').write_bytes(b'')
    work = tmp_path / 'work'
    train = load_tool('tools/train.py')
    with pytest.raises(IsADirectoryError,
                       match=r'--resume PATH.*is a folder.*epoch_3\.pth'):
        train.main([_write(setup, tmp_path), '--work-dir', str(work),
                    '--resume', str(run)])
    with pytest.raises(FileNotFoundError,
                       match=r"'.*missing\.pth' does not exist.*local"):
        train.main([_write(setup, tmp_path), '--work-dir', str(work),
                    '--resume', str(tmp_path / 'missing.pth')])
    with pytest.raises(ValueError, match='local files only'):
        train.main([_write(setup, tmp_path), '--work-dir', str(work),
                    '--cfg-options', 'load_from=https://x/epoch_3.pth'])
    with pytest.raises(ValueError, match='local files only'):
        load_tool('tools/test.py').main([
            _write(setup, tmp_path), 'https://x/epoch_3.pth', '--work-dir',
            str(work)])
    assert not work.exists()


@pytest.mark.parametrize('split', [False, True])
def test_class_names_with_spaces_survive_cfg_options(split):
    """mmcoop's tools keep spaces that MMEngine's DictAction deletes, also
    when the shell split an unquoted list at its spaces."""
    from mmengine.config import DictAction
    train = load_tool('tools/train.py')
    value = '[traffic light, stop sign,fire  hydrant]'
    tokens = (f'model.head.classnames={value}'.split(' ')
              if split else [f'model.head.classnames={value}'])
    args = train.parse_args([
        'c.py', '--cfg-options', *tokens, 'a=1,2', 'b=(1,[x, y])', 'c=None',
        'd=True', 'e=0.5', "f='quoted name'"
    ])
    assert args.cfg_options == {
        'model.head.classnames':
        ['traffic light', 'stop sign', 'fire  hydrant'],
        'a': [1, 2],
        'b': (1, ['x', 'y']),
        'c': None,
        'd': True,
        'e': 0.5,
        'f': 'quoted name',
    }
    # what MMEngine's own action makes of it (why mmcoop has its own)
    assert DictAction._parse_iterable('[traffic light]') == ['trafficlight']


def test_class_names_with_spaces_train_and_squeezed_names_stop(
        setup, tmp_path):
    classes = setup['classes']
    assert any(' ' in c for c in classes)
    quoted = '[' + ','.join(classes) + ']'
    runner = load_tool('tools/train.py').main([
        _write(setup, tmp_path), '--work-dir',
        str(tmp_path / 'w'), '--cfg-options',
        f'model.head.classnames={quoted}'
    ])
    assert runner.model.head.classnames == classes
    # names that lost their spaces (MMEngine's DictAction) are an error
    squeezed = [c.replace(' ', '') for c in classes]
    from mmcoop.registry import RUNNERS
    cfg = _cfg(setup, tmp_path)
    cfg.model.head.classnames = squeezed
    cfg.work_dir = str(tmp_path / 'w2')
    with pytest.raises(ValueError) as err:
        RUNNERS.build(cfg).train()
    assert 'differ only in spaces' in str(err.value)
    assert not any(n.endswith('.pth') for n in os.listdir(tmp_path / 'w2'))


def _log_text(work):
    import glob
    return ''.join(
        open(p).read()
        for p in sorted(glob.glob(osp.join(str(work), '*', '*.log'))))


def test_resume_names_the_values_the_checkpoint_overrides(setup, tmp_path):
    cfg = _write(setup, tmp_path)
    work = tmp_path / 'w'
    load_tool('tools/train.py').main([cfg, '--work-dir', str(work)])
    load_tool('tools/train.py').main([
        cfg, '--work-dir',
        str(work), '--resume', '--cfg-options',
        'optim_wrapper.optimizer.lr=0.1', 'train_cfg.max_epochs=2'
    ])
    log = _log_text(work)
    assert ('the resumed optimizer and scheduler state win over the config '
            'for optimizer param group 0 lr: config 0.1 -> checkpoint 0.5'
            ) in log
    assert 'train_cfg (e.g. max_epochs) comes from the config' in log
    assert 'load_from=' in log
    # a plain resume says nothing of the kind
    plain = tmp_path / 'plain'
    load_tool('tools/train.py').main([cfg, '--work-dir', str(plain)])
    load_tool('tools/train.py').main([
        cfg, '--work-dir',
        str(plain), '--resume', '--cfg-options', 'train_cfg.max_epochs=2'
    ])
    assert 'win over the config' not in _log_text(plain)
    assert 'another global batch' not in _log_text(plain)


def test_resume_with_another_global_batch_is_named(setup, tmp_path):
    """A run resumed with another number of processes (or images per
    process) trained the rest with another global batch without a word:
    checkpoints record both (meta['train_batch']), a resume compares."""
    from mmengine.config import Config

    from mmcoop.utils import safe_torch_load
    cfg = _write(setup, tmp_path)
    batch = Config.fromfile(cfg).train_dataloader.batch_size
    work = tmp_path / 'w'
    load_tool('tools/train.py').main([cfg, '--work-dir', str(work)])
    meta = safe_torch_load(str(work / 'epoch_1.pth'),
                           runtime_state=True)['meta']
    assert meta['train_batch'] == dict(world_size=1, batch_size=batch)
    load_tool('tools/train.py').main([
        cfg, '--work-dir',
        str(work), '--resume', '--cfg-options', 'train_cfg.max_epochs=2',
        f'train_dataloader.batch_size={batch + 1}'
    ])
    assert (f'the checkpoint was trained with 1 process(es) x {batch} '
            f'images per step, this run has 1 process(es) x {batch + 1} '
            'images per step: the rest of the run trains with another '
            'global batch') in _log_text(work)


def _strip_train_batch(path):
    """``path`` as a checkpoint from before ``meta['train_batch']`` (its
    config text ``meta['cfg']`` kept). The test's own file: read with
    ``weights_only=False``."""
    import torch
    checkpoint = torch.load(path, weights_only=False)
    del checkpoint['meta']['train_batch']
    torch.save(checkpoint, path)


@pytest.mark.parametrize('batch, warned', [(2, True), (4, False)])
def test_resume_of_an_old_checkpoint_with_another_global_batch_is_named(
        tmp_path, batch, warned):
    """A checkpoint without ``meta['train_batch']`` (older mmcoop) is
    compared by the config it carries (``meta['cfg']``, parsed, never
    run): another ``train_dataloader.batch_size`` is warned as for a new
    checkpoint. Before: not a word."""
    from _common import toy_runtime_cfg

    from mmcoop.engine.runner import MMCoopRunner
    work = tmp_path / 'w'
    MMCoopRunner.from_cfg(toy_runtime_cfg(work, 1)).train()  # batch 4
    _strip_train_batch(str(work / 'epoch_1.pth'))
    cfg = toy_runtime_cfg(work, 2, resume='auto')
    cfg.train_dataloader.batch_size = batch
    MMCoopRunner.from_cfg(cfg).train()
    log = _log_text(work)
    assert (('the checkpoint was trained with 1 process(es) x 4 images per '
             'step (read from the config the checkpoint carries: it '
             'predates the train_batch record), this run has 1 process(es) '
             f'x {batch} images per step: the rest of the run trains with '
             'another global batch') in log) == warned
    assert ('another global batch' in log) == warned


def test_train_batch_of_a_stored_config_text():
    """What :func:`train_batch_in_config` reads: the batch size per
    process, and one process for ``launcher='none'`` (the default); the
    number of processes of another launcher is not recorded. Code in the
    text is never run."""
    from mmcoop.engine.runner import train_batch_differs, train_batch_in_config
    loader = "train_dataloader = dict(batch_size=8, num_workers=2)\n"
    assert train_batch_in_config(loader) == dict(world_size=1, batch_size=8)
    assert train_batch_in_config(
        loader + "launcher = 'none'\n") == dict(world_size=1, batch_size=8)
    pytorch = train_batch_in_config(loader + "launcher = 'pytorch'\n")
    assert pytorch == dict(world_size=None, batch_size=8)
    # unknown processes: compared on the batch size alone
    assert not train_batch_differs(pytorch, dict(world_size=4, batch_size=8))
    assert train_batch_differs(pytorch, dict(world_size=4, batch_size=16))
    for text in ('', None, 'x = 1\n', 'train_dataloader = dict(batch_size='
                 'b)\n', "train_dataloader = dict(batch_size=True)\n"):
        assert train_batch_in_config(text) is None
    text = ("import os\nos.environ['MMCOOP_RAN'] = '1'\n"
            'train_dataloader = dict(batch_size=int(os.environ["B"]))\n')
    assert train_batch_in_config(text) is None
    assert 'MMCOOP_RAN' not in os.environ


@pytest.mark.parametrize('option, match', [
    ('compile=yes', r"compile must be a bool or a dict, got 'yes'"),
    ('compile.modes=max-autotune',
     r"compile has keys torch.compile does not take: \['modes'\]"),
    ('compile.backend=eager compile.mode=reduce-overhead',
     r"compile: \['mode'\] apply to the inductor backend"),
])
def test_runner_compile_is_checked_before_anything_is_built(
        setup, tmp_path, option, match):
    """MMEngine's top-level ``compile`` (the model's steps compiled), as
    the towers' ``compile``: before: read when the train loop started,
    after the data, the model and a feature cache were built, as a bare
    ``AssertionError: `compile` should be a dict or bool`` / ``TypeError``.
    """
    work = tmp_path / 'work'
    with pytest.raises(ValueError, match=match + '.*Fix: '):
        load_tool('tools/train.py').main(
            [_write(setup, tmp_path), '--work-dir', str(work),
             '--cfg-options', *option.split()])
    assert not work.exists()


@pytest.mark.parametrize('key', ['param_scheduler.5.value',
                                 'param_scheduler.-1.eta_min',
                                 'param_scheduler.first.eta_min'])
def test_cfg_options_list_index_outside_the_list_is_named(key):
    """Before: MMEngine's bare KeyError ("Index 5 exceeds the length of
    list ...") or TypeError (list indices must be integers)."""
    from mmengine.config import Config

    from mmcoop.engine.cli import merge_cfg_options
    cfg = Config(dict(param_scheduler=[dict(type='A', value=1.),
                                       dict(type='B', eta_min=0.)]))
    with pytest.raises(ValueError, match=(
            rf'--cfg-options {re.escape(key)}: `param_scheduler` is a list '
            r'of 2 entries, so its entries are param_scheduler\.0 \.\. '
            r'param_scheduler\.1.*Fix')):
        merge_cfg_options(cfg, {key: 0.5})
    merge_cfg_options(cfg, {'param_scheduler.1.eta_min': 0.5})
    assert cfg.param_scheduler[1].eta_min == 0.5


def test_head_and_metric_thresholds_that_disagree_are_warned(
        shipped_configs):
    """``--cfg-options model.head.thr=0.3`` changed the labels but not one
    reported CP/CR/CF1 (the metric's own thr, 0.5): warned, naming both
    keys; the shipped configs agree."""
    from mmcoop.engine.config_checks import check_thresholds_agree
    for path, cfg in shipped_configs.items():
        with warnings.catch_warnings():
            warnings.simplefilter('error')
            check_thresholds_agree(cfg)
    cfg = Config(dict(
        model=dict(head=dict(type='PositiveCoOpHead', thr=0.3)),
        val_evaluator=dict(type='PartialMultiLabelMetric', thr=0.5),
        test_evaluator=[dict(type='mmcoop.PartialMultiLabelMetric'),
                        dict(type='Other', thr=0.9)]))
    with pytest.warns(UserWarning) as caught:
        check_thresholds_agree(cfg)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2
    assert ('model.head.thr = 0.3 labels the predictions, but '
            'val_evaluator.thr = 0.5 is the threshold of the reported') \
        in messages[0]
    assert 'model.head.thr=0.3 val_evaluator.thr=0.3' in messages[0]
    assert 'test_evaluator[0].thr = 0.5' in messages[1]
    cfg.val_evaluator.thr = cfg.test_evaluator[0]['thr'] = 0.3
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        check_thresholds_agree(cfg)


DEMO = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))), 'configs', 'demo',
    'positivecoop_clip-tiny-vit_1xb16-coslr-20e_demo-shapes-p50.py')


def test_a_normalisation_of_another_family_is_warned(shipped_configs):
    """A config switched to another CLIP family kept the old family's
    image statistics (SigLIP's 0.5 / 0.5 for an OpenAI-style tower): the
    tower saw other inputs than it was trained on, without a word."""
    from mmcoop.engine.config_checks import check_normalization
    cfg = Config.fromfile(DEMO)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        check_normalization(cfg)  # the tiny towers: CLIP's statistics
    cfg.model.data_preprocessor.mean = [127.5] * 3
    cfg.model.data_preprocessor.std = [127.5] * 3
    with pytest.warns(UserWarning) as caught:
        check_normalization(cfg)
    msg = str(caught[0].message)
    assert ("mean=[127.5, 127.5, 127.5] std=[127.5, 127.5, 127.5] are not "
            "the image statistics the weights of 'mmcoop-tiny-ViT' expect "
            '(mean=[122.771, 116.746, 104.094]') in msg
    assert "Fix: set model.data_preprocessor's mean and std" in msg


def test_init_model_refuses_two_clips_as_the_runner_does():
    """init_model (image_demo.py, export.py, the inference API) skipped
    the runner's check of one CLIP for both towers; a zero-shot model has
    no checkpoint that would show it."""
    from mmcoop.apis import init_model
    options = {'model.head.type': 'ZeroShotHead',
               'model.backbone.model_name': 'mmcoop-tiny-RN'}
    with pytest.raises(ValueError, match=r"model.backbone.model_name="
                       r"'mmcoop-tiny-RN' but model.head.text_encoder."
                       r"model_name='mmcoop-tiny-ViT'"):
        init_model(DEMO, cfg_options=options)

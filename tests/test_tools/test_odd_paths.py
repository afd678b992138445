# Copyright (c) mmcoop contributors. All rights reserved.
"""Odd but legal paths: folders whose names hold glob syntax (``[``,
``]``, ``*``, ``?``) are read as folders, never as patterns that match a
sibling folder's files."""
import json
import os
import os.path as osp
import shutil

import pytest
from _common import load_tool

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

publish_tool = load_tool('tools/model_converters/publish_model.py')


def _touch(path, text='x = 1\n'):
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(text)
    return path


# ------------------------------------------------ glob syntax in a folder
@pytest.mark.parametrize('name', ['g[1]', 'g?', 'g*'])
def test_selected_checkpoint_reads_only_its_own_folder(tmp_path, name):
    """Before: ``g[1]`` globbed as a pattern matched the sibling ``g1``:
    the sweep tested another sweep's checkpoint as this run's."""
    from mmcoop.experiments.sweep import last_checkpoint, selected_checkpoint
    sibling = tmp_path / 'g1'
    real = tmp_path / name
    for f in ('best_multi-label_mAP_epoch_2.pth', 'epoch_2.pth'):
        _touch(str(sibling / f), '')
    for f in ('best_multi-label_mAP_epoch_1.pth', 'epoch_1.pth'):
        _touch(str(real / f), '')
    best = selected_checkpoint(str(real), 'best')
    assert best == str(real / 'best_multi-label_mAP_epoch_1.pth')
    assert selected_checkpoint(str(real), 'last') == str(real / 'epoch_1.pth')
    assert last_checkpoint(str(real)) == str(real / 'epoch_1.pth')
    # the folder alone (no checkpoint): nothing of the sibling's is taken
    empty = tmp_path / 'e[1]'
    empty.mkdir()
    _touch(str(tmp_path / 'e1' / 'epoch_3.pth'), '')
    with pytest.raises(FileNotFoundError, match=r'e\[1\]: no checkpoint'):
        selected_checkpoint(str(empty), 'last')
    with pytest.raises(RuntimeError, match='no best_'):
        selected_checkpoint(str(empty), 'best')


def test_find_config_reads_only_its_own_root(tmp_path):
    from mmcoop.experiments.sweep import find_config
    real = _touch(str(tmp_path / 'cfg[2]' / 'pos' /
                      'pos_clip-rn101_1x_voc07-448px-p50.py'))
    _touch(str(tmp_path / 'cfg2' / 'pos' /
               'pos_clip-rn101_1x_voc07-448px-p40.py'))
    _touch(str(tmp_path / 'cfg2' / 'pos_clip-vit_1x_voc07-448px-p40.py'))
    assert find_config(str(tmp_path / 'cfg[2]'), 'pos', 'voc07', 0.4) == real
    assert find_config(str(tmp_path / 'cfg[2]'), 'pos', 'voc07', 0.5) == real
    # the recursive tier too
    only = _touch(str(tmp_path / 'r[1]' / 'a' /
                      'pos_clip-rn101_1x_voc07-448px-p50.py'))
    _touch(str(tmp_path / 'r1' / 'b' / 'pos_clip-vit_1x_voc07-448px-p50.py'))
    assert find_config(str(tmp_path / 'r[1]'), 'pos', 'voc07', 0.5) == only
    # a root with no config: none of the sibling's taken
    (tmp_path / 'n[1]').mkdir()
    _touch(str(tmp_path / 'n1' / 'pos_clip-rn101_1x_voc07-448px-p50.py'))
    with pytest.raises(FileNotFoundError, match='No config'):
        find_config(str(tmp_path / 'n[1]'), 'pos', 'voc07', 0.5)


def test_measured_map_and_publish_read_only_their_work_dir(tmp_path):
    from mmcoop.apis.metafile import measured_map
    for work_dir, value in (('exp1', 50.0), ('exp[1]', 20.0)):
        _touch(
            str(tmp_path / work_dir / '20261205_000000' / 'vis_data' /
                'scalars.json'),
            json.dumps({'multi-label/mAP': value, 'step': 1}) + '\n')
    _touch(str(tmp_path / 'exp1' / 'other_config.py'))
    _touch(str(tmp_path / 'exp[1]' / 'my_config.py'))
    assert measured_map(str(tmp_path / 'exp[1]'), 1) == 20.0
    assert publish_tool._run_config_name(str(tmp_path / 'exp[1]')) == (
        'my_config')


def test_update_model_zoo_reads_only_its_config_root(tmp_path):
    from mmcoop.apis.metafile import update_model_zoo
    real = tmp_path / 'c[1]'
    real.mkdir()
    # a sibling's metafile that is not YAML: read, it would raise
    _touch(str(tmp_path / 'c1' / 'pos' / 'metafile.yml'), '{[: not yaml')
    assert update_model_zoo(str(real), check=True) == []


def test_family_bases_read_only_their_folder(tmp_path):
    from mmcoop.benchmark.towers import _family_bases
    models = osp.join(REPO, 'configs', '_base_', 'models')
    real = tmp_path / 'm[1]'
    shutil.copytree(models, str(real))
    shutil.copytree(models, str(tmp_path / 'm1'))
    _touch(str(tmp_path / 'm1' / 'clip_families' / 'zz_sibling.py'),
           "_clip_model = dict(model_name='not-mine')\n")
    families = _family_bases(str(real / 'clip_families'))
    assert 'zz_sibling' not in families
    assert 'rn50_openai' in families


# ------------------------------------------- outputs in a dataset folder
DEMO_CONFIG = osp.join(
    REPO, 'configs', 'demo',
    'positivecoop_clip-tiny-vit_1xb16-coslr-20e_demo-shapes-p50.py')
# the demo config's data_root, relative to the working folder
DEMO_ROOT = osp.join('data', 'mmcoop_demo_shapes')


def _tree(root):
    return sorted(
        osp.relpath(osp.join(d, f), root) for d, ds, fs in os.walk(root)
        for f in ds + fs)


def _in_dataset_cases():
    inside = osp.join(DEMO_ROOT, 'out')
    return {
        'analyze_results': ('tools/analysis/analyze_results.py', [
            DEMO_CONFIG, 'res.pkl', '--out-dir', inside
        ], '--out-dir'),
        'image_demo': ('demo/image_demo.py', [
            'img.png', DEMO_CONFIG, 'none', '--show-dir', inside
        ], '--show-dir'),
        'similarity_map': ('tools/visualization/similarity_map.py', [
            'img.png', '--class', 'circle', '--config', DEMO_CONFIG,
            '--out', osp.join(inside, 'map.png')
        ], '--out'),
        'export': ('tools/deployment/export.py', [
            DEMO_CONFIG, 'none', '--out', osp.join(inside, 'model.onnx')
        ], '--out'),
        'deployment_benchmark': ('tools/deployment/benchmark.py', [
            DEMO_CONFIG, 'none', '--work-dir', inside
        ], '--work-dir'),
    }


@pytest.mark.parametrize('case', sorted(_in_dataset_cases()))
def test_tools_refuse_outputs_in_the_dataset_folder(tmp_path, monkeypatch,
                                                    capsys, case):
    """Before: analyze_results.py --out-dir, image_demo.py --show-dir (and
    similarity_map.py --out, export.py --out, deployment/benchmark.py
    --work-dir) wrote into the config's dataset folder; on the demo tree
    the next training refused its own data."""
    from PIL import Image
    script, argv, option = _in_dataset_cases()[case]
    monkeypatch.chdir(tmp_path)
    os.makedirs(DEMO_ROOT)
    _touch(osp.join(DEMO_ROOT, 'demo_manifest.json'), '{}')
    Image.new('RGB', (8, 8)).save('img.png')
    before = _tree(str(tmp_path / 'data'))
    tool = load_tool(script)
    try:
        rc = tool.main(argv)
    except (ValueError, SystemExit) as e:
        text = str(e)
    else:  # export.py prints its error and returns 2
        assert rc, rc
        text = ''
    text += capsys.readouterr().err
    assert 'never writes into a dataset tree' in text, text
    assert osp.realpath(DEMO_ROOT) in text and option in text
    assert _tree(str(tmp_path / 'data')) == before


def test_sweep_refuses_an_out_in_the_dataset_folder(tmp_path, monkeypatch):
    """Before: the sweep wrote its lock, sweep.json and the run folders
    into the dataset tree; only then did train.py refuse the work dir."""
    from mmcoop.experiments.sweep import SweepError, plan_runs, run_sweep
    monkeypatch.chdir(tmp_path)
    os.makedirs(DEMO_ROOT)
    _touch(osp.join(DEMO_ROOT, 'demo_manifest.json'), '{}')
    before = _tree(str(tmp_path / 'data'))
    runs = plan_runs(['positivecoop'], ['demo'], [0.5], [0], 'clean')
    for out in (osp.join(DEMO_ROOT, 'sweep'), DEMO_ROOT):
        with pytest.raises(SweepError,
                           match=r'sweep folder \(--out\).*never writes'):
            run_sweep(runs, out, log=lambda *a: None)
        assert _tree(str(tmp_path / 'data')) == before
    # the data moved with --cfg-options: that folder is refused, the
    # config's own is then free
    elsewhere = tmp_path / 'elsewhere'
    opts = [f'{k}={elsewhere}' for k in (
        'train_dataloader.dataset.dataset.data_root',
        'val_dataloader.dataset.data_root',
        'test_dataloader.dataset.data_root')]
    with pytest.raises(SweepError, match='never writes'):
        run_sweep(runs, str(elsewhere / 'sweep'), cfg_options=opts,
                  log=lambda *a: None)
    assert not elsewhere.exists()


# ------------------------------------------------- a symbolic link to nothing
def _dangling(tmp_path):
    target = tmp_path / 'not_mounted_scratch'
    link = tmp_path / 'scratch'
    os.symlink(str(target), str(link))
    return str(link), str(target)


def _named_link(message, link, target):
    assert f'{link!r} is a symbolic link to {target!r}' in message, message
    assert 'does not exist' in message and f'mount or create {target!r}' \
        in message, message


@pytest.mark.parametrize('below', [False, True])
def test_a_dangling_link_as_the_work_dir_is_named(tmp_path, below):
    """Before: ``osp.exists`` is False for the link, the check passed and
    MMEngine stopped with a bare ``FileExistsError``."""
    from mmcoop.engine.config_checks import check_work_dir_is_a_folder
    from mmcoop.utils.paths import OutputPathError, claim_outputs
    link, target = _dangling(tmp_path)
    work_dir = osp.join(link, 'exp') if below else link
    with pytest.raises(OutputPathError, match='work_dir') as exc:
        check_work_dir_is_a_folder(work_dir)
    _named_link(str(exc.value), link, target)
    with pytest.raises(OutputPathError, match='--out') as exc:
        claim_outputs([osp.join(work_dir, 'res.pkl')], option='--out')
    _named_link(str(exc.value), link, target)
    assert not osp.exists(target)


def test_a_dangling_link_as_the_feature_cache_root_is_named(tmp_path):
    """Before: accepted by the config check, then a bare
    ``FileExistsError`` once the image tower was built."""
    from mmengine.config import Config

    from mmcoop.datasets import apply_feature_cache
    from mmcoop.utils.paths import OutputPathError
    link, target = _dangling(tmp_path)
    cfg = Config.fromfile(DEMO_CONFIG)
    cfg.feature_cache = dict(cache_root=link)
    with pytest.raises(OutputPathError,
                       match=r'feature_cache\.cache_root') as exc:
        apply_feature_cache(cfg)
    _named_link(str(exc.value), link, target)
    assert not osp.exists(target)


def test_a_dangling_link_as_the_sweep_out_is_named(tmp_path):
    """Before: ``--out ... is a file, not a sweep folder``."""
    from mmcoop.experiments.sweep import SweepError, check_out_dir
    link, target = _dangling(tmp_path)
    with pytest.raises(SweepError) as exc:
        check_out_dir(link)
    _named_link(str(exc.value), link, target)

# Copyright (c) mmcoop contributors. All rights reserved.
"""Model zoo: model-index.yml, metafiles (mmpretrain format) and READMEs
(paper numbers clearly labelled, 'ours (measured)' never filled with them)."""
import importlib.util
import os
import os.path as osp
import re
import shutil

import pytest
import yaml

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
METHODS = ('positivecoop', 'negativecoop', 'dualcoop', 'baseline')
P = list(range(10, 100, 10))

# PositiveCoOp paper (WACV 2025), mAP tables on COCO and VOC2007, 10..90%
# and the average.
PAPER = {
    'coco14': {
        'dualcoop':
        [78.7, 80.9, 81.7, 82.0, 82.5, 82.7, 82.8, 83.0, 83.1, 81.9],
        'baseline':
        [78.9, 80.6, 81.3, 81.9, 82.7, 82.8, 82.9, 83.2, 83.5, 82.0],
        'negativecoop':
        [77.8, 80.3, 81.0, 81.9, 82.2, 82.4, 82.7, 82.8, 82.9, 81.6],
        'positivecoop':
        [79.8, 82.1, 83.0, 83.5, 83.7, 83.9, 84.0, 84.2, 84.4, 83.2],
    },
    'voc07': {
        'dualcoop':
        [90.3, 92.2, 92.8, 93.3, 93.6, 93.9, 94.0, 94.1, 94.2, 93.2],
        'baseline':
        [90.5, 92.2, 92.8, 93.0, 93.3, 93.8, 93.9, 94.0, 94.2, 93.1],
        'negativecoop':
        [88.9, 89.3, 89.6, 89.9, 90.7, 91.2, 91.8, 92.1, 92.4, 90.8],
        'positivecoop':
        [91.4, 92.8, 93.4, 93.6, 93.8, 94.0, 94.2, 94.2, 94.3, 93.6],
    },
}
GPU_HOURS = {  # paper: (COCO, VOC)
    'dualcoop': ('16', '3.55'),
    'baseline': ('7.97', '1.5'),
    'negativecoop': ('16', '3'),
    'positivecoop': ('16', '3'),
}
TRAINABLE = {  # official code, D = W = 512, 16 class-specific tokens
    'positivecoop': (737280, 184320),
    'negativecoop': (737280, 184320),
    'dualcoop': (1310720, 327680),
    'baseline': (82080, 20520),
}


def _stem(method, data, p):
    return f'{method}_clip-rn101_openai-pre_1xb32-coslr-50e_{data}-448px-p{p}'


def test_model_index_imports_every_metafile():
    with open(osp.join(REPO, 'model-index.yml')) as f:
        index = yaml.safe_load(f)
    assert index == {'Import': [f'configs/{m}/metafile.yml' for m in METHODS]}


@pytest.mark.parametrize('method', METHODS)
def test_metafile(method):
    from modelindex.load_model_index import load
    index = load(osp.join(REPO, 'configs', method, 'metafile.yml'))
    index.build_models_with_collections()
    assert len(index.collections) == 1
    collection = index.collections[0]
    assert osp.isfile(osp.join(REPO, collection.readme))
    assert collection.paper['Title'] and collection.paper['URL'].startswith(
        'https://arxiv.org/abs/')
    names = [m.name for m in index.models]
    assert names == [
        _stem(method, d, p) for d in ('coco14', 'voc07') for p in P
    ]
    for model in index.models:
        assert model.in_collection == collection.name
        assert model.config == f'configs/{method}/{model.name}.py'
        assert osp.isfile(osp.join(REPO, model.config))
        coco = '_coco14-' in model.name
        assert model.metadata.parameters == TRAINABLE[method][0 if coco else 1]
        assert 3.7e10 < model.metadata.flops < 3.8e10
        # the paper's number under `Paper mAP`; nothing measured, nothing
        # released yet
        data = 'coco14' if coco else 'voc07'
        p = int(model.name.rsplit('-p', 1)[1])
        result, = model.results
        assert result.task == 'Multi-Label Classification'
        assert result.dataset == model.metadata.training_data == (
            'MS-COCO 2014' if coco else 'PASCAL VOC 2007')
        paper = PAPER[data][method][p // 10 - 1]
        assert result.metrics == {'Paper mAP': paper}
        assert model.weights is None
    averages = collection.metadata.data['Paper Average mAP']
    assert averages == {'MS-COCO 2014': PAPER['coco14'][method][9],
                        'PASCAL VOC 2007': PAPER['voc07'][method][9]}


def _table(readme):
    rows = [
        line for line in readme.splitlines()
        if line.startswith('| ') and re.match(r'\| (\d+%|avg) \|', line)
    ]
    return [[c.strip() for c in r.strip('|').split('|')] for r in rows]


@pytest.mark.parametrize('method', METHODS)
def test_readme(method):
    path = osp.join(REPO, 'configs', method, 'README.md')
    with open(path) as f:
        readme = f.read()
    header = ('| p | COCO paper | COCO ours (measured) | COCO config '
              '| COCO weights | VOC paper | VOC ours (measured) | VOC config '
              '| VOC weights |')
    assert header in readme
    rows = _table(readme)
    assert [r[0] for r in rows] == [f'{p}%' for p in P] + ['avg']
    for i, row in enumerate(rows):
        assert float(row[1]) == PAPER['coco14'][method][i]
        assert float(row[5]) == PAPER['voc07'][method][i]
        # 'ours (measured)' and weights stay empty until measured with mmcoop
        assert row[2] == row[4] == row[6] == row[8] == ''
    for link in re.findall(r'\]\(([^)]+\.py)\)', readme):
        assert osp.isfile(osp.join(osp.dirname(path), link)), link
    for cfg in re.findall(r'(?<![\w/])(configs/\S+?\.py)', readme):
        assert osp.isfile(osp.join(REPO, cfg)), cfg
    coco_h, voc_h = GPU_HOURS[method]
    assert f'{coco_h} GPU hours on COCO, {voc_h} on VOC' in readme
    assert 'python tools/train.py configs/' in readme
    assert 'python tools/test.py configs/' in readme
    assert 'epoch_50.pth' in readme
    assert '**Model selection.**' in readme and 'final epoch' in readme
    assert 'test set' in readme
    assert '```bibtex' in readme and '## Abstract' in readme


def test_get_started_new_dataset_example(tmp_path):
    """The 'new dataset' configs of docs/get_started.md parse as shown."""
    from mmengine.config import Config
    with open(osp.join(REPO, 'docs', 'get_started.md')) as f:
        doc = f.read()
    section = doc.split('## 6. A new dataset', 1)[1].split('\n## ', 1)[0]
    data_cfg, method_cfg = re.findall(r'```python\n(.*?)```', section, re.S)
    base = osp.join(REPO, 'configs', '_base_')
    data_path = tmp_path / 'mydata_partial_448.py'
    data_path.write_text(
        data_cfg.replace(
            "'./coco14_partial_448.py'",
            repr(osp.join(base, 'datasets', 'coco14_partial_448.py'))))
    text = method_cfg.replace("'../_base_/datasets/mydata_partial_448.py'",
                              repr(str(data_path)))
    text = text.replace("'../_base_/", repr(base + '/')[:-1])
    method_path = tmp_path / 'method.py'
    method_path.write_text(text)
    cfg = Config.fromfile(str(method_path))
    classes = ['cat', 'dog', 'traffic light']
    assert cfg.model.head.classnames == classes
    inner = cfg.train_dataloader.dataset.dataset
    assert inner.classes == classes and inner.data_root == 'data/mydata'
    assert inner.ann_file == 'annotations/train.json'
    assert cfg.test_dataloader.dataset.ann_file == 'annotations/val.json'
    assert cfg.train_dataloader.dataset.known_proportion == 0.5
    assert cfg.model.head.type == 'PositiveCoOpHead'


def test_readmes_are_generated_from_the_metafiles(tmp_path):
    """`.dev_scripts/gen_model_zoo_tables.py --check` (nothing written);
    the check does see a README table edited by hand, and the update
    restores the generated one."""
    import subprocess
    import sys
    proc = subprocess.run(
        [sys.executable,
         osp.join(REPO, '.dev_scripts', 'gen_model_zoo_tables.py'), '--check'],
        capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from mmcoop.apis.metafile import update_model_zoo
    folder = tmp_path / 'baseline'
    folder.mkdir()
    for name in ('metafile.yml', 'README.md'):
        shutil.copy(osp.join(REPO, 'configs', 'baseline', name), folder)
    readme = folder / 'README.md'
    generated = readme.read_text()
    row = '| 10% | 78.9 |'
    assert generated.count(row) == 1
    edited = generated.replace(row, '| 10% | 79.9 |')
    readme.write_text(edited)
    assert update_model_zoo(str(tmp_path), check=True) == [str(readme)]
    assert readme.read_text() == edited  # --check writes nothing
    assert update_model_zoo(str(tmp_path)) == [str(readme)]
    assert readme.read_text() == generated
    assert update_model_zoo(str(tmp_path), check=True) == []


def _fake_run(work_dir, name, epoch, logged, classes=('a', 'b')):
    """A run's work dir as MMEngine leaves it: the config, a checkpoint
    (of ``classes``) and the validation records of vis_data/scalars.json."""
    import json

    import torch
    work_dir.mkdir()
    (work_dir / f'{name}.py').write_text('# config\n')
    vis = work_dir / '20260101_000000' / 'vis_data'
    vis.mkdir(parents=True)
    with open(vis / 'scalars.json', 'w') as f:
        for step, value in logged:
            f.write(json.dumps({'loss': 1.0, 'step': step * 10}) + '\n')
            f.write(json.dumps({'multi-label/mAP': value, 'step': step}) +
                    '\n')
    ckpt = str(work_dir / f'epoch_{epoch}.pth')
    torch.save({'state_dict': {'head.fc.weight': torch.ones(2, 3)},
                'meta': {'epoch': epoch, 'dataset_meta': {
                    'classes': list(classes)}}}, ckpt)
    return ckpt


def test_publish_records_weights_and_measured_map(tmp_path):
    """publish_model.py --metafile: `Weights` and the mAP the run logged at
    the checkpoint's epoch go into the entry; the paper's number and the
    other entries stay; the README table shows them."""
    import shutil

    from _common import load_tool

    from mmcoop.apis.metafile import read_metafile, render_readme
    from mmcoop.datasets.categories import VOC2007_CATEGORIES
    publish_tool = load_tool('tools/model_converters/publish_model.py')

    metafile = str(tmp_path / 'metafile.yml')
    shutil.copy(osp.join(REPO, 'configs', 'baseline', 'metafile.yml'),
                metafile)
    before = read_metafile(metafile)
    name = _stem('baseline', 'voc07', 30)
    # validation at epochs 2 and 3; the checkpoint is epoch 3
    # a model of the entry's config (VOC's classes): checked against the
    # installed mmcoop's config, as the copy has no configs/ beside it
    ckpt = _fake_run(tmp_path / 'run', name, 3, [(2, 80.5), (3, 91.23456)],
                     VOC2007_CATEGORIES)
    out = tmp_path / 'release'
    out.mkdir()
    final = publish_tool.main([
        ckpt, str(out / f'{name}.pth'), '--no-date', '--metafile', metafile
    ])
    after = read_metafile(metafile)
    for old, new in zip(before['Models'], after['Models']):
        if new['Name'] != name:
            assert new == old
            continue
        assert new['Weights'] == final
        assert new['Results'][0]['Metrics'] == {
            'Paper mAP': PAPER['voc07']['baseline'][2], 'mAP': 91.23}
    assert after['Collections'] == before['Collections']
    with open(osp.join(REPO, 'configs', 'baseline', 'README.md')) as f:
        readme = render_readme(f.read(), after)
    row, = [r for r in _table(readme) if r[0] == '30%']
    assert row[5:] == [
        f"{PAPER['voc07']['baseline'][2]:.1f}", '91.23',
        f'[config]({name}.py)', f'[model]({final})'
    ]
    assert row[2] == row[4] == ''  # the COCO entry was not touched

    # a URL instead of the local path: of the folder the file goes to (its
    # published name, with the SHA-256 prefix the zoo checks, appended),
    # or of the file under that name; another name is refused, nothing
    # recorded (the download would fail the check, or find no file), and
    # no release written either (before: the file was written, then refused)
    released = sorted(os.listdir(out))
    with pytest.raises(ValueError, match=r"names the file 'again\.pth', "
                       r"but the published file is 'again-[0-9a-f]{8}"):
        publish_tool.main([
            ckpt, str(out / 'again.pth'), '--no-date', '--metafile',
            metafile, '--weights-url', 'https://example.org/again.pth'
        ])
    assert [m['Weights'] for m in read_metafile(metafile)['Models']
            if m['Name'] == name] == [final]
    assert sorted(os.listdir(out)) == released
    again = publish_tool.main([
        ckpt, str(out / 'again.pth'), '--no-date', '--metafile', metafile,
        '--weights-url', 'https://example.org/rel/'
    ])
    url = 'https://example.org/rel/' + osp.basename(again)
    assert [m['Weights'] for m in read_metafile(metafile)['Models']
            if m['Name'] == name] == [url]
    other = _stem('baseline', 'voc07', 40)
    ckpt = _fake_run(tmp_path / 'run2', other, 4, [(2, 80.0)],
                     VOC2007_CATEGORIES)
    released = sorted(os.listdir(out))
    with pytest.raises(ValueError, match='epoch 4'):
        publish_tool.main([
            ckpt, str(out / 'x.pth'), '--no-date', '--metafile', metafile
        ])
    assert sorted(os.listdir(out)) == released
    assert [m for m in read_metafile(metafile)['Models']
            if m['Name'] == other][0]['Weights'] is None


def test_publish_refuses_a_checkpoint_of_another_config(tmp_path):
    """Before: any checkpoint was recorded under any entry (a 10-class
    tiny-ViT demo run as the COCO RN101 p50 model), and a local Weights
    path was written as typed, relative to the folder publish ran in."""
    import torch
    from _common import load_tool

    from mmcoop.apis.metafile import read_metafile
    publish_tool = load_tool('tools/model_converters/publish_model.py')
    root = tmp_path / 'repo'
    shutil.copytree(osp.join(REPO, 'configs'), root / 'configs')
    metafile = str(root / 'configs' / 'baseline' / 'metafile.yml')
    name = _stem('baseline', 'voc07', 30)
    out = tmp_path / 'release'
    out.mkdir()
    # two classes: not VOC's twenty
    ckpt = _fake_run(tmp_path / 'run', name, 3, [(3, 50.0)])
    with pytest.raises(ValueError, match=(
            rf"epoch_3\.pth is not a model of '{name}': its 2 classes \(a, "
            r'b, \.\.\.\) are not the 20 of .*Fix: pass --model-name NAME, '
            r'the metafile entry .*no file was written')):
        publish_tool.main([ckpt, str(out / 'a.pth'), '--no-date',
                           '--metafile', metafile])
    assert [m['Weights'] for m in read_metafile(metafile)['Models']
            if m['Name'] == name] == [None]
    assert os.listdir(out) == []  # checked before the release is written
    # VOC's classes, trained on another CLIP
    from mmcoop.datasets.categories import VOC2007_CATEGORIES
    ckpt = str(tmp_path / 'run' / 'epoch_3.pth')
    torch.save({'state_dict': {'head.fc.weight': torch.ones(2, 3)},
                'meta': {'epoch': 3, 'dataset_meta': {
                    'classes': list(VOC2007_CATEGORIES)},
                    'clip_towers': {'backbone': {
                        'model_name': 'ViT-B-16'}}}}, ckpt)
    with pytest.raises(ValueError, match=r"trained on CLIP 'ViT-B-16', the "
                       r"entry's config .* uses 'RN101-quickgelu'"):
        publish_tool.main([ckpt, str(out / 'b.pth'), '--no-date',
                           '--metafile', metafile])
    # the right classes and CLIP: recorded, with an absolute local path
    torch.save({'state_dict': {'head.fc.weight': torch.ones(2, 3)},
                'meta': {'epoch': 3, 'dataset_meta': {
                    'classes': list(VOC2007_CATEGORIES)}}}, ckpt)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        final = publish_tool.main([ckpt, 'release/c.pth', '--no-date',
                                   '--metafile', metafile])
    finally:
        os.chdir(cwd)
    [weights] = [m['Weights'] for m in read_metafile(metafile)['Models']
                 if m['Name'] == name]
    assert weights == str(tmp_path / final) and osp.isabs(weights)


def test_publish_checks_a_metafile_kept_apart_from_its_configs(tmp_path):
    """A copy of a metafile without the configs beside it is checked
    against the installed mmcoop's configs; an entry whose config is found
    nowhere is refused. Before, the check was skipped without a word: a
    2-class run was recorded under a VOC entry."""
    from _common import load_tool

    from mmcoop.apis.metafile import read_metafile, write_metafile
    publish_tool = load_tool('tools/model_converters/publish_model.py')
    metafile = str(tmp_path / 'metafile.yml')
    shutil.copy(osp.join(REPO, 'configs', 'baseline', 'metafile.yml'),
                metafile)
    name = _stem('baseline', 'voc07', 30)
    out = tmp_path / 'release'
    out.mkdir()
    ckpt = _fake_run(tmp_path / 'run', name, 3, [(3, 50.0)])
    with pytest.raises(ValueError, match=(
            rf"is not a model of '{name}': its 2 classes \(a, b, \.\.\.\) "
            'are not the 20 of ')):
        publish_tool.main([ckpt, str(out / 'a.pth'), '--no-date',
                           '--metafile', metafile])
    data = read_metafile(metafile)
    [entry] = [m for m in data['Models'] if m['Name'] == name]
    entry['Config'] = 'configs/baseline/no_such_config.py'
    write_metafile(data, metafile)
    with pytest.raises(ValueError, match=(
            rf"the config of entry '{name}' \('configs/baseline/"
            r"no_such_config\.py'\) is found neither .* Fix: record the "
            'release in the metafile of the repository')):
        publish_tool.main([ckpt, str(out / 'a.pth'), '--no-date',
                           '--metafile', metafile])
    assert [m['Weights'] for m in read_metafile(metafile)['Models']
            if m['Name'] == name] == [None]
    assert os.listdir(out) == []


def test_paper_numbers_come_from_the_reference_file():
    """Paper mAP in the metafiles is generated from paper_results.yml: a
    changed number is restored, nothing else moves."""
    from mmcoop.apis.metafile import read_metafile, with_paper_numbers
    data = read_metafile(osp.join(REPO, 'configs', 'dualcoop',
                                  'metafile.yml'))
    edited = read_metafile(osp.join(REPO, 'configs', 'dualcoop',
                                    'metafile.yml'))
    edited['Models'][12]['Results'][0]['Metrics']['Paper mAP'] = 1.0
    del edited['Collections'][0]['Metadata']['Paper Average mAP']
    assert with_paper_numbers(edited, 'dualcoop') == data
    assert data['Models'][12]['Name'].endswith('_voc07-448px-p40')
    assert data['Models'][12]['Results'][0]['Metrics'] == {
        'Paper mAP': PAPER['voc07']['dualcoop'][3]
    }


def test_index_root_is_the_clone_before_its_mim_copy(tmp_path):
    """``pip wheel .`` / ``pip install .`` in a clone replace the links of
    an editable install's ``mmcoop/.mim`` with copies (setup.py): the
    clone's own files, not that snapshot, are read in the clone; the
    install's ``mmcoop/.mim`` where there is no clone."""
    from mmcoop.apis import model_zoo
    apis = tmp_path / 'mmcoop' / 'apis'
    mim = tmp_path / 'mmcoop' / '.mim'
    apis.mkdir(parents=True)
    mim.mkdir()
    shutil.copy(model_zoo.__file__, apis)
    for root in (tmp_path, mim):
        (root / 'model-index.yml').write_text('Import: []\n')
    spec = importlib.util.spec_from_file_location('copied_model_zoo',
                                                  apis / 'model_zoo.py')
    copied = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(copied)
    assert copied.model_index_root() == str(tmp_path)
    os.remove(tmp_path / 'model-index.yml')
    assert copied.model_index_root() == str(mim)

# Copyright (c) mmcoop contributors. All rights reserved.
"""What the tools write: tools/test.py --out (checked before the Runner is
built, never over an existing file without --force), publish_model.py
(deterministic bytes, non-checkpoints named), official_to_mmcoop.py (bad
sources named), and PredictionDrawHook's file names."""
import glob
import os
import os.path as osp
import types
import zipfile

import numpy as np
import pytest
import torch
from _common import load_tool
from mmpretrain.structures import DataSample
from PIL import Image

from mmcoop.utils.paths import OutputPathError

DEMO_CONFIG = osp.join(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'configs',
    'demo', 'positivecoop_clip-tiny-vit_1xb16-coslr-20e_demo-shapes-p50.py')

test_tool = load_tool('tools/test.py')
publish_tool = load_tool('tools/model_converters/publish_model.py')
convert_tool = load_tool('tools/model_converters/official_to_mmcoop.py')


# ---------------------------------------------------------- tools/test.py
@pytest.mark.parametrize('out, item, fix', [
    ('res.txt', 'metrics', 'res.json'),
    ('res.json', None, 'res.pkl'),
    ('res.json', 'pred', 'res.pkl'),
    ('res.PKL', 'pred', 'res.pkl'),
])
def test_test_out_extension_is_checked_first(out, item, fix, capsys):
    args = [DEMO_CONFIG, 'ckpt.pth', '--out', out]
    if item:
        args += ['--out-item', item]
    with pytest.raises(SystemExit) as exc:
        test_tool.parse_args(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f'--out {out!r}: --out-item {item or "pred"} is written as' in err
    assert f'Fix: name the file e.g. {fix!r}' in err


def test_test_out_is_claimed_before_the_runner(tmp_path):
    ckpt = tmp_path / 'epoch_1.pth'
    ckpt.write_bytes(b'not read before the runner')
    out = tmp_path / 'res.pkl'
    out.write_text('mine')
    work_dir = tmp_path / 'work'
    common = [DEMO_CONFIG, str(ckpt), '--work-dir', str(work_dir)]
    with pytest.raises(OutputPathError,
                       match=r"'.*res\.pkl'.*Nothing was written.*--force"):
        test_tool.main([*common, '--out', str(out)])
    assert out.read_text() == 'mine'
    # never over an input (here the checkpoint), --force or not
    with pytest.raises(OutputPathError,
                       match='refusing to overwrite an input'):
        test_tool.main([DEMO_CONFIG, str(out), '--out', str(out), '--force',
                        '--work-dir', str(work_dir)])
    assert out.read_text() == 'mine'
    # a folder as the checkpoint: named, with the file inside to pass
    (tmp_path / 'last_checkpoint').write_text(str(ckpt))
    with pytest.raises(IsADirectoryError,
                       match=r'is a folder, not a checkpoint file.*'
                       r'epoch_1\.pth.*last_checkpoint'):
        test_tool.main([DEMO_CONFIG, str(tmp_path), '--work-dir',
                        str(work_dir)])
    with pytest.raises(FileNotFoundError, match="'missing.pth' does not"):
        test_tool.main([DEMO_CONFIG, 'missing.pth', '--work-dir',
                        str(work_dir)])
    assert not work_dir.exists()  # no Runner was built


def test_empty_output_paths_are_refused(tmp_path, monkeypatch, capsys):
    """An unset shell variable (``--work-dir "$W"``): the run wrote its
    checkpoints, logs and dump into the current folder; an empty --out or
    --show-dir was silently ignored."""
    from mmcoop.engine.config_checks import check_work_dir_is_a_folder
    monkeypatch.chdir(tmp_path)
    for empty in ('', ' '):
        with pytest.raises(OutputPathError,
                           match='is empty: the run would write'):
            check_work_dir_is_a_folder(empty)
        for option in ('--out', '--show-dir'):
            with pytest.raises(SystemExit):
                test_tool.main([DEMO_CONFIG, 'ckpt.pth', option, empty,
                                '--work-dir', str(tmp_path / 'w')])
            assert f'{option} {empty!r} is empty: nothing would be ' \
                'written' in capsys.readouterr().err
    with pytest.raises(OutputPathError, match='is empty: the run would'):
        load_tool('tools/train.py').main([DEMO_CONFIG, '--work-dir', ''])
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------ publish_model.py
def _head_checkpoint(path):
    gen = torch.Generator().manual_seed(0)
    torch.save(
        {
            'state_dict': {
                'head.fc.weight': torch.randn(4, 3, generator=gen)
            },
            'meta': {
                'epoch': 2,
                'dataset_meta': {
                    'classes': ['a', 'b']
                }
            }
        }, path)
    return str(path)


def test_publish_is_deterministic(tmp_path):
    src = _head_checkpoint(tmp_path / 'epoch_2.pth')
    (tmp_path / 'one').mkdir()
    (tmp_path / 'two').mkdir()
    first = publish_tool.main([src, str(tmp_path / 'one' / 'm.pth'),
                               '--no-date'])
    second = publish_tool.main([src, str(tmp_path / 'two' / 'm.pth'),
                                '--no-date'])
    assert osp.basename(first) == osp.basename(second)
    with open(first, 'rb') as f1, open(second, 'rb') as f2:
        assert f1.read() == f2.read()
    # publishing again into the same folder: the same file, no temp left
    assert publish_tool.main([src, str(tmp_path / 'one' / 'm.pth'),
                              '--no-date']) == first
    assert os.listdir(tmp_path / 'one') == [osp.basename(first)]
    with zipfile.ZipFile(first) as z:  # not named after a temp file
        assert {n.split('/')[0] for n in z.namelist()} == {'archive'}


def test_publish_keeps_the_calibrated_thresholds_and_the_protocol(
        tmp_path):
    """Before: dropped, so threshold='calibrated' of the published file
    failed with a wrong fix and test.py lost CF1_calib / OF1_calib."""
    from mmcoop.utils.checkpoint import safe_torch_load
    ckpt = torch.load(_head_checkpoint(tmp_path / 'epoch_2.pth'),
                      weights_only=True)
    calibrated = dict(thresholds=[0.3, 0.7], classes=['a', 'b'], epoch=2,
                      split='val')
    ckpt['meta'].update(calibrated_thresholds=calibrated,
                        protocol=dict(name='clean', selection='best'))
    torch.save(ckpt, tmp_path / 'epoch_2.pth')
    out = publish_tool.main([str(tmp_path / 'epoch_2.pth'),
                             str(tmp_path / 'pub' / 'm.pth'), '--no-date'])
    meta = safe_torch_load(out, 'cpu', 'published')['meta']
    assert meta['calibrated_thresholds'] == calibrated
    assert meta['protocol'] == dict(name='clean', selection='best')


@pytest.mark.parametrize('content, match', [
    ([1, 2, 3], ' is not a checkpoint: it holds a list'),
    ({'epoch': 3}, r" has no 'state_dict' \(its keys: 'epoch'\)"),
    ({'state_dict': [1]}, ": 'state_dict' is a list"),
    ({'state_dict': {'a': 1}}, " holds no tensors in 'state_dict'"),
    ({}, r" has no 'state_dict' \(its keys: none\)"),
])
def test_publish_names_a_non_checkpoint_input(content, match, tmp_path):
    src = str(tmp_path / 'odd.pth')
    torch.save(content, src)
    with pytest.raises(ValueError,
                       match=r"input checkpoint '.*odd\.pth'" + match):
        publish_tool.main([src, str(tmp_path / 'out.pth')])
    assert glob.glob(str(tmp_path / 'out*')) == []


def test_publish_refuses_text_and_unknown_dataset_type_first(tmp_path):
    from mmcoop.utils.checkpoint import CheckpointReadError
    text = tmp_path / 'notes.pth'
    text.write_text('hello')
    with pytest.raises(CheckpointReadError, match=r"'.*notes\.pth'"):
        publish_tool.main([str(text), str(tmp_path / 'out.pth')])
    # an unknown --dataset-type is named before the input is read
    with pytest.raises(KeyError, match="--dataset-type 'Nope'"):
        publish_tool.main([str(text), str(tmp_path / 'out.pth'),
                           '--dataset-type', 'Nope'])
    assert glob.glob(str(tmp_path / 'out*')) == []


def test_publish_checks_the_metafile_before_writing(tmp_path):
    """--metafile missing, or without the run's entry: named before the
    release is written. Before: the file was published, then a bare
    FileNotFoundError / KeyError."""
    src = _head_checkpoint(tmp_path / 'epoch_2.pth')
    (tmp_path / 'run_a.py').write_text('x = 1\n')  # the run's config name
    out = str(tmp_path / 'pub' / 'out.pth')
    with pytest.raises(FileNotFoundError,
                       match=r"--metafile '.*missing\.yml' is not a file"):
        publish_tool.main([src, out, '--metafile',
                           str(tmp_path / 'missing.yml')])
    meta = tmp_path / 'metafile.yml'
    meta.write_text('Models:\n- Name: run_b\n')
    with pytest.raises(KeyError, match="no model named 'run_a'"):
        publish_tool.main([src, out, '--metafile', str(meta)])
    assert not (tmp_path / 'pub').exists()


# ------------------------------------------------- official_to_mmcoop.py
def _official(num_classes, tokens=None):
    sd = {
        'prompt_learner.ctx_pos': torch.zeros(num_classes, 4, 64),
        'txt_prompt_neg': torch.zeros(num_classes, 64),
        'txt_prompt_learn': torch.zeros(num_classes, 64),
    }
    if tokens is not None:
        sd['prompt_learner.tokenized_prompts'] = torch.tensor(tokens)
    return {'state_dict': sd, 'epoch': 5}


def test_converter_names_a_file_that_is_no_checkpoint(tmp_path, capsys):
    src = tmp_path / 'notes.pth'
    src.write_text('this is text\n')
    dst = tmp_path / 'out.pth'
    assert convert_tool.main([str(src), str(dst), '--method',
                              'positivecoop']) == 1
    err = capsys.readouterr().err
    assert err.startswith(f'error: Could not read {str(src)!r}')
    assert 'not a PyTorch checkpoint' in err and not dst.exists()


def test_converter_refuses_zero_classes(tmp_path, capsys):
    src, dst = tmp_path / 'zero.pth', tmp_path / 'out.pth'
    torch.save(_official(0), src)
    assert convert_tool.main([str(src), str(dst), '--method',
                              'positivecoop']) == 1
    assert 'has 0 classes' in capsys.readouterr().err
    assert not dst.exists()
    with pytest.raises(SystemExit):
        convert_tool.parse_args([str(src), str(dst), '--method',
                                 'positivecoop', '--num-classes', '0'])
    assert 'argument --num-classes: must be an integer >= 1' in \
        capsys.readouterr().err


def test_converter_warns_on_undecodable_prompt_tokens(tmp_path):
    pytest.importorskip('open_clip')
    sot, eot = 49406, 49407
    tokens = [[sot, 343, 10**8, eot], [sot, 343, 269, eot]]
    src, dst = tmp_path / 'oov.pth', tmp_path / 'out.pth'
    torch.save(_official(2, tokens), src)
    with pytest.warns(UserWarning,
                      match=r"row 0 has token ids CLIP's vocabulary cannot "
                      r'decode \(\[100000000\]\)'):
        meta = convert_tool.convert_checkpoint(str(src), str(dst),
                                               'positivecoop')
    assert meta['num_classes'] == 2
    assert 'classnames' not in meta and 'prompts' not in meta
    assert set(torch.load(dst, weights_only=True)['state_dict']) == {
        'head.pos_prompt.ctx', 'head.neg_embedding', 'head.pos_residual'
    }


# ---------------------------------------------------- PredictionDrawHook
def test_draw_hook_gives_every_image_its_own_file(tmp_path):
    from mmcoop.engine.hooks.prediction_draw_hook import PredictionDrawHook
    pytest.importorskip('matplotlib')
    paths = []
    for i, folder in enumerate(('a', 'b', 'c')):
        (tmp_path / folder).mkdir()
        path = tmp_path / folder / 'x.jpg'
        Image.fromarray(np.full((16, 16, 3), 80 * i, np.uint8)).save(path)
        paths.append(str(path))

    def sample(path):
        return DataSample(metainfo=dict(img_path=path)).set_pred_score(
            torch.tensor([0.9, 0.2]))

    out = tmp_path / 'vis'
    hook = PredictionDrawHook(str(out), topk=2)
    runner = types.SimpleNamespace(test_dataloader=types.SimpleNamespace(
        dataset=types.SimpleNamespace(metainfo=dict(classes=['p', 'q']))))
    # two images of one stem in one batch, a third in the next batch
    hook.after_test_iter(runner, 0, outputs=[sample(p) for p in paths[:2]])
    hook.after_test_iter(runner, 1, outputs=[sample(paths[2])])
    names = sorted(os.listdir(out))
    assert names == ['x.png', 'x_0_1.png', 'x_1_0.png']
    # three different pictures, none overwritten
    assert len({(out / n).read_bytes() for n in names}) == 3


def test_draw_hook_names_the_same_files_in_every_process(tmp_path):
    """With N processes each rank drew its share and named a repeated stem
    by its own count: both ranks wrote 'x.png' (6 of 12 drawings lost with
    2 processes). Names now come from the whole test set and the image's
    position in it (not sample_idx, which a ConcatDataset counts per
    part): the same in any process."""
    from mmcoop.engine.hooks.prediction_draw_hook import PredictionDrawHook
    pytest.importorskip('matplotlib')
    paths = []
    for i, name in enumerate(('a/x0', 'b/x0', 'a/y', 'b/y', 'z')):
        path = tmp_path / f'{name}.jpg'
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(np.full((16, 16, 3), 50 * i, np.uint8)).save(path)
        paths.append(str(path))

    class Dataset:
        metainfo = dict(classes=['p', 'q'])

        def __len__(self):
            return len(paths)

        def get_data_info(self, i):
            return dict(img_path=paths[i])

    runner = types.SimpleNamespace(test_dataloader=types.SimpleNamespace(
        dataset=Dataset()))

    def sample(i):  # sample_idx as a ConcatDataset of two parts has it
        return DataSample(metainfo=dict(
            img_path=paths[i], sample_idx=i % 2)).set_pred_score(
                torch.tensor([0.9, 0.2]))

    out = tmp_path / 'vis'
    ranks = [PredictionDrawHook(str(out), topk=2, force=True)
             for _ in range(2)]
    for hook in ranks:
        hook.before_test(runner)
    # DistributedSampler's split: rank r gets r, r + 2, ...; rank 1 is
    # padded with sample 0 again
    ranks[0].after_test_iter(runner, 0, outputs=[sample(0), sample(2)])
    ranks[1].after_test_iter(runner, 0, outputs=[sample(1), sample(3)])
    ranks[0].after_test_iter(runner, 1, outputs=[sample(4)])
    ranks[1].after_test_iter(runner, 1, outputs=[sample(0)])
    names = sorted(os.listdir(out))
    assert names == ['x0_0.png', 'x0_1.png', 'y_2.png', 'y_3.png', 'z.png']


def test_show_dir_of_an_interrupted_test_is_reused_with_force(tmp_path):
    """A test killed while drawing leaves drawings in --show-dir: the rerun
    was refused whatever the options; --force now draws into it."""
    from mmcoop.engine.hooks.prediction_draw_hook import PredictionDrawHook
    show = tmp_path / 'show'
    show.mkdir()
    (show / 'x.png').write_bytes(b'drawn before the kill')
    with pytest.raises(FileExistsError, match='--force'):
        PredictionDrawHook(str(show))
    args = test_tool.parse_args(
        [DEMO_CONFIG, 'ckpt.pth', '--show-dir', str(show), '--force'])
    hook = test_tool.draw_hook(args)
    assert hook == dict(type='PredictionDrawHook', out_dir=str(show),
                        force=True)
    hook.pop('type')
    PredictionDrawHook(**hook)  # no error
    assert (show / 'x.png').read_bytes() == b'drawn before the kill'

# Copyright (c) mmcoop contributors. All rights reserved.
"""tools/sweep.py refuses bad input before the first run trains, keeps one
folder's runs at one setting, and resumes a run killed between its test
and its result.json. Train/test are cheap stub scripts."""
import json
import os
import os.path as osp
import sys
import textwrap
import time
from types import SimpleNamespace

import pytest
from _common import load_tool

from mmcoop.experiments.sweep import (Run, SweepError, check_cfg_options,
                                      collect_results, plan_runs, run_options,
                                      sweep_owned_keys)

STUB_TRAIN = textwrap.dedent('''
    import os, sys
    work_dir = sys.argv[sys.argv.index('--work-dir') + 1]
    os.makedirs(work_dir, exist_ok=True)
    open(os.path.join(work_dir, 'epoch_1.pth'), 'w').close()
    if not os.environ.get('STUB_NO_BEST'):  # as CheckpointHook(save_best)
        open(os.path.join(work_dir, 'best_multi-label_mAP_epoch_1.pth'),
             'w').close()
    with open(os.path.join(work_dir, 'trained'), 'a') as f:
        f.write('x')
''')
# like tools/test.py: an existing --out is kept unless --force
STUB_TEST = textwrap.dedent('''
    import json, os, sys
    out = sys.argv[sys.argv.index('--out') + 1]
    if os.path.exists(out) and '--force' not in sys.argv:
        sys.exit('refusing to overwrite ' + out)
    with open(out, 'w') as f:
        json.dump({'multi-label/mAP': float(os.environ.get('STUB_MAP',
                                                            '50'))}, f)
''')


sweep_tool = load_tool('tools/sweep.py', 'mmcoop_tools_sweep_checks')


@pytest.fixture
def sweep(tmp_path, monkeypatch, capsys):
    """``tools/sweep.py`` called in this process (its ``main``), with the
    stub train/test scripts; returns the exit code and the output as a
    subprocess would (``parser.error`` exits 2)."""
    configs = tmp_path / 'configs'
    configs.mkdir()
    (configs / 'baseline_tiny_demo-shapes-p50.py').write_text('x = 1\n')
    (tmp_path / 'train.py').write_text(STUB_TRAIN)
    (tmp_path / 'test.py').write_text(STUB_TEST)
    out = str(tmp_path / 'sweep')
    monkeypatch.chdir(tmp_path)

    def call(*extra, out=out, stub_map='50'):
        monkeypatch.setenv('STUB_MAP', stub_map)
        argv = [
            '--out', out, '--methods', 'baseline', '--datasets', 'demo',
            '--config-root',
            str(configs), '--device-label', 'cpu', '--train-cmd',
            f'{{python}} {tmp_path / "train.py"} {{config}}', '--test-cmd',
            f'{{python}} {tmp_path / "test.py"} {{config}} {{checkpoint}}'
        ]
        # later options win (argparse): extras may replace the defaults
        argv += ['--proportions', '0.5', '--seeds', '0'] + list(extra)
        code = 0
        try:
            sweep_tool.main(argv)
        except SystemExit as e:  # parser.error: 2; sys.exit(message): 1
            code = e.code if isinstance(e.code, int) else 1
            if isinstance(e.code, str):
                print(e.code, file=sys.stderr)
        captured = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=captured.out,
                               stderr=captured.err)

    call.out = out
    call.tmp = tmp_path
    return call


def _run_dir(out, p='0.50', seed=0):
    return osp.join(out, 'runs', 'clean', 'demo', 'baseline',
                    f'p{p}_seed{seed}')


def _ok(res):
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return res


def _refused(res, *words):
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    for word in words:
        assert word in res.stderr, res.stderr
    assert 'Traceback' not in res.stderr
    return res


def test_rerun_with_other_settings_is_refused(sweep):
    _ok(sweep())
    assert osp.isfile(osp.join(sweep.out, 'sweep.json'))
    _refused(sweep('--val-fraction', '0.2'), '--val-fraction', 'new --out')
    _refused(sweep('--selection', 'last'), '--selection')
    _refused(sweep('--split-seed', '3'), '--split-seed')
    _refused(sweep('--cfg-options', 'train_cfg.max_epochs=2'),
             '--cfg-options')
    # more seeds at the same settings: allowed, the first run is kept
    res = _ok(sweep('--seeds', '0', '1'))
    assert 'p0.50_seed0: done, skipped' in res.stdout
    # other command templates (their own --cfg-options, --amp, GPUs)
    train = f'{{python}} {sweep.tmp / "train.py"} {{config}}'
    _refused(sweep('--train-cmd', train + ' --amp'), '--train-cmd')
    # an edited config of a run already made is refused
    cfg = sweep.tmp / 'configs' / 'baseline_tiny_demo-shapes-p50.py'
    cfg.write_text('x = 2\n')
    _refused(sweep(), 'config', 'new --out')
    # and so are new runs in its table row: another proportion of the
    # same config (before: accepted, two recipes in one row)
    _refused(sweep('--proportions', '0.9'), 'two recipes in one table row',
             'new --out')
    cfg.write_text('x = 1\n')
    _ok(sweep('--proportions', '0.9'))


def test_a_proportion_named_like_a_finished_one_is_refused(sweep):
    """0.125 after 0.12: one folder name (p0.12); before, 0.125 was
    'done, skipped' and the table showed the 0.12 run."""
    _ok(sweep('--proportions', '0.12'))
    _refused(sweep('--proportions', '0.125'), 'p0.12_seed0',
             'proportion 0.12', '0.125')


@pytest.mark.parametrize('option', [
    'train_dataloader.dataset.known_proportion=0.9', 'randomness.seed=3',
    'train_dataloader.dataset.mask_file=m.npy',
    'train_dataloader.dataset.seed=1', 'protocol.val_fraction=0.3',
    'randomness=dict(seed=3)', 'feature_cache.cache_root=/tmp/x'
])
def test_cfg_options_may_not_set_run_keys(sweep, option):
    _refused(sweep('--cfg-options', option), '--cfg-options')
    assert not osp.exists(sweep.out)


def test_cfg_options_of_the_wrong_type_are_refused_before_recording(sweep):
    """A --cfg-options value that tools/train.py refuses (``0,5`` for a
    number) stops the sweep before sweep.json records it. Before: recorded,
    the first run failed, and the corrected command was refused as 'other
    settings' for that folder."""
    cfg = sweep.tmp / 'configs' / 'baseline_tiny_demo-shapes-p50.py'
    cfg.write_text('train_cfg = dict(max_epochs=20)\n')
    _refused(sweep('--cfg-options', 'train_cfg.max_epochs=0,5'),
             'train_cfg.max_epochs', 'gives a list', 'not 0,5',
             str(cfg))
    assert not osp.exists(sweep.out)
    _ok(sweep('--cfg-options', 'train_cfg.max_epochs=2'))


def test_a_data_path_option_is_checked_before_recording(sweep):
    """``--cfg-options data_path=...`` (the documented way to move a whole
    sweep to the device path) is interpreted for every run's config before
    sweep.json records it: a bad value, or a pipeline it cannot translate,
    stops the sweep naming the config. Before: recorded, and every run
    failed one after the other."""
    cfg = sweep.tmp / 'configs' / 'baseline_tiny_demo-shapes-p50.py'
    cfg.write_text(
        "model = dict(data_preprocessor=dict(type='CLIPDataPreprocessor'))\n"
        "val_dataloader = dict(dataset=dict(pipeline=[dict(type="
        "'LoadImageTensor', scale=8), dict(type='RandomFlip'), dict("
        "type='PackInputs')]))\n")
    _refused(sweep('--cfg-options', 'data_path=gpu'),
             "data_path must be one of ('cpu', 'device', 'device-decode'), "
             "got 'gpu'", str(cfg))
    _refused(sweep('--cfg-options', 'data_path=device'),
             'val_dataloader.dataset.pipeline: the transforms '
             "['RandomFlip'] after LoadImageTensor", str(cfg))
    assert not osp.exists(sweep.out)
    cfg.write_text('x = 1\n')
    _ok(sweep('--cfg-options', 'data_path=device'))


def test_an_out_folder_with_a_comma_reaches_the_runs_as_one_path(tmp_path):
    """``--out /x/sw,1``: the sweep's path options are quoted, so each run
    reads one path (before: a list, and every run failed)."""
    import argparse

    from mmcoop.engine.cli import SpacedDictAction
    out = str(tmp_path / 'sw,1')
    options = run_options(Run('m', 'd', 0.3, 2, 'clean'), out,
                          feature_cache=True)
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=SpacedDictAction)
    parsed = parser.parse_args(['--cfg-options', *options]).cfg_options
    assert parsed['protocol.split_file'].startswith(out + os.sep)
    assert parsed['feature_cache.cache_root'] == osp.join(out,
                                                          'feature_cache')
    assert parsed['train_dataloader.dataset.known_proportion'] == 0.3


def test_owned_keys_come_from_the_run_options():
    run = Run('m', 'd', 0.3, 2, 'clean')
    keys = {o.split('=')[0] for o in run_options(run, '.',
                                                 feature_cache=True)}
    assert keys == set(sweep_owned_keys())
    check_cfg_options(['train_cfg.max_epochs=2', 'model.head.classnames=[a',
                       'b]'])
    with pytest.raises(SweepError, match='--seeds'):
        check_cfg_options(['randomness.seed=4'])
    with pytest.raises(SweepError, match=r"--cfg-options .*unclosed '\['"):
        check_cfg_options(['a.b=[1,,'])


def test_killed_between_test_and_result_resumes(sweep):
    _ok(sweep())
    run = _run_dir(sweep.out)
    os.remove(osp.join(run, 'result.json'))  # killed after the test
    assert osp.isfile(osp.join(run, 'test_metrics.json'))
    _ok(sweep(stub_map='60'))
    with open(osp.join(run, 'result.json')) as f:
        assert json.load(f)['mAP'] == 60.0


def test_report_only_and_out_checks(sweep, tmp_path):
    mine = tmp_path / 'mine'
    mine.mkdir()
    (mine / 'results.csv').write_text('my data\n')
    _refused(sweep('--report-only', out=str(mine)), 'not a sweep folder')
    _refused(sweep(out=str(mine)), 'not a sweep folder')
    # a runs/ folder of its own (TensorBoard's default name) does not make
    # it a sweep's (before: the report replaced results.csv / results.md)
    (mine / 'runs' / 'Dec04_tb').mkdir(parents=True)
    (mine / 'results.md').write_text('my notes\n')
    _refused(sweep('--report-only', out=str(mine)), 'not a sweep folder')
    _refused(sweep(out=str(mine)), 'not a sweep folder')
    assert (mine / 'results.csv').read_text() == 'my data\n'
    assert (mine / 'results.md').read_text() == 'my notes\n'
    _refused(sweep('--report-only', out=str(tmp_path / 'missing')),
             'does not exist')
    afile = tmp_path / 'afile'
    afile.write_text('')
    _refused(sweep(out=str(afile)), 'is a file')
    # an empty --out (e.g. an unset shell variable) is not the current folder
    for empty in ('', ' '):
        _refused(sweep(out=empty), 'is empty', '--out')
    assert not osp.exists(tmp_path / 'sweep.json')
    _ok(sweep())
    _ok(sweep('--report-only'))


def test_colliding_and_repeated_proportions():
    with pytest.raises(SweepError, match='--proportions'):
        plan_runs(['m'], ['d'], [0.5, 0.504], [0], 'clean')
    runs = plan_runs(['m', 'm'], ['d'], [0.5, 0.5], [0, 0, 1], 'clean')
    assert [(r.proportion, r.seed) for r in runs] == [(0.5, 0), (0.5, 1)]


@pytest.mark.parametrize('extra,words', [
    (('--methods', 'baseline', 'nosuchmethod'), ('nosuchmethod', )),
    (('--train-cmd', '{python} x.py {config} {ckpt}'),
     ('--train-cmd', 'ckpt')),
    (('--test-cmd', '{python} "x.py {config}'), ('--test-cmd', )),
    (('--seeds', '-1'), ('--seeds', )),
    (('--split-seed', '-3'), ('--split-seed', )),
    (('--val-fraction', '1'), ('--val-fraction', )),
    (('--proportions', '0.5', '0.504'), ('--proportions', )),
    # a name is a config pattern and a run folder, not a pattern or a path
    (('--methods', '*'), ('--methods', "'*' is not a name")),
    (('--datasets', 'dem?'), ('--datasets', "'dem?' is not a name")),
    (('--methods', '../baseline'), ('--methods', )),
])
def test_bad_input_refused_before_training(sweep, extra, words):
    _refused(sweep(*extra), *words)
    assert not osp.exists(osp.join(_run_dir(sweep.out), 'trained'))


def test_broken_result_json_named(sweep):
    _ok(sweep())
    result = osp.join(_run_dir(sweep.out), 'result.json')
    with open(result) as f:
        row = json.load(f)
    for text in ('{"method": ', json.dumps({'method': 'baseline'}),
                 json.dumps(dict(row, mAP=float('nan')))):
        with open(result, 'w') as f:
            f.write(text)
        with pytest.raises(SweepError, match='delete it'):
            collect_results(sweep.out)
        _refused(sweep('--report-only'), result)


def test_result_out_of_its_folder_or_range_is_named(sweep):
    """Before: a run copied from another sweep into p0.50_seed0_copy
    silently replaced the sweep's own cell (the CSV kept both), an edited
    proportion moved a run to another column, mAP 0.81 (a fraction) or 250
    went into the table."""
    import shutil
    _ok(sweep())
    own = _run_dir(sweep.out)
    with open(osp.join(own, 'result.json')) as f:
        row = json.load(f)
    copy = own + '_copy'
    shutil.copytree(own, copy)
    with pytest.raises(SweepError, match=r"are the run 'clean/demo/baseline/"
                       r"p0.50_seed0', but it lies in the run folder "
                       r"'clean/demo/baseline/p0.50_seed0_copy'"):
        collect_results(sweep.out)
    _refused(sweep('--report-only'), 'p0.50_seed0_copy')
    shutil.rmtree(copy)
    for edit, match in ((dict(proportion=0.1), 'lies in the run folder'),
                        (dict(mAP=250.0), r'mAP = 250.0 is not a percentage'),
                        (dict(seed=-3), r'seed = -3 is not an integer >= 0'),
                        (dict(proportion=9.0), r'proportion = 9.0 is not in'),
                        (dict(dataset='../../x'), 'lies in the run folder')):
        with open(osp.join(own, 'result.json'), 'w') as f:
            json.dump(dict(row, **edit), f)
        with pytest.raises(SweepError, match=match):
            collect_results(sweep.out)
    with open(osp.join(own, 'result.json'), 'w') as f:
        json.dump(row, f)
    assert len(collect_results(sweep.out)) == 1


def test_nan_map_is_not_recorded(sweep):
    res = sweep(stub_map='nan')
    assert res.returncode != 0
    assert 'mAP' in res.stderr and 'finite' in res.stderr
    assert not osp.exists(osp.join(_run_dir(sweep.out), 'result.json'))


def test_partial_label_seed_negative():
    from mmcoop.datasets.partial_label import PartialLabelDataset
    with pytest.raises(ValueError, match='seed'):
        PartialLabelDataset(dataset=dict(type='x'), known_proportion=0.5,
                            seed=-1)


def test_edited_base_config_is_a_changed_config(sweep):
    """sweep.json hashes the resolved config: an edit to an inherited
    ``_base_`` file is refused like an edit to the run's own file, and a
    config that does not load is named before any run trains."""
    configs = sweep.tmp / 'configs'
    (configs / '_base_.py').write_text('lr = 0.1\n')
    cfg = configs / 'baseline_tiny_demo-shapes-p50.py'
    cfg.write_text("_base_ = ['./_base_.py']\nx = 1\n")
    _ok(sweep())
    with open(osp.join(sweep.out, 'sweep.json')) as f:
        record = json.load(f)['configs']['clean/demo/baseline/p0.50']
    assert set(record) == {'path', 'sha256', 'resolved_sha256'}
    _ok(sweep())  # unchanged: done, skipped
    (configs / '_base_.py').write_text('lr = 0.2\n')
    _refused(sweep(), '_base_', 'new --out')
    # a record made before resolved hashes: the file hash alone decides
    del record['resolved_sha256']
    with open(osp.join(sweep.out, 'sweep.json')) as f:
        settings = json.load(f)
    settings['configs']['clean/demo/baseline/p0.50'] = record
    with open(osp.join(sweep.out, 'sweep.json'), 'w') as f:
        json.dump(settings, f)
    _ok(sweep())
    cfg.write_text("_base_ = ['./missing.py']\n")
    _refused(sweep(out=str(sweep.tmp / 'other')), cfg.name, 'does not load')
    assert not osp.exists(osp.join(sweep.tmp, 'other', 'runs'))


def test_missing_best_checkpoint_is_not_tested_as_best(sweep, monkeypatch):
    """No ``best_*.pth`` after training (validation never ran, or the file
    was deleted): the last checkpoint is not tested and labelled
    ``selection=best``; ``--selection last`` tests it as the last."""
    monkeypatch.setenv('STUB_NO_BEST', '1')
    res = sweep()
    assert res.returncode == 1
    assert 'no best_*.pth' in res.stderr and '--selection last' in \
        res.stderr
    assert not osp.exists(osp.join(_run_dir(sweep.out), 'result.json'))
    out = str(sweep.tmp / 'last')
    _ok(sweep('--selection', 'last', out=out))
    with open(osp.join(_run_dir(out), 'result.json')) as f:
        row = json.load(f)
    assert (row['selection'], row['selected_epoch']) == ('last', 1)


# ``--jobs``: a train stub that records its job slot's variables, the runs
# going and the results already written when it starts; STUB_MEET=k makes
# it wait until k runs have started (two runs at once, shown without
# timing); STUB_FAIL names a run that fails, STUB_WAIT_FAIL makes the others
# finish only after that failure.
STUB_TRAIN_JOBS = textwrap.dedent('''
    import glob, json, os, sys, time
    work_dir = sys.argv[sys.argv.index('--work-dir') + 1]
    os.makedirs(work_dir, exist_ok=True)
    shared = os.environ['STUB_SHARED']
    run = '/'.join(work_dir.split(os.sep)[-3:])
    key = run.replace('/', '_')
    for sub in ('started', 'going'):
        os.makedirs(os.path.join(shared, sub), exist_ok=True)
        open(os.path.join(shared, sub, key), 'w').close()
    out = os.sep.join(work_dir.split(os.sep)[:-5])
    record = dict(
        gpus=os.environ.get('CUDA_VISIBLE_DEVICES'),
        port=os.environ.get('PORT'),
        going=len(os.listdir(os.path.join(shared, 'going'))),
        done=sorted(os.path.relpath(os.path.dirname(p), out) for p in
                    glob.glob(os.path.join(out, 'runs', '*', '*', '*', '*',
                                           'result.json'))))
    with open(os.path.join(work_dir, 'record.json'), 'w') as f:
        json.dump(record, f)

    def wait_for(ok, what):
        end = time.time() + 120
        while not ok():
            if time.time() > end:
                sys.exit(f'{run}: gave up waiting for {what}')
            time.sleep(0.05)

    meet = int(os.environ.get('STUB_MEET', '0'))
    wait_for(lambda: len(os.listdir(os.path.join(shared, 'started'))) >=
             meet, f'{meet} runs at once')
    if os.environ.get('STUB_FAIL') == os.path.basename(work_dir):
        open(os.path.join(shared, 'failed'), 'w').close()
        os.remove(os.path.join(shared, 'going', key))
        sys.exit('training failed')
    if os.environ.get('STUB_WAIT_FAIL'):
        wait_for(lambda: os.path.exists(os.path.join(shared, 'failed')),
                 'the failed run')
    open(os.path.join(work_dir, 'epoch_1.pth'), 'w').close()
    open(os.path.join(work_dir, 'best_multi-label_mAP_epoch_1.pth'),
         'w').close()
    os.remove(os.path.join(shared, 'going', key))
''')


@pytest.fixture
def jobs_sweep(sweep, monkeypatch):
    """``sweep`` with the recording train stub; ``jobs_sweep.record(run)``
    reads what the run's stub recorded (``run``: ``demo/baseline/p0.50_seed0``
    under the clean protocol)."""
    (sweep.tmp / 'train.py').write_text(STUB_TRAIN_JOBS)
    monkeypatch.setenv('STUB_SHARED', str(sweep.tmp / 'shared'))
    monkeypatch.delenv('PORT', raising=False)

    def record(run):
        with open(osp.join(sweep.out, 'runs', 'clean', run,
                           'record.json')) as f:
            return json.load(f)

    sweep.record = record
    return sweep


def _rows(out):
    return [(r['proportion'], r['seed'])
            for r in collect_results(out)]


def test_jobs_run_at_once_each_in_a_slot_of_its_own(jobs_sweep, monkeypatch):
    monkeypatch.setenv('STUB_MEET', '2')  # the first two wait for each other
    res = _ok(jobs_sweep('--proportions', '0.1', '0.2', '0.3', '0.4',
                         '--job-gpus', '3', '5'))
    assert sorted(_rows(jobs_sweep.out)) == [(0.1, 0), (0.2, 0), (0.3, 0),
                                             (0.4, 0)]
    records = {p: jobs_sweep.record(f'demo/baseline/p{p}_seed0')
               for p in ('0.10', '0.20', '0.30', '0.40')}
    # the first two went at once, in the two slots; no run had a third
    assert {(records[p]['gpus'], records[p]['port'])
            for p in ('0.10', '0.20')} == {('3', '29500'), ('5', '29501')}
    assert all((r['gpus'], r['port']) in {('3', '29500'), ('5', '29501')}
               and r['going'] <= 2 for r in records.values())
    assert '(job 1: CUDA_VISIBLE_DEVICES=3, PORT=29500)' in res.stdout
    assert '(job 2: CUDA_VISIBLE_DEVICES=5, PORT=29501)' in res.stdout
    # the logs show the variables a run had, as a shell line
    with open(osp.join(_run_dir(jobs_sweep.out, '0.10'),
                       'sweep_train.log')) as f:
        assert f.readline().startswith('$ CUDA_VISIBLE_DEVICES=3 PORT=29500 ')
    assert osp.isfile(osp.join(jobs_sweep.out, 'results.md'))


def test_jobs_with_the_feature_cache_first_run_of_a_dataset_alone(
        jobs_sweep, monkeypatch):
    """With --feature-cache the first run of each dataset builds its
    caches alone: the two datasets' first runs go at once, each dataset's
    second run starts once its first has finished."""
    configs = jobs_sweep.tmp / 'configs'
    (configs / 'baseline_tiny_other-p50.py').write_text('x = 1\n')
    monkeypatch.setenv('STUB_MEET', '2')
    _ok(jobs_sweep('--datasets', 'demo', 'other', '--seeds', '0', '1',
                   '--jobs', '2', '--feature-cache'))
    assert len(_rows(jobs_sweep.out)) == 4
    for dataset in ('demo', 'other'):
        first = f'{dataset}/baseline/p0.50_seed0'
        assert jobs_sweep.record(first)['done'] == []
        assert f'runs/clean/{first}' in jobs_sweep.record(
            f'{dataset}/baseline/p0.50_seed1')['done']


def test_a_failed_job_starts_no_further_run_and_lets_the_others_finish(
        jobs_sweep, monkeypatch):
    monkeypatch.setenv('STUB_FAIL', 'p0.10_seed0')
    monkeypatch.setenv('STUB_WAIT_FAIL', '1')  # p0.20 ends after p0.10
    res = jobs_sweep('--proportions', '0.1', '0.2', '0.3', '--jobs', '2')
    assert res.returncode == 1
    assert 'p0.10_seed0: train failed' in res.stderr
    assert 'p0.10_seed0: failed; no further run starts, the runs going ' \
        'finish' in res.stdout
    assert _rows(jobs_sweep.out) == [(0.2, 0)]  # finished and counted
    assert not osp.exists(_run_dir(jobs_sweep.out, '0.30'))
    assert not osp.exists(osp.join(jobs_sweep.out, 'results.md'))
    # the same command continues: the failed run again, then the rest
    monkeypatch.delenv('STUB_FAIL')
    monkeypatch.delenv('STUB_WAIT_FAIL')
    res = _ok(jobs_sweep('--proportions', '0.1', '0.2', '0.3', '--jobs',
                         '2'))
    assert 'p0.20_seed0: done, skipped' in res.stdout
    assert sorted(_rows(jobs_sweep.out)) == [(0.1, 0), (0.2, 0), (0.3, 0)]


@pytest.mark.parametrize('extra,words', [
    (('--jobs', '3', '--job-gpus', '0', '1'),
     ('--job-gpus gives 2', '--jobs is 3')),
    (('--job-gpus', '0,,1'), ('--job-gpus', "'0,,1'", 'CUDA_VISIBLE')),
    (('--job-gpus', '0, 1'), ('--job-gpus', "'0, 1'")),
    (('--jobs', '0'), ('--jobs', )),
])
def test_bad_jobs_refused_before_training(sweep, extra, words):
    _refused(sweep(*extra), *words)
    assert not osp.exists(sweep.out)


def test_jobs_without_job_gpus_take_the_visible_gpus_in_turn(
        jobs_sweep, monkeypatch):
    """--jobs 3 on a machine with two visible GPUs (CUDA_VISIBLE_DEVICES
    here): one GPU a slot, in turn, not every run on the first GPU."""
    from mmcoop.experiments.sweep import default_job_gpus
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '4,6')
    assert default_job_gpus(3) == ['4', '6', '4']
    assert default_job_gpus(1) is None  # one slot: as the machine is
    monkeypatch.setenv('STUB_MEET', '2')
    _ok(jobs_sweep('--proportions', '0.1', '0.2', '0.3', '--jobs', '3'))
    gpus = {jobs_sweep.record(f'demo/baseline/p{p}_seed0')['gpus']
            for p in ('0.10', '0.20', '0.30')}
    assert gpus <= {'4', '6'} and len(gpus) == 2
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '')  # no GPU: CPU slots
    assert default_job_gpus(3) is None


def test_port_of_the_job_slots(sweep, monkeypatch):
    from mmcoop.experiments.sweep import job_env
    monkeypatch.setenv('PORT', '30000')
    assert job_env(2, 4, ['0', '1', '2,3', '4']) == dict(
        CUDA_VISIBLE_DEVICES='2,3', PORT='30002')
    assert job_env(0, 1) == {}  # one slot: the environment as it is
    monkeypatch.setenv('PORT', 'auto')
    _refused(sweep('--jobs', '2'), "PORT='auto'", 'unset PORT')
    assert not osp.exists(sweep.out)


def test_interrupted_sweep_stops_the_runs_going(jobs_sweep):
    """Ctrl-C (SIGINT to the sweep alone, as ``kill -INT``) stops the
    train processes of every job slot; they resume on the next call."""
    import signal
    import subprocess

    from mmcoop.utils.processes import pid_alive
    tmp, shared = jobs_sweep.tmp, jobs_sweep.tmp / 'shared'
    stub = tmp / 'train.py'  # records its pid, then waits for a 3rd run
    stub.write_text('import os\nos.makedirs(os.environ["STUB_SHARED"] + '
                    '"/pids", exist_ok=True)\nopen(os.environ["STUB_SHARED"]'
                    ' + "/pids/" + str(os.getpid()), "w").close()\n' +
                    STUB_TRAIN_JOBS)
    cmd = [
        sys.executable,
        osp.join(osp.dirname(osp.dirname(osp.dirname(
            osp.abspath(__file__)))), 'tools', 'sweep.py'), '--out',
        jobs_sweep.out, '--methods', 'baseline', '--datasets', 'demo',
        '--config-root',
        str(tmp / 'configs'), '--device-label', 'cpu', '--train-cmd',
        f'{{python}} {stub} {{config}}', '--test-cmd',
        f'{{python}} {tmp / "test.py"} {{config}} {{checkpoint}}',
        '--proportions', '0.1', '0.2', '--jobs', '2'
    ]
    env = dict(os.environ, STUB_MEET='3')
    proc = subprocess.Popen(cmd, cwd=str(tmp), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        pids, start = [], time.time()
        while len(pids) < 2:
            assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
            assert time.time() - start < 120, 'the two runs never started'
            time.sleep(0.1)
            if osp.isdir(shared / 'pids'):
                pids = [int(p) for p in os.listdir(shared / 'pids')]
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0
    assert not any(pid_alive(pid) for pid in pids)


def test_dry_run_checks_and_plans_and_writes_nothing(sweep):
    """--dry-run: the checks of a real start, then each run with what it
    would do; no folder, sweep.json or run is made."""
    args = ('--proportions', '0.1', '0.2', '0.3', '--jobs', '2')
    res = _ok(sweep(*args, '--dry-run'))
    assert not osp.exists(sweep.out)
    assert '[1/3] clean/demo/baseline/p0.10_seed0: starts ' \
        '(baseline_tiny_demo-shapes-p50.py)' in res.stdout
    assert 'dry run: 3 of 3 run(s) to go, 2 at a time' in res.stdout
    _ok(sweep('--proportions', '0.1'))
    # p0.20 killed after its second epoch
    os.makedirs(_run_dir(sweep.out, '0.20'))
    for epoch in (1, 2):
        open(osp.join(_run_dir(sweep.out, '0.20'), f'epoch_{epoch}.pth'),
             'w').close()
    with open(osp.join(sweep.out, 'sweep.json')) as f:
        recorded = f.read()
    res = _ok(sweep(*args, '--dry-run'))
    assert '[1/3] clean/demo/baseline/p0.10_seed0: done, skipped' in \
        res.stdout
    assert 'p0.20_seed0: resumes from epoch_2.pth' in res.stdout
    assert 'p0.30_seed0: starts' in res.stdout
    assert 'dry run: 2 of 3 run(s) to go' in res.stdout
    assert not osp.exists(_run_dir(sweep.out, '0.30'))
    with open(osp.join(sweep.out, 'sweep.json')) as f:
        assert f.read() == recorded
    # and it refuses what a real start refuses
    _refused(sweep(*args, '--val-fraction', '0.2', '--dry-run'),
             '--val-fraction')


def test_the_config_of_a_run_is_never_a_silent_choice(tmp_path):
    """``<root>/<method>/`` first (the shipped paper configs), then the
    root, then every folder below: the first folder holding a match wins;
    two files there that differ in more than the proportion are an error
    naming them. Before: every folder below the root at once, the first
    name in sorted order, so at p0.5 (where every CLIP family ships a
    config) the sweep trained ConvNeXt-LAION in the RN101 column."""
    from mmcoop.experiments.sweep import find_config
    root = tmp_path / 'configs'

    def add(path):
        path = root / path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text('x = 1\n')
        return str(path)

    paper = {p: add(f'pos/pos_clip-rn101_1x_voc07-448px-p{p}.py')
             for p in ('40', '50')}
    add('clip_families/convnext/pos_clip-convnext_1x_voc07-448px-p50.py')
    add('clip_families/rn50/pos_clip-rn50_1x_voc07-448px-p50.py')
    assert find_config(str(root), 'pos', 'voc07', 0.5) == paper['50']
    assert find_config(str(root), 'pos', 'voc07', 0.4) == paper['40']
    # no file of that proportion: one that differs only in the proportion
    assert find_config(str(root), 'pos', 'voc07', 0.3) == paper['40']
    # a root of one family: its file; of several: refused, all named
    assert find_config(str(root / 'clip_families' / 'rn50'), 'pos',
                       'voc07', 0.3).endswith('pos_clip-rn50_1x_voc07-'
                                              '448px-p50.py')
    with pytest.raises(SweepError, match=r'(?s)Several configs for method '
                       r"'pos'.*convnext.*rn50.*Fix: pass --config-root"):
        find_config(str(root / 'clip_families'), 'pos', 'voc07', 0.5)
    # two configs in the method's folder that differ in the backbone
    add('pos/pos_clip-vit_1x_voc07-448px-p50.py')
    with pytest.raises(SweepError, match='Several configs'):
        find_config(str(root), 'pos', 'voc07', 0.5)
    # found below the root when the method has no folder of its own
    demo = add('demo/base_tiny_demo-shapes-p50.py')
    assert find_config(str(root), 'base', 'demo', 0.3) == demo
    with pytest.raises(FileNotFoundError, match="method 'none'"):
        find_config(str(root), 'none', 'voc07', 0.5)


def test_the_paper_configs_are_the_shipped_sweeps_choice():
    """The shipped tree: every method and dataset of the paper table, at
    every proportion, is its RN101 paper config of configs/<method>/."""
    from mmcoop.experiments.sweep import find_config
    root = osp.join(osp.dirname(__file__), '..', '..', 'configs')
    for method in ('positivecoop', 'negativecoop', 'dualcoop', 'baseline'):
        for dataset in ('voc07', 'coco14'):
            for p in range(1, 10):
                path = find_config(root, method, dataset, p / 10)
                assert osp.basename(osp.dirname(path)) == method
                assert '_clip-rn101_openai-pre_' in path
                assert path.endswith(f'-p{p}0.py')
    assert osp.basename(osp.dirname(
        find_config(root, 'positivecoop', 'demo', 0.3))) == 'demo'


def test_report_of_a_sweep_whose_runs_are_gone(sweep):
    """Before: results.csv was rewritten with its header only, while
    results.md kept the old table and the plot stayed as it was."""
    from mmcoop.experiments.sweep import render_reports
    _ok(sweep())
    plots = [f for f in os.listdir(sweep.out) if f.startswith('mAP_')]
    assert plots
    os.remove(osp.join(_run_dir(sweep.out), 'result.json'))
    with pytest.warns(UserWarning, match=r'1 plot\(s\) of an earlier report '
                      r'have no finished run now.*mAP_'):
        render_reports(sweep.out)
    with open(osp.join(sweep.out, 'results.md')) as f:
        assert f.read().startswith('No finished run in this sweep folder')
    assert [f for f in os.listdir(sweep.out) if f.startswith('mAP_')] == \
        plots  # named, not removed


def test_a_second_sweep_on_one_out_is_refused(sweep):
    """Two sweeps on one --out trained the same run in one work dir, the
    second over the first's checkpoints and result.json: a sweep now holds
    <out>/mmcoop.lock while it runs (a live process of this host here)."""
    import socket
    _ok(sweep())
    lock = osp.join(sweep.out, 'mmcoop.lock')
    with open(lock, 'w') as f:
        json.dump(dict(pid=os.getppid(), host=socket.gethostname()), f)
    _refused(sweep('--seeds', '1'), 'is in use by another sweep',
             'another --out')
    assert not osp.exists(_run_dir(sweep.out, seed=1))
    os.remove(lock)
    _ok(sweep('--seeds', '1'))
    assert not osp.exists(lock)  # released

# Copyright (c) mmcoop contributors. All rights reserved.
"""tools/analysis/benchmark.py, the command: options and saved runs (the
measurements are tested in tests/test_benchmark)."""
import importlib.util
import json
import os.path as osp
import re

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@pytest.fixture(scope='module')
def bench():
    spec = importlib.util.spec_from_file_location(
        'mmcoop_tool_benchmark', osp.join(ROOT, 'tools/analysis/benchmark.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_report_saved_run(bench, tmp_path):
    """--report re-renders a saved --json run with the saved settings."""
    flops = dict(T0=8e12, T1=4e12, T2=1e12, E0=5e12, E1=3.5e12, E2=3e12,
                 E3=1e9, E4=0.5e12, extract=3.2e12)
    results = {k: dict(time_s=1.0, median_s=1.0, times=[1.0], peak_mib=1.0,
                       flops=v) for k, v in flops.items()}
    saved = dict(
        device='some CPU',
        command='python tools/analysis/benchmark.py --mode steps '
        '--batch-size 32 --eval-batch-size 32',
        steps=[dict(method='positivecoop', num_classes=80, results=results)])
    path = tmp_path / 'run.json'
    path.write_text(json.dumps(saved))
    args = bench.parse_args(['--report', str(path), '--gpu-tflops', '100',
                             '--gpu-utilization', '0.5'])
    text = bench.report_saved(str(path), args)
    assert 'some CPU (saved run)' in text
    # feature cache: 50 x (2566 x 1 TF + 1255 x 0.001 TF) = 128.36 PF,
    # + extraction 0.1 TF/img x (82081 + 40137) = 12.22 PF -> 140.58 PF;
    # at 100 TFLOP/s: 0.3905 h, at 50 %: 0.781 h
    row = [line for line in text.splitlines()
           if line.startswith('| COCO | positivecoop') and ' / ' in line][0]
    cells = [c.strip() for c in row.split('|')]
    assert cells[6] == '140.6 / 0.391 / 0.781'
    # the time-based table: 50 x (2566 x 1 s + 1255 x 1 s) / 3600 = 53.07 h
    # + extraction 1 s / 32 img x 122218 img = 1.061 h -> 54.130 h
    row = [line for line in text.splitlines()
           if line.startswith('| COCO | positivecoop') and ' / ' not in line
           ][0]
    assert [c.strip() for c in row.split('|')][6] == '54.130'


@pytest.mark.parametrize('argv, message', [
    (['--mode', 'data', '--data-images', '0'],
     "argument --data-images: must be an integer >= 1, got '0'"),
    (['--mode', 'data', '--data-cores', '1', '0'],
     "argument --data-cores: must be an integer >= 1, got '0'"),
    (['--mode', 'data', '--data-rounds', '-1'],
     "argument --data-rounds: must be an integer >= 1, got '-1'"),
    (['--mode', 'data', '--data-resolution', '0'],
     "argument --data-resolution: must be an integer >= 1, got '0'"),
    (['--batch-size', '0'], "argument --batch-size: must be an integer >= 1"),
    (['--iters', '2.5'], "argument --iters: must be an integer >= 1, got "
     "'2.5'"),
    (['--warmup', '-1'], "argument --warmup: must be an integer >= 0"),
    (['--workers', '-2'], "argument --workers: must be an integer >= 0"),
    (['--gpu-utilization', '0'],
     "argument --gpu-utilization: must be a number in (0, 1], got '0'"),
    (['--gpu-tflops', 'nan'],
     "argument --gpu-tflops: must be a finite number > 0, got 'nan'"),
])
def test_bad_numbers_stop_at_argument_parsing(bench, argv, message, capsys):
    """Before: --data-images 0 ran and failed with 'StatisticsError: mean
    requires at least one data point', --data-cores 0 in
    multiprocessing.Pool, --data-rounds 0 with 'max() arg is an empty
    sequence', --data-resolution 0 inside a worker."""
    with pytest.raises(SystemExit) as err:
        bench.parse_args(argv)
    assert err.value.code == 2
    assert message in capsys.readouterr().err


def test_existing_json_and_unknown_model_stop_before_measuring(
        bench, tmp_path, capsys):
    out = tmp_path / 'run.json'
    out.write_text('{"kept": 1}')
    with pytest.raises(ValueError, match=r"already exist: '.*run\.json'. "
                       r'Nothing was written. Fix: pass --force'):
        bench.main(['--mode', 'data', '--json', str(out)])
    assert out.read_text() == '{"kept": 1}'  # before: overwritten
    # before: each measuring subprocess failed in turn
    with pytest.raises(ValueError, match=r"Unknown open_clip model name "
                       r"'RN9000' \(field --model-name\)"):
        bench.main(['--mode', 'steps', '--model-name', 'RN9000'])
    with pytest.raises(ValueError, match=r"'nope' \(field --tower-models\)"):
        bench.main(['--mode', 'towers', '--tower-models', 'nope'])
    assert '# mmcoop benchmark' not in capsys.readouterr().out


@pytest.mark.parametrize('argv, message', [
    # before: torch's "Found no NVIDIA driver" from the device description
    (['--device', 'cuda', '--mode', 'text'],
     '--device cuda: no CUDA device is available here'),
    # options that did nothing, with exit code 0
    (['--mode', 'data', '--compile', 'eager'],
     '--compile eager: --mode data measures the data paths only'),
    (['--mode', 'text', '--compile', ''], "--compile '' is empty"),
    (['--mode', 'text', '--methods', 'baseline'],
     'the Baseline has none: nothing would be measured'),
    (['--mode', 'text', '--tower-models', 'RN50'],
     '--tower-models is read by --mode towers only'),
])
def test_options_without_effect_stop_before_measuring(bench, argv, message,
                                                      capsys):
    if argv[:2] == ['--device', 'cuda'] and __import__(
            'torch').cuda.is_available():
        argv = argv[2:] + ['--methods', 'baseline']  # the same refusal kind
        message = 'nothing would be measured'
    with pytest.raises(SystemExit, match=re.escape(message)):
        bench.main(argv)
    assert '# mmcoop benchmark' not in capsys.readouterr().out


@pytest.mark.parametrize('env, message', [
    (dict(PARTS='tests compield'), "PARTS: unknown part 'compield'"),
    (dict(BUDGET='abc'), 'BUDGET=abc: must be a whole number > 0'),
    (dict(BUDGET='-5'), 'BUDGET=-5: must be a whole number'),
    (dict(EPOCH_IMAGES='1k'), 'EPOCH_IMAGES=1k: must be a whole number'),
])
def test_gpu_check_script_refuses_bad_variables_first(env, message,
                                                      tmp_path):
    """Before: the parts before a misspelt one ran (the lent machine's
    time), BUDGET=abc gave shell errors in every part, BUDGET=-5 skipped
    them all and ended with exit code 0."""
    import os
    import subprocess
    out = tmp_path / 'out'
    proc = subprocess.run(
        ['bash', osp.join(ROOT, 'tools', 'analysis', 'gpu', 'check.sh')],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env=dict(os.environ, OUT=str(out), PYTHON='false', **env))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert not out.exists()  # nothing ran


def _run_gpu_check(tmp_path, **env):
    """check.sh with a stand-in for Python (answers the script's ``-c``
    checks, prints its arguments, exits with ``STUB_RC``): the script's
    own plumbing without a GPU."""
    import os
    import subprocess
    stub = tmp_path / 'python'
    stub.write_text('#!/usr/bin/env bash\n'
                    '[ "$1" = -c ] && { echo "torch stub | stub GPU"; '
                    'exit 0; }\n'
                    'echo "stub ran: $*"\n'
                    'exit "${STUB_RC:-0}"\n')
    stub.chmod(0o755)
    return subprocess.run(
        ['bash', osp.join(ROOT, 'tools', 'analysis', 'gpu', 'check.sh')],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env=dict(os.environ, OUT=str(tmp_path / 'out'), PYTHON=str(stub),
                 COMPILE='cudagraphs', **env))


@pytest.mark.parametrize('rc, said', [
    (0, None), (3, 'data failed (exit code 3)'),
    (124, 'data timed out after 180s')])
def test_gpu_check_script_logs_each_part(rc, said, tmp_path):
    """Each part's log starts with the part and its limit, holds the
    command's output, and ends saying why when the command fails or times
    out (before: nothing in the log told a timed-out part from one that
    ended)."""
    proc = _run_gpu_check(tmp_path, PARTS='data tests', STUB_RC=str(rc))
    assert proc.returncode == (1 if rc else 0), proc.stdout + proc.stderr
    log = (tmp_path / 'out' / 'data.md').read_text().splitlines()
    assert log[0].startswith('[check.sh] data (limit 180s, at ')
    assert log[1].startswith('stub ran: tools/analysis/benchmark.py '
                             '--device cuda --force --json ')
    assert '--mode data' in log[1]
    assert log[2:] == ([f'[check.sh] {said}'] if said else [])
    tests = (tmp_path / 'out' / 'pytest_cuda.txt').read_text()
    assert 'stub ran: -m pytest tests/test_performance/test_cuda.py' in tests


def test_gpu_check_script_skipped_part_keeps_its_earlier_log(tmp_path):
    """A part skipped for BUDGET leaves its log of an earlier run as it was
    (before: emptied, the redirection opened before the skip)."""
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'data.md').write_text('the earlier run\n')
    proc = _run_gpu_check(tmp_path, PARTS='data tests', BUDGET='30')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / 'data.md').read_text() == 'the earlier run\n'
    assert not (out / 'pytest_cuda.txt').exists()
    skipped = (out / 'skipped.txt').read_text()
    assert '[check.sh] data skipped' in skipped
    assert '[check.sh] tests skipped' in skipped


def test_autocast_none_is_no_autocast(bench):
    """Before: `invalid choice: 'None' (choose from None, ...)`."""
    assert bench.parse_args(['--autocast', 'None']).autocast is None
    assert bench.parse_args(['--autocast', 'bf16']).autocast == 'bf16'


def test_report_of_a_file_that_is_not_a_saved_run(bench, tmp_path):
    """Before: a bare FileNotFoundError / JSONDecodeError (without the
    file name) / KeyError: 'command'."""
    text = tmp_path / 'notes.json'
    text.write_text('not json')
    other = tmp_path / 'other.json'
    other.write_text('{"a": 1}')
    newer = tmp_path / 'newer.json'
    newer.write_text(json.dumps(dict(
        command='python tools/analysis/benchmark.py --mode nope',
        device='x')))
    with pytest.raises(SystemExit, match=r"--report '.*newer\.json': its "
                       r'command takes options this version of the tool '
                       r'does not'):
        bench.main(['--report', str(newer)])
    for path, why in [(tmp_path / 'missing.json', 'FileNotFoundError'),
                      (text, 'JSONDecodeError'),
                      (other, "KeyError: 'command'")]:
        with pytest.raises(SystemExit, match=rf"--report '.*{path.name}': "
                           rf'not a readable saved run \({why}.*Fix: give a '
                           r'file written by this tool with --json'):
            bench.main(['--report', str(path)])


def test_gpu_check_script_commands_parse(bench):
    """tools/analysis/gpu/check.sh can only run where a GPU is lent: every
    benchmark command it runs must still parse with today's options (with
    the script's defaults of its variables), every part it documents
    exists, and a rerun replaces its own results (--force)."""
    import re
    import shlex
    with open(osp.join(ROOT, 'tools', 'analysis', 'gpu', 'check.sh')) as f:
        script = f.read().replace('\\\n', ' ')
    fixed = re.search(r'benchmark\.py (.*?) "\$@"', script).group(1)
    assert '--force' in fixed.split()
    defaults = dict(re.findall(r'^(\w+)=\$\{\1:-(\d+)\}$', script, re.M))
    assert set(defaults) == {'EPOCH_IMAGES'}
    # the compiled part's default: inductor's CUDA graphs, or the
    # cudagraphs backend where Triton is missing
    compile_default = re.search(r'^COMPILE=\$\{COMPILE:-(.*)\}$', script,
                                re.M).group(1)
    assert "echo reduce-overhead || echo cudagraphs" in compile_default
    defaults['COMPILE'] = 'reduce-overhead'
    arms = re.findall(r'^    (\w+)\)\n(.*?);;$', script, re.M | re.S)
    calls = [(part, name, args) for part, body in arms
             for name, args in re.findall(
                 r'bench (\w+) \S+ (.*?)(?: ;;)?$', body, re.M)]
    assert {part for part, *_ in calls} == {
        'compiled', 'shared', 'steps', 'data', 'epoch', 'epoch_decode',
        'epoch_cpu', 'towers'}
    assert {part for part, _ in arms} == {
        'tests', 'compiled', 'shared', 'steps', 'data', 'epoch',
        'epoch_decode', 'epoch_cpu', 'towers'}
    known = re.search(r'^KNOWN_PARTS="(.*)"$', script, re.M).group(1)
    assert set(known.split()) == {part for part, _ in arms}
    # the default runs the cheap CUDA tests first, then the compiled towers
    # (the lever left for the cached step's latency), then the GPU shared
    # by cached runs (the other one)
    default = re.search(r'^PARTS=\$\{PARTS:-(.*)\}$', script, re.M).group(1)
    assert default.split() == [
        'tests', 'compiled', 'shared', 'epoch', 'data', 'steps']
    by_part, by_name = {}, {}
    for part, name, args in calls:
        for var, value in defaults.items():
            args = args.replace(f'"${var}"', value)
        argv = [f'/tmp/{name}.json' if a.startswith('$OUT') else a
                for a in shlex.split(fixed)] + shlex.split(args)
        opts = bench.parse_args(argv)
        assert opts.device == 'cuda' and opts.force, part
        assert name not in by_name, f'{name}: two calls write one result'
        by_part[part] = by_name[name] = opts
    assert by_part['shared'].mode == ['shared']
    assert by_part['shared'].shared_procs == [1, 2, 4, 8]
    assert by_part['epoch'].epoch_pipeline == 'device'
    assert by_part['epoch'].epoch_images == int(defaults['EPOCH_IMAGES'])
    assert by_part['epoch_decode'].epoch_pipeline == 'device-decode'
    assert by_part['epoch_cpu'].epoch_pipeline == 'tensor'
    assert by_part['data'].data_pipelines == [
        'official', 'tensor', 'device', 'bytes']
    # the compiled text first (its own result even if the steps time out)
    assert [name for part, name, _ in calls if part == 'compiled'] == [
        'compiled_text', 'compiled_steps']
    assert by_name['compiled_text'].mode == ['text']
    assert by_name['compiled_steps'].mode == ['steps']
    assert {by_name[n].compile for n in ('compiled_text', 'compiled_steps')
            } == {'reduce-overhead'}
    from mmcoop.benchmark.steps import compile_options
    assert compile_options(by_name['compiled_text']) == dict(
        mode='reduce-overhead')
    by_name['compiled_text'].compile = 'cudagraphs'
    assert compile_options(by_name['compiled_text']) == dict(
        backend='cudagraphs')


def test_open_images_bench_never_overwrites_a_file_of_the_folder(
        tmp_path, load_tool, monkeypatch, capsys):
    """bench_open_images_labels.py writes labels.csv and descriptions.csv:
    either one already in the folder (a user's file) stops it, named, and
    is left as it was."""
    tool = load_tool('tools/analysis/bench_open_images_labels.py')
    mine = tmp_path / 'descriptions.csv'
    mine.write_text('my own class list\n')
    monkeypatch.setattr('sys.argv',
                        ['bench', str(tmp_path), '--rows', '20'])
    with pytest.raises(SystemExit) as exc:
        tool.main()
    assert str(mine) in str(exc.value) and 'Fix: give a new' in str(
        exc.value)
    assert mine.read_text() == 'my own class list\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['descriptions.csv']
    # the generator alone: both files, whole
    path = tool.generate(str(tmp_path / 'new'), 20)
    assert len(open(path).read().splitlines()) == 21

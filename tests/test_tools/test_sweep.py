# Copyright (c) mmcoop contributors. All rights reserved.
"""tools/sweep.py end to end on generated data: one train + test process
per run, a SIGKILLed sweep continues without redoing finished runs, and
results.csv / results.md / the plot are written."""
import os
import os.path as osp
import signal
import subprocess
import sys
import time

from mmcoop.experiments.tables import read_results

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import _tool_helpers as H  # noqa: E402


def _wait_for(path, proc, timeout=300):
    start = time.time()
    while not osp.exists(path):
        assert proc.poll() is None, f'sweep exited early ({proc.returncode})'
        assert time.time() - start < timeout, f'{path} never appeared'
        time.sleep(0.2)


def test_killed_sweep_resumes_without_redoing_runs(tmp_path):
    data = H.make_demo_data(str(tmp_path / 'demo'))
    configs = tmp_path / 'configs'
    configs.mkdir()
    H.write_config(
        str(configs / 'baseline_tiny_demo-shapes-p50.py'),
        H.METHOD_CONFIGS['baseline'],
        data,
        max_epochs=1,
        val_interval=1,
        text_encoder=False)
    out = str(tmp_path / 'sweep')
    cmd = [
        H.PYTHON,
        osp.join(H.REPO, 'tools', 'sweep.py'), '--out', out, '--methods',
        'baseline', '--datasets', 'demo-shapes', '--proportions', '0.5',
        '0.9', '--seeds', '0', '--protocol', 'clean', '--val-fraction',
        '0.25', '--config-root',
        str(configs)
    ]
    env = dict(os.environ, PYTHONPATH=H.REPO, OMP_NUM_THREADS='1')
    runs = osp.join(out, 'runs', 'clean', 'demo-shapes', 'baseline')
    first = osp.join(runs, 'p0.50_seed0')
    second = osp.join(runs, 'p0.90_seed0')

    proc = subprocess.Popen(cmd, env=env, cwd=str(tmp_path),
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        _wait_for(osp.join(first, 'result.json'), proc)
        _wait_for(osp.join(second, 'sweep_train.log'), proc)
    finally:  # the sweep and its train.py child: their own process group
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not osp.exists(osp.join(second, 'result.json'))
    done_mtime = os.stat(osp.join(first, 'result.json')).st_mtime_ns

    again = subprocess.run(cmd, env=env, cwd=str(tmp_path),
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert '[1/2] clean/demo-shapes/baseline/p0.50_seed0: done, skipped' \
        in again.stdout
    # the finished run was not trained or tested again
    assert os.stat(osp.join(first, 'result.json')).st_mtime_ns == done_mtime
    with open(osp.join(first, 'sweep_train.log')) as f:
        assert sum(line.startswith('$ ') for line in f) == 1
    rows = read_results(osp.join(out, 'results.csv'))
    assert [(r['proportion'], r['seed'], r['protocol'], r['selection'])
            for r in rows] == [(0.5, 0, 'clean', 'best'),
                               (0.9, 0, 'clean', 'best')]
    for row in rows:
        assert 0 < row['mAP'] <= 100 and row['epochs'] == 1
        assert row['CF1_calib'] is not None and row['commit']
    # both runs hold out the same validation images (one split file)
    assert os.listdir(osp.join(out, 'splits')) == [
        'demo-shapes_holdout0.25_seed0.json'
    ]
    with open(osp.join(out, 'results.md')) as f:
        assert '| baseline | measured (mmcoop) | 1 |' in f.read()
    assert osp.getsize(osp.join(out, 'mAP_demo-shapes_clean.png')) > 10_000

# Copyright (c) mmcoop contributors. All rights reserved.
"""Issue #12.3: one run per work dir (``<work_dir>/mmcoop.lock``), with
real processes: a second run stops without writing, a run killed with
SIGKILL leaves a stale lock that the next run (``--resume``) takes over."""
import json
import os
import signal
import socket

import pytest
from _helpers import base_cfg, finish, tool, wait_for, write_config


@pytest.fixture(scope='module')
def setup(tiny_assets, tmp_path_factory):
    tmp = tmp_path_factory.mktemp('lock')
    s = base_cfg(tiny_assets['data_root'], tiny_assets['clip'],
                 tiny_assets['classes'], max_epochs=2, size=32)
    s['custom_hooks'] = [
        dict(type='PartialLabelMaskHook'),
        dict(type='KillPointHook', epoch=1, batch=1)
    ]
    cfg = write_config(tmp / 'lock.py', s, extra_imports=['_killpoint'])
    return dict(tmp=tmp, cfg=cfg)


def test_second_run_stops_and_a_killed_run_is_taken_over(setup, tmp_path):
    work = tmp_path / 'work'
    marker = tmp_path / 'parked'
    first = tool('train', setup['cfg'], '--work-dir', work,
                 log=tmp_path / 'first.log', MMCOOP_KILL_MARKER=marker)
    try:
        wait_for(str(marker), first, timeout=120)
        owner = json.loads((work / 'mmcoop.lock').read_text())
        assert owner['pid'] == first.pid
        assert owner['host'] == socket.gethostname()
        names = sorted(os.listdir(work))

        # a second run in the same work dir stops and writes nothing there
        rc, out = finish(
            tool('train', setup['cfg'], '--work-dir', work, '--resume',
                 log=tmp_path / 'second.log'),
            log=tmp_path / 'second.log')
        assert rc != 0
        assert 'WorkDirLockedError' in out
        assert f'is in use by another run (pid {first.pid} on host' in out
        assert str(work / 'mmcoop.lock') in out and 'another --work-dir' in out
        assert sorted(os.listdir(work)) == names
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)

    # the killed run left its lock behind; the next run takes it over
    assert (work / 'mmcoop.lock').exists()
    rc, out = finish(
        tool('train', setup['cfg'], '--work-dir', work, '--resume',
             log=tmp_path / 'third.log'),
        log=tmp_path / 'third.log')
    assert rc == 0, out[-3000:]
    assert f'Took over the stale lock {work / "mmcoop.lock"} of pid ' \
        f'{first.pid}' in out
    assert (work / 'epoch_2.pth').exists()
    assert not (work / 'mmcoop.lock').exists()  # released at the end


def test_lock_of_another_host_or_live_process_is_kept(tmp_path):
    from mmcoop.engine.work_dir_lock import WorkDirLock, WorkDirLockedError
    lock_file = tmp_path / 'mmcoop.lock'
    # a live process of this host (our parent) and one of another host
    for owner in (dict(pid=os.getppid(), host=socket.gethostname()),
                  dict(pid=1234, host='other-node')):
        lock_file.write_text(json.dumps(owner))
        with pytest.raises(WorkDirLockedError, match=str(lock_file)):
            WorkDirLock(str(tmp_path)).acquire()
        assert json.loads(lock_file.read_text()) == owner
    # a dead pid of this host is stale: taken over, then released
    dead = dict(pid=2**22 + 17, host=socket.gethostname())
    lock_file.write_text(json.dumps(dead))
    lock = WorkDirLock(str(tmp_path))
    lock.acquire()
    assert lock.took_over == dead
    assert json.loads(lock_file.read_text())['pid'] == os.getpid()
    lock.release()
    assert not lock_file.exists()


@pytest.mark.skipif(not os.path.exists('/proc/self/stat'),
                    reason='zombies are told through Linux /proc')
def test_the_lock_of_a_zombie_run_is_stale(tmp_path):
    """A run killed with its launcher is a zombie until something reaps it
    (in a container whose first process reaps nothing, for ever): it has
    ended, so its lock is taken over; before, ``--resume`` (and a resumed
    sweep's next run) stopped as if the run still held its work dir."""
    import subprocess
    import sys
    import time

    from mmcoop.engine.work_dir_lock import WorkDirLock
    from mmcoop.utils.processes import (_proc_stat, pid_alive,
                                        process_start_time)
    child = subprocess.Popen([sys.executable, '-c', 'import time; '
                              'time.sleep(30)'])
    try:
        start = process_start_time(child.pid)
        assert start is not None and pid_alive(child.pid, start)
        lock_file = tmp_path / 'mmcoop.lock'
        owner = dict(pid=child.pid, host=socket.gethostname(), start=start)
        lock_file.write_text(json.dumps(owner))
        child.kill()
        for _ in range(500):  # ended, not reaped: a zombie of this test
            state = _proc_stat(child.pid)[0]
            if state == 'Z':
                break
            time.sleep(0.01)
        assert state == 'Z', f'the killed child is in state {state!r}'
        assert not pid_alive(child.pid, start)
        lock = WorkDirLock(str(tmp_path))
        lock.acquire()
        assert lock.took_over == owner
        lock.release()
    finally:
        child.kill()
        child.wait()


def test_only_global_rank_zero_locks(monkeypatch):
    from mmcoop.engine.runner import _launcher_rank
    monkeypatch.setenv('RANK', '1')
    assert _launcher_rank('pytorch') == 1
    assert _launcher_rank('none') == 0
    monkeypatch.delenv('RANK')
    monkeypatch.setenv('SLURM_PROCID', '3')
    assert _launcher_rank('slurm') == 3


def test_sigterm_ends_a_run_through_its_clean_up(tmp_path):
    """``kill`` / Slurm's stop (SIGTERM) used to end the process at once:
    the lock stayed (for the next run to take over), a partial file beside
    its output. Now the loop unwinds: the lock is released."""
    import _common
    from mmengine.hooks import Hook

    class Terminate(Hook):

        def after_train_iter(self, runner, batch_idx, data_batch=None,
                             outputs=None):
            assert (tmp_path / 'w' / 'mmcoop.lock').exists()
            os.kill(os.getpid(), signal.SIGTERM)

    runner = _common.toy_runner(tmp_path / 'w', 2,
                                custom_hooks=[Terminate()])
    with pytest.raises(SystemExit) as exit_:
        runner.train()
    assert exit_.value.code == 128 + signal.SIGTERM
    assert not (tmp_path / 'w' / 'mmcoop.lock').exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_full_disk_leaves_no_empty_lock(tmp_path, monkeypatch):
    """The lock record cannot be written (a full disk): the error names
    the lock file and the fix, and no empty lock is left under its name
    (before: a bare ``[Errno 28]`` and a 0-byte ``mmcoop.lock``)."""
    import errno
    import json

    from mmcoop.engine.work_dir_lock import LOCK_NAME, WorkDirLock

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(json, 'dump', full)
    with pytest.raises(OSError) as err:
        WorkDirLock(str(tmp_path)).acquire()
    assert err.value.errno == errno.ENOSPC
    assert f'while saving {tmp_path / LOCK_NAME}' in str(err.value)
    assert 'Fix: free space' in str(err.value)
    assert not (tmp_path / LOCK_NAME).exists()

# Copyright (c) mmcoop contributors. All rights reserved.
"""SIGTERM runs the clean-up code within ``sigterm_as_exit`` (a sweep stops
its train processes; before, they went on holding the GPU and their work
dirs' locks, and a rerun of the sweep failed on those locks)."""
import os
import signal
import subprocess
import sys
import time

from mmcoop.utils.signals import sigterm_as_exit

_CHILD = r'''
import subprocess, sys, time
from mmcoop.utils.signals import sigterm_as_exit
with sigterm_as_exit():
    child = subprocess.Popen([sys.executable, '-c',
                              'import time; time.sleep(120)'])
    print(child.pid, flush=True)
    try:
        time.sleep(120)
    except BaseException:
        child.terminate()
        child.wait()
        print('stopped', flush=True)
        raise
'''


def test_sigterm_stops_the_children_of_the_block():
    proc = subprocess.Popen([sys.executable, '-c', _CHILD],
                            stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=os.getcwd()))
    child = int(proc.stdout.readline())
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert 'stopped' in out
    try:
        os.kill(child, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive


def test_the_previous_handler_is_restored_and_others_are_kept():

    def mine(signum, frame):
        pass

    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        with sigterm_as_exit():
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        signal.signal(signal.SIGTERM, mine)
        with sigterm_as_exit():  # a launcher's own handler wins
            assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)

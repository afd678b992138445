# Copyright (c) mmcoop contributors. All rights reserved.
import os.path as osp
import subprocess
import sys

import pytest
import torch

HERE = osp.dirname(osp.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import _common  # noqa: E402

# The suite runs tiny models on 2 cores, often next to dataloader workers:
# one intra-op thread avoids oversubscription (and is deterministic).
torch.set_num_threads(1)

REPO = osp.dirname(HERE)


def _checkout_state():
    """``git status`` of the checkout, untracked and ignored paths
    included (``__pycache__`` left out), as a set of lines; None outside
    a git checkout."""
    try:
        out = subprocess.run(
            ['git', 'status', '--porcelain', '--ignored', '-z'],
            cwd=REPO, capture_output=True, text=True, timeout=60,
            check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {line for line in out.split('\0')
            if line and '__pycache__' not in line}


_CHECKOUT_BEFORE = None


def pytest_sessionstart(session):
    global _CHECKOUT_BEFORE
    if not hasattr(session.config, 'workerinput'):  # once, not per worker
        _CHECKOUT_BEFORE = _checkout_state()


def pytest_sessionfinish(session, exitstatus):
    """Fail the run when tests wrote into the checkout: every test writes
    under ``tmp_path`` (a default ``work_dirs/`` or ``data/`` made in the
    working directory is a test that forgot its ``--work-dir``)."""
    if hasattr(session.config, 'workerinput') or _CHECKOUT_BEFORE is None:
        return
    after = _checkout_state()
    new = sorted((after or set()) - _CHECKOUT_BEFORE)
    if new:
        reporter = session.config.pluginmanager.get_plugin('terminalreporter')
        reporter.write('\n')
        reporter.write_sep('=', 'the tests changed the checkout', red=True)
        reporter.write_line(
            f'{REPO}: {new[:10]}. Fix: write under tmp_path (e.g. pass '
            '--work-dir); the run fails.', red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope='session')
def load_tool():
    """``load_tool('tools/train.py')``: a script as a module."""
    return _common.load_tool


@pytest.fixture(scope='session')
def shipped_configs():
    """Every shipped config (``configs/**/*.py`` but ``_base_``), loaded
    once: ``{path: Config}``. Copy one before changing it."""
    import glob

    from mmengine.config import Config
    paths = sorted(
        p for p in glob.glob(osp.join(REPO, 'configs', '**', '*.py'),
                             recursive=True) if '_base_' not in p)
    return {path: Config.fromfile(path) for path in paths}


@pytest.fixture(scope='session')
def toy_runner():
    """``toy_runner(work_dir, max_epochs, shuffle=False, momentum=0.,
    by_epoch=True, **runner_kwargs)``: see :func:`_common.toy_runner`."""
    return _common.toy_runner


@pytest.fixture(scope='session')
def writes_file():
    """A class whose instances create ``path`` when unpickled."""
    return _common.WritesFile


@pytest.fixture
def http_folder(tmp_path):
    """A folder served over http on 127.0.0.1 (for URL checkpoints):
    yields ``(folder, base_url)``."""
    import functools
    import http.server
    import threading
    folder = tmp_path / 'served'
    folder.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ('127.0.0.1', 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f'http://127.0.0.1:{server.server_port}'
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def mm_log():
    """What MMEngine's current logger writes while the test runs: a
    ``StringIO`` (read it with ``.getvalue()``)."""
    import io
    import logging

    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)

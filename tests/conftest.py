# Copyright (c) mmcoop contributors. All rights reserved.
import os.path as osp
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


@pytest.fixture(scope='session')
def load_tool():
    """``load_tool('tools/train.py')``: a script as a module."""
    return _common.load_tool


@pytest.fixture(scope='session')
def toy_runner():
    """``toy_runner(work_dir, max_epochs, shuffle=False, momentum=0.,
    **runner_kwargs)``: see :func:`_common.toy_runner`."""
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

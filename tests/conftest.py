# Copyright (c) mmcoop contributors. All rights reserved.
import torch

# The suite runs tiny models on 2 cores, often next to dataloader workers:
# one intra-op thread avoids oversubscription (and is deterministic).
torch.set_num_threads(1)


import pytest  # noqa: E402


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

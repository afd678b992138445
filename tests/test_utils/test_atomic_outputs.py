# Copyright (c) mmcoop contributors. All rights reserved.
"""Files written whole go through one atomic writer
(:func:`mmcoop.utils.checkpoint.atomic_open`): a run interrupted mid-write
leaves the previous file (or none) under the final name, never a truncated
one, and no temporary file."""
import errno
import os
import shutil

import pytest

REPO = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _only(folder, name):
    """``folder`` holds ``name`` and nothing else (no temporary file)."""
    assert sorted(os.listdir(folder)) == [name]


def test_atomic_open_replaces_only_on_success(tmp_path):
    from mmcoop.utils.checkpoint import atomic_open
    path = tmp_path / 'table.csv'
    path.write_text('old\n')
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(str(path), 'w', newline='') as f:
            f.write('new, but cut')
            raise KeyboardInterrupt  # a kill (Ctrl-C) mid-write
    assert path.read_text() == 'old\n'
    _only(tmp_path, 'table.csv')
    with atomic_open(str(path), 'w') as f:
        f.write('new\n')
    assert path.read_text() == 'new\n'
    _only(tmp_path, 'table.csv')
    with pytest.raises(ValueError, match="mode 'a'"):
        with atomic_open(str(path), 'a'):
            pass


def test_full_disk_on_a_result_file_names_no_checkpoint(tmp_path):
    from mmcoop.utils.checkpoint import atomic_open
    path = tmp_path / 'results.md'
    path.write_text('old')
    with pytest.raises(OSError) as err:
        with atomic_open(str(path), 'w') as f:
            f.write('x')
            raise OSError(errno.ENOSPC, 'No space left on device')
    msg = str(err.value)
    assert err.value.errno == errno.ENOSPC
    assert f'while saving {path}' in msg
    assert 'the previous results.md is intact' in msg
    assert 'checkpoint' not in msg and 'Fix: free space' in msg
    assert path.read_text() == 'old'
    _only(tmp_path, 'results.md')


class _Boom:
    """A CSV cell that cannot be written (a crash mid-table)."""

    def __str__(self):
        raise KeyboardInterrupt


def test_sweep_table_interrupted_keeps_the_previous_one(tmp_path):
    from mmcoop.experiments.tables import read_results, write_results
    path = str(tmp_path / 'results.csv')
    row = dict(method='m', dataset='d', proportion=0.5, seed=0,
               protocol='clean', mAP=50.0)
    write_results(path, [row])
    with open(path, 'rb') as f:
        before = f.read()
    # the second run's table: a crash after its first row
    with pytest.raises(KeyboardInterrupt):
        write_results(path, [dict(row, mAP=60.0), dict(row, seed=1,
                                                       mAP=_Boom())])
    with open(path, 'rb') as f:
        assert f.read() == before
    assert [r['mAP'] for r in read_results(path)] == [50.0]
    _only(tmp_path, 'results.csv')


class _CutFigure:
    """A figure whose saving dies after the first bytes."""

    def savefig(self, f, **kwargs):
        if isinstance(f, str):
            f = open(f, 'wb')
        f.write(b'\x89PNG half an image')
        f.flush()
        raise KeyboardInterrupt


def test_figure_interrupted_keeps_the_previous_one(tmp_path):
    from PIL import Image

    from mmcoop.visualization import save_figure
    path = str(tmp_path / 'ap.png')
    Image.new('RGB', (4, 3)).save(path)
    with pytest.raises(KeyboardInterrupt):
        save_figure(_CutFigure(), path)
    assert Image.open(path).size == (4, 3)
    _only(tmp_path, 'ap.png')


def test_pil_image_format_comes_from_the_final_name(tmp_path):
    """image_demo --show-dir, similarity_map: the format is the final
    name's, not the temporary file's."""
    from PIL import Image

    from mmcoop.visualization import save_image
    save_image(Image.new('RGB', (5, 2)), str(tmp_path / 'x.jpg'))
    assert Image.open(str(tmp_path / 'x.jpg')).format == 'JPEG'


def test_model_zoo_readme_survives_a_failed_write(tmp_path, monkeypatch):
    """update_model_zoo rewrites the table inside a hand-written README: a
    write that fails midway must not leave it truncated."""
    from mmcoop.apis import metafile
    folder = tmp_path / 'baseline'
    folder.mkdir()
    for name in ('metafile.yml', 'README.md'):
        shutil.copy(os.path.join(REPO, 'configs', 'baseline', name),
                    str(folder / name))
    readme = folder / 'README.md'
    before = readme.read_bytes()
    # a character the file's encoding cannot hold: the write fails midway
    monkeypatch.setattr(metafile, 'render_readme',
                        lambda text, data: text + '\udc80')
    with pytest.raises(UnicodeEncodeError):
        metafile.update_model_zoo(str(tmp_path))
    assert readme.read_bytes() == before
    assert sorted(os.listdir(folder)) == ['README.md', 'metafile.yml']


@pytest.mark.parametrize('writer', ['predictions', 'metrics'])
def test_test_tool_out_is_written_atomically(writer, tmp_path, monkeypatch):
    """tools/test.py --out: the prediction dump and the metrics file; a kill
    after the bytes are written but before they are committed leaves the
    previous file (here one replaced with --force)."""
    import mmengine

    from mmcoop.engine.atomic_backend import (ATOMIC_BACKEND_ARGS,
                                              AtomicDumpResults)
    out = tmp_path / ('res.pkl' if writer == 'predictions' else 'res.json')
    out.write_bytes(b'old')

    def killed(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, 'fsync', killed)
    with pytest.raises(KeyboardInterrupt):
        if writer == 'predictions':
            AtomicDumpResults(out_file_path=str(out)).compute_metrics(
                [dict(pred_score=[0.5])])
        else:
            mmengine.dump(dict(mAP=1.0), str(out),
                          backend_args=ATOMIC_BACKEND_ARGS)
    assert out.read_bytes() == b'old'
    _only(tmp_path, out.name)
    monkeypatch.undo()
    AtomicDumpResults(out_file_path=str(tmp_path / 'p.pkl')).compute_metrics(
        [dict(pred_score=[0.5])])
    assert mmengine.load(str(tmp_path / 'p.pkl')) == [dict(pred_score=[0.5])]


def test_partial_checkpoint_of_a_live_writer_is_kept(tmp_path):
    """remove_partial_checkpoints removes a temporary ``.pth`` whose
    writer is dead, never one a running process still writes (e.g.
    publish_model.py with its output in the work dir, which holds no lock):
    removing it would make that process's rename fail."""
    import subprocess
    import sys

    from mmcoop.utils.checkpoint import remove_partial_checkpoints
    dead = subprocess.run(
        [sys.executable, '-c', 'import os; print(os.getpid())'],
        capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    live = f'.published.pth.tmp-{os.getppid()}'
    gone = f'.epoch_2.pth.tmp-{dead_pid}'
    for name in (live, gone):
        (tmp_path / name).write_bytes(b'part')
    assert remove_partial_checkpoints(str(tmp_path)) == [gone]
    assert sorted(os.listdir(tmp_path)) == [live]


def test_a_name_near_the_limit_is_written(tmp_path):
    """A file name of 252 bytes is valid; its temporary name
    (``.<name>.tmp-<pid>``) was not, so ``tools/test.py --out`` failed
    after the whole test (``File name too long``). Long names now get a
    shortened temporary name, cleaned as before."""
    from mmcoop.utils.checkpoint import _temp_name, atomic_open
    name = 'r' * 248 + '.pkl'
    path = tmp_path / name
    with atomic_open(str(path), 'wb') as f:
        f.write(b'ok')
    assert path.read_bytes() == b'ok'
    _only(tmp_path, name)
    assert len(_temp_name(name, 4194304).encode()) <= 255
    assert len(_temp_name('é' * 126, 4194304).encode()) <= 255
    assert _temp_name('short.json', 7) == '.short.json.tmp-7'
    # a long checkpoint name's is still a partial checkpoint's name
    from mmcoop.utils.checkpoint import _CHECKPOINT_TEMP
    assert _CHECKPOINT_TEMP.match(_temp_name('e' * 250 + '.pth', 7))

# Copyright (c) mmcoop contributors. All rights reserved.
"""The analysis tools of issue #7 on tiny random CLIPs and generated inputs:
prompt_similarity, negation_stats, complexity, similarity_map."""
import copy
import csv
import gzip
import json
import os
import os.path as osp
import re
import subprocess
import sys
import types

import numpy as np
import open_clip
import pytest
import torch
from _common import ROOT, load_tool, tiny_classifier_config
from mmengine.config import Config
from PIL import Image

from mmcoop.utils import prompt_templates as pt


def read_csv(path):
    with open(path, newline='', encoding='utf-8') as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------
# template bank
# ---------------------------------------------------------------------------
def test_template_bank_and_negation_rules():
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
    assert list(pt.OPENAI_IMAGENET_TEMPLATES) == [
        t('{}') for t in OPENAI_IMAGENET_TEMPLATES
    ]
    bank = pt.DEFAULT_TEMPLATE_BANK
    assert len(bank) == 85 and len(set(bank)) == 85
    assert all(pt.check_template(t) for t in bank)
    assert 'a picture of a {}.' in bank and 'a photo of a {}.' in bank

    assert pt.negate_template(pt.PAPER_P1) == pt.PAPER_N1
    assert pt.negate_template('a photo of a {}.', 'no',
                              'article') == 'a photo of no {}.'
    assert pt.negate_template('a {} in a video game.', 'no',
                              'article') == 'no {} in a video game.'
    assert pt.negate_template('the plushie {}.', 'no',
                              'article') == 'no plushie {}.'
    assert pt.negate_template('itap of {}.', 'no',
                              'article') == 'itap of no {}.'
    assert pt.negate_template('a photo of a {}.', 'no',
                              'there is {neg} {prompt}') == \
        'there is no a photo of a {}.'
    negated = [pt.negate_template(t) for t in bank]
    assert all(n.startswith('not ') and n[4:] == t
               for n, t in zip(negated, bank))
    with pytest.raises(ValueError, match='negation rule'):
        pt.negate_template('a {}', rule='suffix')
    # before: the negative template came back equal to the positive one
    with pytest.raises(ValueError, match=r"Unknown negation rule "
                       r"'\{prompt\}'.*containing `\{prompt\}` and `\{neg\}`"):
        pt.negate_template('a {}', rule='{prompt}')
    for word in ('', '  '):
        with pytest.raises(ValueError, match=r"negation word is empty .*the "
                           r"negative template would be the positive one. "
                           r"Fix: give e.g. 'not'"):
            pt.negate_template('a photo of a {}.', word)
    with pytest.raises(ValueError, match='one `{}`'):
        pt.check_template('a photo')
    assert pt.fill('a photo of a {}.',
                   'hair_drier') == 'a photo of a hair drier.'
    assert len(pt.get_classnames('coco')) == 80
    assert len(pt.get_classnames('voc')) == 20


# ---------------------------------------------------------------------------
# prompt similarity
# ---------------------------------------------------------------------------
def test_prompt_similarity(tmp_path, capsys):
    tool = load_tool('tools/analysis/prompt_similarity.py')
    classes = ['cat', 'dog', 'traffic light', 'hair drier']
    templates = ['a photo of a {}.', 'a drawing of the {}.', 'a {} in a game.']
    (tmp_path / 'classes.txt').write_text('\n'.join(classes) + '\n')
    (tmp_path / 'templates.txt').write_text(
        '# my bank\n' + '\n'.join(templates) + '\n\n')
    out_dir = tmp_path / 'out'
    torch.manual_seed(0)
    rows = tool.main([
        '--model-name', 'mmcoop-tiny-RN', '--pretrained', 'none', '--classes',
        str(tmp_path / 'classes.txt'), '--templates',
        str(tmp_path / 'templates.txt'), '--out-dir',
        str(out_dir), '--save-pairs', '--no-progress'
    ])
    printed = capsys.readouterr().out
    # the paper's table: 2 settings x (header, ours, paper)
    cell = r'-?\d\.\d\d ± \d\.\d\d \(-?\d\.\d\d, -?\d\.\d\d\)'
    assert len(re.findall(cell, printed)) == 8
    assert "P1-N1: 'a photo of a {}' vs 'not a photo of a {}'" in printed
    assert 'Cosine similarity (4 cls - 3 prompts)' in printed

    assert [(r['setting'], r['pair'], r['n']) for r in rows] == [
        ('1 prompt', 'P1-N1', 4), ('1 prompt', 'P1-P2', 4),
        ('bank', 'P1-N1', 3 * 4), ('bank', 'P1-P2', 3 * 4)
    ]
    for r in rows:
        assert -1 <= r['min'] <= r['mean'] <= r['max'] <= 1
        assert 0 <= r['std'] <= 1
    summary = read_csv(out_dir / 'summary.csv')
    assert [s['pair'] for s in summary] == [r['pair'] for r in rows]
    with pytest.raises(ValueError, match=r'2 output file\(s\) already exist'):
        tool.main(['--out-dir', str(out_dir), '--save-pairs'])
    for s, r in zip(summary, rows):
        assert float(s['mean']) == pytest.approx(r['mean'])
        assert int(s['n']) == r['n']
        assert s['model_name'] == 'mmcoop-tiny-RN'
    pairs = read_csv(out_dir / 'pairs.csv')
    assert len(pairs) == 4 + 4 + 12 + 12
    pn = [p for p in pairs if p['setting'] == 'bank' and p['pair'] == 'P1-N1']
    assert {p['template_b'] for p in pn} == {'not ' + t for t in templates}
    # stats are those of the saved pairs
    for r in rows:
        vals = [float(p['cosine']) for p in pairs
                if p['setting'] == r['setting'] and p['pair'] == r['pair']]
        assert np.mean(vals) == pytest.approx(r['mean'], abs=1e-6)
        assert np.std(vals) == pytest.approx(r['std'], abs=1e-6)

    # --tokenizer reaches the text encoder (CLIP's BPE model: refused)
    with pytest.raises(ValueError, match=r"tokenizes with open_clip's "
                       r'built-in CLIP tokenizer.*remove `tokenizer`'):
        tool.main(['--model-name', 'mmcoop-tiny-RN', '--pretrained', 'none',
                   '--tokenizer', str(tmp_path), '--classes', 'voc',
                   '--out-dir', str(tmp_path / 'tok')])
    # cosine recomputed with the same (seeded) encoder
    torch.manual_seed(0)
    encoder = tool.build_text_encoder('mmcoop-tiny-RN', None)
    with torch.no_grad():
        f = encoder.encode_texts(['a photo of a dog', 'not a photo of a dog'])
    expected = torch.nn.functional.cosine_similarity(f[0], f[1], dim=0)
    first = next(p for p in pairs if p['cls'] == 'dog')
    assert float(first['cosine']) == pytest.approx(float(expected), abs=1e-5)


def test_prompt_similarity_reduce():
    tool = load_tool('tools/analysis/prompt_similarity.py')
    k, c = 4, 3
    sims = {
        'P1-N1': np.arange(k * c, dtype=float).reshape(k, c),
        'P1-P2': np.random.default_rng(0).random((k, k, c))
    }
    flat = tool.reduce_bank(sims, 'none')
    assert flat['P1-N1'].shape == (k * c, )
    assert flat['P1-P2'].shape == (k * (k - 1) // 2 * c, )
    assert tool.reduce_bank(sims, 'class')['P1-N1'].shape == (c, )
    assert tool.reduce_bank(sims, 'template')['P1-P2'].shape == (6, )
    assert tool.fmt(tool.stats(np.array([0.5, 0.7]))) == \
        '0.60 ± 0.10 (0.50, 0.70)'


def test_classnames_and_templates_files(tmp_path):
    """Bad --classes / --templates values name the option, the path and the
    fix (before: a bare FileNotFoundError, or COCO for an empty string)."""
    (tmp_path / 'cls.txt').write_text('# mine\ncat\n\n traffic light \n')
    assert pt.get_classnames(str(tmp_path / 'cls.txt')) == [
        'cat', 'traffic light']
    assert len(pt.get_classnames(None)) == 80  # the default stays COCO
    (tmp_path / 'bank.txt').write_text('a {}.\n# x\nthe {}\n')
    assert pt.load_templates(str(tmp_path / 'bank.txt')) == ['a {}.', 'the {}']
    (tmp_path / 'blank.txt').write_text('# only a comment\n\n')
    (tmp_path / 'bin.txt').write_bytes(b'\x89PNG\xff\xfe')
    (tmp_path / 'bad.txt').write_text('a {}.\na photo\n')
    (tmp_path / 'dup.txt').write_text('a {}.\nthe {}\na {}.\n')
    (tmp_path / 'cls2.txt').write_text('cat\ndog\nCat\n')
    for value, kind, match in [
        ('', ValueError, r"--classes is empty \(''\). Fix: give 'coco'"),
        ('  ', ValueError, r'--classes is empty'),
        (str(tmp_path / 'missing.txt'), FileNotFoundError,
         r"--classes '.*missing.txt' is neither a dataset key nor an "
         r"existing file. Fix: give 'coco', 'voc' or the path"),
        (str(tmp_path), IsADirectoryError, r"--classes '.*' is a folder. "
         'Fix: give a text file with one class name per line'),
        (str(tmp_path / 'blank.txt'), ValueError,
         r"--classes '.*blank.txt' has no class name"),
        (str(tmp_path / 'bin.txt'), ValueError,
         r"--classes '.*bin.txt' is not UTF-8 text"),
    ]:
        with pytest.raises(kind, match=match):
            pt.get_classnames(value, option='--classes')
    for value, kind, match in [
        (str(tmp_path / 'missing.txt'), FileNotFoundError,
         r"--templates '.*missing.txt' does not exist. Fix: check the path"),
        (str(tmp_path / 'blank.txt'), ValueError,
         r"--templates '.*blank.txt' has no template"),
        (str(tmp_path / 'bad.txt'), ValueError,
         r"--templates '.*bad.txt', line 2: Prompt template 'a photo' must "
         r'be a string with exactly one `\{\}` slot'),
        # a repeat weighed twice and paired with itself (before: accepted)
        (str(tmp_path / 'dup.txt'), ValueError,
         r"--templates '.*dup.txt', line 3 repeats line 1 \('a \{\}\.'\)"),
    ]:
        with pytest.raises(kind, match=match):
            pt.load_templates(value, option='--templates')
    with pytest.raises(ValueError, match=r"--classes '.*cls2.txt' has "
                       r'duplicates'):
        pt.get_classnames(str(tmp_path / 'cls2.txt'), option='--classes')


def test_prompt_similarity_bad_arguments(tmp_path, capsys, monkeypatch):
    """Each stops before the encoder is built, naming the option and the
    fix, and leaves no output folder behind."""
    tool = load_tool('tools/analysis/prompt_similarity.py')

    def no_encoder(*args, **kwargs):
        raise AssertionError('the encoder was built before the checks')

    monkeypatch.setattr(tool, 'build_text_encoder', no_encoder)
    # before: range() arg 3 must not be zero / TypeError / a format error
    # after all the encoding
    for argv, message in [
        (['--batch-size', '0'], "--batch-size: must be an integer >= 1, got "
         "'0'"),
        (['--batch-size', '-1'], '--batch-size: must be an integer >= 1'),
        (['--precision', '-1'], "--precision: must be an integer >= 0, got "
         "'-1'"),
    ]:
        with pytest.raises(SystemExit) as e:
            tool.parse_args(argv)
        assert e.value.code == 2
        assert message in capsys.readouterr().err
    assert tool.parse_args(['--precision', '0']).precision == 0
    afile = tmp_path / 'afile'
    afile.write_text('mine')
    (tmp_path / 'bad.txt').write_text('a photo\n')
    (tmp_path / 'one.txt').write_text('a photo of a {}.\n')
    out = tmp_path / 'out'
    cases = [
        (['--classes', str(tmp_path / 'missing.txt')], FileNotFoundError,
         r"--classes '.*missing.txt' is neither a dataset key nor an "
         'existing file. Fix:'),
        # before: silently the 80 COCO classes
        (['--classes', ''], ValueError, r"--classes is empty \(''\)"),
        (['--templates', str(tmp_path / 'missing.txt')], FileNotFoundError,
         r"--templates '.*missing.txt' does not exist. Fix:"),
        (['--templates', str(tmp_path / 'bad.txt')], ValueError,
         r"--templates '.*bad.txt', line 1: "),
        # before: the pair statistics of no pair, a raw numpy error after
        # the model was built and the prompts encoded
        (['--templates', str(tmp_path / 'one.txt')], ValueError,
         r"--templates '.*one.txt' holds one template.*--no-bank"),
        (['--negation', ''], ValueError,
         r"--negation '' / --negation-rule 'prefix': The negation word is "
         'empty'),
        (['--negation-rule', 'suffix'], ValueError,
         r"--negation-rule 'suffix': Unknown negation rule 'suffix'"),
        # before: an empty --neg-prompt silently meant the default
        (['--neg-prompt', ''], ValueError, r'--neg-prompt: Prompt template '
         r"'' must be a string with exactly one"),
        (['--pos2-prompt', 'a {} {}'], ValueError, '--pos2-prompt: '),
    ]
    for argv, kind, match in cases:
        with pytest.raises(kind, match=match):
            tool.main(argv + ['--out-dir', str(out)])
        assert not out.exists(), argv
    # before: raw FileExistsError / FileNotFoundError
    with pytest.raises(ValueError, match=r"--out-dir: output '.*afile/"
                       r"summary.csv': '.*afile' is a file, not a folder"):
        tool.main(['--out-dir', str(afile)])
    assert afile.read_text() == 'mine'
    # the encoder fails (here: on purpose): the folder is not left behind
    with pytest.raises(AssertionError, match='encoder was built'):
        tool.main(['--classes', 'voc', '--out-dir', str(out / 'deep')])
    assert not out.exists()


@pytest.mark.parametrize('tool_path,argv,message', [
    # before: 0 silently fell back to the default size, -1 crashed in torch
    ('tools/analysis/get_flops.py', ['c.py', '--shape', '0'],
     "--shape: must be an integer >= 1, got '0'"),
    # before: nothing drawn / a row of nothing, no error
    ('tools/analysis/browse_dataset.py',
     ['c.py', '--output-dir', 'x', '--show-number', '0'],
     '--show-number: must be an integer >= 1'),
    ('tools/analysis/analyze_results.py',
     ['c.py', 'r.pkl', '--out-dir', 'x', '--topk', '-1'],
     "--topk: must be an integer >= 1, got '-1'"),
    ('tools/analysis/complexity.py', ['--n-ctx', '0'],
     '--n-ctx: must be an integer >= 1'),
    # before: --limit 0 counted nothing, --batch-size 0 failed in pyarrow
    ('tools/analysis/negation_stats.py', ['a.txt', '--limit', '0'],
     '--limit: must be an integer >= 1'),
    ('tools/analysis/negation_stats.py', ['a.txt', '--batch-size', '0'],
     '--batch-size: must be an integer >= 1'),
    ('tools/analysis/negation_stats.py', ['a.txt', '--examples', '-2'],
     "--examples: must be an integer >= 0, got '-2'"),
])
def test_analysis_number_options_are_checked(tool_path, argv, message,
                                             capsys):
    """Number options stop at argument parsing, naming the option."""
    tool = load_tool(tool_path)
    with pytest.raises(SystemExit) as e:
        tool.parse_args(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


# ---------------------------------------------------------------------------
# negation statistics
# ---------------------------------------------------------------------------
NEGATED = [
    ('Not a dog', {'not'}),
    ('there is no cat here', {'no'}),
    ("I don't see it", {"n't"}),
    ('NOTHING to see, never again', {'nothing', 'never'}),
    ('a room without windows', {'without'}),
    ('None of them, nor us', {'none', 'nor'}),
    ('it isn’t red (not blue)', {"n't", 'not'}),
    ('nobody knows; "no", said she', {'nobody', 'no'}),
    ('You cannot park here', {'cannot'}),
    ("won't, can't", {"n't"}),
]
NEUTRAL = [
    'a notebook on a desk', 'a knot in a rope', 'Nordic snow at noon',
    'nonetheless, a photo', 'a photo of a dog', 'cannoli and nougat',
    'the northern lights', 'notation on a sign', 'a nova', "it's the note",
    'an innocent nun', 'no_smoking_sign.jpg'
]


def make_corpus(words, n_repeat=37):
    """(captions with None for nulls / empty, expected per-word counts)."""
    captions, per_word = [], {w: 0 for w in words}
    for i in range(n_repeat):
        for text, words in NEGATED:
            captions.append(f'{text} #{i}')
            for w in words:
                per_word[w] += 1
        captions += [f'{t} #{i}' for t in NEUTRAL]
        captions += ['', None] if i % 2 == 0 else ['   ']
    return captions, per_word


@pytest.fixture(scope='module')
def negation_tool():
    return load_tool('tools/analysis/negation_stats.py')


@pytest.fixture(scope='module')
def corpus(tmp_path_factory, negation_tool):
    import pyarrow as pa
    import pyarrow.parquet as pq
    tmp = tmp_path_factory.mktemp('corpus')
    captions, per_word = make_corpus(negation_tool.DEFAULT_WORDS)
    n_none = sum(c is None for c in captions)
    n_blank = sum(c is not None and not c.strip() for c in captions)
    expected = dict(
        total=len(captions) - n_none - n_blank,
        negated=37 * len(NEGATED),
        skipped=n_none + n_blank,
        per_word=per_word)
    files = {}
    # plain text: a null is an empty line
    txt = [c or '' for c in captions]
    files['txt'] = tmp / 'captions.txt'
    files['txt'].write_text('\n'.join(txt) + '\n', encoding='utf-8')
    files['gz'] = tmp / 'captions.txt.gz'
    with gzip.open(files['gz'], 'wt', encoding='utf-8') as f:
        f.write('\n'.join(txt) + '\n')
    # CSV with quoting, commas and an embedded newline
    files['csv'] = tmp / 'captions.csv'
    with open(files['csv'], 'w', newline='', encoding='utf-8') as f:
        writer = csv.writer(f)
        writer.writerow(['url', 'caption'])
        for i, c in enumerate(captions):
            c = '' if c is None else c
            if i == 5:
                c = c.replace(' ', '\n', 1)
            writer.writerow([f'http://x/{i}.jpg', c])
    files['parquet'] = tmp / 'captions.parquet'
    pq.write_table(
        pa.table({'TEXT': captions, 'idx': list(range(len(captions)))}),
        files['parquet'], row_group_size=100)
    return files, expected, len(captions)


@pytest.mark.parametrize('kind', ['txt', 'gz', 'csv', 'parquet'])
def test_negation_stats_exact_counts(negation_tool, corpus, kind):
    files, expected, n_rows = corpus
    result = negation_tool.negation_stats(
        [str(files[kind])], progress=(kind == 'parquet'), batch_size=64)
    assert result['total'] == expected['total']
    assert result['negated'] == expected['negated']
    assert result['skipped'] == expected['skipped']
    assert result['per_word'] == expected['per_word']
    assert result['fraction'] == pytest.approx(
        expected['negated'] / expected['total'])
    assert result['total'] + result['skipped'] == n_rows


def test_negation_stats_streaming_and_cli(negation_tool, corpus, tmp_path):
    files, expected, n_rows = corpus
    gen = negation_tool.iter_captions(str(files['parquet']), batch_size=16)
    assert isinstance(gen, types.GeneratorType)
    assert next(gen) == NEGATED[0][0] + ' #0'
    # several files, a limit, custom words, the CLI with a JSON report
    out = tmp_path / 'neg.json'
    proc = subprocess.run([
        sys.executable,
        osp.join(ROOT, 'tools/analysis/negation_stats.py'),
        str(files['txt']),
        str(files['parquet']), '--words', 'without', 'never', '--out',
        str(out), '--examples', '2'
    ], capture_output=True, text=True, check=True)
    assert 'with a negation word: 148 ' in proc.stdout
    result = json.loads(out.read_text())
    assert result['per_word'] == {'without': 74, 'never': 74}
    assert result['total'] == 2 * expected['total']
    assert len(result['examples']) == 2
    limited = negation_tool.main([str(files['csv']), '--limit', '22',
                                  '--no-progress'])
    assert limited['total'] + limited['skipped'] == 22
    assert limited['negated'] == len(NEGATED)
    with pytest.raises(KeyError, match='--column'):
        negation_tool.negation_stats([str(files['csv'])], column='TEXT',
                                     progress=False)


def test_negation_stats_unreadable_files_are_named(negation_tool, corpus,
                                                   tmp_path, capsys):
    files, expected, n_rows = corpus
    latin = tmp_path / 'latin1.txt'
    latin.write_bytes('a caf\xe9 without milk\n'.encode('latin-1'))
    with pytest.raises(SystemExit, match=r'latin1.txt: not valid utf-8 '
                       r'text after 0 captions.*--encoding.*iconv'):
        negation_tool.main([str(latin), '--no-progress'])
    result = negation_tool.main(
        [str(latin), '--encoding', 'latin-1', '--no-progress'])
    assert result['negated'] == 1
    data = files['gz'].read_bytes()
    cut = tmp_path / 'cut.txt.gz'
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(SystemExit, match=r'cut.txt.gz: the gzip archive is '
                       r'truncated or corrupt after [\d,]+ captions.*'
                       r're-download'):
        negation_tool.main([str(files['txt']), str(cut), '--no-progress'])


def test_negation_stats_output_policy(negation_tool, corpus, tmp_path):
    files, expected, n_rows = corpus
    out = tmp_path / 'new' / 'neg.json'  # the folder is created
    args = [str(files['txt']), '--no-progress', '--out', str(out)]
    negation_tool.main(args)
    out.write_text('mine')
    with pytest.raises(ValueError, match='already exist.*--force'):
        negation_tool.main(args)
    assert out.read_text() == 'mine'
    negation_tool.main(args + ['--force'])
    assert json.loads(out.read_text())['total'] == expected['total']
    with pytest.raises(ValueError, match='is the input'):
        negation_tool.main([str(files['txt']), '--out', str(files['txt']),
                            '--force', '--no-progress'])


# ---------------------------------------------------------------------------
# complexity
# ---------------------------------------------------------------------------
def test_complexity_reproduces_official_counts(tmp_path, capsys,
                                               monkeypatch):
    tool = load_tool('tools/analysis/complexity.py')
    monkeypatch.setattr(tool, 'BENCHMARK_TOOL', str(tmp_path / 'absent.py'))
    out = tmp_path / 'complexity.csv'
    rows = tool.main(['--model-name', 'mmcoop-tiny-RN-512', '--out',
                      str(out), '--time-per-epoch'])
    printed = capsys.readouterr().out
    counts = {(r['dataset'], r['method']): r['params'] for r in rows}
    assert counts == {
        ('COCO', 'PositiveCoOp'): 737280,
        ('COCO', 'NegativeCoOp'): 737280,
        ('COCO', 'DualCoOp'): 1310720,
        ('COCO', 'Baseline'): 82080,
        ('VOC', 'PositiveCoOp'): 184320,
        ('VOC', 'NegativeCoOp'): 184320,
        ('VOC', 'DualCoOp'): 327680,
        ('VOC', 'Baseline'): 20520,
    }
    assert all(r['matches_official'] is True for r in rows)
    assert '| COCO    | PositiveCoOp | 80 | 737,280' in printed
    assert '730k' in printed and '7.97' in printed and '3.55' in printed
    assert 'benchmark.py is not available' in printed
    saved = read_csv(out)
    assert [int(r['params']) for r in saved] == [r['params'] for r in rows]
    assert {r['paper_params'] for r in saved} == {
        '730k', '170k', '1.3M', '0.3M', '80k', '20k'}
    # the table is not overwritten silently
    with pytest.raises(ValueError, match='already exist.*--force'):
        tool.main(['--model-name', 'mmcoop-tiny-RN-512', '--out', str(out)])
    assert read_csv(out) == saved


def test_complexity_options_and_benchmark(tmp_path, monkeypatch):
    tool = load_tool('tools/analysis/complexity.py')
    rows = tool.main(['--model-name', 'mmcoop-tiny-RN-512', '--datasets',
                      'VOC', '--methods', 'PositiveCoOp', '--n-ctx', '8',
                      '--no-residual'])
    assert rows[0]['params'] == 20 * 8 * 512 + 20 * 512
    assert rows[0]['matches_official'] == ''
    fake = tmp_path / 'benchmark.py'
    fake.write_text('import sys; print("epoch time", sys.argv[1:])\n')
    monkeypatch.setattr(tool, 'BENCHMARK_TOOL', str(fake))
    assert "epoch time ['--x', '1']" in tool.run_benchmark('--x 1')


# ---------------------------------------------------------------------------
# similarity maps
# ---------------------------------------------------------------------------
@pytest.fixture(scope='module')
def image_file(tmp_path_factory):
    y, x = np.mgrid[0:60, 0:90]
    img = np.stack([x * 255 // 90, y * 255 // 60, np.full_like(x, 60)],
                   -1).astype(np.uint8)
    img[20:40, 30:60] = 255
    path = tmp_path_factory.mktemp('simmap') / 'scene.png'
    Image.fromarray(img).save(path)
    return str(path)


def test_similarity_map_helpers():
    tool = load_tool('tools/visualization/similarity_map.py')
    dense = torch.randn(8, 1 + 9)
    grid = tool.dense_to_grid(dense)
    assert grid.shape == (8, 3, 3)
    torch.testing.assert_close(grid.norm(dim=0), torch.ones(3, 3))
    # the mean token is dropped, positions keep their raster order
    sim = tool.similarity(grid, dense[:, 1 + 4])
    assert sim.shape == (3, 3)
    assert sim[1, 1] == pytest.approx(1.0, abs=1e-6)
    assert (sim <= 1 + 1e-6).all() and (sim >= -1 - 1e-6).all()
    with pytest.raises(ValueError, match='square'):
        tool.dense_to_grid(torch.randn(8, 1 + 6))
    assert tool.output_size(448, 1) == (1344, 480)
    assert tool.output_size(96, 2) == (288, 224)


def test_similarity_map_reads_images_by_the_loaders_rule(tmp_path):
    """The hand-written-prompt maps read the image themselves: a 16-bit
    PNG is refused naming it, as every loader does, not saturated to white
    by convert('RGB'); 8-bit images are the loaders' RGB."""
    tool = load_tool('tools/visualization/similarity_map.py')
    wide = tmp_path / 'wide16.png'
    Image.fromarray(np.full((6, 8), 40000, np.uint16)).save(wide)
    with pytest.raises(OSError, match=r"wide16\.png'.*'I;16'.*Fix"):
        tool._load_rgb(str(wide))
    la = tmp_path / 'la.png'
    Image.new('LA', (8, 6), (90, 0)).save(la)
    assert np.asarray(tool._load_rgb(str(la))).tolist() == \
        np.full((6, 8, 3), 90).tolist()


def test_similarity_map_handwritten(image_file, tmp_path, capsys,
                                    monkeypatch):
    tool = load_tool('tools/visualization/similarity_map.py')
    # the image is normalised as the weights expect (clip_loader's
    # clip_normalization: SigLIP's 0.5 / 0.5, not always CLIP's)
    from mmcoop.models.backbones import clip_loader
    asked = []
    normalization = clip_loader.clip_normalization
    monkeypatch.setattr(
        clip_loader, 'clip_normalization',
        lambda *a: asked.append(a) or normalization(*a))
    out = str(tmp_path / 'sim.png')
    torch.manual_seed(0)
    args = [
        image_file, '--class', 'dog', '--class', 'traffic light',
        '--model-name', 'mmcoop-tiny-RN', '--pretrained', 'none',
        '--input-size', '96', '--panel-size', '96', '--out', out,
        '--save-npz'
    ]
    path, maps = tool.main(args)
    assert path == out
    assert Image.open(out).size == tool.output_size(96, 2) == (288, 224)
    assert list(maps) == ['dog', 'traffic light']
    for m in maps.values():
        assert m['pos'].shape == m['neg'].shape == (3, 3)  # 96 / 32
        assert np.abs(m['pos']).max() <= 1 and np.abs(m['neg']).max() <= 1
        assert not np.allclose(m['pos'], m['neg'])
    assert "'not a photo of a dog'" in maps['dog']['neg_label']
    printed = capsys.readouterr().out
    assert 'corr(positive, negative)' in printed and '(288x224)' in printed
    npz = np.load(str(tmp_path / 'sim.npz'))
    np.testing.assert_array_equal(npz['dog/pos'], maps['dog']['pos'])

    # the same map by hand: FrozenCLIP dense features vs the text feature
    from mmcoop.models.backbones import FrozenCLIP, FrozenCLIPTextEncoder
    torch.manual_seed(0)
    backbone = FrozenCLIP('mmcoop-tiny-RN', None, input_resolution=96)
    encoder = FrozenCLIPTextEncoder('mmcoop-tiny-RN', None)
    img = Image.open(image_file).convert('RGB').resize((96, 96),
                                                       Image.BILINEAR)
    assert asked == [('mmcoop-tiny-RN', None)]
    clip_mean = np.array(open_clip.OPENAI_DATASET_MEAN, np.float32)
    clip_std = np.array(open_clip.OPENAI_DATASET_STD, np.float32)
    x = (np.asarray(img, np.float32) / 255 - clip_mean) / clip_std
    x = torch.from_numpy(x.astype(np.float32)).permute(2, 0, 1)[None]
    with torch.no_grad():
        dense = backbone(x)[0][0, :, 1:]  # (D, 9)
        text = encoder.encode_texts(['not a photo of a dog'])[0]
    expected = torch.nn.functional.cosine_similarity(
        dense, text[:, None], dim=0).reshape(3, 3)
    np.testing.assert_allclose(maps['dog']['neg'], expected.numpy(),
                               atol=1e-5)
    # outputs: not over existing files (the .npz counts), never the input
    os.remove(out)
    with pytest.raises(ValueError, match=r"already exist: '.*sim.npz'"):
        tool.main(args)
    with pytest.raises(ValueError, match='is the input'):
        tool.main(args[:-3] + ['--out', image_file, '--force'])


def test_similarity_map_bad_arguments(image_file, tmp_path, capsys):
    """Each stops before a model is built, naming the argument and the
    fix; nothing is written."""
    tool = load_tool('tools/visualization/similarity_map.py')
    out = str(tmp_path / 'out' / 'sim.png')
    base = ['--model-name', 'mmcoop-tiny-RN', '--pretrained', 'none',
            '--input-size', '64', '--panel-size', '64', '--out', out]
    text = tmp_path / 'notes.png'
    text.write_text('not an image')
    cases = [
        # before: "Image '<dir>' does not exist."
        ([str(tmp_path), '--class', 'dog'], IsADirectoryError,
         r"Image '.*' is a folder. Fix: give one image file"),
        # before: PIL's UnidentifiedImageError without a fix
        ([str(text), '--class', 'dog'], OSError,
         r"Cannot decode image '.*notes\.png' \(UnidentifiedImageError.*"
         r'Fix: give an image file'),
        # before: silently drawn with 'jet'
        ([image_file, '--class', 'dog', '--cmap', 'jte'], ValueError,
         r"--cmap 'jte' is not a matplotlib colormap. Fix: use one of"),
        # before: one row for both, or a row for an empty name
        ([image_file, '--class', 'dog', '--class', 'dog'], ValueError,
         r"--class 'dog' is given twice .*Fix: give each class once"),
        ([image_file, '--class', ' '], ValueError,
         '--class must name a class, got an empty name'),
        # before: the checkpoint was ignored, hand-written prompts drawn
        ([image_file, '--class', 'dog', '--checkpoint', image_file],
         ValueError, r'--checkpoint is only read with --config .*Fix: add '
         r'--config CFG.py, or drop --checkpoint'),
        ([image_file, '--class', 'dog', '--config',
          str(tmp_path / 'nope.py')], FileNotFoundError,
         r"--config '.*nope\.py' is not a file"),
        # the config's own tokenizer is used with --config
        ([image_file, '--class', 'dog', '--config', image_file,
          '--tokenizer', str(tmp_path)], ValueError,
         r'--tokenizer is only read with --model-name .*Fix: set '
         r'model.head.text_encoder.tokenizer in the config'),
    ]
    for argv, kind, match in cases:
        with pytest.raises(kind, match=match):
            tool.main(argv + base)
    assert not os.path.exists(out)
    for argv, message in [
        (['--panel-size', '0'], "--panel-size: must be an integer >= 1"),
        (['--input-size', '-448'], "--input-size: must be an integer >= 1"),
        (['--alpha', '1.5'], "--alpha: must be a number in [0, 1], got "
         "'1.5'"),
    ]:
        with pytest.raises(SystemExit):
            tool.parse_args([image_file, '--class', 'dog', *argv])
        assert message in capsys.readouterr().err


def test_similarity_map_output_format_checked_first(image_file, tmp_path,
                                                    monkeypatch):
    """An --out PIL cannot write stops before the model runs and creates no
    folder (before: PIL's 'unknown file extension' after the model, with
    the folder made)."""
    tool = load_tool('tools/visualization/similarity_map.py')

    def no_model(*args, **kwargs):
        raise AssertionError('the model ran before the checks')

    monkeypatch.setattr(tool, 'handwritten_maps', no_model)
    base = [image_file, '--class', 'dog']
    for out, extra, match in [
        ('out4/noext', [], r"--out '.*out4/noext' has no extension.*Fix: end "
         r"it with .png .*--out .*out4/noext.png"),
        ('out5/a.npz', [], r"--out '.*out5/a.npz': the figure is an image, "
         r"not an .npz. Fix: give --out .*out5/a.png --save-npz"),
        ('out6/a.npz', ['--save-npz'], r'Fix: give --out .*out6/a.png \('),
        ('out7/a.xyz', [], r"--out '.*a.xyz' has extension '.xyz'"),
        ('out8/a.xbm', [], r"has extension '.xbm'"),  # PIL: mode '1' only
    ]:
        with pytest.raises(ValueError, match=match):
            tool.main(base + ['--out', str(tmp_path / out)] + extra)
        assert not (tmp_path / out).parent.exists()
    assert tool.check_out('a/b.JPG') == 'a/b.JPG'
    assert tool.check_out('b.webp') == 'b.webp'
    # bad prompts and missing files are found before the output folder
    afile = tmp_path / 'afile'
    afile.write_text('mine')
    out = tmp_path / 'out' / 'sim.png'
    for extra, kind, match in [
        (['--negation', ' '], ValueError,
         r"--negation ' ' / --negation-rule 'prefix': The negation word is "
         'empty'),
        (['--negation-rule', 'suffix'], ValueError,
         r"--negation-rule 'suffix': Unknown negation rule"),
        (['--neg-prompt', ''], ValueError, "--neg-prompt: Prompt template "
         "''"),
        (['--pos-prompt', 'a photo'], ValueError, '--pos-prompt: '),
        (['--config', image_file, '--checkpoint',
          str(tmp_path / 'nope.pth')], FileNotFoundError,
         r"--checkpoint '.*nope.pth' is not a file"),
    ]:
        with pytest.raises(kind, match=match):
            tool.main(base + ['--out', str(out)] + extra)
        assert not out.parent.exists()
    for path, match in [
        (afile / 'sim.png', r"--out: output '.*afile/sim.png': '.*afile' is "
         'a file, not a folder'),
    ]:
        with pytest.raises(ValueError, match=match):
            tool.main(base + ['--out', str(path)])
    assert afile.read_text() == 'mine'


def test_similarity_map_needs_a_clip_image_backbone(image_file, tmp_path):
    """A config whose backbone is not FrozenCLIP (here a feature-cache
    config's PrecomputedFeatures, and an mmpretrain ResNet) is refused by
    name. Before: the ResNet failed inside torch.einsum ('subscript d has
    size 64 for operand 1 which does not broadcast with ... 1024')."""
    tool = load_tool('tools/visualization/similarity_map.py')
    head = dict(type='NegativeCoOpHead', classnames=['cat', 'dog'], n_ctx=4,
                text_encoder=dict(type='FrozenCLIPTextEncoder',
                                  model_name='mmcoop-tiny-RN'))
    for backbone in (dict(type='PrecomputedFeatures'),
                     dict(type='mmpretrain.ResNet', depth=18)):
        cfg = tiny_classifier_config(head)
        cfg['model']['backbone'] = backbone
        path = str(tmp_path / 'cfg.py')
        Config(cfg).dump(path)
        name = backbone['type'].split('.')[-1]
        with pytest.raises(TypeError, match=rf"the backbone is {name}; "
                           r'similarity maps need the dense features of a '
                           r'FrozenCLIP image backbone. Fix: give a config '
                           r"with model.backbone=dict\(type='FrozenCLIP'"):
            tool.learned_maps(image_file, ['dog'], path, None)


@pytest.mark.parametrize('head_type', ['NegativeCoOpHead', 'BaselineHead'])
def test_similarity_map_learned(image_file, tmp_path, head_type):
    tool = load_tool('tools/visualization/similarity_map.py')
    from mmcoop.apis import init_model
    head = dict(type=head_type, classnames=['cat', 'dog', 'person'])
    if head_type == 'BaselineHead':
        head['in_channels'] = 64
    else:
        head.update(n_ctx=4, text_encoder=dict(
            type='FrozenCLIPTextEncoder', model_name='mmcoop-tiny-RN'))
    cfg = tiny_classifier_config(head)
    cfg_path = str(tmp_path / 'cfg.py')
    Config(copy.deepcopy(cfg)).dump(cfg_path)
    torch.manual_seed(0)
    model = init_model(cfg)
    ckpt = str(tmp_path / 'ckpt.pth')
    torch.save({'state_dict': model.state_dict()}, ckpt)
    out = str(tmp_path / 'learned.png')
    torch.manual_seed(0)
    _, maps = tool.main([image_file, '--class', 'person', '--config',
                         cfg_path, '--checkpoint', ckpt, '--out', out,
                         '--panel-size', '64', '--norm', 'shared'])
    assert Image.open(out).size == (192, 64 + 16)
    # a class the model does not have is found once it is built: no
    # output folder is left behind
    missing = tmp_path / 'missing' / 'zebra.png'
    with pytest.raises(KeyError, match='zebra'):
        tool.main([image_file, '--class', 'zebra', '--config', cfg_path,
                   '--checkpoint', ckpt, '--out', str(missing),
                   '--panel-size', '64'])
    assert not missing.parent.exists()
    m = maps['person']
    assert m['pos'].shape == (2, 2)
    neg, pos, _ = tool.learned_class_features(model.head)
    assert pos.shape == neg.shape == (3, 64)
    # recompute the positive map from the model
    data = model.data_preprocessor(
        {'inputs': [torch.from_numpy(
            np.ascontiguousarray(__import__('mmcv').imresize(
                __import__('mmcv').imread(image_file), (64, 64)))).permute(
                    2, 0, 1)], 'data_samples': None}, False)
    with torch.no_grad():
        dense = model.backbone(data['inputs'])[0][0, :, 1:]
    expected = torch.nn.functional.cosine_similarity(
        dense, pos[2][:, None], dim=0).reshape(2, 2)
    np.testing.assert_allclose(m['pos'], expected.numpy(), atol=1e-5)
    with pytest.raises(KeyError, match='not in the model'):
        tool.learned_maps(image_file, ['zebra'], cfg_path, ckpt)

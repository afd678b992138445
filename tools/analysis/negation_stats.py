# Copyright (c) mmcoop contributors. All rights reserved.
"""How many captions of an image-text corpus contain a negation word?

The PositiveCoOp paper (WACV 2025) reports that about 2M of LAION-400M's
captions (0.47 %) contain a negative word, as an explanation of why CLIP
barely separates "a photo of a X" from "not a photo of a X". This tool
counts the same statistic on any caption corpus, streaming (constant
memory):

* plain text, one caption per line (``.txt``; ``.gz`` is decompressed);
* CSV with a header (``.csv``/``.tsv``, optionally ``.gz``), read with the
  ``csv`` module;
* parquet (``.parquet``), read with ``pyarrow`` ``iter_batches``, only the
  caption column (LAION-400M metadata: ``--column TEXT``).

Matching is whole-word and case-insensitive: ``not`` matches "Not a dog"
and "(not)", never "notebook" or "knot". The list entry ``n't`` stands for
every contraction ending in n't or n’t: "don't", "isn’t", "can't", "won't",
"do n't". Hyphens and apostrophes separate words
("no-one" and "nobody's" contain "no" and "nobody"); underscores do not.

Default words (the paper does not publish its list, so its 0.47 % need not be
reproduced exactly): :data:`DEFAULT_WORDS`.

Empty lines and missing (null) captions are not counted as captions; they are
reported as ``skipped``.

Example::

    python tools/analysis/negation_stats.py laion400m/part-*.parquet \
        --column TEXT --out work_dirs/negation_laion.json
"""
import argparse
import csv
import gzip
import io
import json
import os.path as osp
import re
import sys
import zlib
from typing import Dict, Iterable, Iterator, List, Optional, Sequence

#: Default negation words; ``n't`` stands for every ``...n't`` contraction.
DEFAULT_WORDS = ('no', 'not', 'none', 'nothing', 'nobody', 'nowhere',
                 'never', 'neither', 'nor', 'without', 'cannot', "n't")

_APOS = "['\u2019]"  # ASCII and typographic apostrophe
_COLUMN_GUESSES = ('caption', 'TEXT', 'text', 'Caption', 'captions')


def build_patterns(words: Sequence[str]) -> Dict[str, 're.Pattern']:
    """One compiled regex per word (whole-word, case-insensitive)."""
    patterns = {}
    for word in words:
        word = word.strip()
        if not word:
            continue
        if word.lower() in ("n't", 'n’t'):
            # any word ending in n't: don't, isn't, can't, won't ...
            pat = rf'(?<!\w)\w*n{_APOS}t(?!\w)'
        else:
            body = re.escape(word).replace("\\'", _APOS).replace("'", _APOS)
            pat = rf'(?<!\w){body}(?!\w)'
        patterns[word] = re.compile(pat, re.IGNORECASE | re.UNICODE)
    if not patterns:
        raise ValueError('The negation word list is empty.')
    return patterns


def find_words(text: str, patterns: Dict[str, 're.Pattern']) -> List[str]:
    """Which of the words occur in ``text``."""
    return [w for w, p in patterns.items() if p.search(text)]


class CorpusError(ValueError):
    """A caption file cannot be read completely (wrong encoding, truncated
    archive)."""


def _open_text(path: str, encoding: str = 'utf-8'):
    if path.endswith('.gz'):
        return io.TextIOWrapper(
            gzip.open(path, 'rb'), encoding=encoding, newline='')
    return open(path, encoding=encoding, newline='')


def detect_format(path: str) -> str:
    name = path[:-3] if path.endswith('.gz') else path
    ext = osp.splitext(name)[1].lower()
    if ext in ('.parquet', '.pq'):
        return 'parquet'
    if ext in ('.csv', '.tsv'):
        return 'csv'
    return 'txt'


def _pick_column(names: Sequence[str], column: Optional[str],
                 path: str) -> str:
    if column is not None:
        if column not in names:
            raise KeyError(f'{path}: no column {column!r} (columns: '
                           f'{list(names)}). Set --column.')
        return column
    for guess in _COLUMN_GUESSES:
        if guess in names:
            return guess
    raise KeyError(f'{path}: cannot guess the caption column among '
                   f'{list(names)}; set --column.')


def iter_captions(path: str,
                  fmt: str = 'auto',
                  column: Optional[str] = None,
                  batch_size: int = 65536,
                  encoding: str = 'utf-8') -> Iterator[Optional[str]]:
    """Stream the captions of one file (``None`` for null values).

    Raises:
        CorpusError: the file is not in ``encoding`` or is a truncated /
            corrupt ``.gz`` (the error names the file and the fix).
    """
    count = 0
    try:
        for caption in _iter_captions(path, fmt, column, batch_size,
                                      encoding):
            count += 1
            yield caption
    except UnicodeDecodeError as e:
        raise CorpusError(
            f'{path}: not valid {encoding} text after {count:,} captions '
            f'({e.reason}, byte {e.object[e.start:e.start + 1]!r}). Fix: '
            'pass its encoding with --encoding (e.g. latin-1), or convert it '
            f'to UTF-8 (iconv -f LATIN1 -t UTF-8 {osp.basename(path)}).') \
            from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise CorpusError(
            f'{path}: the gzip archive is truncated or corrupt after '
            f'{count:,} captions ({type(e).__name__}: {e}). Nothing was '
            'counted as complete: re-download the shard (or leave it out '
            'of the corpus list).') from None


def _iter_captions(path, fmt, column, batch_size, encoding):
    fmt = detect_format(path) if fmt == 'auto' else fmt
    if fmt == 'txt':
        with _open_text(path, encoding) as f:
            for line in f:
                yield line.rstrip('\r\n')
    elif fmt == 'csv':
        name = path[:-3] if path.endswith('.gz') else path
        delimiter = '\t' if name.lower().endswith('.tsv') else ','
        csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
        with _open_text(path, encoding) as f:
            reader = csv.reader(f, delimiter=delimiter)
            header = next(reader, None)
            if header is None:
                return
            idx = header.index(_pick_column(header, column, path))
            for row in reader:
                yield row[idx] if idx < len(row) else None
    elif fmt == 'parquet':
        import pyarrow.parquet as pq
        pf = pq.ParquetFile(path)
        col = _pick_column(pf.schema_arrow.names, column, path)
        for batch in pf.iter_batches(batch_size=batch_size, columns=[col]):
            yield from batch.column(0).to_pylist()
    else:
        raise ValueError(f'unknown format {fmt!r}')


def count_rows(path: str, fmt: str = 'auto') -> Optional[int]:
    """Rows of a parquet file from its metadata (None for text formats)."""
    fmt = detect_format(path) if fmt == 'auto' else fmt
    if fmt == 'parquet':
        import pyarrow.parquet as pq
        return pq.ParquetFile(path).metadata.num_rows
    return None


def negation_stats(paths: Sequence[str],
                   words: Sequence[str] = DEFAULT_WORDS,
                   fmt: str = 'auto',
                   column: Optional[str] = None,
                   limit: Optional[int] = None,
                   num_examples: int = 0,
                   progress: bool = True,
                   batch_size: int = 65536,
                   encoding: str = 'utf-8') -> dict:
    """Count captions containing negation words, streaming.

    Returns:
        dict: ``total`` (captions counted), ``negated`` (captions with at
        least one word), ``fraction`` (negated / total), ``percent``,
        ``skipped`` (empty or null), ``per_word`` (captions containing
        each word), ``examples`` (first ``num_examples`` negated captions),
        ``words``, ``files``.
    """
    patterns = build_patterns(words)
    # One alternation for the common (negative) case; per-word checks only
    # for captions that match.
    any_pat = re.compile('|'.join(f'(?:{p.pattern})'
                                  for p in patterns.values()),
                         re.IGNORECASE | re.UNICODE)
    total = negated = skipped = 0
    per_word = {w: 0 for w in patterns}
    examples: List[str] = []
    bar = None
    if progress:
        from tqdm import tqdm
        rows = [count_rows(p, fmt) for p in paths]
        known = None if any(r is None for r in rows) else sum(rows)
        if limit is not None and known is not None:
            known = min(known, limit)
        bar = tqdm(total=known, unit=' captions', unit_scale=True,
                   desc='negation stats', mininterval=1.0)

    def _all() -> Iterable[Optional[str]]:
        for path in paths:
            yield from iter_captions(path, fmt, column, batch_size,
                                     encoding)

    pending = 0
    try:
        for text in _all():
            if limit is not None and total + skipped >= limit:
                break
            pending += 1
            if bar is not None and pending >= 10000:
                bar.update(pending)
                pending = 0
            if text is None or not text.strip():
                skipped += 1
                continue
            total += 1
            if any_pat.search(text):
                negated += 1
                for w in find_words(text, patterns):
                    per_word[w] += 1
                if len(examples) < num_examples:
                    examples.append(text)
    finally:
        if bar is not None:
            bar.update(pending)
            bar.close()
    return dict(
        files=list(paths),
        words=list(patterns),
        total=total,
        negated=negated,
        fraction=negated / total if total else 0.0,
        percent=100.0 * negated / total if total else 0.0,
        skipped=skipped,
        per_word=per_word,
        examples=examples)


def format_report(result: dict) -> str:
    lines = [
        f"captions: {result['total']:,} (skipped empty/null: "
        f"{result['skipped']:,})",
        f"with a negation word: {result['negated']:,} "
        f"({result['percent']:.3f} %)   [paper, LAION-400M: ~2M, 0.47 %]",
        'per word (captions containing it):'
    ]
    for word, n in sorted(result['per_word'].items(), key=lambda x: -x[1]):
        pct = 100.0 * n / result['total'] if result['total'] else 0.0
        lines.append(f'  {word:<10} {n:>12,}  {pct:7.3f} %')
    if result['examples']:
        lines.append('examples:')
        lines += [f'  {t[:120]}' for t in result['examples']]
    return '\n'.join(lines)


def parse_args(argv=None):
    from mmcoop.engine.cli import nonnegative_int, positive_int, user_path
    parser = argparse.ArgumentParser(
        description='Count captions that contain negation words (streaming).')
    parser.add_argument('corpus', nargs='+',
                        help='caption files: .txt (one per line), .csv/.tsv '
                        '(header row), .parquet; .txt/.csv may be .gz')
    parser.add_argument('--format', choices=['auto', 'txt', 'csv', 'parquet'],
                        default='auto', help='default: from the extension')
    parser.add_argument('--column', default=None,
                        help='caption column for CSV/parquet (default: the '
                        'first of caption, TEXT, text)')
    parser.add_argument('--words', nargs='+', default=None,
                        help='negation words (default: '
                        f'{" ".join(DEFAULT_WORDS)})')
    parser.add_argument('--words-file', default=None,
                        help='file with one negation word per line')
    parser.add_argument('--limit', type=positive_int, default=None,
                        help='stop after this many rows')
    parser.add_argument('--examples', type=nonnegative_int, default=0,
                        help='print the first N negated captions')
    parser.add_argument('--batch-size', type=positive_int, default=65536,
                        help='parquet rows per batch')
    parser.add_argument('--encoding', default='utf-8',
                        help='text encoding of .txt/.csv files and of '
                        '--words-file (default utf-8)')
    parser.add_argument('--out', type=user_path,
                        default=None, help='write the result JSON')
    parser.add_argument('--force', action='store_true',
                        help='overwrite an existing --out file')
    parser.add_argument('--no-progress', action='store_true')
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    from mmcoop.utils.paths import claim_outputs
    if args.out:  # before the (long) count
        claim_outputs([args.out],
                      inputs=[*args.corpus, *filter(None, [args.words_file])],
                      force=args.force)
    words = list(DEFAULT_WORDS)
    try:
        if args.words_file:
            with open(args.words_file, encoding=args.encoding) as f:
                words = [
                    w.strip() for w in f
                    if w.strip() and not w.startswith('#')
                ]
        if args.words:
            words = args.words
        result = negation_stats(
            args.corpus, words, args.format, args.column, args.limit,
            args.examples, progress=not args.no_progress,
            batch_size=args.batch_size, encoding=args.encoding)
    except UnicodeDecodeError as e:
        raise SystemExit(
            f'error: --words-file {args.words_file}: not valid '
            f'{args.encoding} text ({e.reason}). Fix: pass its encoding '
            'with --encoding or convert it to UTF-8.') from None
    except CorpusError as e:
        raise SystemExit(f'error: {e}') from None
    print(format_report(result))
    if args.out:
        from mmcoop.utils.checkpoint import atomic_open
        with atomic_open(args.out, 'w', encoding='utf-8') as f:
            json.dump(result, f, indent=2, ensure_ascii=False)
        print(f'saved {args.out}')
    return result


if __name__ == '__main__':
    main(sys.argv[1:])

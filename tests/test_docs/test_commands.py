# Copyright (c) mmcoop contributors. All rights reserved.
"""The commands, tests, paths and imports the user docs name are real.

* every ``python tools/....py ...`` (and ``demo/image_demo.py``) of a code
  block parses with that tool's own argparse parser (placeholders such as
  ``CONFIG`` are replaced by the demo config); every ``--option`` of an
  inline command is an option of that tool;
* the "Flags:" list of docs/benchmarks.md is every option of
  tools/analysis/benchmark.py;
* ``mim run mmcoop X`` names a tool and ``mim train/test mmcoop NAME`` a
  config;
* every ``test_x.py::test_y`` (and a bare ``test_y``) names a test;
* every repository path (``configs/``, ``tools/``, ``mmcoop/``, ...) exists;
* every ``from mmcoop... import a, b`` of a Python block imports, and
  every backticked ``mmcoop.x.y`` of the prose names a module or object.
"""
import argparse
import contextlib
import fnmatch
import glob
import importlib
import io
import os.path as osp
import re
import shlex
import sys

import pytest
from _common import expand_braces

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO = ('configs/demo/positivecoop_clip-tiny-vit_1xb16-coslr-20e_demo-'
        'shapes-p50.py')
# placeholders of the docs -> a value the parser accepts
PLACEHOLDERS = {
    'CONFIG': DEMO,
    '$CONFIG': DEMO,
    'CFG': DEMO,
    'CFG.py': DEMO,
    'configs/demo/...p50.py': DEMO,
    '$CKPT': 'ckpt.pth',
    '$ds': 'voc07',
    'C': '80',
}
# paths the docs name that are not in the repository on purpose
NOT_IN_REPO = {
    'mmcoop/.mim',  # written by setup.py into a wheel
    # docs/get_started.md section 6: files the user writes
    'configs/_base_/datasets/mydata_partial_448.py',
    'configs/positivecoop/positivecoop_clip-rn101_openai-pre_1xb32-coslr-'
    '50e_mydata-448px-p50.py',
    # the official PositiveCoOp code's config (the recipe's sources)
    'configs/models/rn101_ep50.yaml',
}
# backticked names that look like tests but are config keys or methods
NOT_TESTS = {
    'test_pipeline', 'test_mode', 'test_evaluator', 'test_step',
    'test_dataloader', 'test_cfg'
}


def _docs():
    found = ['README.md'] + glob.glob(osp.join(
        REPO, 'docs', '*.md')) + glob.glob(
            osp.join(REPO, 'configs', '*', 'README.md'))
    return sorted(osp.relpath(osp.join(REPO, f), REPO) for f in found)


def _read(name):
    with open(osp.join(REPO, name), encoding='utf-8') as f:
        return f.read()


def _blocks(text, lang=None):
    for m in re.finditer(r'^```([a-z]*)\n(.*?)^```', text, re.M | re.S):
        if lang is None or m.group(1) == lang:
            yield m.group(2)


def _block_commands(text):
    """(tool, args) of each ``python tools/x.py ...`` line of a code
    block, continuation lines joined, comments and prompts dropped."""
    for block in _blocks(text):
        for line in re.sub(r'\\\n\s*', ' ', block).splitlines():
            line = re.sub(r'\s#.*$', '', line.strip().lstrip('$ '))
            m = re.search(r'(?:python |^)((?:tools/[\w/]+|demo/image_demo)'
                          r'\.py)(\s.*|$)', line)
            if m:
                yield m.group(1), m.group(2).strip()


def _inline_commands(text):
    for tick in re.findall(r'`([^`\n]+)`', text):
        m = re.match(r'(?:python )?((?:tools/[\w/]+|demo/image_demo)\.py)'
                     r'(\s.*|$)', tick)
        if m and m.group(2).strip():
            yield m.group(1), m.group(2).strip()


def _argv(args):
    args = re.sub(r'\[(--[^\]]*)\]', r'\1', args)  # [--opt X] -> --opt X
    args = args.replace('IMAGE [IMAGE ...]', 'IMAGE')
    args = re.sub(r'\{(\w+),[\w,]+\}', r'\1', args)  # {a,b} -> a
    return [PLACEHOLDERS.get(t, t) for t in shlex.split(args) if t != '...']


class _Parser(Exception):

    def __init__(self, parser):
        self.parser = parser


_PARSERS = {}


def _parser(tool):
    """The ``argparse.ArgumentParser`` of a tool, caught when the tool
    calls ``parse_args``."""
    if tool in _PARSERS:
        return _PARSERS[tool]
    name = '_mmcoop_doc_' + re.sub(r'\W', '_', tool)
    spec = importlib.util.spec_from_file_location(name, osp.join(REPO, tool))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def catch(self, args=None, namespace=None):
        raise _Parser(self)

    original, argv = argparse.ArgumentParser.parse_args, sys.argv
    argparse.ArgumentParser.parse_args = catch
    sys.argv = [tool]
    try:
        if hasattr(module, 'parse_args'):
            module.parse_args([])
        else:
            module.main()
    except _Parser as caught:
        _PARSERS[tool] = caught.parser
    finally:
        argparse.ArgumentParser.parse_args, sys.argv = original, argv
    return _PARSERS[tool]


def _parse_error(tool, argv):
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), \
                contextlib.redirect_stdout(io.StringIO()):
            _parser(tool).parse_args(argv)
    except SystemExit as e:
        if e.code:
            return err.getvalue().strip().splitlines()[-1]
    return None


def test_block_commands_parse():
    bad, count = [], 0
    for doc in _docs():
        for tool, args in _block_commands(_read(doc)):
            assert osp.isfile(osp.join(REPO, tool)), (doc, tool)
            count += 1
            error = _parse_error(tool, _argv(args))
            if error:
                bad.append((doc, tool, args, error))
    assert count > 60 and bad == []


def test_inline_command_options_exist():
    bad, count = [], 0
    for doc in _docs():
        for tool, args in _inline_commands(_read(doc)):
            assert osp.isfile(osp.join(REPO, tool)), (doc, tool)
            known = _parser(tool)._option_string_actions
            for opt in re.findall(r'(?<![\w-])(--[\w-]+)', args):
                count += 1
                if opt not in known:
                    bad.append((doc, tool, opt))
    assert count > 10 and bad == []


def test_mim_commands_name_tools_and_configs():
    configs = {
        osp.basename(p)
        for p in glob.glob(osp.join(REPO, 'configs', '**', '*.py'),
                           recursive=True)
    }
    runs = names = 0
    for doc in _docs():
        for block in _blocks(_read(doc)):
            for m in re.finditer(r'^mim run mmcoop (\S+)', block, re.M):
                runs += 1
                tool = m.group(1)
                if ':' in tool:
                    assert osp.isfile(
                        osp.join(REPO, 'tools',
                                 tool.replace(':', '/') + '.py')), tool
                else:
                    found = glob.glob(
                        osp.join(REPO, 'tools', '**', tool + '.py'),
                        recursive=True)
                    assert len(found) == 1, (tool, found)
            for m in re.finditer(r'^mim (?:train|test) mmcoop (\S+)', block,
                                 re.M):
                names += 1
                assert m.group(1) in configs, m.group(1)
    assert runs >= 3 and names >= 2


def test_named_tests_exist():
    files = glob.glob(osp.join(REPO, 'tests', '**', 'test_*.py'),
                      recursive=True)
    by_name, funcs = {}, {}
    for f in files:
        by_name.setdefault(osp.basename(f), []).append(f)
        with open(f, encoding='utf-8') as fh:
            funcs[f] = re.findall(r'^\s*def (test_\w+)', fh.read(), re.M)
    every = {n for names in funcs.values() for n in names}
    modules = {osp.basename(f)[:-3] for f in files}
    bad, count = [], 0
    for doc in _docs():
        for tick in re.findall(r'`([^`\n]+)`', _read(doc)):
            for m in re.finditer(
                    r'((?:tests/[\w/]+/)?(test_\w+\.py))(?:::(test_\w+\*?))?',
                    tick):
                path, base, func = m.groups()
                count += 1
                where = [osp.join(REPO, path)] if path.startswith(
                    'tests/') else by_name.get(base, [])
                where = [w for w in where if osp.isfile(w)]
                if not where or func and not any(
                        fnmatch.fnmatch(n, func) for w in where
                        for n in funcs[w]):
                    bad.append((doc, tick))
            if '.py' in tick or '::' in tick:
                continue
            for m in re.finditer(r'(?<![\w./:])(test_\w+\*?)(?![\w.])',
                                 tick):
                name = m.group(1)
                if name in NOT_TESTS:
                    continue
                count += 1
                if not any(
                        fnmatch.fnmatch(n, name)
                        for n in every | modules) and not osp.isdir(
                            osp.join(REPO, 'tests', name)):
                    bad.append((doc, tick))
    assert count > 50 and bad == []


def test_named_repository_paths_exist():
    missing, count = [], 0
    for doc in _docs():
        text = _read(doc)
        chunks = re.findall(r'`([^`\n]+)`', text) + list(_blocks(text))
        for chunk in chunks:
            for tok in re.findall(
                    r'(?<![\w./-])((?:configs|tools|mmcoop|demo|tests|docs|'
                    r'\.dev_scripts)/[\w/.{},*<>$-]*)', chunk):
                tok = tok.rstrip('.,')
                if any(c in tok for c in '<>$*') or '...' in tok:
                    continue  # a pattern or a placeholder
                for p in expand_braces(tok):
                    count += 1
                    if p.rstrip('/') in NOT_IN_REPO:
                        continue
                    if not (osp.exists(osp.join(REPO, p)) or osp.exists(
                            osp.join(REPO, osp.dirname(doc), p))):
                        missing.append((doc, p))
    assert count > 200 and missing == []


def test_python_block_imports_resolve():
    bad, count = [], 0
    for doc in _docs():
        for block in _blocks(_read(doc), 'python'):
            for module, names in re.findall(
                    r'^from ((?:mmcoop|mmpretrain|mmengine)[\w.]*) import '
                    r'([\w, ]+)$', block, re.M):
                mod = importlib.import_module(module)
                for name in (n.strip() for n in names.split(',')):
                    count += 1
                    if not hasattr(mod, name):
                        bad.append((doc, module, name))
    assert count > 10 and bad == []


def _resolve(dotted):
    """The object a dotted name names (the longest importable module, then
    attributes), or None."""
    parts = dotted.split('.')
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module('.'.join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr, None)
            if obj is None:
                return None
        return obj
    return None


def test_named_python_objects_exist():
    """Every backticked ``mmcoop.x.y`` (and ``open_clip.`` / ``mmpretrain.``
    / ``mmengine.``) of the docs' prose names a module or an attribute.
    ``mmcoop.CapWord`` is a scoped registry name and ``mmcoop.json`` /
    ``mmcoop.lock`` are file names."""
    bad, count = [], 0
    for doc in _docs():
        for tick in re.findall(r'`([^`\n]+)`', _read(doc)):
            for name in re.findall(
                    r'(?<![\w./])((?:mmcoop|open_clip|mmpretrain|mmengine)'
                    r'(?:\.\w+)+)', tick):
                second = name.split('.')[1]
                if second[0].isupper() or name in ('mmcoop.json',
                                                   'mmcoop.lock'):
                    continue
                count += 1
                if _resolve(name) is None:
                    bad.append((doc, name))
    assert count > 30 and bad == []


@pytest.mark.parametrize('placeholder', sorted(PLACEHOLDERS))
def test_placeholders_are_used(placeholder):
    """Drop a placeholder here once no doc uses it."""
    text = '\n'.join(_read(d) for d in _docs())
    assert placeholder in text


def test_benchmark_flag_list_is_complete():
    """docs/benchmarks.md's "Flags:" paragraph names every option of
    tools/analysis/benchmark.py (``--epoch-*`` / ``--data-*`` stand for
    their groups) and exactly the choices of ``--mode``."""
    doc = _read('docs/benchmarks.md')
    para = doc.split('\nFlags: ', 1)[1].split('\n\n', 1)[0]
    parser = _parser('tools/analysis/benchmark.py')
    tokens = set(re.findall(r'(?<![\w-])(--[a-z][\w-]*)', para))
    groups = {t.rstrip('-') for t in tokens if t.endswith('-')}  # --epoch-*
    named = {t for t in tokens if not t.endswith('-')}
    options = {
        opt
        for action in parser._actions for opt in action.option_strings
        if opt.startswith('--') and opt != '--help'
        and action.help != argparse.SUPPRESS  # internal (subprocess jobs)
    }
    missing = {
        opt
        for opt in options - named
        if not any(opt.startswith(g + '-') for g in groups)
    }
    assert not missing, f'benchmarks.md "Flags:" misses {sorted(missing)}'
    assert named <= options, sorted(named - options)
    modes = re.search(r'--mode \{([\w,]+)\}', para)[1].split(',')
    mode_action = parser._option_string_actions['--mode']
    assert modes == list(mode_action.choices)

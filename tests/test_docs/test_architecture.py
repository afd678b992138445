# Copyright (c) mmcoop contributors. All rights reserved.
"""docs/architecture.md names only what exists, and every package."""
import importlib
import os
import os.path as osp
import re

from _common import expand_braces

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _doc():
    with open(osp.join(REPO, 'docs', 'architecture.md')) as f:
        return f.read()


def _ticked(doc):
    return re.findall(r'`([^`\n]+)`', doc)


def test_named_paths_exist():
    named = [
        p for t in _ticked(_doc())
        for tok in re.findall(r'\b(?:mmcoop|tools|configs|demo)/[\w/.{},-]*',
                              t) for p in expand_braces(tok)
    ]
    assert len(named) > 40
    missing = [
        p for p in named if not osp.exists(osp.join(REPO, p))
        and not p.startswith('mmcoop/.mim')  # written by setup.py
    ]
    assert missing == []


def test_named_functions_are_defined_in_their_module():
    """`mmcoop/x.py` `name` pairs: ``name`` is defined in that file."""
    pairs = re.findall(r'`(mmcoop/[\w/]+\.py)` `(\w+)`', _doc())
    assert len(pairs) > 5
    for path, name in pairs:
        with open(osp.join(REPO, path)) as f:
            src = f.read()
        assert re.search(rf'^\s*(def|class) {name}\b|^{name}\s*[:=]', src,
                         re.M), (path, name)


def test_named_runner_methods_and_modules_exist():
    from mmcoop.engine.runner import MMCoopRunner
    doc = _doc()
    methods = re.findall(r'`MMCoopRunner\.(\w+)', doc)
    assert methods
    assert [m for m in methods if not hasattr(MMCoopRunner, m)] == []
    # dotted names: a module, or an attribute of one (`mmcoop.TypeName`
    # alone is a scoped registry name, not a module)
    dotted = re.findall(r'`(mmcoop(?:\.[a-z_]\w*)+)', doc)
    assert 'mmcoop.apis' in dotted
    for name in dotted:
        assert _resolve(name) is not None, name


def _resolve(name):
    module, _, attr = name.rpartition('.')
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        return getattr(importlib.import_module(module), attr, None)


def test_every_package_is_listed():
    doc = _doc()
    listed = set(re.findall(r'^\| `(mmcoop/[\w/]+?)/?` \|', doc, re.M))
    root = osp.join(REPO, 'mmcoop')
    packages = {
        f'mmcoop/{d}'
        for d in os.listdir(root) if osp.isdir(osp.join(root, d))
        and not d.startswith(('.', '_'))
    }
    sub = {
        f'mmcoop/datasets/{d}'
        for d in ('feature_cache', 'transforms')
    }
    assert {'mmcoop/benchmark', 'mmcoop/deployment'} <= packages
    # a package is listed itself or through its modules / subpackages
    unlisted = [
        p for p in sorted(packages | sub)
        if not any(x == p or x.startswith(p + '/') for x in listed)
    ]
    assert unlisted == []


def test_every_mmcoop_config_key_has_a_row():
    """Each top-level key mmcoop interprets is in the table of where it is
    read (and the unknown-key check knows it)."""
    from mmcoop.engine.config_checks import MMCOOP_KEYS
    rows = re.findall(r'^\| `(\w+)', _doc(), re.M)
    assert sorted(k for k in MMCOOP_KEYS if k not in rows) == []

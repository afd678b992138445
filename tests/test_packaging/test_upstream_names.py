# Copyright (c) mmcoop contributors. All rights reserved.
"""mmcoop, its tools and demos use the public API of the packages they
build on: no name with a leading underscore that the package does not
export (``__all__``), imported or reached as an attribute of an imported
upstream module, except the ones listed below with the reason."""
import ast
import glob
import importlib
import os.path as osp

from _common import ROOT

UPSTREAM = ('mmengine', 'mmpretrain', 'mmcv', 'torch', 'torchvision',
            'open_clip', 'timm', 'numpy', 'PIL', 'onnx', 'onnxruntime')

#: ``module: names`` used on purpose, with the reason.
ALLOWED = {
    # the names numpy arrays are pickled under: a weights-only load must
    # allow-list them (mmcoop/utils/checkpoint.py runtime_state_globals)
    'numpy': {'_core'},
    'numpy._core.multiarray': {'_reconstruct'},
    'numpy.core.multiarray': {'_reconstruct'},  # numpy 1.x
}


def _private(name: str) -> bool:
    return name.startswith('_') and not name.startswith('__')


def _exported(module: str, name: str) -> bool:
    try:
        return name in getattr(importlib.import_module(module), '__all__', ())
    except ImportError:  # an optional package that is not installed
        return False


def _allowed(module: str, name: str) -> bool:
    return name in ALLOWED.get(module, ()) or _exported(module, name)


def _uses(path: str):
    """``(line, module, name)`` of each upstream name ``path`` uses."""
    tree = ast.parse(open(path).read())
    modules = {}  # local name -> upstream module path
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split('.')[0]
                if top in UPSTREAM:
                    parts = alias.name.split('.')
                    for i in range(1, len(parts)):
                        yield node.lineno, '.'.join(parts[:i]), parts[i]
                    modules[alias.asname or top] = (
                        alias.name if alias.asname else top)
        elif (isinstance(node, ast.ImportFrom) and node.level == 0
              and node.module.split('.')[0] in UPSTREAM):
            parts = node.module.split('.')
            for i in range(1, len(parts)):
                yield node.lineno, '.'.join(parts[:i]), parts[i]
            for alias in node.names:
                yield node.lineno, node.module, alias.name
                modules[alias.asname or alias.name] = (
                    f'{node.module}.{alias.name}')
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            chain, base = [node.attr], node.value
            while isinstance(base, ast.Attribute):
                chain.insert(0, base.attr)
                base = base.value
            if isinstance(base, ast.Name) and base.id in modules:
                owner = '.'.join([modules[base.id]] + chain[:-1])
                yield node.lineno, owner, node.attr


def test_no_private_upstream_names():
    files = [
        p for pattern in ('mmcoop/**/*.py', 'tools/**/*.py', 'demo/*.py')
        for p in glob.glob(osp.join(ROOT, pattern), recursive=True)
    ]
    assert len(files) > 100
    found = sorted(
        f'{osp.relpath(path, ROOT)}:{line}: {module}.{name}'
        for path in files for line, module, name in _uses(path)
        if _private(name) and not _allowed(module, name))
    assert found == [], ('private names of upstream packages (use a public '
                         'API, or list it in ALLOWED with the reason):\n' +
                         '\n'.join(found))


def test_the_check_finds_a_private_name(tmp_path):
    sample = tmp_path / 'sample.py'
    sample.write_text(
        'import torch\n'
        'from mmengine.runner.checkpoint import _load_checkpoint_to_model\n'
        'from mmengine.optim import _ParamScheduler\n'
        'x = torch.nn.functional._canonical_mask\n'
        'import torch._dynamo\n')
    private = [(line, module, name)
               for line, module, name in _uses(str(sample))
               if _private(name) and not _allowed(module, name)]
    assert private == [
        (2, 'mmengine.runner.checkpoint', '_load_checkpoint_to_model'),
        (5, 'torch', '_dynamo'),
        (4, 'torch.nn.functional', '_canonical_mask'),
    ]

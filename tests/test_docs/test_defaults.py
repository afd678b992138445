# Copyright (c) mmcoop contributors. All rights reserved.
"""The defaults and key lists the user docs state are the code's.

Each check reads the value from the page (so an edit of either side is
caught) and compares it with the constructor signature, the argparse
default of the tool or the keys the code accepts.
"""
import ast
import inspect
import os.path as osp
import re

import pytest
from test_commands import _parser

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _read(*parts):
    with open(osp.join(REPO, *parts), encoding='utf-8') as f:
        return f.read()


def _find(doc, pattern):
    """The first group of ``pattern`` in ``doc`` (whitespace-tolerant)."""
    m = re.search(pattern, re.sub(r'\s+', ' ', doc))
    assert m, pattern
    return m.group(1)


def _default(cls, name):
    return inspect.signature(cls.__init__).parameters[name].default


def _fields(text):
    """``a, b='x' | 'y', c`` -> ['a', 'b', 'c']."""
    return [f.split('=')[0].strip() for f in text.split(',')]


# ----------------------------------------------------------------- data.md
def test_data_md_constructor_defaults():
    import mmcoop.datasets  # noqa: F401
    import mmcoop.demo  # noqa: F401
    import mmcoop.evaluation  # noqa: F401
    from mmcoop.registry import DATASETS, METRICS
    doc = _read('docs', 'data.md')
    get = DATASETS.get

    assert _default(get('VOC2007MultiLabel'), 'difficult_as') == \
        ast.literal_eval(_find(doc, r"\| `('\w+')` \(default\)"))
    # the documented call of the wrapper spells out its defaults
    call = _find(doc, r'(known_proportion=[^)]*)\)')
    stated = dict(
        (k.strip(), ast.literal_eval(v.strip()))
        for k, v in (kv.split('=') for kv in call.split(',')))
    stated.pop('known_proportion')  # required, the example's value
    wrapper = get('PartialLabelDataset')
    assert stated == {k: _default(wrapper, k) for k in stated}
    assert _default(wrapper, 'mode') == ast.literal_eval(
        _find(doc, r"\*\*`mode=('\w+')`\*\* \(default"))

    metric = METRICS.get('PartialMultiLabelMetric')
    assert _default(metric, 'no_positive') == ast.literal_eval(
        _find(doc, r"with `no_positive=('\w+')` \(default"))
    assert _default(METRICS.get('UnseenClassMetric'), 'ks') == \
        ast.literal_eval(_find(doc, r'`ks`, default `(\([\d, ]+\))`'))
    assert _default(get('NUSWIDEMultiLabel'), 'empty') == \
        ast.literal_eval(_find(doc, r"`empty=('\w+')` \(default\)"))
    assert _default(get('COCO2014MultiLabel'), 'strict_class_names') is \
        ast.literal_eval(_find(doc, r'`strict_class_names=(\w+)` \(the '
                               r'default\)'))

    demo = get('DemoShapesDataset')
    stated = re.search(
        r'\*\*Defaults\*\*: (\d+) train and (\d+) val images at (\d+) px, '
        r'seed (\d+)\.', re.sub(r'\s+', ' ', doc)).groups()
    assert (_default(demo, 'num_train'), _default(demo, 'num_val'),
            _default(demo, 'image_size'), _default(demo, 'seed')) == \
        tuple(int(v) for v in stated)
    assert _default(demo, 'num_classes') == int(
        _find(doc, r'(\d+) classes by default'))


# ------------------------------------------------------------ analysis.md
@pytest.mark.parametrize('tool,option,pattern', [
    ('tools/visualization/similarity_map.py', '--input-size',
     r'squashed to `--input-size` \((\d+)\)'),
    ('tools/visualization/similarity_map.py', '--alpha',
     r'opacity `--alpha` \(([\d.]+)\)'),
    ('tools/visualization/similarity_map.py', '--cmap',
     r'colormap `--cmap` \(default `(\w+)`\)'),
    ('tools/visualization/similarity_map.py', '--norm',
     r'\(`--norm (\w+)`, the default\)'),
    ('tools/visualization/similarity_map.py', '--panel-size',
     r'`--panel-size` pixels \(default (\d+)\)'),
    ('tools/visualization/similarity_map.py', '--pos-prompt',
     r'`--pos-prompt` defaults to `(\'[^`]*\')`'),
    ('tools/analysis/prompt_similarity.py', '--pos-prompt',
     r'P1 = `(\'[^`]*\')`'),
    ('tools/analysis/prompt_similarity.py', '--pos2-prompt',
     r'P2 = `(\'[^`]*\')`'),
    ('tools/analysis/prompt_similarity.py', '--negation-rule',
     r'\| `(\w+)` \(default; the paper\'s N1\)'),
    ('tools/analysis/complexity.py', '--model-name',
     r'The default is `--model-name ([\w-]+) --pretrained'),
    ('tools/analysis/complexity.py', '--pretrained',
     r'The default is `--model-name [\w-]+ --pretrained (\w+)`'),
])
def test_analysis_md_tool_defaults(tool, option, pattern):
    stated = _find(_read('docs', 'analysis.md'), pattern)
    default = _parser(tool)._option_string_actions[option].default
    if stated.startswith("'"):
        stated = ast.literal_eval(stated)
    assert str(default) == stated, (tool, option, default, stated)


def test_analysis_md_default_negation_words():
    stated = _find(_read('docs', 'analysis.md'),
                   r'\*\*Default words:\*\* `([^`]*)`').split()
    tool = 'tools/analysis/negation_stats.py'
    default = _parser(tool)._option_string_actions['--words'].default
    from importlib import util
    spec = util.spec_from_file_location('_doc_negation_stats',
                                        osp.join(REPO, tool))
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert stated == list(default or module.DEFAULT_WORDS)


# -------------------------------------------- architecture / reliability
def test_config_key_fields_are_the_accepted_keys():
    from mmcoop.datasets.feature_cache.options import OPTIONS, SWITCH_ONLY
    from mmcoop.engine.checkpoint_fit import CHECKS, resolve_checks
    from mmcoop.experiments.protocols import _KEYS
    doc = re.sub(r'\s+', ' ', _read('docs', 'architecture.md'))
    caches = re.findall(r'`feature_cache = dict\(([^)]*)\)`', doc)
    assert caches and all(
        sorted(_fields(c)) == sorted({*OPTIONS, *SWITCH_ONLY})
        for c in caches), caches
    protocol = _find(doc, r'`protocol = dict\(([^)]*)\)`')
    assert sorted(_fields(protocol)) == sorted(_KEYS['clean'])
    checks = _find(doc, r'`checkpoint_check = dict\(([^)]*)\)`')
    assert _fields(checks) == list(CHECKS)
    # docs/reliability.md, "Switches": all True by default
    switches = re.sub(r'\s+', ' ', _read('docs', 'reliability.md'))
    row = _find(switches, r'\| `checkpoint_check = dict\(([^)]*)\)` \| all '
                r'True \|')
    assert _fields(row) == list(CHECKS)
    assert resolve_checks() == {name: True for name in CHECKS}


def test_analysis_md_metafile_flops():
    """The metafiles' ``FLOPs`` that docs/analysis.md quotes: tower + head
    MACs per image, so COCO and VOC differ by the head's 2·C·D·N."""
    import yaml
    doc = re.sub(r'\s+', ' ', _read('docs', 'analysis.md'))
    coco, voc = re.search(
        r'`(\d+)` for the COCO configs and `(\d+)` for the VOC ones',
        doc).groups()
    for method in ('positivecoop', 'negativecoop', 'dualcoop', 'baseline'):
        meta = yaml.safe_load(_read('configs', method, 'metafile.yml'))
        for model in meta['Models']:
            flops = model['Metadata']['FLOPs']
            assert flops == int(coco if '_coco14-' in model['Name'] else voc)
    # D = 512 and N = 197 (RN101 at 448 px): 2 * (80 - 20) * D * N, to the
    # metafiles' rounding
    assert abs(int(coco) - int(voc) - 2 * 60 * 512 * 197) < 1e6


def test_analysis_md_prompt_count():
    """The number of prompts docs/analysis.md says the paper-setting run of
    prompt_similarity.py encodes: the three single prompts and the bank
    with its negations, 80 COCO classes, duplicates once."""
    from mmcoop.datasets.categories import COCO2014_CATEGORIES
    from mmcoop.utils.prompt_templates import (DEFAULT_TEMPLATE_BANK, fill,
                                               negate_template)
    stated = int(
        _find(_read('docs', 'analysis.md'),
              r'The run encodes ([\d,]+) prompts').replace(',', ''))
    single = {
        fill(t, c)
        for t in ('a photo of a {}', 'not a photo of a {}',
                  'a picture of a {}') for c in COCO2014_CATEGORIES
    }
    templates = list(DEFAULT_TEMPLATE_BANK)
    templates += [negate_template(t, 'not', 'prefix') for t in templates]
    bank = {fill(t, c) for t in templates for c in COCO2014_CATEGORIES}
    assert stated == len(single) + len(bank)

# Copyright (c) mmcoop contributors. All rights reserved.
"""docs/get_started.md for the real run: archive checksums, CLIP caches,
figures that come from docs/benchmarks.md, no machine paths."""
import os.path as osp
import re

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _read(*parts):
    with open(osp.join(REPO, *parts)) as f:
        return f.read()


def test_archives_and_checksums():
    doc = _read('docs', 'get_started.md')
    sums = dict(
        (name, md5)
        for md5, name in re.findall(r'^([0-9a-f]{32})  (\S+)$', doc, re.M))
    # published by torchvision (VOC) and public COCO download scripts
    assert sums == {
        'train2014.zip': '0da8c0bd3d6becc4dcb32757491aca88',
        'val2014.zip': 'a3d79f5ed8d289b7a7554ce06a5782b3',
        'annotations_trainval2014.zip': '0a379cfc70b0e71301e0f377548639bd',
        'VOCtrainval_06-Nov-2007.tar': 'c52e279531787c972589f7e41ab4ae64',
        'VOCtest_06-Nov-2007.tar': 'b6e924de25625d8de591ea690078ad9f',
    }
    for name in sums:  # each archive is downloaded by the commands shown
        assert re.search(rf'wget \S+/{re.escape(name)}\n', doc), name
    from torchvision.datasets.voc import DATASET_YEAR_DICT
    assert DATASET_YEAR_DICT['2007']['md5'] == sums[
        'VOCtrainval_06-Nov-2007.tar']
    assert DATASET_YEAR_DICT['2007-test']['md5'] == sums[
        'VOCtest_06-Nov-2007.tar']


def test_clip_weights_sections():
    doc = _read('docs', 'get_started.md')
    for needle in ('timm/resnet101_clip.openai', '~/.cache/huggingface/hub',
                   'HF_HUB_OFFLINE=1', '~/.cache/clip/RN101.pt',
                   'model.backbone.pretrained=/path/to/open_clip_pytorch_'
                   'model.bin', 'model.head.text_encoder.pretrained=/path/to/'
                   'open_clip_pytorch_model.bin'):
        assert needle in doc, needle
    import open_clip
    cfg = open_clip.get_pretrained_cfg('RN101-quickgelu', 'openai')
    assert cfg['hf_hub'].rstrip('/') == 'timm/resnet101_clip.openai'
    assert cfg['url'] in doc


def _bench_rows(bench):
    """(method, C) -> cells of the 'Train and eval steps' and 'Counted
    FLOPs per step' tables of docs/benchmarks.md run B."""
    steps, flops = {}, {}
    section = bench.split('**Train and eval steps**', 1)[1]
    step_part, flop_part = section.split('**Counted FLOPs per step**', 1)
    for part, out in ((step_part, steps), (flop_part, flops)):
        for line in part.split('\n\n**Projected')[0].splitlines():
            m = re.match(r'\| (\w+) \| (\d+) \|(.*)\|$', line)
            if m:
                out[(m[1], int(m[2]))] = [c.strip() for c in m[3].split('|')]
    return steps, flops


def test_compute_table_is_from_benchmarks():
    doc = _read('docs', 'get_started.md')
    steps, flops = _bench_rows(_read('docs', 'benchmarks.md'))
    rows = re.findall(
        r'^\| (PositiveCoOp|NegativeCoOp|DualCoOp|Baseline) \| (\d+) '
        r'\|(.*)\|$',
        doc, re.M)
    assert len(rows) == 4
    for method, c, rest in rows:
        cells = [x.strip() for x in rest.split('|')]
        bench = steps[(method.lower(), int(c))]
        # T0, T1, T2, E2 of run B: seconds rounded, peak MiB equal
        for mine, theirs in zip(cells[:4], [bench[0], bench[1], bench[2],
                                            bench[5]]):
            t_mine, m_mine = re.match(r'([\d.]+) \((\d+)\)', mine).groups()
            t_theirs, m_theirs = re.match(r'([\d.]+) \((\d+)\)',
                                          theirs).groups()
            assert m_mine == m_theirs
            assert abs(float(t_mine) - float(t_theirs)) <= 0.05
        assert cells[4] == flops[(method.lower(), int(c))][0]
    assert '611.5 PFLOP' in doc and '44.0 PFLOP' in doc
    assert 'COCO | positivecoop | 611.5 / 0.172' in _read(
        'docs', 'benchmarks.md')


def _project_docs():
    """Every Markdown file the project ships: README, docs/, configs/."""
    import glob
    found = glob.glob(osp.join(REPO, '*.md')) + glob.glob(
        osp.join(REPO, 'docs', '**', '*.md'), recursive=True) + glob.glob(
            osp.join(REPO, 'configs', '**', '*.md'), recursive=True)
    return sorted(osp.relpath(f, REPO) for f in set(found))


def test_docs_name_no_machine_paths():
    docs = _project_docs()
    assert {'README.md', 'docs/get_started.md',
            'configs/demo/README.md'} <= set(docs)
    machine = re.compile(r'(?<![\w.])/(work|tmp|home|root|Users)/')
    found = [(name, m.group(0)) for name in docs
             for m in machine.finditer(_read(name))]
    assert found == []


def test_relative_links_resolve():
    """Every relative Markdown link of README, docs/ and configs/ points
    at a file or folder of the repository."""
    broken, count = [], 0
    for name in _project_docs():
        for link in re.findall(r'\]\(([^)\s]+)\)', _read(name)):
            if re.match(r'[a-z]+:', link) or link.startswith('#'):
                continue
            count += 1
            target = osp.join(REPO, osp.dirname(name), link.split('#')[0])
            if not osp.exists(target):
                broken.append((name, link))
    assert count > 20 and broken == []


def _headings(name):
    """The numbered sections and the GitHub anchors of a Markdown file
    (headings inside code blocks are not headings)."""
    text = re.sub(r'^```.*?^```', '', _read(name), flags=re.M | re.S)
    anchors, seen = set(), {}
    for heading in re.findall(r'^#{1,6}\s+(.*?)\s*$', text, re.M):
        slug = re.sub(r'[^\w\- ]', '', heading.lower()).replace(' ', '-')
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f'{slug}-{n}')
    numbers = set(re.findall(r'^##\s+(\d+)\.', text, re.M))
    return anchors, numbers


def test_link_anchors_resolve():
    """Every ``#anchor`` of a relative Markdown link (``#x`` or
    ``file.md#x``) is a heading of the linked file."""
    broken, count = [], 0
    for name in _project_docs():
        for link in re.findall(r'\]\(([^)\s]+)\)', _read(name)):
            path, _, anchor = link.partition('#')
            if re.match(r'[a-z]+:', link) or not anchor:
                continue
            target = osp.normpath(osp.join(osp.dirname(name), path)) \
                if path else name
            count += 1
            if not target.endswith('.md') or not osp.isfile(
                    osp.join(REPO, target)) or anchor not in _headings(
                        target)[0]:
                broken.append((name, link))
    assert count >= 5 and broken == []


def test_section_references_resolve():
    """``docs/x.md section N`` and ``x.md §N`` name a numbered section
    (``## N. ...``) of that file."""
    broken, count = [], 0
    for name in _project_docs():
        for doc, number in re.findall(
                r'(?<![\w/])(?:docs/)?(\w+)\.md`?\]?(?:\([^)\s]*\))?,? '
                r'(?:section |§ ?)(\d+)', _read(name)):
            count += 1
            target = osp.join('docs', doc + '.md')
            if not osp.isfile(osp.join(REPO, target)) or \
                    number not in _headings(target)[1]:
                broken.append((name, doc, number))
    assert count >= 20 and broken == []


def test_full_sweep_hours_add_up():
    """The paper's per-run GPU hours of the compute table, times the nine
    proportions, give the sweep totals the page states."""
    doc = _read('docs', 'get_started.md')
    rows = dict(
        (m[0], [float(x) for x in re.findall(r'([\d.]+) GPU h', m[1])])
        for m in re.findall(r'^\| (MS-COCO 2014|PASCAL VOC 2007) \|(.*)\|$',
                            doc, re.M))
    coco = 9 * sum(rows['MS-COCO 2014'])
    voc = 9 * sum(rows['PASCAL VOC 2007'])
    total, c, v = re.search(
        r'about (\d+) GPU hours\s+\((\d+) for COCO, (\d+) for VOC\)',
        doc).groups()
    assert (int(c), int(v)) == (round(coco), round(voc))
    assert abs(int(total) - (coco + voc)) <= 0.05 * (coco + voc)

# Copyright (c) mmcoop contributors. All rights reserved.
"""Multi-label analysis tools that take a config: tools/test.py --out /
--show-dir, tools/analysis/analyze_results.py, browse_dataset.py and
get_flops.py, on the shipped demo config and generated demo data."""
import csv
import json
import os
import os.path as osp

import _tool_helpers as H
import mmengine
import numpy as np
import pytest
import torch
from _common import load_tool
from PIL import Image

from mmcoop.evaluation import precision_recall, ranked_examples

test_tool = load_tool('tools/test.py', 'mmcoop_tools_test_mla')
analyze_tool = load_tool('tools/analysis/analyze_results.py')
browse_tool = load_tool('tools/analysis/browse_dataset.py')
flops_tool = load_tool('tools/analysis/get_flops.py')


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """The demo config on generated data; one test.py run with --out
    (predictions), --show-dir, and one with --out-item metrics."""
    from mmcoop.apis import init_model
    tmp = tmp_path_factory.mktemp('mla')
    data = str(tmp / 'data')
    H.make_demo_data(data)
    options = [
        f'train_dataloader.dataset.dataset.data_root={data}',
        f'val_dataloader.dataset.data_root={data}',
        f'test_dataloader.dataset.data_root={data}',
    ]
    model = init_model(H.DEMO_CONFIG)
    ckpt = str(tmp / 'head.pth')
    torch.save({'state_dict': model.state_dict(),
                'meta': {'dataset_meta': model.dataset_meta}}, ckpt)
    pkl, show = str(tmp / 'results.pkl'), str(tmp / 'show')
    common = ['--no-pin-memory', '--cfg-options', *options]
    test_tool.main([
        H.DEMO_CONFIG, ckpt, '--work-dir',
        str(tmp / 'wd1'), '--out', pkl, '--show-dir', show, *common
    ])
    metrics_file = str(tmp / 'metrics.json')
    metrics = test_tool.main([
        H.DEMO_CONFIG, ckpt, '--work-dir',
        str(tmp / 'wd2'), '--out', metrics_file, '--out-item', 'metrics',
        *common
    ])
    with open(metrics_file) as f:
        dumped = json.load(f)
    return dict(tmp=tmp, data=data, options=options, pkl=pkl, show=show,
                metrics=metrics, dumped=dumped)


def test_test_out_has_per_class_ap(run):
    rows = run['dumped']['per_class_ap']
    assert [r['class'] for r in rows] == H.DEMO_CLASSES
    assert run['dumped']['multi-label/mAP'] == pytest.approx(
        run['metrics']['multi-label/mAP'])
    # the mean of the per-class APs is the logged mAP (no-positive = 0)
    assert np.mean([r['AP'] for r in rows]) == pytest.approx(
        run['metrics']['multi-label/mAP'], abs=1e-3)
    # the test split is completely labelled: every image in pos + neg
    num_images = len(mmengine.load(run['pkl']))
    assert num_images > 20
    assert all(r['num_pos'] + r['num_neg'] == num_images and
               r['num_unknown'] == 0 for r in rows)


def test_the_dump_holds_what_the_metric_ranks_by(run):
    """Every dumped sample carries the log-odds the metric ranks by; the
    mAP of their ranking, in the dump's order or reversed, is the one
    tools/test.py reported (an AP of fp32 probabilities, which tie at 1.0
    for a confident model, depends on the order)."""
    from mmcoop.evaluation import mean_average_precision
    results = mmengine.load(run['pkl'])
    odds = np.stack([np.asarray(r['pred_log_odds']) for r in results])
    scores = np.stack([np.asarray(r['pred_score']) for r in results])
    targets = np.stack([np.asarray(r['gt_score']) for r in results])
    np.testing.assert_allclose(1 / (1 + np.exp(-odds)), scores, atol=1e-6)
    for order in (slice(None), slice(None, None, -1)):
        assert mean_average_precision(odds[order], targets[order]) == \
            pytest.approx(run['metrics']['multi-label/mAP'], abs=1e-9)


def test_show_dir_draws_every_test_image(run):
    files = sorted(os.listdir(run['show']))
    assert len(files) == len(mmengine.load(run['pkl']))
    assert all(f.endswith('.png') for f in files)
    with Image.open(osp.join(run['show'], files[0])) as img:
        assert img.size == (1000, 420)
    # refused before the runner is built: no work dir, no log
    work_dir = run['tmp'] / 'refused'
    with pytest.raises(FileExistsError, match='not empty'):
        test_tool.main([
            H.DEMO_CONFIG,
            str(run['tmp'] / 'head.pth'), '--show-dir', run['show'],
            '--work-dir',
            str(work_dir), '--cfg-options', *run['options']
        ])
    assert not work_dir.exists()


def test_analyze_results(run):
    out = str(run['tmp'] / 'analysis')
    rows = analyze_tool.main([
        H.DEMO_CONFIG, run['pkl'], '--out-dir', out, '--topk', '2',
        '--cfg-options', *run['options']
    ])
    # same numbers as the metric computed during the test run
    for mine, dumped in zip(rows, run['dumped']['per_class_ap']):
        assert mine == pytest.approx(dumped)
    with open(osp.join(out, 'per_class_ap.csv')) as f:
        table = list(csv.DictReader(f))
    assert [r['class'] for r in table] == H.DEMO_CLASSES
    assert float(table[3]['AP']) == pytest.approx(rows[3]['AP'])
    for sub in ('pr_curves', 'examples'):
        names = sorted(os.listdir(osp.join(out, sub)))
        assert len(names) == len(H.DEMO_CLASSES), sub
    assert 'red_circle.png' in names
    assert osp.isfile(osp.join(out, 'per_class_ap.png'))
    from mmcoop.utils.paths import OutputPathError
    with pytest.raises(OutputPathError, match='--force'):  # nothing rewritten
        analyze_tool.main([
            H.DEMO_CONFIG, run['pkl'], '--out-dir', out, '--cfg-options',
            *run['options']
        ])
    with pytest.raises(ValueError, match='not class names'):
        analyze_tool.main([
            H.DEMO_CONFIG, run['pkl'], '--out-dir',
            str(run['tmp'] / 'analysis2'), '--classes', 'unicorn'
        ])


def test_analyze_results_mean_follows_the_metrics_no_positive(run, capsys):
    """The printed and plotted mAP counted a class without a positive as 0
    whatever the config's test_evaluator.no_positive: 20.57 where
    tools/test.py reported 27.42 with no_positive='ignore'."""
    results = mmengine.load(run['pkl'])
    for r in results:  # the first class never present
        r['gt_score'][0] = 0
    pkl = str(run['tmp'] / 'no_first_class.pkl')
    mmengine.dump(results, pkl)
    means = {}
    for rule in ('zero', 'ignore'):
        rows = analyze_tool.main([
            H.DEMO_CONFIG, pkl, '--out-dir',
            str(run['tmp'] / f'analysis_{rule}'), '--cfg-options',
            *run['options'], f'test_evaluator.no_positive={rule}'
        ])
        line, = [x for x in capsys.readouterr().out.splitlines()
                 if x.startswith('mAP ')]
        means[rule] = float(line.split()[1])
        assert f"(no_positive='{rule}')" in line
    assert rows[0]['num_pos'] == 0 and rows[0]['AP'] == 0
    aps = [r['AP'] for r in rows]
    assert means['zero'] == pytest.approx(np.mean(aps), abs=0.01)
    assert means['ignore'] == pytest.approx(np.mean(aps[1:]), abs=0.01)


def test_precision_recall_and_ranked_examples_by_hand():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    targets = np.array([1, 0, -1, 1, 0])
    precision, recall = precision_recall(scores, targets)
    # ranking without the unknown: 1 (0.9), 0 (0.8), 1 (0.6), 0 (0.5)
    np.testing.assert_allclose(precision, [1, 1 / 2, 2 / 3, 2 / 4])
    np.testing.assert_allclose(recall, [0.5, 0.5, 1, 1])
    assert ranked_examples(scores, targets, k=1) == dict(
        best=[0], missed=[3], false_alarms=[1])
    empty = precision_recall(scores, np.array([0, 0, -1, 0, 0]))
    assert empty[0].size == 0 and empty[1].size == 0


def test_browse_dataset_shows_the_partial_mask(run):
    from mmengine.config import Config

    from mmcoop.datasets.inspection import build_dataset_of, sample_view
    cfg = Config.fromfile(H.DEMO_CONFIG)
    cfg.merge_from_dict(dict(o.split('=', 1) for o in run['options'][:3]))
    # looking writes no mask file (a later run with another seed would
    # load it: the file wins); the mask is the one the file would hold
    mask_file = str(run['tmp'] / 'browse_mask.npy')
    cfg.train_dataloader.dataset.mask_file = mask_file
    dataset = build_dataset_of(cfg, 'train')
    assert not osp.exists(mask_file)
    dataset.save_mask(mask_file)
    assert build_dataset_of(cfg, 'train').check_mask_file(mask_file)
    seen_hidden = False
    for idx in range(6):
        view = sample_view(dataset, idx)
        known = view['targets'] != -1
        # what the loss sees is the complete label where known
        np.testing.assert_array_equal(view['targets'][known],
                                      view['complete'][known])
        seen_hidden |= bool(((view['complete'] == 1) & ~known).any())
        # the packed BGR input is shown as RGB: the file, resized
        path = view['img_path']
        rgb = np.asarray(Image.open(path).convert('RGB').resize(
            view['image'].shape[1::-1], Image.BILINEAR))
        assert np.abs(rgb.astype(int) - view['image']).mean() < 1.0
    assert seen_hidden  # p = 0.5 hides positives in six images
    val = sample_view(build_dataset_of(cfg, 'val'), 0)
    assert val['complete'] is None and (val['targets'] >= 0).all()
    # the device path (file bytes; decoded and resized by the model's
    # preprocessor) is shown as that preprocessor makes it
    size = val['image'].shape[:2]
    cfg.val_dataloader.dataset.pipeline = [
        dict(type='LoadImageBytes', scale=size[::-1], augment=False),
        dict(type='PackInputs', meta_keys=('img_path', 'device_aug'))]
    dev = sample_view(build_dataset_of(cfg, 'val'), 0)
    assert dev['img_path'] == val['img_path']
    assert dev['image'].shape == val['image'].shape
    assert np.abs(dev['image'].astype(int) - val['image']).max() <= 1

    out = str(run['tmp'] / 'browse')
    written = browse_tool.main([
        H.DEMO_CONFIG, '--output-dir', out, '--show-number', '2',
        '--cfg-options', *run['options']
    ])
    assert [osp.basename(p) for p in written] == ['00000.png', '00001.png']
    # never into the dataset tree (the demo generator, and every later
    # run, would then find files it did not write there)
    from mmcoop.datasets.wrapper import dataset_dirs
    inside = osp.join(dataset_dirs(dataset)[0], 'vis')
    with pytest.raises(ValueError, match=r"Refusing to write the output "
                       r"folder \(--output-dir\) .*never writes into a "
                       r"dataset tree.*'work_dirs/browse'"):
        browse_tool.main([
            H.DEMO_CONFIG, '--output-dir', inside, '--show-number', '2',
            '--cfg-options', *run['options']
        ])
    assert not osp.exists(inside)


def test_get_flops_of_the_demo_config(capsys):
    result = flops_tool.main([H.DEMO_CONFIG])
    params = result['params']
    # tiny CLIP (D = W = 64), 10 classes, 16 class-specific context
    # tokens: C * n_ctx * W + 2 * C * D (context, embedding, residual)
    assert params['total']['trainable'] == 10 * 16 * 64 + 2 * 10 * 64
    assert params['backbone']['trainable'] == 0
    assert params['head.text_encoder']['trainable'] == 0
    assert params['total']['frozen'] == (params['backbone']['frozen'] +
                                         params['head']['frozen'])
    flops = result['flops']
    assert result['shape'] == 96
    assert 0 < flops['head (per image, class features cached)'] < \
        flops['image tower (per image)']
    assert flops['class features (per forward pass)'] > 0
    out = capsys.readouterr().out
    assert 'GMACs' in out and '11,520' in out


def test_get_flops_shape_builds_the_tower_for_it():
    """--shape counts the tower built for that size (before: the tower of
    the config's input_resolution refused the image with a traceback whose
    fix named the pipelines, not --shape)."""
    small = flops_tool.main([H.DEMO_CONFIG])['flops']
    large = flops_tool.main([H.DEMO_CONFIG, '--shape', '128'])
    assert large['shape'] == 128
    assert large['flops']['image tower (per image)'] > \
        small['image tower (per image)']
    with pytest.raises(SystemExit, match=r'--shape 100: the backbone cannot '
                       r'take it: input_resolution=100 must be a multiple '
                       r'of the patch size 16'):
        flops_tool.main([H.DEMO_CONFIG, '--shape', '100'])

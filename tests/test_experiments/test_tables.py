# Copyright (c) mmcoop contributors. All rights reserved.
"""Sweep tables: mean ± std and Avg against hand-computed values, paper
rows from the paper's data file, the plot."""
import os.path as osp

import pytest

from mmcoop.experiments.paper import (load_paper_results, paper_map_row,
                                      printed_avg_mismatches)
from mmcoop.experiments.tables import (mean_std, plot_results, read_results,
                                       render_markdown, write_results)


def _rows():
    """positivecoop on voc07: p=0.1 seeds 80, 82; p=0.5 seeds 90, 91
    (seed 2 only at p=0.1: 84); baseline: one seed."""
    out = []
    for p, seed, v in [(0.1, 0, 80.), (0.1, 1, 82.), (0.5, 0, 90.),
                       (0.5, 1, 91.), (0.1, 2, 84.)]:
        out.append(dict(method='positivecoop', dataset='voc07', proportion=p,
                        seed=seed, protocol='clean', mAP=v))
    out += [dict(method='baseline', dataset='voc07', proportion=p, seed=0,
                 protocol='clean', mAP=v) for p, v in [(0.1, 70.), (0.5, 75.)]]
    return out


def test_mean_std_by_hand():
    assert mean_std([80., 82., 84.]) == pytest.approx((82., 2.))
    assert mean_std([90., 91.])[1] == pytest.approx(0.70710678)
    assert mean_std([5.]) == (5., None)


def test_markdown_cells_avg_and_paper_rows():
    text = render_markdown(_rows())
    lines = text.splitlines()
    assert '| Method | Source | Seeds | 10% | 50% | Avg |' in lines
    # 10%: mean(80, 82, 84) = 82, std 2; 50%: mean(90, 91) = 90.5,
    # std 0.707; Avg = (82 + 90.5) / 2 = 86.25, its std over the seeds
    # with both proportions: seed 0 (80 + 90) / 2 = 85, seed 1
    # (82 + 91) / 2 = 86.5 -> std 1.06
    # 50% and Avg hold 2 of the row's 3 seeds: said in the cell
    assert ('| positivecoop | measured (mmcoop) | 3 | 82.00 ± 2.00 | '
            '90.50 ± 0.71 (n=2) | 86.25 ± 1.06 (n=2) |') in lines
    # the note says what Avg's mean and (n=k) are over (they differ)
    assert ("Avg is the mean of the row's cells (each over its own seeds); "
            'its ± and (n=k) are over the k seeds that have every '
            'proportion.') in text
    assert ('| baseline | measured (mmcoop) | 1 | 70.00 | 75.00 | '
            '72.50 |') in lines
    # the paper's VOC numbers of the same methods, Avg over the shown
    # columns (not all nine): (91.4 + 93.8) / 2 = 92.6
    assert ('| PositiveCoOp (paper) | Rawlekar et al., WACV 2025 | 1 | 91.4 | '
            '93.8 | 92.6 |') in lines
    assert ('| Baseline (paper) | Rawlekar et al., WACV 2025 | 1 | 90.5 | '
            '93.3 | 91.9 |') in lines


def test_markdown_says_what_a_cell_pools():
    """The caption names the selection; a cell whose runs differ in
    commit (or selection, epochs, device) is marked; the paper's rows in
    a clean table say that they were selected on the test split."""
    rows = [dict(r, selection='best', commit='abc', device='cpu', epochs=20)
            for r in _rows()]
    rows[1]['commit'] = 'def'  # positivecoop 10%, seed 1
    text = render_markdown(rows)
    assert '**voc07**, protocol `clean`, selection best, mAP' in text
    assert '| 82.00 ± 2.00 † |' in text
    assert '* † positivecoop 10%: its runs differ in commit: abc, def.' \
        in text
    assert 'selects the model on the test split (protocol `official`); ' \
        'not measured under `clean`' in text
    official = render_markdown(
        [dict(r, protocol='official', selection='best (on the test split)')
         for r in _rows()])
    assert 'selection best (on the test split)' in official
    assert 'not measured under' not in official and '†' not in official


def test_paper_data_file():
    data = load_paper_results()
    assert 'WACV 2025' in data['source']
    assert paper_map_row('coco14', 'positivecoop')[0.1] == 79.8
    assert paper_map_row('voc07', 'dualcoop')[0.9] == 94.2
    assert data['datasets']['coco14']['compute']['baseline'] == dict(
        params='80k', gpu_hours=7.97)
    assert paper_map_row('demo', 'positivecoop') is None
    # three printed averages are not the mean of their printed values
    assert len(printed_avg_mismatches()) == 3


def test_csv_round_trip_and_plot(tmp_path):
    path = str(tmp_path / 'results.csv')
    write_results(path, _rows())
    rows = read_results(path)
    assert rows[0]['proportion'] == 0.1 and rows[0]['seed'] == 0
    assert rows[0]['CF1'] is None
    png = plot_results(rows, str(tmp_path / 'p.png'), 'voc07', 'clean')
    with open(png, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    assert osp.getsize(png) > 10_000

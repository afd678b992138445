# Copyright (c) mmcoop contributors. All rights reserved.
"""The PositiveCoOp paper's reference numbers (``paper_results.yml``)."""
import os.path as osp
from functools import lru_cache
from typing import Dict, List, Optional

__all__ = [
    'PAPER_RESULTS_FILE', 'load_paper_results', 'paper_map_row',
    'paper_display_name', 'printed_avg_mismatches'
]

PAPER_RESULTS_FILE = osp.join(osp.dirname(__file__), 'paper_results.yml')


@lru_cache()
def load_paper_results(path: str = PAPER_RESULTS_FILE) -> dict:
    """The parsed file: ``source``, ``proportions`` and, per dataset key
    (``coco14``, ``voc07``), ``map[method] = dict(values, avg, params,
    name?)`` and ``compute[method] = dict(params, gpu_hours)``. Methods
    mmcoop implements are keyed by their config folder name
    (``positivecoop``...)."""
    import yaml
    with open(path) as f:
        data = yaml.safe_load(f)
    for ds, table in data['datasets'].items():
        for method, row in table['map'].items():
            if len(row['values']) != len(data['proportions']):
                raise ValueError(
                    f'{path}: datasets.{ds}.map.{method}.values has '
                    f'{len(row["values"])} entries for '
                    f'{len(data["proportions"])} proportions.')
    return data


def paper_map_row(dataset: str, method: str) -> Optional[Dict[float, float]]:
    """``{proportion: mAP}`` of the paper for one method, or None."""
    data = load_paper_results()
    row = data['datasets'].get(dataset, {}).get('map', {}).get(method)
    if row is None:
        return None
    return dict(zip(data['proportions'], row['values']))


def paper_display_name(dataset: str, method: str) -> str:
    row = load_paper_results()['datasets'].get(dataset, {}).get(
        'map', {}).get(method, {})
    return row.get('name', method)


def printed_avg_mismatches(tolerance: float = 0.05) -> List[str]:
    """Rows whose printed Avg differs from the mean of their nine printed
    values by more than ``tolerance`` (rounding), as text."""
    data = load_paper_results()
    out = []
    for ds, table in data['datasets'].items():
        for method, row in table['map'].items():
            mean = sum(row['values']) / len(row['values'])
            if abs(mean - row['avg']) > tolerance:
                out.append(f'{ds} {row.get("name", method)}: printed Avg '
                           f'{row["avg"]}, mean of the printed values '
                           f'{mean:.2f}')
    return out

# Copyright (c) mmcoop contributors. All rights reserved.
"""Matplotlib figures of multi-label data and predictions (the analysis
tools and ``tools/test.py --show-dir`` draw with these).

Label states use one colour code everywhere: positive green, negative red,
unknown grey (:data:`STATE_COLOURS`). Figures are built on
``matplotlib.figure.Figure`` with the Agg canvas (no pyplot state, no
display needed) and saved with :func:`save_figure`.
"""
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure

#: target value -> (name, colour)
STATE_COLOURS = {
    1: ('positive', '#2ca02c'),
    0: ('negative', '#d62728'),
    -1: ('unknown', '#9e9e9e'),
}


def _state(value: float) -> int:
    return 1 if value == 1 else 0 if value == 0 else -1


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout='constrained')
    FigureCanvasAgg(fig)
    return fig


def _image_format(path: str) -> str:
    """The format an image file's extension names (``'.png'`` ->
    ``'png'``; no extension: PNG)."""
    return osp.splitext(path)[1][1:].lower() or 'png'


def save_figure(fig: Figure, path: str) -> str:
    """Write ``fig`` in the format of the extension of ``path`` (PNG
    without one), creating the folder; atomically
    (:func:`mmcoop.utils.checkpoint.atomic_open`), so a killed run never
    leaves a truncated figure."""
    from mmcoop.utils.checkpoint import atomic_open
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with atomic_open(path) as f:
        fig.savefig(f, format=_image_format(path))
    return path


def save_image(image, path: str) -> str:
    """Write the PIL ``image`` in the format of the extension of ``path``
    (as :func:`save_figure`: folder created, atomic write)."""
    from PIL import Image

    from mmcoop.utils.checkpoint import atomic_open
    ext = '.' + _image_format(path)
    fmt = Image.registered_extensions().get(ext)
    if fmt is None:
        raise ValueError(f'{path!r}: {ext!r} is not an image extension PIL '
                         'writes. Fix: end the file name with .png or .jpg.')
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with atomic_open(path) as f:
        image.save(f, format=fmt)
    return path


def _state_strip(ax, rows: np.ndarray, row_labels: List[str],
                 classes: Sequence[str], fig: Figure) -> None:
    """(R, C) tri-state rows as coloured cells, with a labelled colour
    bar (unknown / negative / positive)."""
    order = (-1, 0, 1)
    cmap = ListedColormap([STATE_COLOURS[s][1] for s in order])
    norm = BoundaryNorm([-1.5, -0.5, 0.5, 1.5], cmap.N)
    image = ax.imshow(
        np.vectorize(_state)(rows), cmap=cmap, norm=norm, aspect='auto')
    ax.set_yticks(range(len(row_labels)), row_labels)
    ax.set_xticks(range(len(classes)), classes, rotation=90,
                  fontsize=7 if len(classes) > 30 else 9)
    bar = fig.colorbar(
        image, ax=ax, ticks=list(order), fraction=0.03, pad=0.01)
    bar.ax.set_yticklabels([STATE_COLOURS[s][0] for s in order])


def label_state_figure(image: np.ndarray,
                       targets: np.ndarray,
                       classes: Sequence[str],
                       complete: Optional[np.ndarray] = None,
                       title: str = '') -> Figure:
    """An image as the model gets it, with its labels.

    Args:
        image (np.ndarray): ``HWC`` uint8 RGB (after the pipeline).
        targets (np.ndarray): ``(C,)`` tri-state labels the loss sees
            (after the partial mask).
        classes (list[str]): class names.
        complete (np.ndarray, optional): ``(C,)`` complete labels before the
            mask; shown as a second row, the hidden positives are listed.
        title (str): figure title (e.g. the file name).
    """
    fig = _figure(max(8., 0.16 * len(classes) + 4), 7.5)
    grid = fig.add_gridspec(2, 2, height_ratios=[3, 1.3], width_ratios=[1, 1])
    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(image)
    ax.set_title(f'{image.shape[1]} x {image.shape[0]} after the pipeline',
                 fontsize=9)
    ax.axis('off')
    text = fig.add_subplot(grid[0, 1])
    text.axis('off')
    lines = []
    for state, label in ((1, 'known positive'), (-1, 'unknown')):
        names = [classes[c] for c in np.flatnonzero(
            np.vectorize(_state)(targets) == state)]
        lines.append(f'{label} ({len(names)}): '
                     + (', '.join(names[:25]) or '-')
                     + (' ...' if len(names) > 25 else ''))
    lines.append(f'known negative: {int((targets == 0).sum())} classes')
    if complete is not None:
        hidden = [classes[c] for c in np.flatnonzero((complete == 1)
                                                     & (targets != 1))]
        lines.append(f'hidden positives ({len(hidden)}): '
                     + (', '.join(hidden) or '-'))
    text.text(0, 1, '\n\n'.join(lines), va='top', ha='left', wrap=True,
              fontsize=9)
    strip = fig.add_subplot(grid[1, :])
    rows, labels = [targets], ['after mask']
    if complete is not None:
        rows, labels = [complete, targets], ['complete', 'after mask']
    _state_strip(strip, np.stack(rows), labels, classes, fig)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def prediction_figure(image: np.ndarray,
                      scores: np.ndarray,
                      classes: Sequence[str],
                      targets: Optional[np.ndarray] = None,
                      topk: int = 10,
                      threshold: float = 0.5,
                      title: str = '') -> Figure:
    """An image next to its ``topk`` scores as bars, each bar coloured by
    the class's ground-truth state (grey when there is none), the
    threshold as a dashed line; ground-truth positives outside the
    ``topk`` are listed."""
    order = np.argsort(-scores, kind='stable')[:topk]
    fig = _figure(10, 4.2)
    ax_img, ax_bar = fig.subplots(1, 2, width_ratios=[1, 1.3])
    ax_img.imshow(image)
    ax_img.axis('off')
    states = [(_state(targets[c]) if targets is not None else -1)
              for c in order]
    ax_bar.barh(range(len(order)), scores[order],
                color=[STATE_COLOURS[s][1] for s in states])
    ax_bar.set_yticks(range(len(order)), [classes[c] for c in order],
                      fontsize=9)
    ax_bar.invert_yaxis()
    ax_bar.set_xlim(0, 1)
    ax_bar.set_xlabel('p(present)')
    ax_bar.axvline(threshold, ls='--', c='k', lw=1)
    for i, c in enumerate(order):
        ax_bar.text(min(scores[c] + 0.01, 0.9), i, f'{scores[c]:.2f}',
                    va='center', fontsize=8)
    if targets is not None:
        missed = [classes[c] for c in np.flatnonzero(targets == 1)
                  if c not in set(order.tolist())]
        ax_bar.set_title(
            f'top {len(order)} scores (bar colour = label: green positive, '
            'red negative, grey unknown)' + (
                f'\npositives below the top {len(order)}: '
                + ', '.join(missed[:8]) if missed else ''),
            fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def pr_curve_figure(precision: np.ndarray, recall: np.ndarray, ap: float,
                    class_name: str, num_pos: int) -> Figure:
    """Precision-recall curve of one class (AP in %, in the title)."""
    fig = _figure(5, 4.2)
    ax = fig.subplots()
    if len(recall):
        ax.step(np.concatenate([[0], recall]),
                np.concatenate([[precision[0]], precision]), where='post')
    else:
        ax.text(0.5, 0.5, 'no positive in the evaluated set', ha='center')
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel('recall')
    ax.set_ylabel('precision')
    ax.grid(alpha=0.3)
    ax.set_title(f'{class_name}: AP {ap:.2f} % ({num_pos} positives)',
                 fontsize=10)
    return fig


def ap_bar_figure(rows: List[dict], mean: Optional[float] = None) -> Figure:
    """Per-class AP of :func:`mmcoop.evaluation.per_class_ap`, sorted, with
    the mAP ``mean`` (%; by default the mean of the rows) as a line."""
    rows = sorted(rows, key=lambda r: -r['AP'])
    fig = _figure(7, max(3., 0.22 * len(rows) + 1.2))
    ax = fig.subplots()
    ax.barh(range(len(rows)), [r['AP'] for r in rows], color='#1f77b4')
    ax.set_yticks(range(len(rows)), [r['class'] for r in rows],
                  fontsize=8)
    ax.invert_yaxis()
    if mean is None:
        mean = float(np.mean([r['AP'] for r in rows]))
    ax.axvline(mean, ls='--', c='k', lw=1)
    ax.set_xlim(0, 100)
    ax.set_xlabel('AP (%)')
    ax.set_title(f'per-class AP (dashed: mAP {mean:.2f} %)', fontsize=10)
    return fig


def ranked_examples_figure(groups: Dict[str, List[dict]],
                           class_name: str) -> Figure:
    """Rows of thumbnails (``{'image', 'score', 'name'}``) per group of
    one class: ``best`` (highest-scored positives), ``missed``
    (lowest-scored positives), ``false_alarms`` (highest-scored
    negatives); each titled with its p(present) and file name."""
    captions = dict(
        best='best:\ntop positives',
        missed='missed:\nlowest positives',
        false_alarms='false alarms:\ntop negatives')
    ncols = max([2] + [len(v) for v in groups.values()])
    fig = _figure(2.4 * ncols + 1.0, 2.5 * len(groups) + 0.6)
    axes = np.array(fig.subplots(len(groups), ncols, squeeze=False))
    for row, (group, items) in enumerate(groups.items()):
        for col in range(ncols):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if col < len(items):
                item = items[col]
                ax.imshow(item['image'])
                ax.set_title(f'{item["score"]:.2f}  {item["name"]}',
                             fontsize=7)
        axes[row, 0].set_ylabel(captions.get(group, group), fontsize=9)
    fig.suptitle(f'{class_name}\n(number above each image: p(present))',
                 fontsize=10)
    return fig

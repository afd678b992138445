# Copyright (c) mmcoop contributors. All rights reserved.
"""A tiny procedurally drawn multi-label dataset in the real COCO format.

``generate_demo_coco(root)`` draws coloured shapes (``'red circle'``,
``'green square'``...; several per image, random backgrounds) with PIL and
writes them exactly like MS-COCO 2014::

    root
    ├── annotations/instances_{train,val}2014.json  (images, annotations
    │                                 with bbox/area/iscrowd/segmentation,
    │                                 categories)
    ├── train2014/COCO_train2014_000000000001.jpg ...
    ├── val2014/COCO_val2014_000000000257.jpg ...
    └── demo_manifest.json                            (marker, written last)

so ``COCO2014MultiLabel(data_root=root, split=...)`` reads it unchanged.
Deterministic for a given seed. About 3% of the images have no object (and
no annotation), so the image filter of the official protocol is exercised.

The tree is built in a temporary sibling folder and renamed into place, so
``root`` either holds a complete tree or nothing of it. The manifest lists
every file written (path and size). A finished tree is reused; a tree whose
files are all listed in its manifest, unchanged, but some are missing is
rebuilt; anything else at ``root`` (a file the manifest does not list, a
changed file, a folder without a manifest) stops the generator with a
message naming it: it never deletes what it did not write.

Command line (also prints the chance-level mAP)::

    python -m mmcoop.demo ROOT [--num-train 256] ...
"""
import json
import math
import os
import os.path as osp
import shutil
import uuid
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image, ImageDraw

from mmcoop.utils.checkpoint import is_not_writable, make_parent

__all__ = [
    'DEMO_SHAPES', 'MANIFEST', 'demo_classes', 'generate_demo_coco',
    'read_manifest', 'chance_level_map', 'chance_level_map_from_targets'
]

MANIFEST = 'demo_manifest.json'
FORMAT_VERSION = 1

#: (class name, RGB colour, shape); the first ``num_classes`` are used.
DEMO_SHAPES: Tuple[Tuple[str, Tuple[int, int, int], str], ...] = (
    ('red circle', (220, 30, 30), 'circle'),
    ('green square', (30, 160, 60), 'square'),
    ('blue triangle', (40, 70, 225), 'triangle'),
    ('yellow star', (245, 215, 30), 'star'),
    ('purple diamond', (135, 45, 175), 'diamond'),
    ('orange cross', (250, 135, 20), 'cross'),
    ('cyan ring', (30, 205, 215), 'ring'),
    ('pink hexagon', (250, 120, 185), 'hexagon'),
    ('white pentagon', (248, 248, 248), 'pentagon'),
    ('black arrow', (15, 15, 15), 'arrow'),
    ('brown trapezoid', (125, 75, 30), 'trapezoid'),
    ('lime half circle', (150, 235, 40), 'half circle'),
)


def demo_classes(num_classes: int = 10) -> List[str]:
    """The class names of a demo tree with ``num_classes`` classes."""
    _check_num_classes(num_classes)
    return [name for name, _, _ in DEMO_SHAPES[:num_classes]]


def _check_num_classes(num_classes: int) -> None:
    if not 8 <= num_classes <= len(DEMO_SHAPES):
        raise ValueError(f'num_classes must be in 8..{len(DEMO_SHAPES)}, '
                         f'got {num_classes}.')


def _regular(n: int,
             cx: float,
             cy: float,
             r: float,
             rot: float,
             inner: Optional[float] = None) -> List[Tuple[float, float]]:
    pts = []
    steps = 2 * n if inner else n
    for i in range(steps):
        rad = r if (not inner or i % 2 == 0) else r * inner
        a = rot + 2 * math.pi * i / steps - math.pi / 2
        pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return pts


def _transform(pts, cx, cy, r, rot):
    c, s = math.cos(rot), math.sin(rot)
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c))
            for x, y in pts]


def _outline(shape: str, cx: float, cy: float, r: float,
             rot: float) -> List[Tuple[float, float]]:
    """Polygon (segmentation) of a shape of radius ``r``."""
    if shape in ('circle', 'ring'):
        return _regular(32, cx, cy, r, 0.)
    if shape == 'square':
        return _regular(4, cx, cy, r * 1.05, math.pi / 4 + rot * 0.2)
    if shape == 'triangle':
        return _regular(3, cx, cy, r * 1.1, rot * 0.3)
    if shape == 'star':
        return _regular(5, cx, cy, r * 1.1, rot, inner=0.45)
    if shape == 'diamond':
        return _transform([(0, -1), (0.62, 0), (0, 1), (-0.62, 0)], cx, cy, r,
                          rot * 0.2)
    if shape == 'cross':
        t = 0.33
        unit = [(-t, -1), (t, -1), (t, -t), (1, -t), (1, t), (t, t), (t, 1),
                (-t, 1), (-t, t), (-1, t), (-1, -t), (-t, -t)]
        return _transform(unit, cx, cy, r * 0.95, rot * 0.3)
    if shape == 'hexagon':
        return _regular(6, cx, cy, r, rot)
    if shape == 'pentagon':
        return _regular(5, cx, cy, r, rot * 0.3)
    if shape == 'arrow':
        unit = [(-1, -0.3), (0.1, -0.3), (0.1, -0.75), (1, 0), (0.1, 0.75),
                (0.1, 0.3), (-1, 0.3)]
        return _transform(unit, cx, cy, r, rot * 2)
    if shape == 'trapezoid':
        return _transform([(-1, 0.6), (1, 0.6), (0.5, -0.6), (-0.5, -0.6)], cx,
                          cy, r, rot * 0.2)
    if shape == 'half circle':
        pts = [(math.cos(a), -math.sin(a) + 0.4)
               for a in np.linspace(0, math.pi, 17)]
        return _transform(pts, cx, cy, r, rot * 0.3)
    raise ValueError(f'unknown shape {shape!r}')


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, poly, cx, cy, r,
                fill) -> None:
    if shape == 'circle':
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == 'ring':
        draw.ellipse([cx - r, cy - r, cx + r, cy + r],
                     outline=fill,
                     width=_ring_width(r))
    else:
        draw.polygon(poly, fill=fill)


def _polygon_area(poly) -> float:
    """Area of a simple polygon (shoelace formula)."""
    xs = np.array([p[0] for p in poly])
    ys = np.array([p[1] for p in poly])
    return 0.5 * abs(float(np.dot(xs, np.roll(ys, -1)) -
                           np.dot(ys, np.roll(xs, -1))))


def _area(shape: str, poly, r: float) -> float:
    """COCO ``area`` of a drawn shape: the area of its outline polygon
    (as COCO computes it from a polygon), for the ring the annulus that
    :func:`_draw_shape` paints (outer radius ``r``, width ``_ring_width``)."""
    if shape == 'ring':
        inner = r - _ring_width(r)
        return math.pi * (r * r - inner * inner)
    return _polygon_area(poly)


def _ring_width(r: float) -> int:
    return max(2, int(r * 0.38))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A low-saturation noisy gradient, distinct from the object colours."""
    base = rng.uniform(70, 185) + rng.uniform(-22, 22, size=3)
    ramp = np.linspace(-1, 1, size)
    direction = rng.uniform(-25, 25, size=2)
    grad = ramp[:, None] * direction[0] + ramp[None, :] * direction[1]
    img = base[None, None, :] + grad[..., None] + rng.normal(
        0, 7, size=(size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _draw_image(rng: np.random.Generator, size: int, num_classes: int):
    """One image and its object list [(class index, polygon, area)]."""
    img = Image.fromarray(_background(rng, size))
    draw = ImageDraw.Draw(img)
    if rng.random() < 0.03:
        return img, []
    k = int(rng.choice([1, 2, 3], p=[0.35, 0.4, 0.25]))
    classes = rng.choice(num_classes, size=k, replace=False)
    instances = []
    for c in classes:
        instances.append(int(c))
        if rng.random() < 0.25:
            instances.append(int(c))
    placed: List[Tuple[float, float, float]] = []
    objects = []
    for c in instances:
        name, colour, shape = DEMO_SHAPES[c]
        for _ in range(50):
            r = rng.uniform(0.10, 0.19) * size
            cx = rng.uniform(r, size - r)
            cy = rng.uniform(r, size - r)
            if all(
                    math.hypot(cx - x, cy - y) > 0.85 * (r + q)
                    for x, y, q in placed):
                break
        else:
            continue
        placed.append((cx, cy, r))
        rot = rng.uniform(0, 2 * math.pi)
        poly = _outline(shape, cx, cy, r, rot)
        jitter = rng.integers(-12, 13, size=3)
        fill = tuple(
            int(v) for v in np.clip(np.array(colour) + jitter, 0, 255))
        _draw_shape(draw, shape, poly, cx, cy, r, fill)
        objects.append((c, poly, _area(shape, poly, r)))
    return img, objects


def _write_split(root: str, split: str, first_id: int, first_ann_id: int,
                 num_images: int, rng: np.random.Generator, size: int,
                 num_classes: int) -> Tuple[dict, int]:
    folder = osp.join(root, f'{split}2014')
    os.makedirs(folder, exist_ok=True)
    images, annotations = [], []
    ann_id = first_ann_id
    for i in range(num_images):
        img_id = first_id + i
        file_name = f'COCO_{split}2014_{img_id:012d}.jpg'
        img, objects = _draw_image(rng, size, num_classes)
        img.save(osp.join(folder, file_name), quality=90)
        images.append(
            dict(
                license=1,
                file_name=file_name,
                coco_url='',
                height=size,
                width=size,
                date_captured='2024-01-01 00:00:00',
                flickr_url='',
                id=img_id))
        for c, poly, area in objects:
            xs = [p[0] for p in poly]
            ys = [p[1] for p in poly]
            x0, y0 = max(min(xs), 0.), max(min(ys), 0.)
            x1, y1 = min(max(xs), size), min(max(ys), size)
            annotations.append(
                dict(
                    segmentation=[[
                        round(v, 2) for p in poly
                        for v in (min(max(p[0], 0.), size),
                                  min(max(p[1], 0.), size))
                    ]],
                    area=round(area, 2),
                    iscrowd=0,
                    image_id=img_id,
                    bbox=[
                        round(x0, 2),
                        round(y0, 2),
                        round(x1 - x0, 2),
                        round(y1 - y0, 2)
                    ],
                    category_id=c + 1,
                    id=ann_id))
            ann_id += 1
    categories = [
        dict(supercategory='shape', id=c + 1, name=DEMO_SHAPES[c][0])
        for c in range(num_classes)
    ]
    data = dict(
        info=dict(
            description='mmcoop demo shapes (synthetic, COCO-2014 format)',
            version='1.0',
            year=2024,
            contributor='mmcoop',
            date_created='2024-01-01'),
        licenses=[dict(url='', id=1, name='CC0')],
        images=images,
        annotations=annotations,
        categories=categories)
    with open(
            osp.join(root, 'annotations', f'instances_{split}2014.json'),
            'w') as f:
        json.dump(data, f)
    return data, ann_id


def _params(num_train, num_val, seed, image_size, num_classes) -> dict:
    return dict(
        format_version=FORMAT_VERSION,
        num_train=num_train,
        num_val=num_val,
        seed=seed,
        image_size=image_size,
        num_classes=num_classes)


def read_manifest(root: str) -> Optional[dict]:
    """The manifest of a demo tree at ``root``, or None if there is none
    (or it is not valid JSON)."""
    try:
        with open(osp.join(root, MANIFEST)) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _listing(root: str) -> Tuple[Dict[str, int], List[str]]:
    """``({relative file path: size}, [relative folder paths])`` below
    ``root`` ('/'-separated; the manifest itself excluded)."""
    files, folders = {}, []
    for d, dirs, names in os.walk(root):
        rel = osp.relpath(d, root).replace(os.sep, '/')
        prefix = '' if rel == '.' else rel + '/'
        folders += [prefix + n for n in dirs]
        for n in names:
            files[prefix + n] = os.lstat(osp.join(d, n)).st_size
    files.pop(MANIFEST, None)
    return files, folders


def _foreign(root: str, manifest: dict) -> List[str]:
    """What is at ``root`` that the manifest does not list as written
    (unchanged) by the generator."""
    written = manifest['files']
    files, folders = _listing(root)
    own_folders = {
        '/'.join(p.split('/')[:i])
        for p in written for i in range(1, p.count('/') + 1)
    }
    return sorted([
        f'{p} (changed since it was written)' if p in written else p
        for p, size in files.items() if written.get(p) != size
    ] + [p + '/' for p in folders if p not in own_folders])


def _remove_own_tree(root: str, manifest: dict) -> None:
    """Delete a demo tree whose every entry is listed in its manifest, the
    manifest last (:func:`mmcoop.utils.paths.remove_own_tree`: a run killed
    midway leaves a tree the next run still recognises and removes)."""
    from mmcoop.utils.paths import remove_own_tree
    remove_own_tree(root, manifest['files'], MANIFEST)


def _complete_without_file_list(root: str, params: dict) -> bool:
    """Both annotation files and the expected number of images (a tree
    whose manifest predates the file list)."""
    for split in ('train', 'val'):
        folder = osp.join(root, f'{split}2014')
        if not (osp.isfile(
                osp.join(root, 'annotations', f'instances_{split}2014.json'))
                and osp.isdir(folder)):
            return False
        if len([f for f in os.listdir(folder)
                if f.endswith('.jpg')]) != params[f'num_{split}']:
            return False
    return True


def _check_existing(root: str, params: dict) -> bool:
    """True if ``root`` holds the finished tree of ``params``; False if
    there is nothing (absent, an empty folder, or a damaged tree of this
    generator, which is then removed). Raises if anything at ``root`` was
    not written by the generator, or the tree has other parameters."""
    if not osp.lexists(root):
        return False
    if not osp.isdir(root):
        raise FileExistsError(
            f'{root} exists and is not a folder. Fix: pass a new or empty '
            'folder as the demo root.')
    if not os.listdir(root):
        os.rmdir(root)  # empty: the finished tree is renamed into place
        return False
    manifest = read_manifest(root)
    if manifest is None:
        files, folders = _listing(root)
        found = sorted(list(files) + [f + '/' for f in folders])
        raise FileExistsError(
            f'{root} exists, is not empty and has no {MANIFEST}, so it was '
            f'not written by the demo generator (it holds {found[:5]}'
            f'{" ..." if len(found) > 5 else ""}). Nothing was changed. '
            'Fix: pass a new or empty folder as the demo root.')
    if manifest.get('params') != params:
        raise FileExistsError(
            f'{root} holds a demo dataset made with other parameters (see '
            f'{osp.join(root, MANIFEST)}). Fix: use another root or delete '
            'the folder.')
    if not isinstance(manifest.get('files'), dict):
        if _complete_without_file_list(root, params):
            return True  # a finished tree of an older mmcoop: reused as is
        raise FileExistsError(
            f'{osp.join(root, MANIFEST)} does not list the files the '
            'generator wrote (a tree of an older mmcoop), so what is at '
            f'{root} cannot be checked. Nothing was changed. Fix: delete '
            'the folder yourself if it holds nothing of yours, or use '
            'another root.')
    foreign = _foreign(root, manifest)
    if foreign:
        raise FileExistsError(
            f'{root} holds a demo tree and also files the demo generator did '
            f'not write (or that changed since): {foreign[:5]}'
            f'{" ..." if len(foreign) > 5 else ""}. Nothing was changed. '
            'Fix: move them out of the folder or use another root.')
    files, _ = _listing(root)
    if set(files) == set(manifest['files']):
        return True
    _remove_own_tree(root, manifest)  # files missing: rebuild
    return False


def generate_demo_coco(root: str,
                       num_train: int = 256,
                       num_val: int = 128,
                       seed: int = 0,
                       image_size: int = 112,
                       num_classes: int = 10) -> str:
    """Write (or reuse) a demo multi-label dataset in COCO-2014 format.

    Args:
        root (str): Target folder (created; must be absent, empty, or a
            tree made by this function: see the module docstring).
        num_train (int): Train images (about 3% without objects, dropped by
            the official image filter). Defaults to 256.
        num_val (int): Val images. Defaults to 128.
        seed (int): Seed of the drawing. Defaults to 0.
        image_size (int): Side of the square images. Defaults to 112.
        num_classes (int): 8..12 classes (:data:`DEMO_SHAPES`). Defaults to
            10.

    Returns:
        str: ``root``.
    """
    _check_num_classes(num_classes)
    if num_train < 1 or num_val < 1:
        raise ValueError('num_train and num_val must be >= 1.')
    if image_size < 32:
        raise ValueError(f'image_size must be >= 32, got {image_size}.')
    root = osp.abspath(osp.expanduser(root))
    params = _params(num_train, num_val, seed, image_size, num_classes)
    if _check_existing(root, params):
        return root

    parent = osp.dirname(root)
    tmp = osp.join(parent, f'.{osp.basename(root)}.partial-{uuid.uuid4().hex}')
    try:
        try:
            make_parent(root)
            os.makedirs(osp.join(tmp, 'annotations'))
        except OSError as e:
            if not is_not_writable(e):
                raise
            raise OSError(
                e.errno, f'Cannot write the demo data {root}: {parent} '
                f'cannot be written ({os.strerror(e.errno)}). Fix: run from '
                'a writable folder, or set `data_root` to a writable '
                'path.') from e
        counts = {}
        ann_id = 1
        next_img = 1
        splits = (('train', num_train), ('val', num_val))
        for k, (split, n) in enumerate(splits):
            rng = np.random.default_rng([seed, k])
            data, ann_id = _write_split(tmp, split, next_img, ann_id, n, rng,
                                        image_size, num_classes)
            next_img += n
            counts[split] = dict(
                images=len(data['images']),
                annotations=len(data['annotations']),
                images_with_objects=len(
                    {a['image_id']
                     for a in data['annotations']}))
        manifest = dict(
            params=params,
            classes=demo_classes(num_classes),
            counts=counts,
            files=_listing(tmp)[0])
        with open(osp.join(tmp, MANIFEST), 'w') as f:
            json.dump(manifest, f, indent=2)
        try:
            os.rename(tmp, root)
        except OSError:
            # another process finished first: use its tree if it is valid
            if not _check_existing(root, params):
                raise
    finally:
        if osp.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def chance_level_map_from_targets(targets: np.ndarray,
                                  num_draws: int = 200,
                                  seed: int = 0,
                                  no_positive: str = 'zero') -> float:
    """Expected mAP (percent) of i.i.d. uniform random scores.

    Averages :func:`mmcoop.evaluation.mean_average_precision` over
    ``num_draws`` random score matrices drawn with ``seed``.
    """
    from mmcoop.evaluation.metrics.multi_label import mean_average_precision
    from mmcoop.utils.value_checks import check_int
    check_int('chance_level_map', 'num_draws', num_draws)
    rng = np.random.default_rng(seed)
    targets = np.asarray(targets)
    maps = [
        mean_average_precision(
            rng.random(targets.shape), targets, no_positive=no_positive)
        for _ in range(num_draws)
    ]
    return float(np.mean(maps))


def chance_level_map(root: str,
                     split: str = 'val',
                     num_draws: int = 200,
                     seed: int = 0) -> float:
    """Chance-level mAP (percent) of a COCO-format split (e.g. the demo).

    Uses the same images as :class:`~mmcoop.datasets.COCO2014MultiLabel`
    (images with at least one annotation) and the official AP.
    """
    from mmcoop.datasets.coco2014 import load_coco_multilabel
    coco = load_coco_multilabel(
        osp.join(root, 'annotations', f'instances_{split}2014.json'))
    targets = np.zeros((len(coco.images), len(coco.categories)), np.int8)
    for i, (_, _, labels) in enumerate(coco.images):
        targets[i, labels] = 1
    return chance_level_map_from_targets(targets, num_draws, seed)

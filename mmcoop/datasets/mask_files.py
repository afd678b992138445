# Copyright (c) mmcoop contributors. All rights reserved.
"""Read partial-label mask files, mmcoop's own and externally supplied.

Accepted files (rows are images, columns the classes in the dataset's
class order):

* ``.npy``, shape ``(N, C)``, rows in the training set's order:

  - ``bool``: True = label known (what mmcoop writes);
  - integers / floats in ``{0, 1}``: 1 = label known (an array equal to
    the dataset's labels -- a label matrix, not a mask -- is refused);
  - integers / floats in ``{-1, 0, 1}`` with at least one -1: *partial
    targets* (1 known positive, 0 known negative, -1 unknown, the official
    DualCoOp encoding); known = not -1, and every known entry must agree
    with the dataset's complete labels.

* ``.npz`` with the array ``mask`` (any encoding above) and optionally
  ``keys``, ``(N,)`` image file names (the file name of ``img_path``):
  with ``keys`` the rows may come in any order and are matched to the
  training set by file name (every training image must be listed once).
"""
import os.path as osp
from typing import Callable, List, Optional

import numpy as np

from mmcoop.utils.tri_state_targets import (PRESENT, UNKNOWN, invalid_targets,
                                            invalid_values)

__all__ = ['read_mask_file']


def _fail(path: str, field: str, problem: str) -> ValueError:
    return ValueError(
        f'Partial-label mask file {path!r}, {field}: {problem}. Fix: point '
        '`mask_file` to the mask made for this training set (see '
        'mmcoop.datasets.mask_files for the accepted formats), or delete the '
        'file to draw a new mask from the seed.')


def _known_from_array(path: str, field: str, array: np.ndarray,
                      targets: Optional[np.ndarray]) -> np.ndarray:
    if array.dtype == np.bool_:
        return array
    if not (np.issubdtype(array.dtype, np.integer)
            or np.issubdtype(array.dtype, np.floating)):
        raise _fail(path, field, f'dtype {array.dtype} is neither bool nor '
                    'numeric')
    if invalid_targets(array).any():
        raise _fail(path, field, f'values {invalid_values(array)} found; '
                    'expected bool, {0, 1} (1 = known) or {-1, 0, 1} '
                    '(partial targets, -1 = unknown)')
    if not (array == UNKNOWN).any():
        known = array == PRESENT
        if targets is not None and not known.all() and np.array_equal(
                known, targets == 1):
            raise _fail(
                path, field, 'the values are the dataset\'s labels (1 exactly '
                'at its positives), not a known-mask: a numeric {0, 1} array '
                'reads as 1 = known, which would hide every negative label. '
                'Save partial targets with -1 for the unknown entries, or a '
                'bool mask (all True when every label is known)')
        return known
    known = array != UNKNOWN
    if targets is not None:
        wrong = np.argwhere(known & (array != targets))
        if len(wrong):
            i, c = (int(v) for v in wrong[0])
            raise _fail(
                path, field, f'{len(wrong)} known entries disagree with the '
                f'dataset labels (first: row {i}, class {c}: file says '
                f'{array[i, c]:g}, the annotations say {targets[i, c]})')
    return known


def read_mask_file(path: str,
                   num_images: int,
                   num_classes: int,
                   targets: Optional[np.ndarray] = None,
                   image_keys: Optional[Callable[[], List[str]]] = None
                   ) -> np.ndarray:
    """Read a mask file (see the module doc) as an ``(N, C)`` bool array of
    *known* labels, in the training set's row order.

    Args:
        path (str): ``.npy`` or ``.npz`` file.
        num_images (int): N, images of the training set.
        num_classes (int): C.
        targets (np.ndarray, optional): ``(N, C)`` complete targets, to
            check partial-target files against.
        image_keys (callable, optional): returns the training set's image
            file names (needed for ``.npz`` files with ``keys``).
    """
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file
        raise _fail(path, 'file', f'not a readable .npy/.npz file '
                    f'({type(e).__name__}: {e})') from None
    keys = None
    field = 'array'
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            if 'mask' not in data.files:
                raise _fail(path, 'field "mask"', f'missing (fields: '
                            f'{data.files})')
            field = 'field "mask"'
            array = data['mask']
            keys = data['keys'] if 'keys' in data.files else None
    else:
        array = data
    if array.ndim != 2 or array.shape[1] != num_classes:
        raise _fail(path, field, f'shape {array.shape}; expected '
                    f'({num_images}, {num_classes}) = (images, classes)')
    if keys is not None:
        if image_keys is None:
            raise _fail(path, 'field "keys"', 'this dataset cannot list '
                        'its image file names')
        own = list(image_keys())
        # bytes keys (dtype 'S', e.g. from HDF5) as text, not "b'x.jpg'"
        file_keys = [
            osp.basename(k.decode('utf-8', 'replace') if isinstance(
                k, bytes) else str(k)) for k in keys.reshape(-1)
        ]
        if len(file_keys) != array.shape[0] or \
                len(set(file_keys)) != len(file_keys):
            raise _fail(path, 'field "keys"', f'{len(file_keys)} keys for '
                        f'{array.shape[0]} rows, or duplicate keys')
        row_of = {k: r for r, k in enumerate(file_keys)}
        missing = [k for k in own if k not in row_of]
        if missing:
            raise _fail(path, 'field "keys"', f'{len(missing)} training '
                        f'images are not listed (e.g. {missing[:3]})')
        array = array[[row_of[k] for k in own]]
    if array.shape[0] != num_images:
        raise _fail(path, field, f'{array.shape[0]} rows but the training '
                    f'set has {num_images} images (a mask of another '
                    'dataset/split/filter?)')
    return np.ascontiguousarray(
        _known_from_array(path, field, array, targets))

# Copyright (c) mmcoop contributors. All rights reserved.
"""mmpretrain ``RandAugment`` configured like pip ``randaugment==1.0.2``."""
import copy

from mmpretrain.datasets.transforms import RandAugment

from mmcoop.datasets.transforms.image_kind import require_array
from mmcoop.registry import TRANSFORMS
from mmcoop.utils.value_checks import check_int, check_number

__all__ = ['DUALCOOP_RANDAUG_POLICIES', 'DualCoOpRandAugment']

# The 15 ops of ``randaugment.RandAugment.get_trans_list()`` (pip 1.0.2),
# each applied with p=0.5. ``magnitude_range`` is the op's
# ``np.linspace(lo, hi, 10)``: the official magnitude index m in 1..9 gives
# ``lo + (hi - lo) * m / 9``; with ``total_level=9`` mmpretrain maps a level
# u in [0, 9] the same way. Images here are BGR (mmcv), hence the reversed
# Cutout fill. See docs/data.md for the remaining differences.
DUALCOOP_RANDAUG_POLICIES = [
    dict(type='Invert'),
    dict(type='Cutout', magnitude_range=(0, 20), pad_val=(113, 122, 125)),
    dict(type='Sharpness', magnitude_range=(0, 0.9)),
    dict(type='AutoContrast'),
    dict(type='Posterize', magnitude_range=(8, 4)),
    dict(
        type='Shear',
        magnitude_range=(0, 0.3),
        direction='horizontal',
        interpolation='bicubic'),
    dict(
        type='Translate',
        magnitude_range=(0, 150 / 331),
        direction='horizontal',
        interpolation='nearest'),
    dict(
        type='Translate',
        magnitude_range=(0, 150 / 331),
        direction='vertical',
        interpolation='nearest'),
    dict(
        type='Shear',
        magnitude_range=(0, 0.3),
        direction='vertical',
        interpolation='bicubic'),
    # PIL rotates counter-clockwise for a positive angle and the official
    # op never flips the sign; mmcv rotates clockwise for a positive angle.
    dict(
        type='Rotate',
        magnitude_range=(0, -30),
        random_negative_prob=0.,
        interpolation='nearest'),
    dict(type='Equalize'),
    dict(type='Contrast', magnitude_range=(0, 0.9)),
    dict(type='ColorTransform', magnitude_range=(0, 0.9)),
    dict(type='Solarize', magnitude_range=(256, 0)),
    dict(type='Brightness', magnitude_range=(0, 0.9)),
]
for _policy in DUALCOOP_RANDAUG_POLICIES:
    _policy['prob'] = 0.5


def _check_args(num_policies, magnitude_level, magnitude_std, total_level,
                policies, hparams) -> None:
    """The arguments of :class:`DualCoOpRandAugment`, each refused with
    its name (mmpretrain asserts some of them without naming the class,
    and a float ``num_policies`` or an empty ``policies`` would fail in
    NumPy on the first image)."""
    owner = 'DualCoOpRandAugment'
    check_int(owner, 'num_policies', num_policies)
    total = check_number(owner, 'total_level', total_level, 0, above=True)
    check_number(owner, 'magnitude_level', magnitude_level, 0, total,
                 'levels above total_level are clipped to it')
    if magnitude_std != 'inf':
        check_number(owner, 'magnitude_std', magnitude_std, 0,
                     what="or 'inf' for a level uniform in [0, "
                     'magnitude_level]')
    if policies is not None and not (isinstance(policies, (list, tuple))
                                     and policies and all(
                                         isinstance(p, dict)
                                         for p in policies)):
        raise ValueError(
            f'{owner}: policies must be a non-empty list of transform '
            f'dicts or None (the official 15 ops), got {policies!r}.')
    if not isinstance(hparams, dict):
        raise ValueError(f'{owner}: hparams must be a dict such as '
                         f'dict(pad_val=128), got {hparams!r}.')


@TRANSFORMS.register_module()
class DualCoOpRandAugment(RandAugment):
    """RandAugment as in the official PositiveCoOp / DualCoOp training.

    The official train transform calls ``RandAugment()`` from pip
    ``randaugment==1.0.2``: per image, two ops drawn uniformly with
    replacement from 15, each with a magnitude index uniform in 1..9 and
    each applied with probability 0.5. This is mmpretrain's
    :class:`~mmpretrain.datasets.transforms.RandAugment` with
    :data:`DUALCOOP_RANDAUG_POLICIES`, ``num_policies=2``,
    ``magnitude_level=9``, ``magnitude_std='inf'`` (level uniform in
    [0, 9], continuous instead of the official integers 1..9) and
    ``total_level=9``; pad value 128 as the official ``fillcolor``.

    Args:
        num_policies (int): Ops per image. Defaults to 2.
        magnitude_level (int | float): Defaults to 9.
        magnitude_std (float | str): Defaults to ``'inf'``.
        total_level (int | float): Defaults to 9.
        policies (list[dict], optional): Defaults to
            :data:`DUALCOOP_RANDAUG_POLICIES`.
        hparams (dict): Defaults to ``dict(pad_val=128)``.
    """

    def __init__(self,
                 num_policies: int = 2,
                 magnitude_level: int = 9,
                 magnitude_std='inf',
                 total_level: int = 9,
                 policies=None,
                 hparams: dict = dict(pad_val=128)):
        _check_args(num_policies, magnitude_level, magnitude_std, total_level,
                    policies, hparams)
        if policies is None:
            policies = copy.deepcopy(DUALCOOP_RANDAUG_POLICIES)
        super().__init__(
            policies=policies,
            num_policies=num_policies,
            magnitude_level=magnitude_level,
            magnitude_std=magnitude_std,
            total_level=total_level,
            hparams=hparams)

    def transform(self, results: dict) -> dict:
        require_array('DualCoOpRandAugment', results)
        return super().transform(results)

# Copyright (c) mmcoop contributors. All rights reserved.
"""mmcoop: prompt learning on a frozen CLIP for partial-label multi-label
recognition (PositiveCoOp, NegativeCoOp, DualCoOp and the vision-only
Baseline), as an OpenMMLab (mmpretrain 1.x / MMEngine) plugin."""
import mmcv
from mmengine.utils import digit_version

from .version import __version__, version_info

_MMCV_MIN, _MMCV_MAX = '2.0.0', '2.4.0'
if not (digit_version(_MMCV_MIN) <= digit_version(mmcv.__version__) <
        digit_version(_MMCV_MAX)):
    raise ImportError(
        f'mmcv {mmcv.__version__} is installed; mmcoop (through mmpretrain '
        f'1.x) needs {_MMCV_MIN} <= mmcv < {_MMCV_MAX}. Install the pure '
        "wheel with `pip install 'mmcv-lite>=2.0,<2.4'` or a matching full "
        'mmcv build.')

__all__ = ['__version__', 'version_info']

# Copyright (c) mmcoop contributors. All rights reserved.
__version__ = '0.1.0'


def parse_version_info(version_str: str) -> tuple:
    """Parse a version string, e.g. ``'0.1.0'`` -> ``(0, 1, 0)``."""
    parts = []
    for x in version_str.split('.'):
        if x.isdigit():
            parts.append(int(x))
        else:
            parts.append(x)
    return tuple(parts)


version_info = parse_version_info(__version__)

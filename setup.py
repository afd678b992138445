# Copyright (c) mmcoop contributors. All rights reserved.
from setuptools import setup

# Metadata lives in setup.cfg.
setup()

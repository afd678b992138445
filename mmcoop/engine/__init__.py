# Copyright (c) mmcoop contributors. All rights reserved.
from .atomic_backend import AtomicLocalBackend  # noqa: F401
from .hooks import *  # noqa: F401,F403
from .optim import *  # noqa: F401,F403
from .runner import MMCoopRunner  # noqa: F401

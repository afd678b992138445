#!/usr/bin/env bash
# Install mmcoop and everything it needs into ./.venv (idempotent).
#
#   bash tools/install.sh            # creates .venv if missing, installs
#   PYTHON=python3.11 bash tools/install.sh
#
# torch/torchvision: the CUDA 13 builds pinned below also run on CPU; set
# TORCH_SPEC to use your own (e.g. TORCH_SPEC="torch==2.6.0 torchvision==0.21.0"; torch >= 2.6 is needed).
# mmcv: an existing full `mmcv` (2.0 <= mmcv < 2.4) is kept; otherwise the
# pure `mmcv-lite` wheel is installed (both provide the `mmcv` package).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check -q)

if ! "$PY" -c "import torch, torchvision" >/dev/null 2>&1; then
  echo "[mmcoop] installing $TORCH_SPEC (several GB on first install)"
  # shellcheck disable=SC2086
  "${PIP[@]}" install $TORCH_SPEC
fi
if ! "$PY" -c "import mmcv" >/dev/null 2>&1; then
  echo "[mmcoop] installing mmcv-lite (pure wheel providing mmcv)"
  "${PIP[@]}" install 'mmcv-lite>=2.0,<2.4'
fi
echo "[mmcoop] installing mmcoop (editable) with test extras"
"${PIP[@]}" install -e '.[tests]'
# openmim without its opendatalab/openxlab dependency (see setup.cfg, tests)
if ! "$PY" -c "import mim" >/dev/null 2>&1; then
  "${PIP[@]}" install --no-deps 'openmim>=0.3.9'
fi
"$PY" -c "import mmcoop, torch, mmcv, mmengine, mmpretrain, open_clip; print('[mmcoop] ready: mmcoop', mmcoop.__version__, '| torch', torch.__version__, '| mmcv', mmcv.__version__, '| mmengine', mmengine.__version__, '| mmpretrain', mmpretrain.__version__, '| open_clip', open_clip.__version__)"

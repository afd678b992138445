#!/usr/bin/env bash
# Run on the development machine (it has the package registry) from the repo
# root: downloads the pure-Python wheels mmcoop needs that the GPU machine's
# image lacks. That image has Python 3.12 with torch, torchvision, timm,
# numpy, opencv-python-headless, pyyaml, rich, matplotlib, ... but no
# OpenMMLab packages and no open_clip, and it cannot reach any registry.
# About 7 MB; pass `.whl` in the device tool's `carry` list. TorchCodec is
# not fetched: its release must match the image's torch (unknown here);
# without it the device path decodes with torchvision's decoder and
# LoadImageTensor with PIL (the same pixels).
#
#   bash tools/analysis/gpu/fetch_wheels.sh            # -> .whl/
set -euo pipefail
DEST=${1:-.whl}
mkdir -p "$DEST"
if [ -d .git ] && ! grep -qx "/${DEST}/" .git/info/exclude 2>/dev/null; then
    echo "/${DEST}/" >> .git/info/exclude
fi
python3 -m pip download -q --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$DEST" \
    mmengine==0.10.7 mmpretrain==1.2.0 mmcv-lite==2.2.0 \
    open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 \
    yapf==0.43.0 platformdirs==4.14.8 addict==2.4.0 termcolor==3.3.0 \
    modelindex==0.0.2 model-index==0.1.11 ordered-set==4.1.0 mat4py==0.6.0 \
    importlib_metadata==10.2.0 lazy-importer==0.1.0 'setuptools<82'
ls "$DEST"
du -sh "$DEST"

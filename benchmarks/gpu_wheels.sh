#!/usr/bin/env bash
# Download the wheels the GPU bench carries to the device machine (no network there) into .whl/ (git-ignored).
#
# The device image has python3 3.12, torch 2.11 (CUDA), numpy, scipy, scikit-image, scikit-learn, pandas, tifffile,
# matplotlib, httpx, rich, msgpack, threadpoolctl, einops, timm (see /work/.library/device/KINDS.md). Missing there:
#   ours:    batchgenerators (rotated-patch extents of the augmentation)
#   nnU-Net: nnunetv2 and its pure-python friends, blosc2 (its preprocessed format) with ndindex and numexpr.
# Not carried: SimpleITK (50 MiB; the bench feeds both tools arrays and nnU-Net TIFF files, and stand-ins in
# benchmarks/gpubench/standins cover nnU-Net's imports of SimpleITK, nibabel and cc3d).
#
# Usage: bash benchmarks/gpu_wheels.sh [DEST]      (default DEST: .whl in the repository root)
#        PYVER=3.11 bash benchmarks/gpu_wheels.sh /tmp/whl311   (wheels for a local imitation of the machine)
# Prints the total size: what travels (working tree + wheels) must stay under 64 MiB per call.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.whl}
PYVER=${PYVER:-3.12}
mkdir -p "$DEST"
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux1_x86_64; do
  PLATFORMS+=(--platform "$p")
done
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  "${PLATFORMS[@]}" -d "$DEST" \
  nnunetv2==2.8.1 batchgenerators==0.25.5 batchgeneratorsv2==0.3.6 dynamic-network-architectures==0.4.4 \
  blosc2==4.14.1 ndindex==1.10.1 numexpr==2.14.2
# acvl-utils is on PyPI as an sdist only: build its (pure-python) wheel here.
if ! ls "$DEST"/acvl_utils-0.2.6-*.whl >/dev/null 2>&1; then
  python3 -m pip wheel --quiet --no-deps --no-build-isolation -w "$DEST" acvl-utils==0.2.6 \
    || python3 -m pip wheel --quiet --no-deps -w "$DEST" acvl-utils==0.2.6
fi
ls -l "$DEST"/*.whl
du -ch "$DEST"/*.whl | tail -1

#!/usr/bin/env bash
# Packs what the device-machine scripts run into .carry/dyno-bin.tar.xz:
# dyno, the CUDA and OpenCL plugins, test_conformance and
# test_conformance_quant (stripped) and
# CLBlast (the lent machine has none). Usage: bench/cuda/pack.sh [BUILD_DIR]
set -eu
b=${1:-build}
ninja -C "$b" dyno backends/cuda/libdyno-cuda.so backends/opencl/libdyno-opencl.so tests/test_conformance \
    tests/test_conformance_quant >/dev/null
d=$(mktemp -d)
cp "$b/dyno" "$b/backends/cuda/libdyno-cuda.so" \
   "$b/backends/opencl/libdyno-opencl.so" "$b/tests/test_conformance" \
   "$b/tests/test_conformance_quant" "$d/"
cp -L "$(ldconfig -p | awk '/libclblast.so.1 /{print $NF; exit}')" "$d/libclblast.so.1"
strip "$d"/*
mkdir -p .carry
tar cJf .carry/dyno-bin.tar.xz -C "$d" .
rm -rf "$d"
ls -la .carry/dyno-bin.tar.xz

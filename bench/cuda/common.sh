# Sourced by the device-machine scripts here: unpacks the binaries carried
# in .carry/dyno-bin.tar.xz (dyno, libdyno-cuda.so, test_conformance, built
# on the development machine) into /tmp/dy and points dyno at them.
set -u
OUT=${OUT:-/tmp/out}
mkdir -p /tmp/dy "$OUT"
tar xJf .carry/dyno-bin.tar.xz -C /tmp/dy
export DYNO_MODELS=$PWD/models DYNO_PLUGIN_PATH=/tmp/dy
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

# Sourced on the device machine by the scripts that A/B builds of the CUDA
# plugin (plugin_ab.sh, decode_ab.sh), with the pack to unpack as $1 (a
# dyno-bin.tar.xz of pack.sh): the pack into /tmp/dy without its own CUDA
# plugin, each carried build .carry/ab/NAME.so.xz into /tmp/ab/NAME. Gives
# BUILDS (default: every carried build), ROUNDS (default 2), `to` (a step
# with a time limit of TO seconds) and `use NAME` (that build first in
# DYNO_PLUGIN_PATH).
set -u
OUT=${OUT:-/tmp/out}
mkdir -p /tmp/dy "$OUT"
tar xJf "$1" -C /tmp/dy
rm -f /tmp/dy/libdyno-cuda.so # each build's own comes first in the path
export DYNO_MODELS=$PWD/models
nvidia-smi --query-gpu=name,memory.total,driver_version,power.limit --format=csv,noheader
for f in .carry/ab/*.so.xz; do
    n=$(basename "$f" .so.xz)
    mkdir -p "/tmp/ab/$n"
    xz -dc "$f" > "/tmp/ab/$n/libdyno-cuda.so"
done
BUILDS=${BUILDS:-$(ls /tmp/ab)} ROUNDS=${ROUNDS:-2}
to() { timeout "${TO:-180}" "$@" || echo "(exit $? from $1)"; }
use() { export DYNO_PLUGIN_PATH=/tmp/ab/$1:/tmp/dy; }

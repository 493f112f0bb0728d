#!/usr/bin/env bash
# The Hopper attention kernels (backends/cuda/cuda_flash_sm90.cu) as ptxas
# builds them, without a GPU: for each kernel, no spill and no wgmma
# serialized (ptxas's "Potential Performance Loss" notes, C75xx: an edit
# that reads an accumulator too early, or crosses a loop with a product in
# flight, silently makes every wgmma wait for the one before); and in
# flash_ws_kernel a `wgmma.wait_group 1` left in the machine code, the wait
# for a tile's scores alone that lets its softmax overlap the P V before it
# (bench/cuda/sass_skeleton.py reads the cubin). Prints TAP.
# Usage: test_wgmma_pipeline.sh NVCC PYTHON SOURCE_ROOT BUILD_ROOT
set -u
nvcc=$1 python=$2 src=$3 build=$4
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
log=$tmp/ptxas.log
if ! "$nvcc" -O3 --std=c++17 -gencode=arch=compute_90a,code=sm_90a -I"$src" -I"$build" \
        -I"$src/backends/cuda" -Xptxas -v -cubin -o "$tmp/flash.cubin" \
        "$src/backends/cuda/cuda_flash_sm90.cu" > "$log" 2>&1; then
    echo "1..1"
    echo "not ok 1 - nvcc builds cuda_flash_sm90.cu for sm_90a"
    sed 's/^/# /' "$log"
    exit 1
fi
# the kernels, each with its spill counts (the lines after its name)
mapfile -t kernels < <(sed -n "s/.*Compiling entry function '\([^']*\)'.*/\1/p" "$log")
n=${#kernels[@]}
echo "1..$((n + 3))"
i=0
fail=0
for k in "${kernels[@]}"; do
    i=$((i + 1))
    block=$(awk -v k="$k" 'index($0, "Compiling entry function") { on = index($0, "\x27" k "\x27") > 0 } on' "$log")
    bad=$(grep -E "[1-9][0-9]* bytes spill" <<< "$block")
    if [ -z "$bad" ]; then
        echo "ok $i - $k: no spill"
    else
        echo "not ok $i - $k spills"
        sed 's/^/# /' <<< "$bad"
        fail=1
    fi
done
# ptxas prints its wgmma notes apart from the kernels' blocks, naming the
# kernel inside the note
i=$((i + 1))
bad=$(grep -E "C75[0-9][0-9]" "$log")
if [ -z "$bad" ]; then
    echo "ok $i - no wgmma serialized or wait injected by ptxas"
else
    echo "not ok $i - ptxas serialized wgmmas or injected waits"
    sed 's/^/# /' <<< "$bad"
    fail=1
fi
i=$((i + 1))
if [ "$n" -ge 4 ] && grep -q flash_ws_kernel <<< "${kernels[*]}"; then
    echo "ok $i - $n kernels, flash_ws_kernel among them"
else
    echo "not ok $i - expected the wgmma kernels, found $n"
    fail=1
fi
i=$((i + 1))
skel=$("$python" "$src/bench/cuda/sass_skeleton.py" "$tmp/flash.cubin" flash_ws_kernel)
if grep -q "DEPBAR\.1" <<< "$skel" && grep -q "HGMMA" <<< "$skel"; then
    echo "ok $i - flash_ws_kernel keeps a wait for all but the newest wgmma group"
else
    echo "not ok $i - flash_ws_kernel has no wgmma.wait_group 1 left (its softmax no longer overlaps P V)"
    fail=1
fi
exit $fail

#!/usr/bin/env bash
# ViT with its residual stream in the weights' bf16 on the lent card:
# `dyno encode` on CUDA against the float64 PyTorch forward
# (tests/ref/vit_reference.py, f32 and bf16 checkpoints), memcheck over a
# forward, then ViT-L/16 at batch 256: its op profile (how much of a batch
# the GEMMs alone take), img/s in two interleaved rounds beside timm eager
# and under torch.compile.
# Pack with bench/cuda/pack.sh; run with carry [".carry/dyno-bin.tar.xz"].
source bench/cuda/common.sh
rm -f /tmp/dy/libdyno-opencl.so
export LD_LIBRARY_PATH=/tmp/dy
for dtype in f32 bf16; do
    python3 tests/ref/vit_reference.py /tmp/vit/$dtype --dtype $dtype >/dev/null
    /tmp/dy/dyno encode --model-dir /tmp/vit/$dtype --pixels /tmp/vit/$dtype/pixels.f32 -o /tmp/vit/out.f32 \
        --backend cuda --weight-dtype $dtype
    python3 - /tmp/vit/out.f32 /tmp/vit/$dtype/expected.f32 $dtype <<'PY'
import struct, sys
a, b = (open(p, "rb").read() for p in sys.argv[1:3])
x, y = (struct.unpack("<%df" % (len(v) // 4), v) for v in (a, b))
print("encode %s checkpoint on cuda: relative error %.3g" % (sys.argv[3], max(abs(p - q) for p, q in zip(x, y)) / max(abs(q) for q in y)))
PY
done
echo "memcheck vit: $(/usr/local/cuda/bin/compute-sanitizer --tool memcheck --show-backtrace no /tmp/dy/dyno run \
    --backend cuda --workload vit --model tiny-vit --batch 3 --repeat 1 --warmup 0 --db /tmp/m.db 2>&1 | tail -1)"
run() { timeout 240 /tmp/dy/dyno run --backend cuda --workload vit --model vit-l16 --batch 256 --weight-dtype bf16 "$@"; }
DYNO_PROFILE_OPS=1 run --repeat 2 --db /tmp/p.db 2>&1 | grep -E 'op profile|^[a-z_]+ +[0-9]'
for round in 1 2; do
    run --repeat 5 --db "$OUT/vit.db" 2>&1 | grep -E '^\| cuda'
    python3 bench/cuda/vit_peer.py 2>&1 | grep timm
done
timeout 300 python3 bench/cuda/vit_peer.py --compile 2>&1 | grep -E 'timm|Error' | tail -2

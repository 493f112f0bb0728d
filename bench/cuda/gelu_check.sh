#!/usr/bin/env bash
# fc1's GELU in cuBLASLt's epilogue on the lent card, measured against its
# switch in the same call (DYNO_CUDA_GELU_EPILOGUE=0 runs it as a pass of
# its own): ViT-L/16 at batch 256, interleaved, beside timm eager and
# torch.compile. Correctness first: conformance, `generate` against
# transformers, compute-sanitizer memcheck over a split decode and a ViT
# forward, and which GELU form the epilogue computes (gelu_form.py).
# Pack with bench/cuda/pack.sh; run with carry [".carry/dyno-bin.tar.xz"].
source bench/cuda/common.sh
rm -f /tmp/dy/libdyno-opencl.so
export LD_LIBRARY_PATH=/tmp/dy
set -o pipefail
timeout 90 /tmp/dy/test_conformance 2>&1 | tee "$OUT/conformance.txt" | grep -E '^not ok|^# ' | head -20
echo "conformance: $(grep -c '^ok' "$OUT/conformance.txt") ok, $(grep -c '^not ok' "$OUT/conformance.txt") not ok"
timeout 150 python3 tests/ref/hf_check.py /tmp/dy/dyno /tmp/hf cuda 2>&1 | grep -E '^(ok|not ok)'
for args in "--model tiny-llama --batch 2 --input-len 300 --output-len 4" "--workload vit --model tiny-vit --batch 3"; do
    echo "memcheck $args: $(timeout 120 /usr/local/cuda/bin/compute-sanitizer --tool memcheck --show-backtrace no \
        /tmp/dy/dyno run --backend cuda $args --repeat 1 --warmup 0 --db /tmp/memcheck.db 2>&1 | tail -1)"
done
python3 bench/cuda/gelu_form.py 2>&1 | tail -2
for mode in DYNO_CUDA_GELU_EPILOGUE=0 default DYNO_CUDA_GELU_EPILOGUE=0 default; do
    echo "== vit-l16 b256, $mode"
    env $([[ $mode != default ]] && echo "$mode") timeout 240 /tmp/dy/dyno run --backend cuda --workload vit \
        --model vit-l16 --batch 256 --weight-dtype bf16 --repeat 5 --tag "$mode" --db "$OUT/vit.db" 2>&1 |
        grep -E '^\| cuda'
done
python3 bench/cuda/vit_peer.py 2>&1 | grep timm
timeout 300 python3 bench/cuda/vit_peer.py --compile 2>&1 | grep -E 'timm|Error' | tail -2

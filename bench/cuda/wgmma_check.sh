#!/usr/bin/env bash
# The wgmma flash prefill kernel (cuda_flash_sm90.cu) on the lent card,
# against the mma.sync kernel (DYNO_CUDA_FLASH_WGMMA=0) in the same call:
# conformance each way, compute-sanitizer memcheck over bf16 prefills at
# head dim 64 (GQA pairs) and 128 (an odd group) and a bf16 ViT, PyTorch's
# SDPA on the same shapes, the kernel's per-call time from the op profile
# at Llama-3.1-8B 16 x 1024 and 4 x 4096 and ViT-L/16 b256, then TTFT and
# images/s beside timm (eager) for TIMED modes. DYNO_CUDA_FLASH_WGMMA: 2
# the warp-specialized kernel (TMA loads), 1 the cp.async one, 0 mma.sync,
# 3 the first with a block an item (not resident blocks walking items).
# BLOCKS caps the resident blocks (DYNO_CUDA_FLASH_BLOCKS) for a further
# conformance and memcheck run each, so every block walks many items;
# PROFILED lists the modes whose per-call times are taken (default MODES;
# repeat them to interleave). Each step has a time limit (TO seconds), so
# a hung kernel costs one step.
source bench/cuda/common.sh
MODES=${MODES:-"2 1 0"} TIMED=${TIMED:-"2 0"} MEMCHECK=${MEMCHECK:-"2"} BLOCKS=${BLOCKS:-"1 5"}
PROFILED=${PROFILED:-$MODES}
to() { timeout "${TO:-180}" "$@" || echo "(exit $? from $1)"; }
command -v cuobjdump >/dev/null &&
    echo "HGMMA in the plugin: $(cuobjdump -sass /tmp/dy/libdyno-cuda.so | grep -c HGMMA)"
for m in $MODES; do
    echo "== conformance, DYNO_CUDA_FLASH_WGMMA=$m"
    DYNO_CUDA_FLASH_WGMMA=$m to /tmp/dy/test_conformance 2>&1 | grep -v '^ok' | tail -12
done
for n in $BLOCKS; do
    echo "== conformance, DYNO_CUDA_FLASH_BLOCKS=$n"
    DYNO_CUDA_FLASH_BLOCKS=$n to /tmp/dy/test_conformance 2>&1 | grep -v '^ok' | tail -12
    echo "memcheck blocks=$n 8b-shaped 2 x 700: $(DYNO_CUDA_FLASH_BLOCKS=$n to /usr/local/cuda/bin/compute-sanitizer \
        --tool memcheck --show-backtrace no /tmp/dy/dyno run --backend cuda --model llama-3.1-8b --layers 1 \
        --batch 2 --input-len 700 --output-len 2 --repeat 1 --warmup 0 --db /tmp/memcheck.db 2>&1 | tail -1)"
done
for m in $MEMCHECK; do
    for args in "--model llama-3.2-1b --input-len 130 --output-len 2" \
                "--model llama-3.2-3b --input-len 200 --output-len 2" \
                "--workload vit --model tiny-vit --weight-dtype bf16 --batch 3"; do
        echo "memcheck wgmma=$m $args: $(DYNO_CUDA_FLASH_WGMMA=$m to /usr/local/cuda/bin/compute-sanitizer \
            --tool memcheck --show-backtrace no /tmp/dy/dyno run --backend cuda $args --repeat 1 --warmup 0 \
            --db /tmp/memcheck.db 2>&1 | tail -1)"
    done
done
# greedy tokens after a 300-token prompt (bf16 weights and activations,
# 4 layers of Llama-3.2-1B): each mode on cuda beside the cpu backend
prompt=$(seq -s, 1 300)
for b in $MODES cpu; do
    be=cuda; [ "$b" = cpu ] && be=cpu
    echo "generate $b: $(DYNO_CUDA_FLASH_WGMMA=$b to /tmp/dy/dyno generate --model llama-3.2-1b --layers 4 \
        --weight-dtype bf16 --backend $be --prompt "$prompt" --max-new-tokens 12 2>&1 | tail -1)"
done
python3 bench/cuda/sdpa_peer.py 2>&1 | grep sdpa
# the kernels alone, timed as sdpa_peer.py times SDPA (when carried: pack_bench.sh
# attn_bench, then pack.sh, since pack_bench.sh moves the pack it makes)
if [ -x .carry/attn_bench/attn_bench ]; then
    for m in $PROFILED; do
        echo "-- attn_bench wgmma=$m"
        DYNO_CUDA_FLASH_WGMMA=$m to .carry/attn_bench/attn_bench | grep attention
    done
fi
run() { to /tmp/dy/dyno run --backend cuda --kv-dtype bf16 --db "$OUT/flash.db" "$@"; }
for m in $PROFILED; do
    export DYNO_CUDA_FLASH_WGMMA=$m
    for args in "--batch 16 --input-len 1024" "--batch 4 --input-len 4096"; do
        echo "== wgmma=$m 8b $args: $(DYNO_PROFILE_OPS=1 run --model llama-3.1-8b $args --output-len 1 \
            --repeat 2 2>&1 | grep -E 'attention_prefill')"
    done
    echo "== wgmma=$m vit-l16 b256: $(DYNO_PROFILE_OPS=1 run --workload vit --model vit-l16 --batch 256 \
        --weight-dtype bf16 --repeat 2 2>&1 | grep -E 'attention_prefill')"
done
for m in $TIMED; do
    export DYNO_CUDA_FLASH_WGMMA=$m
    for args in "--batch 16 --input-len 1024" "--batch 4 --input-len 4096"; do
        echo "== wgmma=$m TTFT $args"
        run --model llama-3.1-8b $args --output-len 1 --repeat 3 2>&1 | grep -E '^\| cuda'
    done
    echo "== wgmma=$m vit-l16 b256"
    run --workload vit --model vit-l16 --batch 256 --weight-dtype bf16 --repeat 5 2>&1 | grep -E '^\| cuda'
done
unset DYNO_CUDA_FLASH_WGMMA
python3 bench/cuda/vit_peer.py 2>&1 | grep -v Warning | tail -1
if [ -n "${NCU:-}" ]; then
    for m in $NCU; do
        DYNO_CUDA_FLASH_WGMMA=$m /usr/local/cuda/bin/ncu --kernel-name regex:flash_wgmma --launch-skip 2 \
            --launch-count 1 --section SpeedOfLight --section SchedulerStats --section ComputeWorkloadAnalysis \
            /tmp/dy/dyno run --backend cuda --kv-dtype bf16 --model llama-3.1-8b --batch 16 --input-len 1024 \
            --output-len 1 --repeat 1 --warmup 0 --db /tmp/n.db > "$OUT/ncu_$m.txt" 2>&1
        echo "ncu wgmma=$m: $(grep -E 'Duration|Issue Slots Busy|Eligible Warps' "$OUT/ncu_$m.txt" | tr -s ' ' | tr '\n' ';')"
    done
fi

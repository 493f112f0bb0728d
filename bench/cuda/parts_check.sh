#!/usr/bin/env bash
# The decode GEMV's norm and KV append (DYNO_CUDA_GEMM_PARTS, twenty-fifth
# session): greedy tokens of bf16 presets cut to four layers, with every
# part in the GEMV, with none, and on the cpu backend, must agree; then
# Qwen3-30B-A3B at batch 1 after 1,024 tokens, both ways, interleaved.
# Pack with bench/cuda/pack.sh; run with carry [".carry/dyno-bin.tar.xz"].
source bench/cuda/common.sh
export LD_LIBRARY_PATH=/tmp/dy
gen() { timeout 300 /tmp/dy/dyno generate --model "$1" --layers 4 --weight-dtype bf16 --kv-dtype "$2" \
            --prompt 5,17,42,7,99,3,250,1000 --max-new-tokens 12 --backend "$3" 2>&1 | tail -1; }
for model in llama-3.1-8b llama-3.2-1b olmoe-1b-7b qwen3-30b-a3b qwen1.5-moe-a2.7b; do
    kvs="bf16 fp8" # an fp8 cache for the dense models' append; the MoE ones append in the rope op
    [[ $model == llama* ]] || kvs=bf16
    for kv in $kvs; do
        a=$(gen "$model" "$kv" cuda)
        b=$(DYNO_CUDA_GEMM_PARTS=0 gen "$model" "$kv" cuda)
        c=$(gen "$model" "$kv" cpu)
        verdict=$([[ $a == "$b" && $a == "$c" ]] && echo same || echo DIFFER)
        echo "$model kv $kv: $verdict (parts: $a | composed: $b | cpu: $c)"
    done
done
for mode in default DYNO_CUDA_GEMM_PARTS=0 default DYNO_CUDA_GEMM_PARTS=0; do
    settings=()
    [[ $mode != default ]] && settings=("$mode")
    env "${settings[@]}" timeout 300 /tmp/dy/dyno run --backend cuda --model qwen3-30b-a3b --kv-dtype bf16 \
        --batch 1 --input-len 1024 --output-len 128 --repeat 2 --tag "$mode" --db "$OUT/q3.db" 2>&1 |
        grep -E '^\| cuda' | sed "s/^/$mode /"
done

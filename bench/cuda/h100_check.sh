#!/usr/bin/env bash
# One device call: correctness and first figures of the CUDA backend on the
# lent card. Expects .carry/dyno-bin.tar.xz (dyno, libdyno-cuda.so,
# test_conformance, built on the development machine) and writes to $OUT.
source bench/cuda/common.sh
ldd /tmp/dy/dyno | grep -v -E 'libc.so|libm.so|ld-linux|vdso' && echo "dyno: unexpected shared libraries"
/tmp/dy/dyno devices
echo "== conformance"
/tmp/dy/test_conformance 2>&1 | grep -v '^ok' | tail -30
echo "== generate tiny-llama, cuda vs cpu"
a=$(/tmp/dy/dyno generate --model tiny-llama --prompt 1,2,3,4 --max-new-tokens 12 --backend cuda)
b=$(/tmp/dy/dyno generate --model tiny-llama --prompt 1,2,3,4 --max-new-tokens 12 --backend cpu)
echo "cuda $a"; echo "cpu  $b"; [ "$a" = "$b" ] && echo "tiny-llama tokens equal"
echo "== transformers checkpoints"
python3 tests/ref/hf_check.py /tmp/dy/dyno /tmp/hf cuda cpu 2>&1 | grep -v Warning | tail -14
echo "== compute-sanitizer"
compute-sanitizer --tool memcheck --print-limit 5 /tmp/dy/dyno generate --model tiny-llama \
    --prompt 1,2,3 --max-new-tokens 20 --backend cuda 2>&1 | tail -4
echo "== performance"
for args in "--batch 1 --input-len 1024 --output-len 64" "--batch 16 --input-len 1024 --output-len 8" \
            "--batch 64 --input-len 1024 --output-len 128 --repeat 1"; do
    /tmp/dy/dyno run --backend cuda --model llama-3.1-8b --kv-dtype bf16 $args --db "$OUT/h100.db" \
        2>&1 | grep -E '^\| cuda|copy'
done
python3 bench/cuda/hf_peer.py 2>&1 | grep -v Warning | tail -6

#!/usr/bin/env bash
# The ViT workload: `dyno encode` on a checkpoint in Hugging Face's ViTModel
# layout against an independent float64 PyTorch forward, on every CPU-side
# backend; `dyno run --workload vit` points and what it refuses.
source "$(dirname "$0")/tap.sh"
root=${DYNO_SOURCE_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
if ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
    echo "1..0 # SKIP torch not available to /usr/bin/python3"
    exit 0
fi
backends="cpu-ref cpu"
"$DYNO" devices 2>/dev/null | grep -qE '^opencl +OpenCL' && backends="$backends opencl"
echo "1..$((2 * $(echo $backends | wc -w) + 7))"
# max |got - want| / max |want| over two float32 files
rel_err() { python3 - "$1" "$2" <<'PY'
import struct, sys
a = open(sys.argv[1], 'rb').read(); b = open(sys.argv[2], 'rb').read()
if len(a) != len(b) or not a:
    print('inf'); sys.exit()
x = struct.unpack('<%df' % (len(a) // 4), a); y = struct.unpack('<%df' % (len(b) // 4), b)
print(max(abs(p - q) for p, q in zip(x, y)) / max(abs(q) for q in y))
PY
}
for dtype in f32 bf16; do
    /usr/bin/python3 "$root/tests/ref/vit_reference.py" "$tmp/$dtype" --dtype $dtype
    for be in $backends; do
        "$DYNO" encode --model-dir "$tmp/$dtype" --pixels "$tmp/$dtype/pixels.f32" -o "$tmp/out.f32" \
            --backend $be --weight-dtype $dtype 2>"$tmp/err"
        e=$(rel_err "$tmp/out.f32" "$tmp/$dtype/expected.f32")
        # f32: rounding only; bf16 weights are exact in both, activations
        # round to bf16 on the way into matrix units on some backends
        limit=$([ $dtype = f32 ] && echo 1e-4 || echo 3e-2)
        check "encode $dtype checkpoint on $be matches PyTorch (rel err $e)" \
            python3 -c "import sys; sys.exit(0 if float('$e') <= $limit else 1)"
    done
done
for be in $backends; do
    "$DYNO" run --workload vit --model tiny-vit --batch 1,3 --backend $be --warmup 0 --repeat 2 \
        --db "$tmp/vit.db" >/dev/null 2>&1
done
n_ok=$(sql "$tmp/vit.db" "select count(*) from points where status='ok' and images_s > 0 and e2e_ms > 0 and e2e_ms_p99 >= e2e_ms and flop_util > 0 and image_size = 64")
check "run --workload vit stores ok points with images_s" test "$n_ok" = "$((2 * $(echo $backends | wc -w)))"
"$DYNO" run --workload vit --model tiny-vit --image-size 100 --repeat 1 --db "$tmp/vit2.db" >/dev/null 2>&1
"$DYNO" run --workload vit --model tiny-vit --lora-merged 1 --repeat 1 --db "$tmp/vit2.db" >/dev/null 2>&1
check "a size that is no multiple of the patch, and merging without a rank, are skipped rows" \
    test "$(sql "$tmp/vit2.db" "select count(*) from points where status='skipped' and reason <> ''")" = 2
"$DYNO" run --workload vit --model tiny-vit --lora-rank 0,8 --lora-merged 0,1 --repeat 1 \
    --db "$tmp/lora.db" >/dev/null 2>&1
check "LoRA points: rank 8 unmerged and merged run and are stored with their axes" \
    test "$(sql "$tmp/lora.db" "select group_concat(status || ':' || ifnull(lora_rank, '-') || ':' || ifnull(lora_merged, '-'), ' ') from (select * from points order by id)")" \
    = "ok:0:0 skipped:0:1 ok:8:0 ok:8:1"
# adapters folded into the weights compute what the unmerged adapters do
for merged in 0 1; do
    "$DYNO" encode --model-dir "$tmp/f32" --pixels "$tmp/f32/pixels.f32" -o "$tmp/lora$merged.f32" \
        --lora-rank 4 --lora-merged $merged 2>/dev/null
done
e=$(rel_err "$tmp/lora0.f32" "$tmp/lora1.f32")
d=$(rel_err "$tmp/lora0.f32" "$tmp/f32/expected.f32")
check "LoRA merged equals unmerged (rel err $e) and differs from no adapters ($d)" \
    python3 -c "import sys; sys.exit(0 if float('$e') <= 1e-4 and float('$d') > 1e-3 else 1)"
"$DYNO" run --workload vit --model tiny-vit --image-size 96 --repeat 1 --db "$tmp/vit3.db" >/dev/null 2>&1
check "random weights at another image size run (position table drawn at that size)" \
    test "$(sql "$tmp/vit3.db" "select status from points")" = ok
"$DYNO" encode --model tiny-vit --pixels "$tmp/f32/pixels.f32" -o "$tmp/x.f32" 2>"$tmp/err"
check "encode refuses pixels of the wrong size, naming the file" \
    test $? -eq 2 -a -n "$(grep pixels.f32 "$tmp/err")"
"$DYNO" run --workload llm,vit --model tiny-vit --repeat 1 --db "$tmp/mixed.db" >/dev/null 2>&1
check "a ViT model in an LLM point is a skipped row saying so" \
    test "$(sql "$tmp/mixed.db" "select group_concat(status, ',') from (select status from points order by id)")" = "skipped,ok" \
    -a -n "$(sql "$tmp/mixed.db" "select reason from points where reason like '%--workload vit%'")"
finish

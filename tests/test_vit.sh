#!/usr/bin/env bash
# The ViT workload: `dyno encode` on a checkpoint in Hugging Face's ViTModel
# layout against an independent float64 PyTorch forward, on every CPU-side
# backend, at its own image size and at others (interpolated position
# embeddings); LoRA adapters merged against unmerged, rank maps and what they
# refuse; `dyno run --workload vit` points and what it refuses.
source "$(dirname "$0")/tap.sh"
root=${DYNO_SOURCE_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
if ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
    echo "1..0 # SKIP torch not available to /usr/bin/python3"
    exit 0
fi
backends="cpu-ref cpu"
"$DYNO" devices 2>/dev/null | grep -qE '^opencl +OpenCL' && backends="$backends opencl"
nb=$(echo $backends | wc -w)
echo "1..$((5 * nb + 22))"
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
check "run --workload vit stores ok points with images_s" test "$n_ok" = "$((2 * nb))"
"$DYNO" run --workload vit --model tiny-vit --image-size 100 --repeat 1 --db "$tmp/vit2.db" >"$tmp/size.out" 2>&1
"$DYNO" run --workload vit --model tiny-vit --lora-merged 1 --repeat 1 --db "$tmp/vit2.db" >"$tmp/merged.out" 2>&1
check "a size that is no multiple of the patch, and merging without a rank, are skipped rows" \
    test "$(sql "$tmp/vit2.db" "select count(*) from points where status='skipped' and reason <> ''")" = 2
# the summary's image px: the size asked for, or "-" where none was (the
# model's own was never read)
check "the summary of skipped rows shows the requested image size or -" \
    test -n "$(grep -E '\| tiny-vit \| 1 \| 100 \| bf16 \| skipped' "$tmp/size.out")" \
    -a -n "$(grep -E '\| tiny-vit \| 1 \| - \| bf16 \| skipped' "$tmp/merged.out")" \
    -a -z "$(grep -e -9223372036854775808 "$tmp/size.out" "$tmp/merged.out")"
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
check "random weights at another image size run (position table interpolated)" \
    test "$(sql "$tmp/vit3.db" "select status from points")" = ok
"$DYNO" encode --model tiny-vit --pixels "$tmp/f32/pixels.f32" -o "$tmp/x.f32" 2>"$tmp/err"
check "encode refuses pixels of the wrong size, naming the file" \
    test $? -eq 2 -a -n "$(grep pixels.f32 "$tmp/err")"
"$DYNO" run --workload llm,vit --model tiny-vit --repeat 1 --db "$tmp/mixed.db" >/dev/null 2>&1
check "a ViT model in an LLM point is a skipped row saying so" \
    test "$(sql "$tmp/mixed.db" "select group_concat(status, ',') from (select status from points order by id)")" = "skipped,ok" \
    -a -n "$(sql "$tmp/mixed.db" "select reason from points where reason like '%--workload vit%'")"
within() { python3 -c "import sys; sys.exit(0 if float('$1') <= $2 else 1)"; }
# position embeddings interpolated as transformers' interpolate_pos_encoding
# does, on a larger and a smaller grid than the checkpoint's 4 x 4 patches
for size in 48 24; do
    /usr/bin/python3 "$root/tests/ref/vit_reference.py" "$tmp/px$size" --image-size $size
    for be in $backends; do
        "$DYNO" encode --model-dir "$tmp/px$size" --pixels "$tmp/px$size/pixels.f32" -o "$tmp/out.f32" \
            --image-size $size --backend $be 2>/dev/null
        e=$(rel_err "$tmp/out.f32" "$tmp/px$size/expected.f32")
        check "encode at $size px (checkpoint at 32) on $be matches PyTorch (rel err $e)" within "$e" 1e-4
    done
done
"$DYNO" run --workload vit --model-dir "$tmp/f32" --image-size 48 --repeat 1 --db "$tmp/px.db" >/dev/null 2>&1
check "a checkpoint point at another image size runs" \
    test "$(sql "$tmp/px.db" "select status || ':' || image_size from points")" = ok:48
# LoRA on the MLP too: merged equals unmerged, and the MLP adapters change
# the output beyond the attention ones
for be in $backends; do
    for t in attn:0 attn+mlp:0 attn+mlp:1; do
        "$DYNO" encode --model-dir "$tmp/f32" --pixels "$tmp/f32/pixels.f32" -o "$tmp/$be-${t/:/-}.f32" \
            --backend $be --lora-rank 4 --lora-targets ${t%:*} --lora-merged ${t#*:} 2>/dev/null
    done
    e=$(rel_err "$tmp/$be-attn+mlp-0.f32" "$tmp/$be-attn+mlp-1.f32")
    d=$(rel_err "$tmp/$be-attn+mlp-0.f32" "$tmp/$be-attn-0.f32")
    check "attn+mlp LoRA on $be: merged equals unmerged (rel err $e), differs from attn only ($d)" \
        python3 -c "import sys; sys.exit(0 if float('$e') <= 1e-4 and float('$d') > 1e-3 else 1)"
done
# rank maps: one line per layer, RANK or ATTN MLP, '#' comments
printf '# every layer at 4\n4\n\n  4   # again\n' > "$tmp/four.map"
printf '8    # layer 0\n0 4\n' > "$tmp/mixed.map"
enc() { "$DYNO" encode --model-dir "$tmp/f32" --pixels "$tmp/f32/pixels.f32" --lora-targets attn+mlp "$@"; }
enc -o "$tmp/four.f32" --lora-rank-map "$tmp/four.map" 2>/dev/null
check "a map of rank 4 on every layer equals --lora-rank 4" cmp "$tmp/four.f32" "$tmp/cpu-attn+mlp-0.f32"
enc -o "$tmp/mixed0.f32" --lora-rank-map "$tmp/mixed.map" 2>/dev/null
enc -o "$tmp/mixed1.f32" --lora-rank-map "$tmp/mixed.map" --lora-merged 1 2>/dev/null
e=$(rel_err "$tmp/mixed0.f32" "$tmp/mixed1.f32")
d=$(rel_err "$tmp/mixed0.f32" "$tmp/four.f32")
check "a map of mixed ranks: merged equals unmerged (rel err $e), differs from rank 4 ($d)" \
    python3 -c "import sys; sys.exit(0 if float('$e') <= 1e-4 and float('$d') > 1e-3 else 1)"
"$DYNO" run --workload vit --model-dir "$tmp/f32" --lora-targets attn+mlp --lora-rank-map "$tmp/mixed.map" \
    --lora-merged 0,1 --repeat 1 --db "$tmp/map.db" >/dev/null 2>&1
"$DYNO" run --workload vit --model-dir "$tmp/f32" --repeat 1 --db "$tmp/map.db" >/dev/null 2>&1
check "map points store the ranks; unmerged adapters add weight bytes, merged ones none" \
    test "$(sql "$tmp/map.db" "select group_concat(status || ':' || ifnull(lora_targets, '-') || ':' || ifnull(lora_rank_map, '-') || ':' || (weight_bytes - (select weight_bytes from points where lora_rank_map is null) > 0), ' ') from (select * from points order by id)")" \
    = "ok:attn+mlp:8/8,0/4:1 ok:attn+mlp:8/8,0/4:0 ok:-:-:0"
# bad maps: each names the file and the line (or the count), exit code 2
printf '8x\n4\n' > "$tmp/malformed.map"
printf '4 4 4\n4\n' > "$tmp/fields.map"
printf '4\n4 2\n' > "$tmp/tworanks.map"
printf '4\n' > "$tmp/few.map"
printf '4\n4\n4\n' > "$tmp/many.map"
printf '4\n-2\n' > "$tmp/negative.map"
printf '4\n65\n' > "$tmp/big.map"
maps=
while IFS='|' read -r name where says; do
    maps="$maps${maps:+,}$tmp/$name.map"
    "$DYNO" encode --model-dir "$tmp/f32" --pixels "$tmp/f32/pixels.f32" -o "$tmp/x.f32" \
        --lora-rank-map "$tmp/$name.map" 2>"$tmp/err"
    check "encode refuses a map ($name: $says) with exit 2, naming the file" \
        test $? -eq 2 -a -n "$(grep -F "$tmp/$name.map$where" "$tmp/err" | grep -F "$says")"
done <<'EOF'
missing|: |No such file
malformed|:1: |"8x" is not a rank
fields|:1: |3 fields
tworanks|:2: |need --lora-targets attn+mlp
few|: |1 layer line, but f32 runs 2 layers
many|:3: |a layer line beyond the 2 layers
negative|:2: |rank -2 is negative
big|:2: |rank 65 exceeds the hidden size 64
EOF
"$DYNO" run --workload vit --model-dir "$tmp/f32" --lora-rank-map "$maps" --repeat 1 --db "$tmp/bad.db" >/dev/null 2>&1
check "bad maps in a sweep are failed rows whose reason names the file" \
    test "$(sql "$tmp/bad.db" "select count(*) from points where status = 'failed' and reason like '$tmp/%.map%'")" = 8
"$DYNO" run --workload vit --model tiny-vit --lora-rank 4 --lora-rank-map "$tmp/four.map" --repeat 1 \
    --db "$tmp/both.db" >/dev/null 2>&1
"$DYNO" run --workload vit --model tiny-vit --lora-targets attn+mlp --repeat 1 --db "$tmp/both.db" >/dev/null 2>&1
check "a rank and a map together, and MLP targets without a rank, are skipped rows" \
    test "$(sql "$tmp/both.db" "select count(*) from points where status = 'skipped' and reason like '%--lora-rank%'")" = 2
finish

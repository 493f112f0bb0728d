#!/usr/bin/env bash
# Quantized weights from the command line (--weight-dtype fp8, int8, int4,
# int4-asym, mopeq:BITS): the bytes each format stores, the fidelity each
# costs against the bf16 weights they were made from, the same tokens on
# every backend, and MoPEQ's per-expert bits.
source "$(dirname "$0")/tap.sh"
backends="cpu-ref cpu"
"$DYNO" devices 2>/dev/null | grep -qE '^opencl +OpenCL' && backends="$backends opencl"
nb=$(echo $backends | wc -w)
echo "1..$((3 * nb + 2 * (nb - 1) + 7))"
formats="bf16 fp8 int8 int4 int4-asym"
# tiny-llama: 4 layers of q/k/v 512 x 256, o 256 x 256, gate/up 1536 x 256,
# down 256 x 768, and a 4096 x 256 lm_head: 4,194,304 matrix weights in
# 14,336 rows (32,768 groups of 128) beside a bf16 embedding and norms
# (2,101,760 bytes)
rest=2101760
want="bf16=$((rest + 2 * 4194304)) fp8=$((rest + 4194304 + 17 * 4)) int8=$((rest + 4194304 + 14336 * 4))"
want="$want int4=$((rest + 2097152 + 32768 * 4)) int4-asym=$((rest + 2097152 + 32768 * 5))"
for be in $backends; do
    db=$tmp/q-$be.db
    "$DYNO" run --backend $be --model tiny-llama --weight-dtype ${formats// /,} --batch 2 --input-len 16 \
        --output-len 8 --warmup 0 --repeat 1 --db "$db" >/dev/null 2>&1
    check "$be: every format ran" test "$(sql "$db" "select count(*) from points where status = 'ok'")" = 5
    check "$be: each format stores the bytes it should (scales and zero points included)" \
        test "$(sql "$db" "select group_concat(weight_dtype || '=' || weight_bytes, ' ') from (select * from points order by id)")" = "$want"
    check "$be: fidelity against the bf16 weights for the quantized formats only, int8 closest" \
        test "$(sql "$db" "select count(*) from points where (weight_dtype = 'bf16' and kl_mean is null) or (weight_dtype != 'bf16' and token_agreement between 0.3 and 1 and kl_mean > 0 and kl_mean < 0.1 and kl_mean >= (select kl_mean from points where weight_dtype = 'int8'))")" = 5
done
prompt=3,141,59,265,358
for f in int8 int4; do
    want=$("$DYNO" generate --backend cpu-ref --model tiny-llama --prompt $prompt --max-new-tokens 6 --weight-dtype $f 2>&1)
    for be in $backends; do
        [ $be = cpu-ref ] && continue
        check "$f: $be generates cpu-ref's tokens ($want)" \
            test "$("$DYNO" generate --backend $be --model tiny-llama --prompt $prompt --max-new-tokens 6 --weight-dtype $f 2>&1)" = "$want"
    done
done

mo=$tmp/mopeq.db
"$DYNO" run --backend cpu --workload moe --model tiny-moe --weight-dtype bf16,mopeq:3,mopeq:2.5 --batch 2 --input-len 16 \
    --output-len 4 --warmup 0 --repeat 1 --db "$mo" >/dev/null 2>&1
"$DYNO" run --backend cpu --model tiny-llama --weight-dtype mopeq:3 --output-len 2 --input-len 8 --warmup 0 \
    --repeat 1 --db "$mo" >/dev/null 2>&1
python3 - "$mo" >"$tmp/bits" <<'PY'
import sqlite3, sys
for bits, want in sqlite3.connect(sys.argv[1]).execute(
        "select expert_bits, weight_dtype from points where weight_dtype like 'mopeq:%' and status = 'ok' order by id"):
    layers = bits.split(',')
    digits = [int(d) for d in ''.join(layers)]
    print(len(layers), len(digits), set(digits) <= {2, 3, 4}, round(sum(digits) / len(digits), 3), want)
PY
check "mopeq: 4 layers x 16 experts of 2, 3 or 4 bits, averaging the budget" \
    test "$(cat "$tmp/bits" | tr '\n' ';')" = "4 64 True 3.0 mopeq:3;4 64 True 2.5 mopeq:2.5;"
check "mopeq: the tiers differ (k-means found more than one)" \
    test "$(sql "$mo" "select count(*) from points where expert_bits like '%4%' and expert_bits like '%2%'")" = 2
# tiny-moe's 4 x 16 experts of 3 x 256 x 128 weights: 2 bytes each in bf16,
# half a byte and a scale per 128 in int4 groups
check "mopeq: experts stored in int4 groups" \
    test "$(sql "$mo" "select group_concat(b.weight_bytes - q.weight_bytes) from points b, points q where b.weight_dtype = 'bf16' and q.weight_dtype like 'mopeq:%'")" \
         = "$(( 64 * 98304 * 3 / 2 - 64 * 768 * 4 )),$(( 64 * 98304 * 3 / 2 - 64 * 768 * 4 ))"
check "mopeq: fewer bits cost more fidelity" \
    test "$(sql "$mo" "select (select kl_mean from points where weight_dtype = 'mopeq:2.5') > (select kl_mean from points where weight_dtype = 'mopeq:3') and (select kl_mean from points where weight_dtype = 'mopeq:3') > 0")" = 1
check "mopeq on a dense model is a skipped row that says why" \
    test "$(sql "$mo" "select status || ': ' || reason from points where model = 'tiny-llama'")" = \
         "skipped: --weight-dtype mopeq:3 quantizes experts: tiny-llama is a dense model"
"$DYNO" run --backend cpu --model tiny-llama --weight-dtype int3 --db "$tmp/bad.db" >/dev/null 2>"$tmp/err"
check "an unknown format stops the run, naming the flag" \
    grep -q -- "--weight-dtype.*int3.*mopeq:BITS" "$tmp/err"
"$DYNO" generate --backend cpu --model tiny-llama --prompt 1,2 --max-new-tokens 2 --weight-dtype mopeq:5 \
    >/dev/null 2>"$tmp/err2"
check "generate refuses mopeq:5 (bits are 2 to 4)" grep -q -- "--weight-dtype mopeq:5" "$tmp/err2"
finish

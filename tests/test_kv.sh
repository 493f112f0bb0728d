#!/usr/bin/env bash
# KV-cache dtypes and eviction from the command line: fp8 (E4M3) caches
# hold half of f16's bytes, int8 half plus a scale per slot and head;
# eviction holds whole blocks up to --kv-budget; each lossy point stores
# what it costs against the f32, unevicted reference: token agreement and
# mean KL, teacher-forced.
source "$(dirname "$0")/tap.sh"
backends="cpu-ref cpu"
"$DYNO" devices 2>/dev/null | grep -qE '^opencl +OpenCL' && backends="$backends opencl"
echo "1..$((3 * $(echo $backends | wc -w) + 6))"
for be in $backends; do
    db=$tmp/kv-$be.db
    "$DYNO" run --backend $be --model tiny-llama,tiny-moe --kv-dtype f16,fp8,int8 --batch 2 --input-len 24 \
        --output-len 8 --warmup 0 --repeat 1 --db "$db" >/dev/null 2>&1
    check "$be: every point ran" test "$(sql "$db" "select count(*) from points where status = 'ok'")" = 6
    # tiny-llama: 4 layers x 4 KV heads x 32 dims, K and V, 2 blocks of 16 slots per sequence
    check "$be: fp8 holds half of f16's bytes, int8 half plus a f32 scale per slot and head" \
        test "$(sql "$db" "select group_concat(kv_dtype || '=' || kv_bytes, ' ') from (select * from points where model = 'tiny-llama' order by id)")" \
        = "f16=131072 fp8=65536 int8=73728"
    check "$be: fidelity stored for the lossy caches only, in range" \
        test "$(sql "$db" "select count(*) from points where (kv_dtype = 'f16' and token_agreement is null and kl_mean is null) or (kv_dtype != 'f16' and token_agreement between 0.5 and 1 and kl_mean >= 0 and kl_mean < 0.1)")" = 6
done
check "int8 agrees with the reference at least as often as fp8 on tiny-llama (cpu)" \
    test "$(sql "$tmp/kv-cpu.db" "select (select token_agreement from points where model = 'tiny-llama' and kv_dtype = 'int8') >= (select token_agreement from points where model = 'tiny-llama' and kv_dtype = 'fp8')")" = 1

ev=$tmp/evict.db
"$DYNO" run --backend cpu --model tiny-llama --evict window,streaming,inv-key-norm,paged --kv-budget 96,4096 \
    --kv-dtype f32 --batch 2 --input-len 160 --output-len 48 --warmup 0 --repeat 1 --db "$ev" >/dev/null 2>&1
check "a budget above the sequence changes nothing: every token agrees, KL 0" \
    test "$(sql "$ev" "select count(*) from points where kv_budget = 4096 and status = 'ok' and token_agreement = 1 and kl_mean = 0")" = 4
# 6 blocks of 16 per sequence and the trash block, against 13 per sequence
check "a budget of 96 tokens holds 6 blocks per sequence (and one to drop a prompt's tokens into)" \
    test "$(sql "$ev" "select group_concat(distinct kv_bytes) from points where kv_budget = 96")" = \
         "$(( (2 * 6 + 1) * 16 * 4 * 2 * 4 * 32 * 4 ))"
check "evicting costs fidelity, and the policies differ" \
    test "$(sql "$ev" "select count(*) > 0 and count(distinct round(kl_mean, 9)) >= 2 and max(token_agreement) < 1 from points where kv_budget = 96 and status = 'ok'")" = 1
"$DYNO" run --backend cpu --model tiny-llama --evict paged,none --kv-budget 40 --output-len 2 --input-len 8 \
    --warmup 0 --repeat 1 --db "$tmp/bad.db" >/dev/null 2>&1
"$DYNO" run --backend cpu --model tiny-llama --evict window --output-len 2 --input-len 8 --warmup 0 --repeat 1 \
    --db "$tmp/bad.db" >/dev/null 2>&1
check "impossible eviction points are skipped rows that say why" \
    test "$(sql "$tmp/bad.db" "select group_concat(reason, '|') from (select * from points order by id)")" \
    = "--evict paged keeps whole blocks: --kv-budget 40 is below 3 blocks of 16|--kv-budget needs an --evict policy|--evict window needs --kv-budget"
"$DYNO" generate --model tiny-llama --prompt 5,17,42 --max-new-tokens 3 --kv-dtype int8 --backend cpu \
    >"$tmp/gen" 2>&1
check "generate takes an int8 cache" grep -qE '^[0-9]+,[0-9]+,[0-9]+$' "$tmp/gen"
finish

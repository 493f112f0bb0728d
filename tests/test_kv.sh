#!/usr/bin/env bash
# KV-cache dtypes and eviction from the command line: fp8 (E4M3) caches
# hold half of f16's bytes, int8 half plus a scale per slot and head;
# eviction holds whole blocks up to --kv-budget, per layer from a profile
# with --kv-budget-alloc profile (BaKlaVa); each lossy point stores what it
# costs against the f32, unevicted reference: token agreement and mean KL,
# teacher-forced.
source "$(dirname "$0")/tap.sh"
backends="cpu-ref cpu"
"$DYNO" devices 2>/dev/null | grep -qE '^opencl +OpenCL' && backends="$backends opencl"
echo "1..$((6 * $(echo $backends | wc -w) + 11))"
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
    # a 100-token prompt over a 64-token budget: paged chooses the prompt's tokens by score
    pdb=$tmp/profile-$be.db
    "$DYNO" run --backend $be --model tiny-llama --evict paged --kv-budget 64,4096 --kv-budget-alloc uniform,profile \
        --kv-dtype f32 --batch 2 --input-len 100 --output-len 16 --warmup 0 --repeat 1 --db "$pdb" >/dev/null 2>&1
    check "$be: profile budgets sum to the uniform total, differ between layers, each at least 3 blocks" python3 -c "
import sqlite3, sys
rows = sqlite3.connect('$pdb').execute(\"select kv_budget, kv_budget_map from points where status = 'ok' and kv_budget_map is not null\").fetchall()
maps = [(b, list(map(int, m.split(',')))) for b, m in rows]
sys.exit(0 if len(maps) == 2 and all(len(m) == 4 and sum(m) == 4 * b and len(set(m)) > 1 and min(m) >= 48 for b, m in maps) else 1)"
    # 4 KV heads x 32 dims x f32, K and V: each layer holds its budget's blocks
    # of 16 slots for each of the 2 sequences and one trash block (as uniform: 589824)
    check "$be: the KV bytes are the per-layer budgets' blocks, the uniform total" python3 -c "
import sqlite3, sys
b, m = sqlite3.connect('$pdb').execute(\"select kv_bytes, kv_budget_map from points where kv_budget = 64 and kv_budget_map is not null\").fetchone()
sys.exit(0 if b == 589824 == sum((int(x) // 16 * 2 + 1) * 16 * 4 * 32 * 4 * 2 for x in m.split(',')) else 1)"
    check "$be: a budget above the sequence changes nothing, per-layer or not; below it, fidelity is measured" \
        test "$(sql "$pdb" "select sum(kv_budget = 4096 and token_agreement = 1 and kl_mean = 0) || ' ' || sum(kv_budget = 64 and token_agreement between 0 and 1 and kl_mean > 0) from points where status = 'ok'")" = "2 2"
done
check "int8 agrees with the reference at least as often as fp8 on tiny-llama (cpu)" \
    test "$(sql "$tmp/kv-cpu.db" "select (select token_agreement from points where model = 'tiny-llama' and kv_dtype = 'int8') >= (select token_agreement from points where model = 'tiny-llama' and kv_dtype = 'fp8')")" = 1

ev=$tmp/evict.db
"$DYNO" run --backend cpu --model tiny-llama --evict window,streaming,inv-key-norm,paged --kv-budget 96,4096 \
    --kv-dtype f32 --batch 2 --input-len 160 --output-len 48 --warmup 0 --repeat 1 --db "$ev" >/dev/null 2>&1
check "a budget above the sequence changes nothing: every token agrees, KL 0" \
    test "$(sql "$ev" "select count(*) from points where kv_budget = 4096 and status = 'ok' and token_agreement = 1 and kl_mean = 0")" = 4
"$DYNO" run --backend cpu --model tiny-llama,tiny-moe --evict paged --kv-budget 4096 --kv-dtype f32 --batch 10 \
    --input-len 24 --output-len 70 --warmup 0 --repeat 1 --db "$tmp/long.db" >/dev/null 2>&1
check "over more sequences and steps than fidelity compares (8 of 10, 64 of 69), the reference's logits and tokens meet the tested decoder's step for step" \
    test "$(sql "$tmp/long.db" "select count(*) from points where status = 'ok' and token_agreement = 1 and kl_mean = 0")" = 2
# faulty is cpu-ref on a device of DYNO_FAULT_MEM bytes, 10,490,368 of them
# tiny-llama's bf16 weights; the reference of 8 prompts of 100 tokens needs
# 15.8 MB in one prefill pass, 10.1 MB in passes of 4, 5.8 MB in passes of 1
small="--backend faulty --model tiny-llama --evict paged --kv-budget 64 --kv-dtype f32 --batch 8 --input-len 100 --output-len 16 --warmup 0 --repeat 1"
"$DYNO" run $small --db "$tmp/fit.db" >/dev/null 2>&1
DYNO_FAULT_MEM=$((10490368 + 12000000)) "$DYNO" run $small --db "$tmp/fit.db" >/dev/null 2>&1
DYNO_FAULT_MEM=$((10490368 + 5000000)) "$DYNO" run $small --db "$tmp/fit.db" >/dev/null 2>&1
check "fidelity on a small device: prefill passes of fewer sequences, the same figures (cpu-ref)" \
    test "$(sql "$tmp/fit.db" "select count(distinct token_agreement || ' ' || kl_mean) || ' ' || count(*) from points where id <= 2 and status = 'ok' and kl_mean > 0")" = "1 2"
check "a reference too large for the device: the point keeps its timing, the reason gives the sizes" \
    test "$(sql "$tmp/fit.db" "select count(*) from points where id = 3 and status = 'ok' and e2e_ms > 0 and token_agreement is null and kl_mean is null and reason like 'fidelity not measured: % reference decoder (f32 KV cache) needs 0.01 GiB%free%'")" = 1
# the point's 15 decode steps of 4 layers call attention_decode 60 times, the reference's the next 60
for call in 100 150; do
    DYNO_FAULT_OP=attention_decode:$call "$DYNO" run $small --db "$tmp/fault.db" >/dev/null 2>&1
done
check "a device fault in the fidelity pass: the point keeps its timing, the reason names the decoder" \
    test "$(sql "$tmp/fault.db" "select group_concat(status || ' ' || (e2e_ms > 0) || ' ' || coalesce(kl_mean, '-') || ' ' || substr(reason, 1, instr(reason, 'decoder:') + 7), '|') from (select * from points order by id)")" \
    = "ok 1 - fidelity not measured: the reference decoder:|ok 1 - fidelity not measured: the tested decoder:"
# 6 blocks of 16 per sequence and the trash block, against 13 per sequence
check "a budget of 96 tokens holds 6 blocks per sequence (and one to drop a prompt's tokens into)" \
    test "$(sql "$ev" "select group_concat(distinct kv_bytes) from points where kv_budget = 96")" = \
         "$(( (2 * 6 + 1) * 16 * 4 * 2 * 4 * 32 * 4 ))"
check "evicting costs fidelity, and the policies differ" \
    test "$(sql "$ev" "select count(*) > 0 and count(distinct round(kl_mean, 9)) >= 2 and max(token_agreement) < 1 from points where kv_budget = 96 and status = 'ok'")" = 1
"$DYNO" run --backend cpu --model tiny-llama --evict streaming,inv-key-norm --kv-budget 96 --kv-budget-alloc profile \
    --kv-dtype f32 --batch 2 --input-len 160 --output-len 48 --warmup 0 --repeat 1 --db "$ev" >/dev/null 2>&1
check "per-layer budgets run with every policy, with fidelity" \
    test "$(sql "$ev" "select count(*) from points where kv_budget_map is not null and status = 'ok' and token_agreement between 0 and 1 and kl_mean > 0")" = 2
"$DYNO" run --backend cpu --model tiny-llama --evict paged,none --kv-budget 40 --output-len 2 --input-len 8 \
    --warmup 0 --repeat 1 --db "$tmp/bad.db" >/dev/null 2>&1
"$DYNO" run --backend cpu --model tiny-llama --evict window --output-len 2 --input-len 8 --warmup 0 --repeat 1 \
    --db "$tmp/bad.db" >/dev/null 2>&1
"$DYNO" run --backend cpu --model tiny-llama --evict streaming --kv-budget 32 --output-len 2 --input-len 8 --warmup 0 \
    --repeat 1 --db "$tmp/bad.db" >/dev/null 2>&1
"$DYNO" run --backend cpu --model tiny-llama --kv-budget-alloc profile --output-len 2 --input-len 8 --warmup 0 \
    --repeat 1 --db "$tmp/bad.db" >/dev/null 2>&1
check "impossible eviction points are skipped rows that say why" \
    test "$(sql "$tmp/bad.db" "select group_concat(reason, '|') from (select * from points order by id)")" \
    = "--evict paged keeps whole blocks: --kv-budget 40 is below 3 blocks of 16|--kv-budget needs an --evict policy|--evict window needs --kv-budget|--evict streaming keeps whole blocks: --kv-budget 32 is below 3 blocks of 16|--kv-budget-alloc profile shares an eviction budget between layers: it needs --evict and --kv-budget"
"$DYNO" generate --model tiny-llama --prompt 5,17,42 --max-new-tokens 3 --kv-dtype int8 --backend cpu \
    >"$tmp/gen" 2>&1
check "generate takes an int8 cache" grep -qE '^[0-9]+,[0-9]+,[0-9]+$' "$tmp/gen"
finish

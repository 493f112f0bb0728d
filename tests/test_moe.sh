#!/usr/bin/env bash
# The MoE workload from the command line: greedy tokens of tiny-moe equal on
# every CPU-side backend, the routing statistics a point stores, the MoE
# axes (--experts, --moe-ffn-dim, --top-k, --routing) and what they refuse.
# Per-architecture correctness against PyTorch is test_reference.sh's.
source "$(dirname "$0")/tap.sh"
backends="cpu-ref cpu"
"$DYNO" devices 2>/dev/null | grep -qE '^opencl +OpenCL' && backends="$backends opencl"
echo "1..$(($(echo $backends | wc -w) + 14))"

want=$("$DYNO" generate --model tiny-moe --prompt 5,17,42,7 --max-new-tokens 8 --backend cpu-ref 2>"$tmp/err")
for be in $backends; do
    got=$("$DYNO" generate --model tiny-moe --prompt 5,17,42,7 --max-new-tokens 8 --backend $be 2>>"$tmp/err")
    check "tiny-moe generate on $be equals cpu-ref ($got)" test -n "$want" -a "$got" = "$want"
done

db=$tmp/moe.db
"$DYNO" run --model tiny-moe --backend cpu --batch 2 --input-len 32 --output-len 6 --warmup 0 \
    --repeat 1 --routing model,uniform,zipf:1.5 --db "$db" >/dev/null 2>&1
rows=$(sql "$db" "select status, workload, experts, top_k, moe_ffn_dim, routing from points order by id")
check "a point per routing, with the model's MoE shape" test "$rows" = "ok|llm|16|4|128|model
ok|llm|16|4|128|uniform
ok|llm|16|4|128|zipf:1.5"
# 64 tokens x 4 experts over 16 experts: 16 per expert on average
check "expert load: mean 16 tokens per expert, max above it" \
    test "$(sql "$db" "select count(*) from points where expert_load_mean = 16 and expert_load_max > 16 and abs(expert_imbalance - expert_load_max / 16) < 1e-9")" = 3
check "zipf routing is more imbalanced than uniform" \
    test "$(sql "$db" "select (select expert_imbalance from points where routing = 'zipf:1.5') > (select expert_imbalance from points where routing = 'uniform')")" = 1
# 2 sequences x 4 experts: between 4 and 8 distinct experts per layer and step
check "decode touches between k and batch x k experts, and bw_util counts them" \
    test "$(sql "$db" "select count(*) from points where experts_touched between 4 and 8 and step_bytes > 0 and bw_util > 0")" = 3

"$DYNO" run --model tiny-moe --backend cpu --batch 1 --input-len 8 --output-len 3 --warmup 0 --repeat 1 \
    --experts 8,32 --top-k 1,2 --moe-ffn-dim 64 --db "$tmp/axes.db" >/dev/null 2>&1
check "--experts, --top-k and --moe-ffn-dim override the model's" \
    test "$(sql "$tmp/axes.db" "select group_concat(experts || 'x' || top_k || 'x' || moe_ffn_dim || ':' || status, ' ') from (select * from points order by id)")" \
    = "8x1x64:ok 8x2x64:ok 32x1x64:ok 32x2x64:ok"
check "batch 1, top-1: one expert per layer and step" \
    test "$(sql "$tmp/axes.db" "select count(*) from points where top_k = 1 and experts_touched = 1")" = 2

"$DYNO" run --model tiny-moe --backend cpu --batch 1 --input-len 8 --output-len 4 --warmup 0 --repeat 1 \
    --top-k lexi:4,lexi:9 --db "$tmp/lexi.db" >/dev/null 2>&1
check "--top-k lexi:N picks a k per layer summing to N, stored with the point" \
    test "$(sql "$tmp/lexi.db" "select group_concat(top_k_map, ' ') from (select * from points where status = 'ok' order by id)")" \
    = "1,1,1,1 $(sql "$tmp/lexi.db" "select top_k_map from points order by id desc limit 1")"
check "lexi:9 over 4 layers: the map sums to 9, and batch 1 touches 9/4 experts per layer" \
    python3 -c "import sys; m = '$(sql "$tmp/lexi.db" "select top_k_map || ';' || experts_touched from points order by id desc limit 1")'.split(';'); sys.exit(0 if sum(map(int, m[0].split(','))) == 9 and abs(float(m[1]) - 2.25) < 1e-9 else 1)"
"$DYNO" run --model tiny-moe,tiny-llama --backend cpu --batch 1 --input-len 8 --output-len 2 --warmup 0 \
    --repeat 1 --top-k 20,lexi:17 --db "$tmp/bad.db" >/dev/null 2>&1
check "impossible points are skipped rows that say why" \
    test "$(sql "$tmp/bad.db" "select group_concat(model || ':' || status || ':' || reason, '|') from (select * from points order by id)")" \
    = "tiny-moe:skipped:--top-k 20 exceeds the 16 experts|tiny-moe:skipped:--top-k lexi:17: the total must be between 4 and 16 (4 layers, k 1 to 4 each)|tiny-llama:skipped:--top-k applies to MoE models; tiny-llama is dense|tiny-llama:skipped:--top-k applies to MoE models; tiny-llama is dense"
"$DYNO" run --workload moe --model tiny-llama --backend cpu --warmup 0 --repeat 1 --output-len 2 \
    --input-len 4 --db "$tmp/bad.db" >/dev/null 2>&1
check "--workload moe on a dense model is a skipped row" \
    test "$(sql "$tmp/bad.db" "select reason from points order by id desc limit 1")" \
    = "tiny-llama is a dense model: it runs with --workload llm"
"$DYNO" run --workload moe-layer --model tiny-moe,tiny-llama --backend cpu --batch 8 --input-len 16 \
    --warmup 0 --repeat 2 --top-k 2 --db "$tmp/layer.db" >/dev/null 2>&1
check "--workload moe-layer times one block over batch x input-len tokens" \
    test "$(sql "$tmp/layer.db" "select count(*) from points where workload = 'moe-layer' and status = 'ok' and output_len is null and e2e_ms > 0 and abs(total_tok_s - 128 / (e2e_ms / 1e3)) < 1e-6 * total_tok_s and expert_load_mean = 16 and experts_touched between 2 and 16 and weight_bytes > 0")" = 1
check "--workload moe-layer on a dense model is a skipped row" \
    test "$(sql "$tmp/layer.db" "select status from points where model = 'tiny-llama'")" = skipped
DYNO_FAULT_OP=gemm_grouped:5 "$DYNO" run --model tiny-moe --backend faulty --batch 1 --input-len 4 \
    --output-len 3 --warmup 0 --repeat 1 --top-k 1,2 --db "$tmp/fault.db" >/dev/null 2>&1
check "a device fault in an MoE op fails its point and the sweep goes on" \
    test "$(sql "$tmp/fault.db" "select group_concat(status || ':' || (ifnull(reason, '') like '%gemm_grouped%'), ' ') from (select * from points order by id)")" = "failed:1 ok:0"
"$DYNO" run --model tiny-moe --routing zipf:0 --db "$tmp/bad.db" >/dev/null 2>"$tmp/err"
rc=$?
check "--routing zipf:0 is refused before anything runs (exit $rc)" \
    bash -c "[ $rc = 2 ] && grep -q -- '--routing' '$tmp/err'"
finish

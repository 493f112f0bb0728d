#!/usr/bin/env bash
# Sweeps that survive, end to end: --resume after kill -9, failed points
# measured again, --point-timeout, sweep files, progress, shards and merge,
# export and import.
set -u
source "$(dirname "$0")/tap.sh"
tiny="--backend cpu --model tiny-llama --input-len 8 --output-len 2 --warmup 0 --repeat 1 --layers 1"

# --- resume after kill -9 -------------------------------------------------
db=$tmp/kill.db
# 120 points: several seconds, so the kill lands mid-sweep
sweep="--batch 1-60 --input-len 8,16"
"$DYNO" run ${tiny/--input-len 8/} $sweep --db "$db" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1 600); do
    [ -f "$db" ] && [ "$(sql "$db" "select count(*) from points" 2>/dev/null)" -ge 5 ] 2>/dev/null && break
    sleep 0.05
done
kill -9 $pid 2>/dev/null
wait $pid 2>/dev/null
before=$(sql "$db" "select count(*) from points")
check "kill -9 mid-sweep: some points stored, not all ($before)" test "$before" -ge 5 -a "$before" -lt 120
"$DYNO" run ${tiny/--input-len 8/} $sweep --db "$db" --resume >"$tmp/resume.out" 2>&1
check "--resume completes the sweep" test $? -eq 0
check "every point present exactly once" test "$(sql "$db" "select count(*), count(distinct config_key), count(distinct batch || '/' || input_len) from points")" = "120|120|120"
check "integrity_check ok" test "$(sql "$db" "pragma integrity_check")" = ok
check "--resume says how many were stored before" grep -q "$before stored before, not run again" "$tmp/resume.out"
"$DYNO" run ${tiny/--input-len 8/} $sweep --db "$db" --resume >/dev/null 2>&1
check "a second --resume runs nothing" test "$(sql "$db" "select count(*) from points")" = 120
"$DYNO" run $tiny --batch 1-2 --seed 1 --db "$db" --resume >/dev/null 2>&1
check "another configuration is not taken for a stored one" test "$(sql "$db" "select count(*) from points")" = 122

# --- failed points are measured again, final ones are not -----------------
db=$tmp/retry.db
DYNO_FAULT_OP=attention_decode:2 "$DYNO" run ${tiny/cpu/faulty} --batch 1,2,3 --db "$db" >/dev/null 2>&1
"$DYNO" run ${tiny/cpu/faulty} --batch 1,2,3 --db "$db" --resume >/dev/null 2>&1
check "--resume measures the failed point again, only it" test "$(sql "$db" "select group_concat(batch || ':' || status, ' ') from (select * from points order by id)")" = "1:ok 2:failed 3:ok 2:ok"

# --- --point-timeout ---------------------------------------------------------
db=$tmp/timeout.db
"$DYNO" run $tiny --batch 1,2 --point-timeout 0.000001 --db "$db" >/dev/null 2>&1
check "--point-timeout: failed rows saying so, the sweep goes on" test "$(sql "$db" "select count(*) from points where status = 'failed' and reason like 'timed out after %'")" = 2
"$DYNO" run $tiny --batch 1 --point-timeout 600 --db "$db" >/dev/null 2>&1
check "--point-timeout not reached: ok" test "$(sql "$db" "select status from points where id = 3")" = ok
"$DYNO" run $tiny --point-timeout -1 --db "$db" 2>"$tmp/err"; rc=$?
check "--point-timeout must be positive" test $rc -eq 2 -a -n "$(grep point-timeout "$tmp/err")"

# --- stopping rule -------------------------------------------------------------
db=$tmp/stop.db
"$DYNO" run $tiny --repeat 2 --db "$db" >/dev/null 2>&1
check "without the rule: exactly --repeat repetitions, noise stored" test "$(sql "$db" "select repeat, e2e_noise >= 0 from points")" = "2|1"
"$DYNO" run $tiny --repeat 2 --min-time 0.05 --db "$db" >/dev/null 2>&1
# enough timed time, and not a repetition more than it took (beyond --repeat 2)
check "--min-time: repeats until the timed device time reaches it" test "$(sql "$db" "select sum(s.ns) >= 50000000 and count(*) = 2 * p.repeat and (p.repeat = 2 or sum(case when s.rep < p.repeat - 1 then s.ns else 0 end) < 50000000) from points p join samples s on s.point_id = p.id where p.id = 2")" = 1
# (2 s: a loaded machine once took 0.3 s over one repetition, stopping at 1)
"$DYNO" run $tiny --repeat 2 --max-noise 0.0000001 --max-time 2 --db "$db" >/dev/null 2>&1
check "--max-noise not met by --max-time: ok row saying so" test -n "$(sql "$db" "select reason from points where id = 3 and status = 'ok' and repeat >= 2 and reason like 'noise %above the 0.00% target after % repetitions%'")"
"$DYNO" run $tiny --max-noise 0 --db "$db" 2>/dev/null
check "--max-noise must be positive" test $? -eq 2

# --- sweep files -------------------------------------------------------------
cat >"$tmp/s.ini" <<'INI'
# defaults for every section
backend = cpu
input_len = 8
output-len = 2
warmup = 0
repeat = 1
layers = 1

[batches]
batch = 1-4*2

; a skipped row among ok ones
[dtypes]
batch = 2
weight-dtype = f32,mopeq:3
INI
"$DYNO" sweep "$tmp/s.ini" --dry-run --db "$tmp/dry.db" >"$tmp/dry" 2>&1
check "--dry-run prints one line per point" test "$(grep -c '^\[' "$tmp/dry")" = 5 -a "$(grep -c '^\[batches\] backend=cpu;.*input-len=8;output-len=2' "$tmp/dry")" = 3
check "--dry-run stores nothing" test ! -e "$tmp/dry.db"
db=$tmp/sweep.db
"$DYNO" sweep "$tmp/s.ini" --db "$db" >"$tmp/out" 2>&1
check "sweep runs every section in order" test "$(sql "$db" "select group_concat(batch || weight_dtype || status, ' ') from (select * from points order by id)")" = "1bf16ok 2bf16ok 4bf16ok 2f32ok 2mopeq:3skipped"
check "sweep's points match --dry-run" test "$(sql "$db" "select config_key from points order by id")" = "$(sed -n 's/^\[[a-z]*\] //p' "$tmp/dry")"
check "sweep stores its command line" test -n "$(sql "$db" "select argv from runs where argv like '%sweep%s.ini%'")"
"$DYNO" sweep "$tmp/s.ini" --db "$db" --resume >/dev/null 2>&1
check "sweep --resume runs nothing new" test "$(sql "$db" "select count(*) from points")" = 5
printf '[a]\nbatch = 1\nbatchsize = 4\n' >"$tmp/bad.ini"
"$DYNO" sweep "$tmp/bad.ini" --db "$tmp/bad.db" 2>"$tmp/err"; rc=$?
check "unknown key: exit 2, file:line and key named, nothing stored" test $rc -eq 2 -a -n "$(grep -F "bad.ini:3: unknown key \"batchsize\"" "$tmp/err")" -a ! -e "$tmp/bad.db"
printf '[a]\nbatch 1\n' >"$tmp/bad.ini"
"$DYNO" sweep "$tmp/bad.ini" 2>"$tmp/err"; rc=$?
check "malformed line: file:line" test $rc -eq 2 -a -n "$(grep -F "bad.ini:2:" "$tmp/err")"
printf 'batch = 1\n[a]\nweight-dtype = bf17\n' >"$tmp/bad.ini"
"$DYNO" sweep "$tmp/bad.ini" 2>"$tmp/err"; rc=$?
check "bad value: file:line and the value" test $rc -eq 2 -a -n "$(grep -F "bad.ini:3: --weight-dtype: unknown value \"bf17\"" "$tmp/err")"
printf '[a]\nmodel = no-such-model\n' >"$tmp/bad.ini"
"$DYNO" sweep "$tmp/bad.ini" --db "$tmp/bad.db" 2>"$tmp/err"; rc=$?
check "unknown model: section named, nothing stored" test $rc -eq 2 -a -n "$(grep -F "[a] --model: unknown model" "$tmp/err")" -a ! -e "$tmp/bad.db"
"$DYNO" sweep "$tmp/s.ini" --batch 2 2>"$tmp/err"; rc=$?
check "axes on the sweep command line are refused" test $rc -eq 2 -a -n "$(grep -F -- "--batch" "$tmp/err")"
"$DYNO" sweep "$DYNO_SOURCE_ROOT/bench/sweeps/example.ini" --dry-run >"$tmp/dry" 2>&1
check "the shipped example parses" test $? -eq 0 -a "$(tail -n 1 "$tmp/dry")" = "18 point(s)"

# --- progress ----------------------------------------------------------------
"$DYNO" run $tiny --batch 1,2,3 --db "$tmp/plain.db" >/dev/null 2>"$tmp/err"
check "not a terminal: one log line per point" test "$(grep -c '^dyno: \[[1-3]/3\] cpu tiny-llama batch [1-3] in 8 out 2: ok' "$tmp/err")" = 3
if script -qec true /dev/null >/dev/null 2>&1; then
    script -qec "'$DYNO' run $tiny --batch 1,2,3 --weight-dtype bf16,mopeq:3 --db '$tmp/tty.db'" /dev/null >"$tmp/tty" 2>&1
    check "terminal: a bar redrawn in place with done/total and ETA" grep -qa $'\r.*\[#*\.*\] 1/6 ETA [0-9hms]*  cpu tiny-llama batch 2' "$tmp/tty"
    check "terminal: only points that need a look get a line" test "$(tr '\r' '\n' <"$tmp/tty" | grep -ac 'dyno: \[[0-9]/6\]')" = 3 -a "$(tr '\r' '\n' <"$tmp/tty" | grep -ac 'dyno: \[[0-9]/6\].*: skipped: ')" = 3
else
    ok "terminal progress # SKIP script(1) cannot open a terminal here"
    ok "terminal progress lines # SKIP script(1) cannot open a terminal here"
fi

# --- shards and merge -------------------------------------------------------
"$DYNO" sweep "$tmp/s.ini" --dry-run >"$tmp/all" 2>/dev/null
for i in 0 1; do
    "$DYNO" sweep "$tmp/s.ini" --shard $i/3 --db "$tmp/sh.db" >/dev/null 2>"$tmp/shard$i.err"
done
check "--shard I/N: own database, said so" grep -q "shard 1/3 (from --shard).*sh.shard1.db" "$tmp/shard1.err"
env SLURM_ARRAY_TASK_ID=7 SLURM_ARRAY_TASK_MIN=5 SLURM_ARRAY_TASK_COUNT=3 \
    "$DYNO" sweep "$tmp/s.ini" --db "$tmp/sh.db" >/dev/null 2>"$tmp/shard2.err"
check "shard from a Slurm array task" grep -q "shard 2/3 (from SLURM_ARRAY_TASK_ID=7)" "$tmp/shard2.err"
env OMPI_COMM_WORLD_RANK=1 OMPI_COMM_WORLD_SIZE=2 "$DYNO" sweep "$tmp/s.ini" --dry-run 2>"$tmp/err" >"$tmp/mpi"
check "shard from MPI rank variables" test "$(grep -c '^\[' "$tmp/mpi")" = 2 -a -n "$(grep "OMPI_COMM_WORLD_RANK=1" "$tmp/err")"
env PMI_RANK=3 PMI_SIZE=2 "$DYNO" sweep "$tmp/s.ini" --dry-run >/dev/null 2>"$tmp/err"; rc=$?
check "a rank outside the size is refused" test $rc -eq 2 -a -n "$(grep PMI_RANK "$tmp/err")"
"$DYNO" merge "$tmp/sh.shard0.db" "$tmp/sh.shard1.db" "$tmp/sh.shard2.db" -o "$tmp/merged.db" >/dev/null 2>&1
check "merge exits 0" test $? -eq 0
check "the union of the shards is the unsharded sweep" test "$(sql "$tmp/merged.db" "select config_key from points order by config_key")" = "$(sed -n 's/^\[[a-z]*\] //p' "$tmp/all" | LC_ALL=C sort)"
counts="select (select count(*) from runs), (select count(*) from devices), (select count(*) from points), (select count(*) from samples)"
first=$(sql "$tmp/merged.db" "$counts")
"$DYNO" merge "$tmp/sh.shard0.db" "$tmp/sh.shard1.db" "$tmp/sh.shard2.db" "$tmp/merged.db" -o "$tmp/merged.db" >/dev/null 2>&1
check "merging again adds nothing" test "$(sql "$tmp/merged.db" "$counts")" = "$first"
check "merge keeps samples and device links" test "$(sql "$tmp/merged.db" "select count(*) from points p join devices d on d.id = p.device_id join runs r on r.id = p.run_id and r.id = d.run_id where p.status = 'ok'")" = 4 -a "$(sql "$tmp/merged.db" "select count(*) from samples")" = "$(( $(sql "$tmp/sh.shard0.db" "select count(*) from samples") + $(sql "$tmp/sh.shard1.db" "select count(*) from samples") + $(sql "$tmp/sh.shard2.db" "select count(*) from samples") ))"
echo "not a database" >"$tmp/foreign.db"
sum=$(md5sum <"$tmp/foreign.db")
"$DYNO" merge "$tmp/sh.shard0.db" "$tmp/foreign.db" -o "$tmp/m2.db" 2>"$tmp/err"; rc=$?
check "merge refuses a foreign input, untouched, before writing" test $rc -eq 1 -a -n "$(grep foreign.db "$tmp/err")" -a "$(md5sum <"$tmp/foreign.db")" = "$sum" -a ! -e "$tmp/m2.db"
"$DYNO" merge "$tmp/nowhere.db" -o "$tmp/m2.db" 2>/dev/null
check "merge refuses a missing input without creating it" test $? -eq 1 -a ! -e "$tmp/nowhere.db"

# --- export and import -------------------------------------------------------
db=$tmp/export.db
"$DYNO" run $tiny --batch 1,2 --db "$db" >/dev/null 2>&1
python3 - "$db" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
c.execute("update points set tag = ?, reason = ? where batch = 1",
          ('say "hi", then\nleave; ünïcödé 日本 \u2603', 'line one\r\nline two,"x"'))
c.execute("update points set tag = '' where batch = 2")
c.commit()
PY
"$DYNO" export --db "$db" --csv "$tmp/out.csv" 2>/dev/null
check "export --csv exits 0" test $? -eq 0
"$DYNO" export --db "$db" --jsonl "$tmp/out.jsonl" 2>/dev/null
check "export --jsonl exits 0" test $? -eq 0
cat >"$tmp/roundtrip.py" <<'PY'
import csv, json, math, sqlite3, sys
db, path, kind = sys.argv[1:4]
c = sqlite3.connect(db)
want = [dict(zip([d[0] for d in cur.description], row))
        for cur in [c.execute("select * from points order by id")] for row in cur.fetchall()]
if kind == "csv":
    with open(path, newline="", encoding="utf-8") as f:
        got = list(csv.DictReader(f))
else:
    got = [json.loads(line) for line in open(path, encoding="utf-8")]
assert len(got) == len(want) == 2, (len(got), len(want))
names = list(got[0].keys())
contract = ["backend", "device", "workload", "model", "batch", "input_len", "output_len",
            "experts", "top_k", "moe_ffn_dim", "routing", "weight_dtype", "kv_dtype", "evict",
            "kv_budget", "block_size", "image_size", "patch", "seed", "layers", "tag", "status",
            "reason", "source", "ttft_ms", "tpot_ms_p50", "tpot_ms_p90", "tpot_ms_p99", "e2e_ms",
            "output_tok_s", "total_tok_s", "images_s", "peak_mem_bytes", "weight_bytes", "kv_bytes",
            "energy_j", "avg_power_w", "bw_util", "flop_util"]
assert names[:len(contract)] == contract, names
for g, w in zip(got, want):
    for k in names:
        v = w[k]
        if kind == "jsonl":
            assert g[k] == v, (k, g[k], v)
        elif v is None:
            assert g[k] == "", (k, g[k])
        elif isinstance(v, float):
            assert float(g[k]) == v, (k, g[k], v)
        else:
            assert g[k] == str(v), (k, g[k], v)
PY
check "CSV round trip: hostile strings and every number exact" python3 "$tmp/roundtrip.py" "$db" "$tmp/out.csv" csv
check "JSONL round trip: hostile strings and every number exact" python3 "$tmp/roundtrip.py" "$db" "$tmp/out.jsonl" jsonl
check "CSV: an empty tag is quoted, a NULL one empty" grep -q ',"",' "$tmp/out.csv"
"$DYNO" export --db "$tmp/missing.db" --csv "$tmp/x.csv" 2>/dev/null
check "export of a missing database fails without creating it" test $? -eq 1 -a ! -e "$tmp/missing.db"

fixture=$DYNO_SOURCE_ROOT/tests/fixtures/llm_inference_bench.csv
db=$tmp/import.db
"$DYNO" run $tiny --db "$db" >/dev/null 2>&1
"$DYNO" import "$fixture" --db "$db" >/dev/null 2>&1
check "import exits 0" test $? -eq 0
check "import: a row per line, source from Framework" test "$(sql "$db" "select source, count(*) from points where source <> 'dyno' group by source order by source")" = "$(printf 'LLM-Inference-Bench/TensorRT-LLM|1\nLLM-Inference-Bench/vLLM|4')"
check "import: names mapped, study's name kept in tag" test "$(sql "$db" "select distinct device || '/' || model || '/' || tag from points where source like 'LLM%' and batch = 64")" = "NVIDIA H100/llama-3.1-8b/Llama-3-8B"
check "import: metrics from Latency, Throughput, avg_power" test "$(sql "$db" "select e2e_ms, total_tok_s, round(output_tok_s, 3), avg_power_w, round(energy_j, 3), input_len, output_len from points where source like 'LLM%' and batch = 1")" = "992.0|258.0|129.032|310.5|308.016|128|128"
check "import: extra columns read, several devices named" test "$(sql "$db" "select device || '|' || kv_dtype from points where model = 'Mixtral-8x7B'")" = "4 x NVIDIA A100|fp8"
before=$(sql "$db" "select count(*) from points")
{ head -n 3 "$fixture"; printf 'H100,1,vLLM,Llama-3-8B,"2048\n",eight,1.0,100\n'; tail -n 2 "$fixture"; } >"$tmp/bad.csv"
"$DYNO" import "$tmp/bad.csv" --db "$db" 2>"$tmp/err"; rc=$?
check "malformed row: file:line of the row, nothing stored" test $rc -eq 1 -a -n "$(grep -F "bad.csv:4: " "$tmp/err")" -a "$(sql "$db" "select count(*) from points")" = "$before"
{ head -n 5 "$fixture"; printf 'H100,1,vLLM,Llama-3-8B,128,1\n'; } >"$tmp/bad.csv"
"$DYNO" import "$tmp/bad.csv" --db "$db" 2>"$tmp/err"; rc=$?
check "short row: file:line and the field count" test $rc -eq 1 -a -n "$(grep -F "bad.csv:6: 6 fields, the header has 10" "$tmp/err")"
{ head -n 2 "$fixture"; printf 'H100,1,"vLLM,Llama-3-8B,128,1,1.0,100,,\n'; } >"$tmp/bad.csv"
"$DYNO" import "$tmp/bad.csv" --db "$db" 2>"$tmp/err"; rc=$?
check "unterminated quote: file:line" test $rc -eq 1 -a -n "$(grep -F "bad.csv:3: " "$tmp/err")"
printf 'Hardware,Framework,Model\nH100,vLLM,x\n' >"$tmp/bad.csv"
"$DYNO" import "$tmp/bad.csv" --db "$db" 2>"$tmp/err"; rc=$?
check "missing column: file:1 names it" test $rc -eq 1 -a -n "$(grep -F 'bad.csv:1: no column "Num of Hardware"' "$tmp/err")" -a "$(sql "$db" "select count(*) from points")" = "$before"

echo "1..$n"
finish

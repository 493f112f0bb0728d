#!/usr/bin/env bash
# Where an OLMoE-1B-7B batch-1 decode step goes on the CUDA backend (issue
# 7): the step with graphs, the per-op device time (DYNO_PROFILE_OPS=1), and
# every kernel of the last decode step alone under ncu (graphs off, so each
# launch is its own; durations without programmatic dependent launch's
# overlap). MODEL=... to profile another. Pack with bench/cuda/pack.sh; run
# with carry [".carry/dyno-bin.tar.xz"].
source bench/cuda/common.sh
export LD_LIBRARY_PATH=/tmp/dy
MODEL=${MODEL:-olmoe-1b-7b}
run() { timeout 240 /tmp/dy/dyno run --backend cuda --model "$MODEL" --kv-dtype bf16 --batch 1 "$@" \
            --db "$OUT/p.db" 2>&1 | grep -vE '^dyno: (\[|measuring)|^$|^\|--|points? stored'; }
run --input-len 1024 --output-len 128 --repeat 2
DYNO_PROFILE_OPS=1 run --input-len 1024 --output-len 64 --repeat 1
# the last step's kernels: graphs off, a short prompt, three steps
DYNO_GRAPHS=0 timeout 400 /usr/local/cuda/bin/ncu --clock-control none --metrics gpu__time_duration.sum --csv \
    /tmp/dy/dyno run --backend cuda --model "$MODEL" --kv-dtype bf16 --batch 1 --input-len 1000 \
    --output-len 3 --warmup 0 --repeat 1 --db "$OUT/ncu.db" > "$OUT/ncu.csv" 2> "$OUT/ncu.err"
python3 - "$OUT/ncu.csv" <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
hdr = rows[0]; rows = rows[1:]
ki, vi, ui = hdr.index("Kernel Name"), hdr.index("Metric Value"), hdr.index("Metric Unit")
ks = [(r[ki].split("(")[0].split("<")[0].replace("void ", ""), float(r[vi].replace(",", "")) *
       {"ns": 1e-3, "nsecond": 1e-3, "ms": 1e3, "msecond": 1e3}.get(r[ui], 1.0)) for r in rows]
print("kernels profiled:", len(ks))
# a step starts at the embedding gather: take the kernels since the last one
starts = [i for i, (n, _) in enumerate(ks) if "gather" in n]
step = ks[starts[-1]:] if starts else ks[-300:]
agg = collections.OrderedDict()
for n, us in step:
    c, t = agg.get(n, (0, 0.0)); agg[n] = (c + 1, t + us)
tot = sum(t for _, t in agg.values())
print(f"last step: {len(step)} kernels, {tot:.1f} us summed")
for n, (c, t) in sorted(agg.items(), key=lambda x: -x[1][1]):
    print(f"{n[:60]:60s} {c:5d} {t:9.1f} us {t / c:8.2f} us/call")
print("first layer in order:")
for n, us in step[:24]:
    print(f"  {n[:60]:60s} {us:8.2f}")
PY
tail -3 "$OUT/ncu.err"

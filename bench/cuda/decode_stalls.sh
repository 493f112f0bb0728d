#!/usr/bin/env bash
# Where decode attention's issue slots go: Nsight Compute over one call of
# the decode kernel (decode_fast_kernel, or decode_mma_kernel with
# DYNO_CUDA_DECODE_MMA=1 among CFGS) inside kv_bench at SHAPE (default
# Llama-3.1-8B's 64 x 1,536), at the card's own clocks. For each setting in
# CFGS (space-separated VAR=VALUE, "-" for none): the kernel's warp states
# per issued instruction, then the source page (SASS with stall samples and
# executed counts) as $OUT/stalls_N.csv, summarised as warp instructions
# per key and KV head by opcode and the instructions with the most samples.
# Carry .carry/kv_bench (pack_bench.sh kv_bench, kv_bench then xz'd).
set -u
OUT=${OUT:-/tmp/out}
mkdir -p /tmp/dy "$OUT"
tar xJf .carry/kv_bench/dyno-bin.tar.xz -C /tmp/dy
rm -f /tmp/dy/libdyno-opencl.so
xz -dc .carry/kv_bench/kv_bench.xz > /tmp/dy/kv_bench && chmod +x /tmp/dy/kv_bench
export DYNO_MODELS=$PWD/models DYNO_PLUGIN_PATH=${PLUGIN:+$PLUGIN:}/tmp/dy KV_BENCH_SHAPES=${SHAPE:-64x1536}
ncu=/usr/local/cuda/bin/ncu
i=0
for cfg in ${CFGS:--}; do
    i=$((i + 1))
    env $([ "$cfg" = - ] || echo "$cfg") $ncu --kernel-name regex:"decode_(fast|mma)" --launch-skip 3 \
        --launch-count 1 --clock-control none --section WarpStateStats --section SourceCounters \
        --section SpeedOfLight --import-source no -f -o /tmp/stalls_$i /tmp/dy/kv_bench > /dev/null 2>&1
    $ncu -i /tmp/stalls_$i.ncu-rep --page raw --csv > /tmp/raw_$i.csv 2>&1
    $ncu -i /tmp/stalls_$i.ncu-rep --page source --csv --print-source sass > "$OUT/stalls_$i.csv" 2>&1
    echo "### $cfg ($OUT/stalls_$i.csv)"
    python3 - /tmp/raw_$i.csv "$OUT/stalls_$i.csv" "$KV_BENCH_SHAPES" <<'PY'
import collections, csv, re, sys
raw = list(csv.reader(open(sys.argv[1])))
d = dict(zip(raw[0], raw[-1]))
num = lambda v: float(v.replace(",", "")) if re.match(r"^[\d.,]+$", v or "") else 0.0
unit = dict(zip(raw[0], raw[1])).get("gpu__time_duration.sum", "us")
us = num(d.get("gpu__time_duration.sum", "0")) / {"ns": 1e3, "nsecond": 1e3, "ms": 1e-3, "msecond": 1e-3}.get(unit, 1.0)
print("duration %.1f us, memory throughput %.0f%% of peak" % (us,
      num(d.get("gpu__compute_memory_throughput.avg.pct_of_peak_sustained_elapsed", "0"))))
st = sorted(((num(v), k) for k, v in d.items() if k.startswith("smsp__average_warps_issue_stalled_")
             and k.endswith("_per_issue_active.ratio")), reverse=True)
print("cycles per issued instruction by state: " + ", ".join(
    "%s %.2f" % (k[len("smsp__average_warps_issue_stalled_"):-len("_per_issue_active.ratio")], v) for v, k in st[:8]))
rows = list(csv.reader(open(sys.argv[2])))
hdr, data = rows[1], rows[2:]
ix = {h: n for n, h in enumerate(hdr)}
b, c = (int(x) for x in sys.argv[3].split(",")[0].split("x"))
keys = b * c * 8  # keys x KV heads (kv_bench: 8 KV heads)
ops, total, samples = collections.Counter(), 0, 0
for r in data:
    e = int(r[ix["Instructions Executed"]] or 0)
    total += e
    samples += int(r[ix["Warp Stall Sampling (All Samples)"]] or 0)
    src = re.sub(r"^@!?U?P\w+\s+", "", r[ix["Source"]].strip())
    ops[src.split(".")[0].split(" ")[0] if src else "?"] += e
print("warp instructions per key and KV head: %.1f; " % (total / keys) +
      ", ".join("%s %.1f" % (o, e / keys) for o, e in ops.most_common(12)))
stalls = [h for h in hdr if h.startswith("stall_") and "Not Issued" not in h]
for r in sorted(data, key=lambda r: -int(r[ix["Warp Stall Sampling (All Samples)"]] or 0))[:12]:
    s = int(r[ix["Warp Stall Sampling (All Samples)"]])
    why = max(stalls, key=lambda h: int(r[ix[h]] or 0))
    print("%5.1f%% %-60s %s" % (100.0 * s / samples, r[ix["Source"]].strip()[:60], why))
PY
done

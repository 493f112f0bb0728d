#!/usr/bin/env bash
# Where the head-dim-128 prefill attention kernel (flash_ws_kernel) waits,
# instruction by instruction: Nsight Compute's warp-state sampling over one
# call at Llama-3.1-8B 4 x 4,096 (one layer, bf16; ARGS gives other `dyno
# run` arguments), exported as the source page (SASS with its samples per
# stall reason) to $OUT/ws_source.csv, beside the kernel-wide warp states.
# Run with the pack of pack.sh (or PLUGIN=DIR for another plugin build).
source bench/cuda/common.sh
[ -n "${PLUGIN:-}" ] && export DYNO_PLUGIN_PATH=$PLUGIN:/tmp/dy
ARGS=${ARGS:-"--kv-dtype bf16 --model llama-3.1-8b --layers 1 --batch 4 --input-len 4096 --output-len 1"}
ncu=/usr/local/cuda/bin/ncu
$ncu --kernel-name regex:flash_ws --launch-count 1 --section SourceCounters --section WarpStateStats \
    --section SchedulerStats --section SpeedOfLight --import-source no -f -o /tmp/ws \
    /tmp/dy/dyno run --backend cuda $ARGS --repeat 1 --warmup 0 --db /tmp/n.db > "$OUT/ws_ncu.log" 2>&1
tail -3 "$OUT/ws_ncu.log"
$ncu -i /tmp/ws.ncu-rep --page details > "$OUT/ws_details.txt" 2>&1
grep -E 'Duration|Issue Slots Busy|Eligible Warps|No Eligible|Active Warps|Stall' "$OUT/ws_details.txt" | head -40
$ncu -i /tmp/ws.ncu-rep --page source --csv --print-source sass > "$OUT/ws_source.csv" 2>&1 ||
    $ncu -i /tmp/ws.ncu-rep --page source --csv > "$OUT/ws_source.csv" 2>&1
echo "source page: $(wc -l < "$OUT/ws_source.csv") lines"; head -c 600 "$OUT/ws_source.csv"; echo

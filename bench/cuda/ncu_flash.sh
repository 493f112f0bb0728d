#!/usr/bin/env bash
# Nsight Compute on the prefill attention kernels at Llama-3.1-8B
# 16 x 1024 (bf16; ARGS gives other `dyno run` arguments, e.g. a ViT):
# duration, issue-slot use, the tensor pipe's busy share and the warp stall
# reasons per issued instruction, for each value of DYNO_CUDA_FLASH_WGMMA in
# MODES; the wgmma kernels' SASS goes to $OUT.
source bench/cuda/common.sh
MODES=${MODES:-"1 0"}
ARGS=${ARGS:-"--kv-dtype bf16 --model llama-3.1-8b --batch 16 --input-len 1024 --output-len 1"}
cuobjdump -sass /tmp/dy/libdyno-cuda.so | awk '/Function : .*flash_(wgmma|ws|short)/{f=1} /Function : /&&!/flash_(wgmma|ws|short)/{f=0} f' \
    > "$OUT/sass_wgmma.txt"
echo "wgmma SASS: $(wc -l < "$OUT/sass_wgmma.txt") lines, $(grep -c HGMMA "$OUT/sass_wgmma.txt") HGMMA"
for m in $MODES; do
    DYNO_CUDA_FLASH_WGMMA=$m /usr/local/cuda/bin/ncu --kernel-name regex:flash --launch-skip 2 --launch-count 1 \
        --section SpeedOfLight --section ComputeWorkloadAnalysis \
        --metrics 'regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,regex:sm__pipe_tensor.*pct_of_peak_sustained_active,regex:sm__inst_executed_pipe_.*\.sum$' \
        /tmp/dy/dyno run --backend cuda $ARGS --repeat 1 --warmup 0 --db /tmp/n.db > "$OUT/ncu_$m.txt" 2>&1
    echo "== wgmma=$m"
    grep -E 'Duration|Issue Slots Busy|DRAM Throughput|Memory Throughput' "$OUT/ncu_$m.txt"
    grep -E 'stalled|pipe_tensor' "$OUT/ncu_$m.txt" | awk '$NF+0 > 0.05' | sort -k3 -t' ' | head -40
done

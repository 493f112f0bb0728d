#!/usr/bin/env bash
# The conformance suites on every OpenCL device of the lent machine (PoCL
# and NVIDIA's driver; test_conformance takes every device of a backend),
# beside CUDA: with the OpenCL plugin's own choice of kernels, then with
# each MODE's settings (a space-separated list, each a '+'-joined list of
# VAR=VALUE), e.g. MODES="DYNO_OCL_OPS=item DYNO_OCL_GQA_DECODE=0".
# Pack with bench/cuda/pack.sh; run with carry [".carry/dyno-bin.tar.xz"].
source bench/cuda/common.sh
export LD_LIBRARY_PATH=/tmp/dy
/tmp/dy/dyno devices 2>&1 | grep -iE 'opencl|cuda' | head -8
for mode in default ${MODES:-}; do
    settings=()
    [[ $mode != default ]] && IFS=+ read -ra settings <<<"$mode"
    for t in test_conformance test_conformance_quant; do
        log="$OUT/$t.${mode//[^A-Za-z0-9_]/_}.txt"
        env "${settings[@]}" timeout "${TO:-400}" /tmp/dy/$t > "$log" 2>&1
        echo "== $t $mode (exit $?): $(grep '^# backends' "$log")" \
             "$(grep -c '^ok' "$log") ok, $(grep -c '^not ok' "$log") not ok"
        grep -E '^not ok|^# .*(mismatch|differ|off|FAIL|fail)' "$log" | head -12
    done
done

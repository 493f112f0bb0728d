#!/bin/bash
# End to end against an independent float64 reference: tiny random
# checkpoints (tests/ref/make_checkpoint.py) decoded greedily by
# tests/ref/reference.py and by `dyno generate` on each CPU backend; the
# token ids must match exactly. Prints TAP; exits 1 if any case failed.
#
# The seeds are chosen so that every step's top-two logit gap is at least
# 3% of the logits' spread (reference.py --verbose shows the gaps), far
# above what f32 activations or a bf16 KV cache can move. For the MoE
# models also every router decision: over all layers and positions, the gap
# between the k-th and the (k+1)-th expert logit is at least 3% of that
# token's logit spread (3.5% for the bf16 one), where rounding every matmul
# input to bf16 moves router logits by about 1% of it; reference.py decodes
# the same tokens with that rounding. The MoE seeds were also picked so that
# the usual mistakes change the tokens: renormalising the top-k weights or
# not, dropping the k-th expert, Mixtral's w1/w3 swapped, an ungated shared
# expert, q/k norms per head instead of over the whole projection (or the
# reverse), after RoPE, or without their weights.
set -u

PYTHON=/usr/bin/python3
ROOT=${DYNO_SOURCE_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
PROMPT=5,17,42,7
NEW_TOKENS=8
BACKENDS=(cpu-ref cpu)

# name | make_checkpoint.py options
VARIANTS=(
  "llama-f32|--arch llama --dtype f32 --layout toplevel --rope default --tied 0 --shards 1 --seed 28"
  "llama-bf16-llama3-tied-sharded|--arch llama --dtype bf16 --layout rope_parameters --rope llama3 --tied 1 --shards 2 --seed 10"
  "qwen2-f16|--arch qwen2 --dtype f16 --layout toplevel --rope default --tied 0 --shards 1 --seed 5"
  "qwen2-bf16-tied|--arch qwen2 --dtype bf16 --layout toplevel --rope default --tied 1 --shards 1 --seed 10"
  "mixtral-f32|--arch mixtral --dtype f32 --layout toplevel --rope default --tied 0 --shards 1 --seed 11558"
  "qwen2_moe-bf16|--arch qwen2_moe --dtype bf16 --layout toplevel --rope default --tied 0 --shards 1 --seed 832"
  "olmoe-f32-sharded|--arch olmoe --dtype f32 --layout toplevel --rope default --tied 0 --shards 2 --seed 10235"
  "qwen3_moe-f32|--arch qwen3_moe --dtype f32 --layout rope_parameters --rope default --tied 0 --shards 1 --seed 12612"
)

if ! "$PYTHON" -c 'import torch' >/dev/null 2>&1; then
  echo "1..0 # SKIP torch not available"
  exit 0
fi
if [ -z "${DYNO:-}" ] || [ ! -x "$DYNO" ]; then
  echo "Bail out! \$DYNO (the dyno executable) is not set or not executable: '${DYNO:-}'"
  exit 1
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/dyno-test-reference.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT

echo "1..$(( ${#VARIANTS[@]} * ${#BACKENDS[@]} ))"
n=0
failed=0

# Prints each line of a file as a TAP diagnostic.
diag() {
  sed 's/^/# /' "$1"
}

for variant in "${VARIANTS[@]}"; do
  name=${variant%%|*}
  read -r -a options <<< "${variant#*|}"
  dir=$TMP/$name
  expected=""
  setup_ok=1
  if ! "$PYTHON" "$ROOT/tests/ref/make_checkpoint.py" "$dir" "${options[@]}" >"$TMP/log" 2>&1; then
    echo "# make_checkpoint.py failed for $name:"
    diag "$TMP/log"
    setup_ok=0
  elif ! expected=$("$PYTHON" "$ROOT/tests/ref/reference.py" "$dir" --prompt "$PROMPT" \
                      --max-new-tokens "$NEW_TOKENS" 2>"$TMP/log"); then
    echo "# reference.py failed for $name:"
    diag "$TMP/log"
    setup_ok=0
  fi

  for backend in "${BACKENDS[@]}"; do
    n=$((n + 1))
    label="$name on $backend"
    if [ "$setup_ok" = 0 ]; then
      echo "not ok $n - $label"
      failed=$((failed + 1))
      continue
    fi
    if got=$("$DYNO" generate --model-dir "$dir" --prompt "$PROMPT" --max-new-tokens "$NEW_TOKENS" \
               --backend "$backend" 2>"$TMP/log") && [ "$got" = "$expected" ]; then
      echo "ok $n - $label"
    else
      echo "not ok $n - $label"
      echo "# expected: $expected"
      echo "# got:      $got"
      diag "$TMP/log"
      failed=$((failed + 1))
    fi
  done
done

[ "$failed" = 0 ]

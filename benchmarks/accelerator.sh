#!/usr/bin/env bash
# Accelerator speed harness: nlpjax train vs its PyTorch twin on one GPU.
#
#   bash benchmarks/accelerator.sh [--size=gpt2-small|tiny]
#
# Runs from the repository root, in this order, each stage under its own timeout:
#   nlpjax      `nlpjax train` on experiments/gpt2_small_char.py (defaults: on a GPU,
#               bfloat16 compute and cuDNN flash attention)
#   torch       benchmarks/accel_torch.py: bf16 autocast, torch.compile, SDPA, fused AdamW
#   nlpjax_xla  the same as nlpjax with model.attention=xla
#   nlpjax_f32  the same as nlpjax with model.dtype=float32
#   check       benchmarks/accel_check.py: bf16 reference/xla/cudnn attention against the
#               float32 reference at a small shape (cuDNN is only checkable on a GPU)
# then prints the table of benchmarks/accel_report.py (tokens/s, ratio to torch, MFU at
# the card's bf16 peak). A failed or timed-out stage costs only its own row.
#
# Environment:
#   OUT               results: table.md, summary.json, logs/, runs/ (default /tmp/accel_out)
#   NLPJAX_DATA_DIR   raw data with tinyshakespeare/ (nothing is downloaded)
#   PYTHON            interpreter (default python3)
#   ACCEL_BUDGET_S    wall-clock budget of all stages together (default 285)
#   PEAK_TFLOPS       the card's dense bf16 peak for MFU (default 989: H100 SXM, H200)
# If a .whl/ directory exists here, its wheels (the project's pure-Python dependencies:
# grain, tensorflow-datasets, ml_collections, ...) are installed into /tmp/site first.
set -u
cd "$(dirname "$0")/.."

SIZE=gpt2-small
for arg in "$@"; do
  case "$arg" in
    --size=*) SIZE="${arg#--size=}" ;;
    *) echo "error: unknown argument $arg (use --size=gpt2-small or --size=tiny)" >&2; exit 2 ;;
  esac
done
case "$SIZE" in
  gpt2-small) VARIANT=bench ;;
  tiny) VARIANT=tiny ;;
  *) echo "error: --size must be gpt2-small or tiny, got $SIZE" >&2; exit 2 ;;
esac

PY="${PYTHON:-python3}"
OUT="${OUT:-/tmp/accel_out}"
BUDGET="${ACCEL_BUDGET_S:-285}"
PEAK="${PEAK_TFLOPS:-989}"
mkdir -p "$OUT/logs" "$OUT/runs"
export TFDS_DATA_DIR="${TFDS_DATA_DIR:-$OUT/tfds}"

if [ -d .whl ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
    > "$OUT/logs/pip.log" 2>&1 || echo "warning: wheel install failed, see $OUT/logs/pip.log"
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ -z "${NLPJAX_DATA_DIR:-}" ]; then
  echo "warning: NLPJAX_DATA_DIR is not set; nlpjax stages need Tiny Shakespeare there"
fi

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
  "$PY" -c "import jax; print('jax', jax.__version__, jax.devices())" 2>&1
  "$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())" 2>&1
} > "$OUT/logs/environment.txt"
cat "$OUT/logs/environment.txt"

START=$(date +%s)
# stage NAME CAP_S CMD...: runs CMD with timeout min(CAP_S, budget left); records its rc.
stage() {
  local name="$1" cap="$2"
  shift 2
  local left=$((BUDGET - ($(date +%s) - START)))
  local limit=$((cap < left ? cap : left))
  if [ "$limit" -lt 20 ]; then
    echo "skipped: no time left in ACCEL_BUDGET_S=$BUDGET" > "$OUT/logs/$name.log"
    echo 125 > "$OUT/logs/$name.rc"
    echo "== $name: skipped (budget spent)"
    return
  fi
  local t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" > "$OUT/logs/$name.log" 2>&1
  local rc=$?
  # nlpjax train saves and exits 0 on SIGTERM: a run that used its whole limit timed out
  if [ "$rc" -eq 0 ] && [ $(($(date +%s) - t0)) -ge "$limit" ]; then rc=124; fi
  echo "$rc" > "$OUT/logs/$name.rc"
  echo "== $name: rc=$rc in $(($(date +%s) - t0)) s (limit $limit s), log $OUT/logs/$name.log"
}

nlpjax_train() {
  local name="$1"
  shift
  rm -rf "$OUT/runs/$name"
  stage "$name" "$CAP_NLPJAX" "$PY" -m nlpjax.cli train \
    --config="experiments/gpt2_small_char.py:$VARIANT" --workdir="$OUT/runs/$name" "$@"
}

CAP_NLPJAX=110
CAP_TORCH=120
nlpjax_train nlpjax
rm -f "$OUT/torch.json"
stage torch "$CAP_TORCH" "$PY" benchmarks/accel_torch.py --size="$SIZE" --json="$OUT/torch.json"
nlpjax_train nlpjax_xla --config.model.attention=xla
nlpjax_train nlpjax_f32 --config.model.dtype=float32
rm -f "$OUT/check.json"
stage check 60 "$PY" benchmarks/accel_check.py --json="$OUT/check.json"

"$PY" benchmarks/accel_report.py --out="$OUT" --size="$SIZE" --peak_tflops="$PEAK" \
  2> "$OUT/logs/report.log" || { echo "report failed:"; cat "$OUT/logs/report.log"; exit 1; }
echo "results in $OUT (table.md, summary.json, logs/)"

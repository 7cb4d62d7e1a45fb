#!/usr/bin/env bash
# tljax beside timm on this GPU, in one table (docs/scale.md says how to read it).
#
#   benchmarks/gpu_suite.sh [seconds]       # default 420: under 8 minutes with start-up
#   benchmarks/gpu_suite.sh --ab [seconds]  # A/B rows of XLA flags (a second call, when
#                                           # device time is left; default 480)
#
# --ab measures tljax's ViT and CNN full fine-tuning steps under default XLA flags and under
# each flag of AB_FLAGS flipped, one process per flag (XLA reads its flags once per process),
# the default first so the rows compare on one card in one call.
#
# TLJAX_GPU_CACHE=DIR keeps JAX's compilation cache and XLA's autotune results in
# DIR/<card> (default /tmp/tljax_xla_cache/<card>): set it under $OUT to bring the cache back,
# then carry it into the next GPU run of the same card kind, whose rows compile from it
# (each row's compile_s says).
#
# Writes table.md, rows.jsonl, profile.md (top XLA ops of tljax's ViT-B/16 step) and the
# logs to $OUT when it is set (the device tool's output folder), else /tmp/tljax_gpu_suite.
# Needs JAX with a GPU, flax, optax, ml_collections, absl, etils, torch with CUDA, timm and
# peft; a missing one is one line each and exit 1, before anything runs.
set -u
cd "$(dirname "$0")/.."
ab=0
if [ "${1:-}" = "--ab" ]; then ab=1; shift; fi
budget=${1:-$([ "$ab" = 1 ] && echo 480 || echo 420)}
# Each flipped from the default of the XLA that jax 0.10 ships with.
AB_FLAGS="--xla_gpu_enable_cudnn_layer_norm=true --xla_gpu_enable_cublaslt=true --xla_gpu_enable_triton_gemm=false"
out=${OUT:-/tmp/tljax_gpu_suite}
py=${PYTHON:-python3}
mkdir -p "$out"

missing=0
for module in jax flax optax ml_collections absl etils torch timm peft; do
  if ! "$py" -c "import $module" >/dev/null 2>&1; then
    echo "gpu_suite: Python package '$module' is missing for $py: install it, or carry its wheel (docs/scale.md, 'GPU suite')"
    missing=1
  fi
done
if [ "$missing" = 0 ]; then
  "$py" -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" >/dev/null 2>&1 ||
    { echo "gpu_suite: JAX sees no GPU (jax.default_backend() is not 'gpu'): install jax[cuda]"; missing=1; }
  "$py" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" >/dev/null 2>&1 ||
    { echo "gpu_suite: PyTorch sees no GPU (torch.cuda.is_available() is False)"; missing=1; }
fi
[ "$missing" = 0 ] || exit 1

rm -f "$out/rows.jsonl"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$out/card.txt" 2>&1
card=$(head -1 "$out/card.txt" | cut -d, -f1 | tr -c 'A-Za-z0-9\n' '_')
cache="${TLJAX_GPU_CACHE:-/tmp/tljax_xla_cache}/$card"
mkdir -p "$cache"
# JAX may take 90 % of the card (its default pool is 75 %); torch runs after it exits.
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 PYTHONUNBUFFERED=1
if [ "$ab" = 1 ]; then
  # Baseline then one process per flag, each an equal share; a flag this XLA does not know
  # ends its process at once (its log says so) and costs nothing.
  share=$((budget / 4 + 1))
  for flag in "" $AB_FLAGS; do
    XLA_FLAGS="${XLA_FLAGS:-} $flag" timeout "$share" "$py" -m benchmarks.gpu_tljax --rows=0,1 \
      --out="$out/rows.jsonl" --cache_dir="$cache" --budget_s=$((share * 60 / 100)) \
      --variant="${flag:+XLA $flag}" >> "$out/ab.log" 2>&1 ||
      echo "gpu_suite: the A/B process ${flag:-(default flags)} stopped early (exit $?; $out/ab.log)"
  done
  { echo "$(cat "$out/card.txt"), $(date -u +%Y-%m-%d), XLA flag A/B"
    "$py" -m benchmarks.gpu_table "$out/rows.jsonl"; } > "$out/table.md"
  cat "$out/table.md"
  exit 0
fi
tljax_s=$((budget * 55 / 100 + 1))  # at least 1: `timeout 0` would mean no limit
timm_s=$((budget - tljax_s + 2))
# Each side stops starting rows at 75 % of its share (a row may take a minute to compile);
# `timeout` is the hard stop.
timeout "$tljax_s" "$py" -m benchmarks.gpu_tljax --out="$out/rows.jsonl" --cache_dir="$cache" \
  --budget_s=$((tljax_s * 75 / 100)) --profile_out="$out/profile.md" > "$out/tljax.log" 2>&1 ||
  echo "gpu_suite: the tljax half stopped early (exit $?; $out/tljax.log)"
timeout "$timm_s" "$py" -m benchmarks.gpu_timm --out="$out/rows.jsonl" \
  --budget_s=$((timm_s * 75 / 100)) > "$out/timm.log" 2>&1 ||
  echo "gpu_suite: the timm half stopped early (exit $?; $out/timm.log)"
grep -h "^tljax:\|^timm" "$out/tljax.log" "$out/timm.log"
{ echo "$(cat "$out/card.txt"), $(date -u +%Y-%m-%d)"; "$py" -m benchmarks.gpu_table "$out/rows.jsonl"; } > "$out/table.md"
cat "$out/table.md"
[ -f "$out/profile.md" ] && { echo; echo "Top XLA ops of tljax's full fine-tuning steps:"; cat "$out/profile.md"; }
rm -rf "$out/profile.md.trace"

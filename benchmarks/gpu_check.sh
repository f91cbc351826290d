#!/usr/bin/env bash
# GPU check for the profiler (issue 3): measure a handful of fbnet archs at 224x224 with
# the CUDA execution provider (IO binding: input and output resident on the GPU, timed
# region = run_with_iobinding + synchronize_outputs) and, if it loads, TensorRT (engine
# cache under $CACHE, build time stored apart as engine_build_ms).  Writes
#   data/latency/fbnet224_<gpu-name>.csv   (one row per arch and provider)
# No --allow-fallback here: if the GPU provider cannot load, this script fails loudly.
#
# usage: benchmarks/gpu_check.sh [N_ARCHS]        (env: PY=python to use, default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
N=${1:-8}
command -v nvidia-smi >/dev/null || { echo "gpu_check: nvidia-smi not found: no NVIDIA GPU here" >&2; exit 1; }
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr -cs 'A-Za-z0-9' '_' | sed 's/_*$//')
WORK=$(mktemp -d)
DB="$WORK/gpu.db"
CACHE="$WORK/trt_cache"
echo "gpu_check: $GPU, $N fbnet archs, db $DB"
$PY -m hwnas.cli profile --space fbnet --num-archs "$N" --db "$DB" --ep cuda --resolution 224 --json
if $PY -m hwnas.cli profile --space fbnet --num-archs "$N" --db "$DB" --ep tensorrt --trt-cache "$CACHE" --resolution 224 --json; then
  echo "gpu_check: TensorRT done"
else
  echo "gpu_check: TensorRT EP not usable here (see the error above); CUDA results only" >&2
fi
mkdir -p data/latency
OUT="data/latency/fbnet224_${GPU}.csv"
$PY -m hwnas.cli data export --db "$DB" --space fbnet --csv "$OUT"
$PY -m hwnas.cli data show --db "$DB"
echo "gpu_check: wrote $OUT"

#!/usr/bin/env bash
# Measure the target devices of the few-shot adaptation benchmark (benchmarks/adapt_bench.py).
# Each is a genuinely different latency function this machine can make; the base of every
# pair is a shipped dataset (measured on another host: see data/latency/README.md).
#   tiny_here      tiny, 1 thread, batch 1   (same settings, this host: what demo --quick meets)
#   tiny_2t_b8     tiny, 2 threads, batch 8
#   tiny_b32       tiny, 1 thread, batch 32
#   fbnet160       fbnet, 1 thread, batch 1, 160x160 input (base: 224)
# Usage: bash benchmarks/adapt_targets.sh [N_ARCHS]   (default 250; resumable)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-250}
OUT=benchmarks/work/adapt
mkdir -p "$OUT"
H=.venv/bin/hwnas
$H profile --space tiny -n "$N" --seed 7 --db "$OUT/tiny_here.db"
$H profile --space tiny -n "$N" --seed 7 --threads 2 --batch-size 8 --db "$OUT/tiny_2t_b8.db"
$H profile --space tiny -n "$N" --seed 7 --batch-size 32 --db "$OUT/tiny_b32.db"
$H profile --space fbnet -n "$N" --seed 7 --resolution 160 --db "$OUT/fbnet160.db"
for k in tiny_here tiny_2t_b8 tiny_b32 fbnet160; do
  $H data export --db "$OUT/$k.db" --csv "data/latency/adapt/$k.csv"
done

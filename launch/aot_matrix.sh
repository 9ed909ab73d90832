#!/usr/bin/env bash
# Compile every shipped config for its intended targets on this (CPU-only) machine and keep the output.
#
#   launch/aot_matrix.sh [OUT_DIR]        # default launch/results/aot
#
# Needs the `aot` extra (pip install -e ".[aot]": libtpu and the CUDA compiler plugin). Each config x
# target writes OUT_DIR/<config>_<target>.txt with one `RESULT {json}` line per program (train step,
# eval step) and the table; the README's fit table is every file's train_step row (BENCHMARKS.md 5).
# Compiling the 2.8B train step took 4 (H100) to 20 (TPU) minutes on two shared CPU cores, ~5 GB of RAM.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-launch/results/aot}"
mkdir -p "${OUT_DIR}"
export JAX_PLATFORMS=cpu

run() {  # config target [extra flags...]
  local config="$1" target="$2"
  shift 2
  local name
  name="$(basename "${config}" .py)_${target}"
  echo "== ${config} on ${target} $*"
  python -m dpo_jax.aot --config="${config}" --target="${target}" "$@" >"${OUT_DIR}/${name}.txt" 2>"${OUT_DIR}/${name}.log"
  echo "   exit $? -> ${OUT_DIR}/${name}.txt"
}

# tldr.py and hh.py share the model (Pythia-2.8B) and every shape: one set of compiles stands for both.
for target in v4-8 v5e-16 v5p-8 h100 8xh100; do
  run configs/tldr.py "${target}"
done
for target in v5e-8 h100; do
  run configs/imdb.py "${target}"
done

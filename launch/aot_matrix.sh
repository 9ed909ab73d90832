#!/usr/bin/env bash
# Compile every shipped config for its intended targets on this (CPU-only) machine and keep the output.
#
#   launch/aot_matrix.sh [OUT_DIR] [PART...]   # default launch/results/aot; parts: train ppo sample score gptj
#
# Needs the `aot` extra (pip install -e ".[aot]": libtpu and the CUDA compiler plugin). Each config x
# target writes OUT_DIR/<config>_<target>.txt (train: one `RESULT {json}` line per program, train step
# and eval step, and the table), OUT_DIR/hh_ppo_<target>.txt (stage=ppo: rollout, score,
# rollout_targets, ppo_update) and OUT_DIR/<config>_<sample|score>_<target>.txt (the evaluations'
# decode and scoring programs at the config's `sampling` shapes); BENCHMARKS.md 5 tabulates them.
# `gptj` compiles tldr.py's default, the paper's GPT-J-6B TL;DR policy, for its targets:
# OUT_DIR/tldr_gptj[_sample|_score|_precompute]_<target>.txt (BENCHMARKS.md 7).
# Compiling the 2.8B train step took 4 (H100) to 20 (TPU) minutes on two shared CPU cores, ~5 GB of RAM;
# GPT-J-6B's (blocks scanned) 1-18 minutes, ~3 GB.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-launch/results/aot}"
shift || true
PARTS="${*:-train ppo sample score gptj}"
mkdir -p "${OUT_DIR}"
export JAX_PLATFORMS=cpu

run() {  # config target [extra flags...]
  local config="$1" target="$2"
  shift 2
  local name
  name="$(basename "${config%%:*}" .py)_${NAME_PART:+${NAME_PART}_}${target}"  # tldr.py:pythia -> tldr_...
  echo "== ${config} on ${target} $*"
  python -m dpo_jax.aot --config="${config}" --target="${target}" "$@" >"${OUT_DIR}/${name}.txt" 2>"${OUT_DIR}/${name}.log"
  echo "   exit $? -> ${OUT_DIR}/${name}.txt"
}

# tldr.py:pythia and hh.py share the model (Pythia-2.8B) and every shape: one set of compiles stands for
# both (hh.py for PPO, the paper's HH model); tldr.py itself is GPT-J-6B (part gptj).
for part in ${PARTS}; do
  case "${part}" in
    train)
      for target in v4-8 v5e-16 v5p-8 h100 8xh100; do NAME_PART="" run configs/tldr.py:pythia "${target}"; done
      for target in v5e-8 h100; do NAME_PART="" run configs/imdb.py "${target}"; done
      ;;
    ppo)
      for target in v4-8 v5e-16 v5p-8 h100 8xh100; do
        NAME_PART=ppo run configs/hh.py "${target}" --config.stage=ppo
      done
      ;;
    sample|score)
      for target in v4-8 v5e-16 v5p-8 h100 8xh100; do
        NAME_PART="${part}" run configs/tldr.py:pythia "${target}" "--program=${part}"
      done
      for target in v5e-8 h100; do NAME_PART="${part}" run configs/imdb.py "${target}" "--program=${part}"; done
      ;;
    gptj)
      # BENCHMARKS.md 7.1: the defaults (blocks scanned) where they fit, each target's own setting otherwise.
      for target in v4-8 v5p-8 v5e-16 8xh100; do
        for program in sample score; do NAME_PART="gptj_${program}" run configs/tldr.py "${target}" "--program=${program}"; done
      done
      for target in v4-8 v5p-8 8xh100; do NAME_PART="gptj" run configs/tldr.py "${target}"; done
      NAME_PART="gptj_accum4" run configs/tldr.py v5e-16 --config.grad_accum_steps=4  # 16 chips: 16-pair micro-batches
      # The recipe's DPO stages precompute the reference log-probs: that pass as its own program; on a v4-8
      # with 4-pair micro-batches too (the one setting that fits there).
      NAME_PART="gptj_precompute" run configs/tldr.py:precompute 8xh100
      NAME_PART="gptj_precompute_accum16" run configs/tldr.py:precompute v4-8 --config.grad_accum_steps=16
      ;;
    *) echo "unknown part ${part} (train ppo sample score gptj)" >&2; exit 2 ;;
  esac
done

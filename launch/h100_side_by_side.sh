#!/usr/bin/env bash
# dpo_jax and TRL's DPOTrainer on the same GPU in one call: same model, 64 pairs x 512 tokens,
# random init, AdamW, bf16; prints both RESULT lines and one SIDE_BY_SIDE line with the ratio.
#
#   bash launch/h100_side_by_side.sh MODEL MICRO [pre]      (run from the repo root, on the GPU)
#
# MODEL: gpt2 | pythia-1.4b | pythia-2.8b | ...; MICRO: pairs per micro-batch (both systems);
# pre: precomputed reference log-probs in both (TRL's `pre` flag, our --precompute_ref).
# Needs .anchors/ (a copy of launch/anchors: `cp -r launch/anchors .anchors`) and, where the image lacks them, wheels in .whl/
# (BENCHMARKS.md section 2 says how to prepare both). STEPS (default 10) timed steps each.
set -euo pipefail
model=$1
micro=$2
mode=${3:-}
pairs=64
steps=${STEPS:-10}
out=${OUT:-/tmp}
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
ours=(python3 -m dpo_jax.bench "--model=$model" "--pairs=$pairs" --seq=512 "--micro=$micro" "--steps=$steps")
[ "$mode" = pre ] && ours+=(--precompute_ref)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/device.txt"
"${ours[@]}" 2>"$out/ours.log" | tee "$out/ours.txt"
python3 .anchors/trl_dpo_bench.py "$model" "$micro" $((pairs / micro)) "$steps" $mode 2>"$out/trl.log" | tee "$out/trl.txt"
python3 - "$out/ours.txt" "$out/trl.txt" <<'PY'
import json, sys

def result(path):
    lines = [line for line in open(path) if line.startswith("RESULT ")]
    return json.loads(lines[-1][len("RESULT "):])

ours, trl = result(sys.argv[1]), result(sys.argv[2])
matmul_peak = 798e12  # measured bf16 8192^3 matmul on this H100 (.library/device/KINDS.md)
print("SIDE_BY_SIDE " + json.dumps(dict(
    model=ours["model"], micro=ours["micro"], precompute_ref=ours["precompute_ref"],
    ours_tokens_per_s=ours["tokens_per_second"], trl_tokens_per_s=trl["tokens_per_s"],
    ratio=round(ours["tokens_per_second"] / trl["tokens_per_s"], 3),
    ours_mfu_vs_798=round(ours["tflops"] * 1e12 / matmul_peak, 4),
    ours_peak_memory_gb=ours["peak_memory_gb"], attention_kernel=ours["attention_kernel"],
)), flush=True)
PY

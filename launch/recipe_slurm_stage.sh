#!/usr/bin/env bash
# One training, sampling or scoring stage of a recipe on every node of the Slurm allocation (used by
# recipe_slurm.sbatch as --recipe.launcher): `recipe_slurm_stage.sh python -m dpo_jax.main ...`, or
# `... python -m dpo_jax.make_pairs ...` (every evaluation command joins jax.distributed too).
set -euo pipefail
exec srun --kill-on-bad-exit=1 bash -c '
  export JAX_NUM_PROCESSES="${SLURM_NTASKS}"
  export JAX_PROCESS_ID="${SLURM_PROCID}"
  exec "$@"
' dpo_jax_stage "$@"

#!/usr/bin/env bash
# Create a Cloud TPU VM slice, install dpo_jax on every worker, run training on all of them, delete it.
#
#   launch/tpu_vm.sh [--dry-run] create
#   launch/tpu_vm.sh [--dry-run] setup
#   launch/tpu_vm.sh [--dry-run] run [-- EXTRA_TRAIN_ARGS...]
#   launch/tpu_vm.sh [--dry-run] recipe [-- EXPERIMENT_ARGS...]
#   launch/tpu_vm.sh [--dry-run] delete
#
# --dry-run prints the gcloud commands instead of running them.
#
# Settings come from the environment (defaults in brackets):
#   TPU_NAME          name of the TPU VM                              [dpo-jax]
#   ZONE              zone of the TPU                                 [us-central2-b]
#   ACCELERATOR_TYPE  slice type, e.g. v4-8, v4-32, v5litepod-16      [v4-8]
#   TPU_VERSION       TPU VM runtime image                            [tpu-ubuntu2204-base]
#   PROJECT           gcloud project; empty uses gcloud's default     []
#   SPOT              1 creates a preemptible (spot) slice            [0]
#   REPO_URL          git URL cloned on each worker; empty copies     []
#                     this checkout (git archive of HEAD) with scp instead
#   REPO_REF          branch, tag or commit checked out after cloning [main]
#   JAX_TPU_SPEC      pip requirement for jax with TPU support        [jax[tpu]]
#   PYTHON_VERSION    python for the workers' venv (~/venv-dpo-jax); installed from the deadsnakes
#                     PPA when the image lacks it (Ubuntu 22.04 images ship 3.10)  [3.11]
#   CONFIG            config passed to dpo_jax.main                   [configs/tldr.py]
#   WORKDIR           checkpoints and logs; must be a gs:// path that every worker can write
#                                                                     [gs://YOUR_BUCKET/dpo_jax/run]
#   RECIPE            recipe for `recipe` (python -m dpo_jax.experiment)  [tldr]
#   RECIPE_DIR        the recipe's directory on the workers, relative to the checkout: a local disk
#                     on a single-host slice, else a filesystem every worker mounts at the same path
#                     (recipes do not write gs:// paths); outside the checkout, which `setup`
#                     replaces                                        [../recipes/RECIPE = ~/recipes/RECIPE]
#   RECIPE_SESSION    names one launch of `recipe`                    [the launch's UTC time and pid]
#
# `recipe` runs a recipe of the paper at --scale=paper on every worker of the slice. Worker 0 (its
# number from the TPU VM's metadata) leads: it takes RECIPE_DIR's lock, keeps the stages' books and
# writes the report; the others follow it (dpo_jax.recipes.engine.Runner), running each training,
# sampling and scoring stage beside the lead's (each command joins jax.distributed; in the evaluation
# commands process 0 alone writes) and waiting for the stages that need no devices. On a multi-host
# slice RECIPE_DIR must be one filesystem every worker mounts at the same path (e.g. Filestore NFS);
# `recipe` passes the launch a session name, so a follower takes no earlier launch's failure for this
# one's. A spot preemption reaches the running stage, which saves and exits 75, and so does the
# recipe; `recipe` again resumes (finished stages reused).
#
# Every worker runs the same command; jax.distributed.initialize() inside dpo_jax.main finds the
# other workers by itself on Cloud TPU. A spot preemption sends SIGTERM, on which the trainer saves
# a checkpoint and exits; `run` again resumes from it.
set -euo pipefail

TPU_NAME="${TPU_NAME:-dpo-jax}"
ZONE="${ZONE:-us-central2-b}"
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v4-8}"
TPU_VERSION="${TPU_VERSION:-tpu-ubuntu2204-base}"
PROJECT="${PROJECT:-}"
SPOT="${SPOT:-0}"
REPO_URL="${REPO_URL:-}"
REPO_REF="${REPO_REF:-main}"
JAX_TPU_SPEC="${JAX_TPU_SPEC:-jax[tpu]}"
PYTHON_VERSION="${PYTHON_VERSION:-3.11}"
CONFIG="${CONFIG:-configs/tldr.py}"
RECIPE="${RECIPE:-tldr}"
RECIPE_DIR="${RECIPE_DIR:-../recipes/${RECIPE}}"
WORKDIR="${WORKDIR:-gs://YOUR_BUCKET/dpo_jax/run}"
REMOTE_DIR="dpo_jax"
REMOTE_VENV="venv-dpo-jax"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

DRY_RUN=0

usage() {
  sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
}

# Quotes only the words that need it, so dry-run output stays readable and can be pasted as is.
shell_words() {
  local word quoted=()
  for word in "$@"; do
    if [[ "${word}" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
      quoted+=("${word}")
    else
      quoted+=("${word@Q}")
    fi
  done
  printf '%s\n' "${quoted[*]}"
}

# Runs a command, or with --dry-run prints it.
execute() {
  if [[ "${DRY_RUN}" == 1 ]]; then
    shell_words "$@"
  else
    "$@"
  fi
}

project_flags() {
  if [[ -n "${PROJECT}" ]]; then
    printf '%s\n' "--project=${PROJECT}"
  fi
}

on_all_workers() {
  local remote_command="$1"
  local flags
  mapfile -t flags < <(project_flags)
  execute gcloud compute tpus tpu-vm ssh "${TPU_NAME}" --zone="${ZONE}" "${flags[@]}" \
    --worker=all --command="${remote_command}"
}

create() {
  local flags
  mapfile -t flags < <(project_flags)
  if [[ "${SPOT}" == 1 ]]; then
    flags+=(--spot)
  fi
  execute gcloud compute tpus tpu-vm create "${TPU_NAME}" --zone="${ZONE}" \
    --accelerator-type="${ACCELERATOR_TYPE}" --version="${TPU_VERSION}" "${flags[@]}"
}

copy_checkout() {
  local archive="${TMPDIR:-/tmp}/dpo_jax_checkout.tar.gz" flags
  mapfile -t flags < <(project_flags)
  execute git -C "${REPO_ROOT}" archive --format=tar.gz --output="${archive}" HEAD
  execute gcloud compute tpus tpu-vm scp "${archive}" "${TPU_NAME}:dpo_jax.tar.gz" --zone="${ZONE}" \
    "${flags[@]}" --worker=all
  on_all_workers "rm -rf ${REMOTE_DIR} && mkdir -p ${REMOTE_DIR} && tar -xzf dpo_jax.tar.gz -C ${REMOTE_DIR}"
}

setup() {
  if [[ -n "${REPO_URL}" ]]; then
    on_all_workers "rm -rf ${REMOTE_DIR} && git clone ${REPO_URL} ${REMOTE_DIR} && git -C ${REMOTE_DIR} checkout ${REPO_REF}"
  else
    copy_checkout
  fi
  local python="python${PYTHON_VERSION}"
  on_all_workers "command -v ${python} >/dev/null || { sudo add-apt-repository -y ppa:deadsnakes/ppa \
&& sudo apt-get update && sudo apt-get install -y ${python} ${python}-venv; }"
  on_all_workers "${python} -m venv ~/${REMOTE_VENV} && ~/${REMOTE_VENV}/bin/pip install -U pip \
&& ~/${REMOTE_VENV}/bin/pip install -e ~/${REMOTE_DIR} '${JAX_TPU_SPEC}'"
}

# Chips in the slice: v4-N and v5p-N count TensorCores (2 per chip), v5litepod-N / v5e-N count chips.
slice_chips() {
  local size="${ACCELERATOR_TYPE##*-}"
  case "${ACCELERATOR_TYPE}" in
    v4-*|v5p-*) echo $((size / 2)) ;;
    *) echo "${size}" ;;
  esac
}

# The layout for the slice: FSDP over every chip, the shipped configs' 64-pair step in micro-batches
# that every chip gets a share of (16 pairs up to 16 chips, else one micro-batch of 64 split over up
# to 64 chips). `python -m dpo_jax.aot --target=...` shows that these fit (docs/aot.md).
layout_flags() {
  local chips
  chips="$(slice_chips)"
  echo "--config.mesh_shape=(1,${chips},1)"
  if ((chips > 16)); then
    echo "--config.grad_accum_steps=$((64 / chips > 0 ? 64 / chips : 1))"
  fi
}

run() {
  local layout
  mapfile -t layout < <(layout_flags)
  # The venv path stays unquoted so that the worker's shell expands "~". Flags given after `--`
  # come last and override the layout.
  on_all_workers "cd ${REMOTE_DIR} && ~/${REMOTE_VENV}/bin/python -m dpo_jax.main \
$(shell_words "--config=${CONFIG}" "--workdir=${WORKDIR}" "${layout[@]}" "$@")"
}

recipe() {
  local flags session
  mapfile -t flags < <(project_flags)
  session="${RECIPE_SESSION:-$(date -u +%Y%m%dT%H%M%S)-$$}"
  # The worker's number is read on the worker (from its metadata server), not quoted here.
  local worker='$(curl -sf -H Metadata-Flavor:Google http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number || echo unknown)'
  execute gcloud compute tpus tpu-vm ssh "${TPU_NAME}" --zone="${ZONE}" "${flags[@]}" --worker=all \
    --command="cd ${REMOTE_DIR} && ~/${REMOTE_VENV}/bin/python -m dpo_jax.experiment \
$(shell_words "--recipe=${RECIPE}" --scale=paper "--workdir=${RECIPE_DIR}" "--recipe.session=${session}") \
--recipe.worker=${worker} $(shell_words "$@")"
}

delete() {
  local flags
  mapfile -t flags < <(project_flags)
  execute gcloud compute tpus tpu-vm delete "${TPU_NAME}" --zone="${ZONE}" "${flags[@]}" --quiet
}

main() {
  if [[ $# -gt 0 && "$1" == "--dry-run" ]]; then
    DRY_RUN=1
    shift
  fi
  [[ $# -gt 0 ]] || usage
  local subcommand="$1"
  shift
  if [[ $# -gt 0 && "$1" == "--" ]]; then
    shift
  fi
  case "${subcommand}" in
    create) create ;;
    setup) setup ;;
    run) run "$@" ;;
    recipe) recipe "$@" ;;
    delete) delete ;;
    *) echo "unknown subcommand '${subcommand}'" >&2; usage ;;
  esac
}

main "$@"

"""PPO steps on 8 fake CPU devices (FSDP over all 8), timed for two checkouts of dpo_jax in turns.

    python launch/ppo_step_timing.py BEFORE_TREE AFTER_TREE [--rounds=2] [--steps=4]

Each round runs `run_ppo` once per tree, each in a fresh process importing that tree's `dpo_jax`,
before then after, so that a shared machine loads both alike. The model is the PPO tests' tiny
GPT-2 scaled up (2 layers x 128, 4 heads, a vocabulary of 512), 32 prompts of 16 tokens per rollout,
32 new tokens, 2 minibatches x 2 epochs; the first step (tracing and compiling) is left out of the
median step time. Prints one `RESULT {json}` line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

WORKER = r"""
import json, os, sys, tempfile
sys.path.insert(0, sys.argv[1])
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
os.environ["JAX_PLATFORMS"] = "cpu"
import ml_collections, numpy as np
import dpo_jax
from dpo_jax.config.defaults import base_config
from dpo_jax.ppo import run_ppo
assert dpo_jax.__file__.startswith(sys.argv[1]), dpo_jax.__file__
c = base_config()
c.model.name_or_path = "random"
c.model.random_init_config = ml_collections.ConfigDict(dict(
    model_type="gpt2", n_layer=2, n_embd=128, n_head=4, n_positions=64, vocab_size=512,
    bos_token_id=0, eos_token_id=0))
c.model.dtype = "float32"
c.reference.param_dtype = "float32"
c.mesh_shape = (1, -1, 1)
c.global_batch_size = 32
c.num_train_steps = int(sys.argv[2])
c.log_every_steps = 1
c.checkpoint_every_steps = 1000
c.tensorboard = False
c.progress_bar = False
c.export_hf = False
c.ppo.max_new_tokens = 32
c.ppo.num_minibatches = 2
c.ppo.num_epochs = 2
prompts = np.random.default_rng(0).integers(1, 512, (64, 16)).astype(np.int32)
reward = lambda p, pm, r, rm: (r % 7 == 3).sum(-1).astype(np.float32)
with tempfile.TemporaryDirectory() as workdir:
    run_ppo(c, workdir, prompts, np.ones_like(prompts), reward, eos_id=None, pad_id=0)
    lines = open(os.path.join(workdir, "metrics.jsonl")).read().splitlines()
seconds = [json.loads(line)["perf/step_seconds"] for line in lines if "perf/step_seconds" in line]
print("STEPS " + json.dumps(seconds))
"""


def run_tree(tree: str, steps: int) -> list[float]:
    with tempfile.TemporaryDirectory() as cwd:  # nothing in the working directory shadows the tree
        out = subprocess.run(
            [sys.executable, "-c", WORKER, os.path.abspath(tree), str(steps)],
            cwd=cwd, capture_output=True, text=True, check=False,
        )  # fmt: skip
    lines = [line for line in out.stdout.splitlines() if line.startswith("STEPS ")]
    if out.returncode or not lines:
        raise SystemExit(f"error: {tree}: the PPO run failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("STEPS ") :])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    steps: dict[str, list[float]] = {"before": [], "after": []}
    first: dict[str, list[float]] = {"before": [], "after": []}
    for _ in range(args.rounds):
        for side in ("before", "after"):
            seconds = run_tree(getattr(args, side), args.steps)
            first[side].append(round(seconds[0], 3))
            steps[side].extend(seconds[1:])
    medians = {side: statistics.median(values) for side, values in steps.items()}
    result = {
        side: dict(
            median_step_seconds=round(medians[side], 3),
            step_seconds=[round(s, 3) for s in steps[side]],
            first_step_seconds=first[side],
        )
        for side in steps
    }
    result.update(
        speedup=round(medians["before"] / medians["after"], 2),
        load_average_before=[round(x, 2) for x in load_before],
        load_average_after=[round(x, 2) for x in os.getloadavg()],
    )
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

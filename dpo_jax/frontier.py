"""Command line: the reward-vs-KL frontier of trained policies on IMDb sentiment (the DPO paper's Figure 2).

    python launch/sweep.py --config=configs/imdb.py --workdir_root=/tmp/imdb-sweep --mode=local \\
        --config.model.name_or_path=/tmp/imdb-sft --config.data.path=/tmp/imdb_pairs.jsonl
    python -m dpo_jax.frontier --workdirs=/tmp/imdb-sweep/beta_0.05,/tmp/imdb-sweep/beta_0.1 \\
        --classifier=siebert/sentiment-roberta-large-english --out_dir=/tmp/imdb-sweep

For each run, --num_samples continuations of each held-out review prefix (the `imdb_prefixes` source
of --data_path, split --split) are sampled from the policy at temperature 1; the reward is the
classifier's p(positive) of prefix + continuation, KL(pi || pi_ref) is the mean of
log pi(y|x) - log pi_ref(y|x) over the samples (pi_ref: the run's reference, which scores the same
tokens), each with its standard error (prompts as clusters). Each distinct reference is evaluated too,
at KL 0. Curves: one per method (analysis/methods.py: from the run's stage and objective, so PPO,
PPO-GT, preferred-FT and unlikelihood runs each get their own), through its own sweep parameter (beta,
the KL coefficient or target, alpha), written beside each point.
--best_of=4,16 --best_of_reward=RM: the Best-of-N curve too (analysis/best_of_n.py), one point per N
for each distinct reference: --num_samples picks per prefix, each the best of N samples of the
reference by the learned reward model RM (a stage=reward_model run or any one-output reward model),
so num_samples * N samples per prefix (the Ns share one draw); the reward is measured by the
classifier as for every point, the KL is the analytic bound log N - (N - 1) / N, marked
"kl_kind": "analytic_bound" with "kl_stderr" 0 (every other point: "sampled").
Writes OUT_DIR/frontier.json (every point; once complete) and OUT_DIR/frontier.png; prints one
`RESULT {json}` line per point. --workdirs also accepts a sweep root, meaning all its runs.
--checkpoints=all|every:N: one point per kept checkpoint of each run (with its "step"), as the paper's
IMDb curves, instead of the exported policy (analysis/over_training.py). On several hosts every
process runs the command (--distributed, as `dpo_jax.main`) and process 0 alone writes and prints.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from dpo_jax import USER_ERROR_EXIT
from dpo_jax.analysis.best_of_n import parse_best_of
from dpo_jax.analysis.sentiment_pairs import PREFIX_CHOICES, prefix_flags, prefixes_from_flags
from dpo_jax.config.command_line import command_error, parse_command, print_error, print_result, run_command
from dpo_jax.config.runtime import (
    DISTRIBUTED_CHOICES,
    DISTRIBUTED_FLAGS,
    apply_device_memory_settings,
    initialize_distributed,
    writes_outputs,
)
from dpo_jax.judges import DEFAULT_SENTIMENT_CLASSIFIER

FLAGS = (
    ("workdirs", str, None, "runs (or a sweep root), comma separated"),
    ("classifier", str, DEFAULT_SENTIMENT_CLASSIFIER, "sentiment classifier"),
    ("out_dir", str, "", "default: the parent of the first run"),
    ("num_samples", int, 4, "samples per prefix"),
    *prefix_flags(split="test", num_prompts=256),
    ("no_reference_point", bool, False, "skip evaluating the references"),
    ("checkpoints", str, "final", "final | all | every:N (one point per checkpoint)"),
    ("best_of", parse_best_of, (), "N of Best-of-N points, comma separated (each >= 2; empty = none)"),
    ("best_of_reward", str, "", "reward model that selects Best-of-N (directory or hub name)"),
    *DISTRIBUTED_FLAGS,
)


def parse_args(argv):
    choices = {**PREFIX_CHOICES, **DISTRIBUTED_CHOICES}
    args = parse_command("python -m dpo_jax.frontier", argv, FLAGS, doc=__doc__, choices=choices, required=("workdirs",))
    if args.num_prompts < 2 or args.num_samples < 1:
        command_error("need --num_prompts >= 2 (a standard error needs two prompts) and --num_samples >= 1")
    if args.best_of and not args.best_of_reward:
        command_error("--best_of needs --best_of_reward (the learned reward model that selects)")
    return args


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    apply_device_memory_settings()  # as `main` does: the GPU memory fraction and XLA's memory flags
    initialize_distributed(args.distributed, args.distributed_timeout_s)  # before any other JAX call
    from dpo_jax.analysis.over_training import parse_checkpoints
    from dpo_jax.analysis.plots import MissingMatplotlib, plot_reward_vs_kl
    from dpo_jax.analysis.results import write_json
    from dpo_jax.analysis.runs import expand_workdirs, read_run
    from dpo_jax.analysis.sentiment_frontier import FRONTIER_SAMPLING, frontier_points
    from dpo_jax.judges import ClassifierJudge, JudgeError, RewardModelJudge

    writer = writes_outputs()
    try:
        every = parse_checkpoints(args.checkpoints)
        runs = [read_run(w) for w in expand_workdirs(args.workdirs)]
        from dpo_jax.data import load_tokenizer

        prompts, prompt_set = prefixes_from_flags(args, load_tokenizer(runs[0].tokenizer_path()))
        classifier = ClassifierJudge(args.classifier)
        selector = RewardModelJudge(args.best_of_reward) if args.best_of else None
        options = dict(num_samples=args.num_samples, batch_size=args.batch_size, seed=args.seed)
        settings = FRONTIER_SAMPLING.replace(max_new_tokens=args.max_new_tokens)  # draws from pi itself
        points = frontier_points(
            runs,
            prompts,
            classifier,
            checkpoints_every=every,
            reference_points=not args.no_reference_point,
            best_of=args.best_of,
            best_of_selector=selector,
            dtype=args.dtype,
            on_point=print_result,
            settings=settings,
            **options,
        )
        out_dir = Path(args.out_dir or Path(runs[0].path).resolve().parent)
        write_json(
            out_dir / "frontier.json",
            {
                "classifier": args.classifier,
                "num_prompts": len(prompts),
                "prefix_unit": args.prefix_unit,
                **prompt_set.to_json(),
                **options,
                "max_new_tokens": settings.max_new_tokens,
                "best_of": list(args.best_of),
                "best_of_reward": args.best_of_reward,
                "points": points,
            },
        )
    except (JudgeError, ValueError, FileNotFoundError, OSError) as error:
        print_error(error)
        return USER_ERROR_EXIT
    if not writer:
        return 0
    curves: dict[str, list] = {}
    for point in (p for p in points if "error" not in p):
        curves.setdefault(point["method"], []).append(point)
    try:
        print(f"figure: {plot_reward_vs_kl(curves, out_dir / 'frontier.png', title='IMDb sentiment')}")
    except MissingMatplotlib as error:
        print(f"warning: no figure: {error}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_command(main)

"""Command line: judged win rates across sampling temperatures (README: "Win rates and the IMDb sentiment
frontier"; the library side is dpo_jax/analysis/winrate_runs.py).

    python -m dpo_jax.winrate --workdir=/tmp/tldr-dpo --task=tldr --judge=openai  # vs the human TL;DRs
    python -m dpo_jax.winrate --workdir=/tmp/hh-sft --task=hh --baseline=chosen --policy=best_of_n:16 \\
        --best_of_n_reward=OpenAssistant/reward-model-deberta-v3-large-v2 --judge=openai

Writes RUN/winrate/<name>.json, <name>.comparisons.jsonl (once complete) and <name>.png (win rate vs
temperature, 95% bootstrap intervals); prints `RESULT {json}` per run and temperature. On several
hosts every process runs the command (--distributed, as `dpo_jax.main`) and process 0 alone writes,
prints and asks an API judge (judges/process_zero.py).
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

from dpo_jax import USER_ERROR_EXIT
from dpo_jax.config.command_line import command_error, parse_command, print_error, print_result, run_command
from dpo_jax.config.runtime import (
    DISTRIBUTED_CHOICES,
    DISTRIBUTED_FLAGS,
    apply_device_memory_settings,
    initialize_distributed,
    writes_outputs,
)
from dpo_jax.judges import JUDGES, TASK_TEMPLATES
from dpo_jax.judges.flags import JUDGE_FLAGS, check_judge_flags
from dpo_jax.sampling.settings import sampling_flags, settings_from_flags, temperatures_flag

logger = logging.getLogger("dpo_jax.winrate")


def _best_of(text: str) -> int:
    match = re.fullmatch(r"sample|best_of_n:([1-9]\d*)", text)
    if not match:
        raise ValueError("must be 'sample' or 'best_of_n:N' with N >= 1")
    return int(match.group(1) or 1)


# (flag, type, default, help); a ValueError from a type is a bad command line (exit 2).
FLAGS = (
    ("workdir", str, None, "run(s) to evaluate, comma separated (required)"),
    ("task", str, None, "tldr | hh | news (CNN/DailyMail articles): the judge's question (required)"),
    ("baseline", str, "", "human | chosen | reference | a model; default: human (tldr, news), chosen (hh)"),
    ("human_reference_path", str, "", "tldr's human TL;DRs (default CarperAI/openai_summarize_tldr)"),
    ("human_reference_split", str, "test", "the split of --human_reference_path"),
    ("policy", _best_of, "sample", "sample | best_of_n:N (N samples, the best by --best_of_n_reward)"),
    ("best_of_n_reward", str, "", "reward model (directory or hub name) for best_of_n"),
    ("baseline_temperature", float, None, "a sampled baseline's own temperature (default: the policy's)"),
    ("prompt_template", str, "", "prompting baseline: ask the policy through this template file"),
    ("shots", int, 0, "prompting baseline: demonstrations from the train split ({examples})"),
    (
        "checkpoints",
        str,
        "final",
        "final | all | every:N: the export, or each kept checkpoint (over training)",
    ),
    ("unparsable", str, "drop", "drop | loss: an unreadable verdict is left out, or a loss of the policy"),
    ("temperatures", temperatures_flag, "0,0.25,0.5,0.75,1", "sampling temperatures, comma separated"),
    *sampling_flags(max_new_tokens=128, fields=("top_k", "top_p", "max_new_tokens")),  # at each temperature
    ("num_prompts", int, 256, "held-out prompts: a random subset of the eval split's distinct prompts"),
    ("prompt_seed", int, 0, "which random subset of prompts (the same for every method compared)"),
    ("batch_size", int, 16, "prompts per generate call"),
    ("seed", int, 0, "sampling and order-randomisation seed"),
    ("dtype", str, "float32", "float32 | bfloat16 compute"),
    ("data_source", str, "", "override the run's data.source"),
    ("data_path", str, "", "override the run's data.path"),
    ("name", str, "", "result name (default: from policy, baseline and judge)"),
    ("out_dir", str, "", "where the plot goes (default: the first run's winrate/)"),
    ("check_judge", bool, False, "judge the data's chosen vs rejected"),
    ("single_turn", bool, False, "hh: only prompts with one human turn (the paper's single-turn subset)"),
    *JUDGE_FLAGS,
    *DISTRIBUTED_FLAGS,
)
CHOICES = dict(task=tuple(TASK_TEMPLATES), judge=tuple(JUDGES), dtype=("float32", "bfloat16"))
CHOICES.update(unparsable=("drop", "loss"), **DISTRIBUTED_CHOICES)


def parse_args(argv):
    args = parse_command(
        "python -m dpo_jax.winrate", argv, FLAGS, doc=__doc__, choices=CHOICES, required=("workdir", "task")
    )
    args.best_of, args.workdirs = args.policy, [w for w in args.workdir.split(",") if w]
    if args.best_of > 1 and not args.best_of_n_reward:
        command_error("--policy=best_of_n:N needs --best_of_n_reward (a reward model)")
    check_judge_flags(args)
    return args


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("dpo_jax").setLevel(logging.INFO)
    args = parse_args(argv)
    apply_device_memory_settings()  # as `main` does: the GPU memory fraction and XLA's memory flags
    initialize_distributed(args.distributed, args.distributed_timeout_s)  # before any other JAX call
    from dpo_jax.analysis.plots import MissingMatplotlib, plot_win_rate_over_training, plot_win_rates
    from dpo_jax.analysis.runs import read_run
    from dpo_jax.analysis.winrate_runs import WinRateRequest, check_judge, evaluate_run
    from dpo_jax.analysis.winrate_sweep import IncompleteJudging
    from dpo_jax.judges import JudgeError
    from dpo_jax.judges.flags import judge_from_flags

    writer = writes_outputs()
    report = print_result
    curves, name, first_dir = {}, "", Path(args.workdirs[0], "winrate")
    try:
        request = WinRateRequest(
            **{k: v for k, v in vars(args).items() if k in WinRateRequest.__dataclass_fields__},
            sampling=settings_from_flags(args),
        )
        runs = [read_run(w) for w in args.workdirs]
        judge = judge_from_flags(args, first_dir / "judge_cache.jsonl")
        for run in runs:
            if args.check_judge:
                report(check_judge(run, judge, request, Path(run.path, "winrate")))
                continue
            # A run's results go to its winrate/; a model that is not a directory (a hub name) has none.
            results = Path(run.path, "winrate") if Path(run.path).is_dir() else Path(args.out_dir or "winrate")
            name, curves[run.label] = evaluate_run(run, judge, request, results, report)
    except (JudgeError, ValueError, OSError) as error:
        print_error(error)
        return USER_ERROR_EXIT
    except IncompleteJudging as error:
        print_error(f"no result written: {error}")
        return 1
    if not writer:
        return 0
    logger.info("judge usage: %s", judge.usage())
    plot = plot_win_rates if args.checkpoints == "final" else plot_win_rate_over_training
    try:
        out = plot(curves, Path(args.out_dir or first_dir) / f"{name}.png", title=name) if curves else None
        print(f"figure: {out}" if out else "", end="\n" if out else "")
    except MissingMatplotlib as error:
        print(f"warning: no figure: {error}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_command(main)

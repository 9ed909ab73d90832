"""Command line: judged win rates across sampling temperatures (README: "Win rates and the IMDb sentiment
frontier"; the library side is dpo_jax/analysis/winrate_runs.py).

    python -m dpo_jax.winrate --workdir=/tmp/tldr-dpo --task=tldr --baseline=chosen --judge=openai
    python -m dpo_jax.winrate --workdir=/tmp/hh-sft --task=hh --baseline=chosen --policy=best_of_n:16 \\
        --best_of_n_reward=OpenAssistant/reward-model-deberta-v3-large-v2 --judge=openai

Writes RUN/winrate/<name>.json, <name>.comparisons.jsonl (once complete) and <name>.png (win rate vs
temperature, 95% bootstrap intervals); prints `RESULT {json}` per run and temperature.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

from dpo_jax.judges import JUDGES, TASK_TEMPLATES, JudgeError

logger = logging.getLogger("dpo_jax.winrate")


def _temperatures(text: str) -> tuple[float, ...]:
    values = tuple(float(t) for t in text.split(",") if t.strip())
    if not values or min(values) < 0:
        raise ValueError("needs at least one temperature, all >= 0")
    return values


def _best_of(text: str) -> int:
    match = re.fullmatch(r"sample|best_of_n:([1-9]\d*)", text)
    if not match:
        raise ValueError("must be 'sample' or 'best_of_n:N' with N >= 1")
    return int(match.group(1) or 1)


def _price(text: str) -> tuple[float, float]:
    price_in, price_out = text.split(",")
    return float(price_in), float(price_out)


# (flag, type, default, help); a ValueError from a type is argparse's "invalid value" error (exit 2).
FLAGS = (
    ("workdir", str, None, "run(s) to evaluate, comma separated (required)"),
    ("task", str, None, "tldr | hh: selects the judge's question (required)"),
    ("baseline", str, "chosen", "chosen | reference | a workdir or model path"),
    ("policy", _best_of, "sample", "sample | best_of_n:N (N samples, the best by --best_of_n_reward)"),
    ("best_of_n_reward", str, "", "reward model (directory or hub name) for best_of_n"),
    ("judge", str, "openai", "openai | reward_model | classifier"),
    ("judge_path", str, "", "the reward_model / classifier judge's model"),
    ("judge_model", str, "", "openai judge: model name (default: a pinned GPT-4o snapshot)"),
    ("judge_base_url", str, "", "openai judge: any chat-completions endpoint (default: OpenAI's)"),
    ("judge_cache", str, "", "openai judge: verdict cache (default: first run's winrate/judge_cache.jsonl)"),
    ("judge_concurrency", int, 8, "openai judge: requests in flight at most"),
    ("judge_max_retries", int, 6, "openai judge: retries on 429 / 5xx / timeouts"),
    ("judge_timeout_s", float, 60.0, "openai judge: seconds per request"),
    ("judge_backoff_s", float, 1.0, "openai judge: first retry delay (doubles each retry)"),
    ("judge_price", _price, None, "openai judge: USD per million input,output tokens (cost log)"),
    ("temperatures", _temperatures, "0,0.25,0.5,0.75,1", "sampling temperatures"),
    ("num_prompts", int, 256, "held-out prompts (the first distinct ones of the eval split)"),
    ("max_new_tokens", int, 128, "tokens sampled at most per completion"),
    ("batch_size", int, 16, "prompts per generate call"),
    ("seed", int, 0, "sampling and order-randomisation seed"),
    ("dtype", str, "float32", "float32 | bfloat16 compute"),
    ("data_source", str, "", "override the run's data.source"),
    ("data_path", str, "", "override the run's data.path"),
    ("name", str, "", "result name (default: from policy, baseline and judge)"),
    ("out_dir", str, "", "where the plot goes (default: the first run's winrate/)"),
)
CHOICES = dict(task=tuple(TASK_TEMPLATES), judge=tuple(JUDGES), dtype=("float32", "bfloat16"))


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m dpo_jax.winrate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    for flag, kind, default, text in FLAGS:
        required = default is None and flag in ("workdir", "task")
        parser.add_argument(
            f"--{flag}", type=kind, default=default, help=text, required=required, choices=CHOICES.get(flag)
        )
    parser.add_argument("--check_judge", action="store_true", help="judge the data's chosen vs rejected")
    parser.add_argument("--judge_retry_unparsable", action="store_true", help="openai: re-ask unparsable")
    args = parser.parse_args(argv)
    args.best_of, args.workdirs = args.policy, [w for w in args.workdir.split(",") if w]
    if args.best_of > 1 and not args.best_of_n_reward:
        parser.error("--policy=best_of_n:N needs --best_of_n_reward (a reward model)")
    if args.judge != "openai" and not args.judge_path:
        parser.error(f"--judge={args.judge} needs --judge_path (a model directory or hub name)")
    return args


def make_judge(args, cache_default: Path):
    from dpo_jax import judges

    if args.judge != "openai":
        return judges.make_judge(args.judge, name_or_path=args.judge_path)
    names = ("concurrency", "max_retries", "timeout_s", "backoff_s", "model", "base_url", "retry_unparsable")
    options = {n: getattr(args, f"judge_{n}") for n in names if getattr(args, f"judge_{n}") != ""}
    options.update(template=TASK_TEMPLATES[args.task], price_per_million=args.judge_price)
    return judges.make_judge("openai", cache_path=args.judge_cache or str(cache_default), **options)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("dpo_jax").setLevel(logging.INFO)
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from dpo_jax.analysis.plots import MissingMatplotlib, plot_win_rates
    from dpo_jax.analysis.results import result_line
    from dpo_jax.analysis.runs import read_run
    from dpo_jax.analysis.winrate_runs import WinRateRequest, check_judge, evaluate_run
    from dpo_jax.analysis.winrate_sweep import IncompleteJudging

    report = lambda summary: print(result_line(summary), flush=True)
    curves, name, first_dir = {}, "", Path(args.workdirs[0], "winrate")
    try:
        request = WinRateRequest(
            **{k: v for k, v in vars(args).items() if k in WinRateRequest.__dataclass_fields__}
        )
        runs = [read_run(w) for w in args.workdirs]
        judge = make_judge(args, first_dir / "judge_cache.jsonl")
        for run in runs:
            if args.check_judge:
                report(check_judge(run, judge, request, Path(run.path, "winrate")))
                continue
            name, curves[run.label] = evaluate_run(run, judge, request, Path(run.path, "winrate"), report)
    except (JudgeError, ValueError, OSError) as error:
        print(f"winrate: {error}", file=sys.stderr)
        return 2
    except IncompleteJudging as error:
        print(f"winrate: no result written: {error}", file=sys.stderr)
        return 1
    logger.info("judge usage: %s", judge.usage())
    out = Path(args.out_dir or first_dir) / f"{name}.png"
    try:
        print(
            f"figure: {plot_win_rates(curves, out, title=name)}" if curves else "", end="\n" if curves else ""
        )
    except MissingMatplotlib as error:
        print(f"winrate: no figure: {error}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

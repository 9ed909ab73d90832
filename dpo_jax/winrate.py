"""Command line: judged win rates of trained policies across sampling temperatures.

    python -m dpo_jax.winrate --workdir=/tmp/tldr-dpo --task=tldr --baseline=chosen --judge=openai \\
        --temperatures=0,0.25,0.5,0.75,1 --num_prompts=256
    python -m dpo_jax.winrate --workdir=/tmp/hh-dpo,/tmp/hh-ipo --task=hh --baseline=reference \\
        --judge=reward_model --judge_path=OpenAssistant/reward-model-deberta-v3-large-v2
    python -m dpo_jax.winrate --workdir=/tmp/hh-sft --task=hh --policy=best_of_n:128 \\
        --best_of_n_reward=OpenAssistant/reward-model-deberta-v3-large-v2 --baseline=chosen --judge=openai
    python -m dpo_jax.winrate --workdir=/tmp/tldr-dpo --task=tldr --check_judge --judge=openai

For each run (--workdir, comma separated) the policy is sampled on the held-out prompts of the run's
eval split (the first --num_prompts distinct prompts) at each temperature and compared with the baseline:
`chosen` (the dataset's preferred response / human summary), `reference` (the run's reference model,
sampled) or the path of another workdir or Hugging Face model (sampled). The judge sees the two in a
random order per comparison. Writes RUN/winrate/<name>.json (the summaries, the judge's usage) and
RUN/winrate/<name>.comparisons.jsonl (every comparison and verdict), each only once complete, plus
<name>.png (win rate vs temperature with 95% bootstrap intervals, all runs on one plot) in --out_dir
(default: the first run's winrate/). Prints one `RESULT {json}` line per run and temperature.
--check_judge instead measures the judge against the dataset's human labels: how often it prefers the
chosen response to the rejected one.

The openai judge reads its key from OPENAI_API_KEY and caches every verdict in --judge_cache (default:
the first run's winrate/judge_cache.jsonl): a rerun or a crashed run never pays twice.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

logger = logging.getLogger("dpo_jax.winrate")

DEFAULT_TEMPERATURES = "0,0.25,0.5,0.75,1"


class UsageError(Exception):
    """A mistake in the command line or its inputs: one message, exit code 2."""


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m dpo_jax.winrate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--workdir", required=True, help="run(s) to evaluate, comma separated")
    parser.add_argument("--task", choices=("tldr", "hh"), required=True, help="selects the judge's question")
    parser.add_argument("--baseline", default="chosen", help="chosen | reference | a workdir or model path")
    parser.add_argument(
        "--policy", default="sample", help="sample | best_of_n:N (N samples, the best by a reward model)"
    )
    parser.add_argument(
        "--best_of_n_reward", default="", help="reward model (directory or hub name) for best_of_n"
    )
    parser.add_argument("--judge", choices=("openai", "reward_model", "classifier"), default="openai")
    parser.add_argument("--judge_path", default="", help="model of the reward_model / classifier judge")
    parser.add_argument(
        "--judge_model", default=None, help="openai judge: model name (default a GPT-4o snapshot)"
    )
    parser.add_argument("--judge_base_url", default=None, help="openai judge: any chat-completions endpoint")
    parser.add_argument("--judge_cache", default="", help="openai judge: verdict cache (JSONL)")
    parser.add_argument("--judge_concurrency", type=int, default=8)
    parser.add_argument("--judge_max_retries", type=int, default=6)
    parser.add_argument("--judge_timeout_s", type=float, default=60.0)
    parser.add_argument("--judge_backoff_s", type=float, default=1.0, help="first retry delay (doubles)")
    parser.add_argument("--judge_price", default="", help="USD per million input,output tokens (cost log)")
    parser.add_argument("--check_judge", action="store_true", help="judge the dataset's chosen vs rejected")
    parser.add_argument("--temperatures", default=DEFAULT_TEMPERATURES)
    parser.add_argument("--num_prompts", type=int, default=256)
    parser.add_argument("--max_new_tokens", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--data_source", default="", help="override the run's data.source")
    parser.add_argument("--data_path", default="", help="override the run's data.path")
    parser.add_argument("--name", default="", help="result name (default: from policy, baseline and judge)")
    parser.add_argument("--out_dir", default="", help="where the plot goes (default: first run's winrate/)")
    args = parser.parse_args(argv)
    try:
        args.temperatures = [float(t) for t in args.temperatures.split(",") if t.strip()]
    except ValueError:
        parser.error(f"--temperatures must be comma-separated numbers, got {args.temperatures!r}")
    if not args.temperatures or min(args.temperatures) < 0:
        parser.error("--temperatures needs at least one temperature, all >= 0")
    args.best_of = 1
    if args.policy != "sample":
        match = re.fullmatch(r"best_of_n:(\d+)", args.policy)
        if not match or int(match.group(1)) < 1:
            parser.error(f"--policy must be 'sample' or 'best_of_n:N' with N >= 1, got {args.policy!r}")
        args.best_of = int(match.group(1))
        if not args.best_of_n_reward:
            parser.error("--policy=best_of_n:N needs --best_of_n_reward (a reward model)")
    if args.judge != "openai" and not args.judge_path:
        parser.error(f"--judge={args.judge} needs --judge_path (a model directory or hub name)")
    if args.num_prompts < 1 or args.batch_size < 1 or args.max_new_tokens < 1:
        parser.error("--num_prompts, --batch_size and --max_new_tokens must be >= 1")
    args.workdirs = [w for w in args.workdir.split(",") if w]
    return args


def _price(text: str):
    if not text:
        return None
    try:
        price_in, price_out = (float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(
            f"--judge_price must be 'INPUT,OUTPUT' USD per million tokens, got {text!r}"
        ) from None
    return price_in, price_out


def make_judge(args, cache_default: Path):
    from dpo_jax import judges

    if args.judge != "openai":
        return judges.make_judge(args.judge, name_or_path=args.judge_path)
    options = dict(
        cache_path=args.judge_cache or str(cache_default),
        template=judges.TASK_TEMPLATES[args.task],
        concurrency=args.judge_concurrency,
        max_retries=args.judge_max_retries,
        timeout_s=args.judge_timeout_s,
        backoff_s=args.judge_backoff_s,
        price_per_million=_price(args.judge_price),
    )
    if args.judge_model:
        options["model"] = args.judge_model
    if args.judge_base_url:
        options["base_url"] = args.judge_base_url
    return judges.make_judge("openai", **options)


def held_out_examples(run, args):
    from dpo_jax.data import read_examples

    if run.config is None and not (args.data_source and args.data_path):
        raise UsageError(
            f"{run.path} is not a dpo_jax workdir: give --data_source and --data_path for its prompts"
        )
    data = run.config.data if run.config is not None else None
    import ml_collections

    data = ml_collections.ConfigDict(
        data.to_dict() if data is not None else dict(max_length=512, max_prompt_length=256)
    )
    if args.data_source:
        data.source = args.data_source
    if args.data_path:
        data.path = args.data_path
    examples, _ = read_examples(data, split="eval", limit=args.num_prompts, unique_prompts=True)
    if not examples:
        raise UsageError(f"{run.path}: the eval split of {data.path!r} holds no usable examples")
    return examples


def _name(args, baseline_label: str, judge) -> str:
    if args.name:
        return args.name
    policy = "policy" if args.best_of == 1 else f"best_of_{args.best_of}"
    raw = f"{policy}_vs_{baseline_label}_{judge.name}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", raw).strip("_")


def _baseline(args, run, examples, tokenizer, dtype):
    from dpo_jax.evaluation.runs import load_policy
    from dpo_jax.evaluation.winrate_sweep import Contender

    if args.baseline == "chosen":
        if any(not e.responses for e in examples):
            raise UsageError(f"{run.path}: its eval data has no responses: --baseline=chosen needs them")
        return Contender("chosen", texts=[e.responses[0] for e in examples])
    path = run.reference_path if args.baseline == "reference" else args.baseline
    model, params = load_policy(path, dtype=dtype)
    label = "reference" if args.baseline == "reference" else Path(path.rstrip("/")).name
    return Contender(label, model=model, params=params)


def evaluate_run(args, run, judge, out_dir: Path):
    from dpo_jax.data import load_tokenizer
    from dpo_jax.evaluation.results import result_line, write_json, write_jsonl
    from dpo_jax.evaluation.runs import load_policy
    from dpo_jax.evaluation.winrate import judge_win_rate
    from dpo_jax.evaluation.winrate_sweep import Contender, win_rate_sweep
    from dpo_jax.judges import RewardModelJudge

    examples = held_out_examples(run, args)
    prompts = [e.prompt for e in examples]
    if args.check_judge:
        pairs = [e for e in examples if len(e.responses) >= 2]
        if not pairs:
            raise UsageError(f"{run.path}: --check_judge needs preference pairs in the eval data")
        summary, records = judge_win_rate(
            judge,
            [e.prompt for e in pairs],
            [e.responses[0] for e in pairs],
            [e.responses[1] for e in pairs],
            seed=args.seed,
        )
        summary = {"run": run.path, "agreement_with_humans": summary.pop("win_rate"), **summary}
        print(result_line(summary), flush=True)
        name = args.name or re.sub(r"[^A-Za-z0-9_.-]+", "_", f"judge_agreement_{judge.name}")
        write_jsonl(out_dir / f"{name}.comparisons.jsonl", records)
        write_json(out_dir / f"{name}.json", {**summary, "judge_usage": judge.usage()})
        return name, []

    tokenizer = load_tokenizer(run.tokenizer_path())
    model, params = load_policy(run.model_path, dtype=args.dtype)
    reward = RewardModelJudge(args.best_of_n_reward) if args.best_of > 1 else None
    policy = Contender(run.label, model=model, params=params, best_of=args.best_of, reward_judge=reward)
    baseline = _baseline(args, run, examples, tokenizer, args.dtype)
    name = _name(args, baseline.label, judge)

    def report(temperature, summary):
        print(result_line({"run": run.path, "baseline": baseline.label, **summary}), flush=True)

    results = win_rate_sweep(
        judge,
        tokenizer,
        prompts,
        policy,
        baseline,
        args.temperatures,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        seed=args.seed,
        on_result=report,
    )
    summaries = [summary for summary, _ in results]
    write_jsonl(
        out_dir / f"{name}.comparisons.jsonl",
        [{"temperature": s["temperature"], **r} for s, records in results for r in records],
    )
    write_json(
        out_dir / f"{name}.json",
        {
            "run": run.path,
            "policy": args.policy,
            "baseline": args.baseline,
            "task": args.task,
            "num_prompts": len(prompts),
            "max_new_tokens": args.max_new_tokens,
            "seed": args.seed,
            "judge": judge.name,
            "judge_usage": judge.usage(),
            "temperatures": summaries,
        },
    )
    return name, summaries


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("dpo_jax").setLevel(logging.INFO)
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from dpo_jax.evaluation.plots import MissingMatplotlib, plot_win_rates
    from dpo_jax.evaluation.runs import read_run
    from dpo_jax.evaluation.winrate_sweep import IncompleteJudging
    from dpo_jax.judges import JudgeError

    try:
        runs = [read_run(w) for w in args.workdirs]
        first_dir = Path(args.workdirs[0], "winrate")
        judge = make_judge(args, first_dir / "judge_cache.jsonl")
        curves, name = {}, ""
        for run in runs:
            name, summaries = evaluate_run(args, run, judge, Path(run.path, "winrate"))
            if summaries:
                curves[run.label] = summaries
    except (UsageError, JudgeError, ValueError, FileNotFoundError, OSError) as error:
        print(f"winrate: {error}", file=sys.stderr)
        return 2
    except IncompleteJudging as error:
        print(f"winrate: no result written: {error}", file=sys.stderr)
        return 1
    usage = judge.usage()
    if usage:
        logger.info("judge usage: %s", usage)
    if curves:
        out = Path(args.out_dir or first_dir) / f"{name}.png"
        try:
            print(f"figure: {plot_win_rates(curves, out, title=f'{args.task}: {name}')}")
        except MissingMatplotlib as error:
            print(f"winrate: no figure: {error}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

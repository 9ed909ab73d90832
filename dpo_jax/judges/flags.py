"""The judge's command-line flags, shared by the commands that judge (winrate, judge_agreement), and
the judge they ask for: the API judge wrapped so that only process 0 calls it (`judges.process_zero`)."""

from __future__ import annotations

from pathlib import Path

from dpo_jax.judges.process_zero import ProcessZeroJudge


def parse_price(text: str) -> tuple[float, float]:
    price_in, price_out = text.split(",")
    return float(price_in), float(price_out)


# (flag, type, default, help), as the commands' flag tables; a ValueError from a type is an invalid value.
JUDGE_FLAGS = (
    ("judge", str, "openai", "openai | reward_model | classifier"),
    ("judge_path", str, "", "the reward_model / classifier judge's model"),
    ("judge_model", str, "", "openai judge: model name (default: a pinned GPT-4o snapshot)"),
    ("judge_base_url", str, "", "openai judge: any chat-completions endpoint (default: OpenAI's)"),
    ("judge_cache", str, "", "openai judge: verdict cache (default: beside the results)"),
    ("judge_concurrency", int, 8, "openai judge: requests in flight at most"),
    ("judge_max_retries", int, 6, "openai judge: retries on 429 / 5xx / timeouts"),
    ("judge_timeout_s", float, 60.0, "openai judge: seconds per request"),
    ("judge_backoff_s", float, 1.0, "openai judge: first retry delay (doubles each retry)"),
    ("judge_price", parse_price, None, "openai judge: USD per million input,output tokens (cost log)"),
    ("judge_template", str, "", "openai judge: prompt file with {prompt} {response_a} {response_b}"),
    ("judge_answer_prefix", str, "Preferred:", "openai judge: how the reply's verdict line starts"),
    (
        "judge_retry_unparsable",
        bool,
        False,
        "openai judge: ask again where the cache holds a reply naming no choice",
    ),
)


def check_judge_flags(args) -> None:
    from dpo_jax.config.command_line import command_error

    if args.judge != "openai" and not args.judge_path:
        command_error(f"--judge={args.judge} needs --judge_path (a model directory or hub name)")


def judge_from_flags(args, cache_default: Path):
    """The judge the flags (`args`: attribute access, with `task`) ask for."""
    from dpo_jax import judges

    if args.judge != "openai":
        return judges.make_judge(args.judge, name_or_path=args.judge_path)
    names = ("concurrency", "max_retries", "timeout_s", "backoff_s", "model", "base_url", "retry_unparsable")
    options = {n: getattr(args, f"judge_{n}") for n in names if getattr(args, f"judge_{n}") != ""}
    template = judges.TASK_TEMPLATES[args.task]
    if args.judge_template:
        template = judges.load_template(args.judge_template, args.judge_answer_prefix)
    elif args.judge_answer_prefix != judges.DEFAULT_ANSWER_PREFIX:
        template = judges.JudgePrompt(judges.TEMPLATES[template], args.judge_answer_prefix, template)
    options.update(template=template, price_per_million=args.judge_price)
    api_judge = judges.make_judge("openai", cache_path=args.judge_cache or str(cache_default), **options)
    return ProcessZeroJudge(api_judge)  # on several processes, only process 0 calls the API

"""Command line: a judge's agreement with human labels, two label files' agreement, and the humans'
agreement with each other (the DPO paper's judge-vs-human table; library: analysis/judge_agreement.py).

    python -m dpo_jax.judge_agreement --labels=human_labels.jsonl --task=tldr --judge=openai \\
        --judge_template=my_prompt.txt --out=gpt4_labels.jsonl
    python -m dpo_jax.judge_agreement --labels=gpt4_labels.jsonl --against=other_judge_labels.jsonl

A label file holds one label per line: {"prompt", "response_a", "response_b", "label": A|B|tie|null,
"rater"}. With --against, the two files are compared, no judge is asked. Otherwise the judge labels each
distinct comparison of --labels (shown in a random order, mapped back), its labels are written to --out
(the same format, so two judges' files can then be compared) and compared with the file's. Prints one
`RESULT {json}` line per agreement: counts, the rate and its 95% bootstrap interval over comparisons.
(`winrate --check_judge` stays what it was: the judge against the preference data's chosen responses.)
Only a reward_model / classifier judge uses the devices; on several hosts every process runs the
command (--distributed, as `dpo_jax.main`), process 0 alone asks an API judge, writes and prints.
"""

from __future__ import annotations

import logging
from pathlib import Path

from dpo_jax import USER_ERROR_EXIT
from dpo_jax.config.command_line import parse_command, print_error, print_result, run_command
from dpo_jax.config.runtime import (
    DISTRIBUTED_CHOICES,
    DISTRIBUTED_FLAGS,
    apply_device_memory_settings,
    initialize_distributed,
)
from dpo_jax.judges import JUDGES, TASK_TEMPLATES
from dpo_jax.judges.flags import JUDGE_FLAGS, check_judge_flags

FLAGS = (
    ("labels", str, None, "label file (JSONL): human labels, or a judge's"),
    ("against", str, "", "label files to compare with, comma separated (no judge asked)"),
    ("task", str, "tldr", "tldr | hh | news: the judge's question"),
    ("out", str, "", "the judge's labels (default: LABELS.<judge>.jsonl)"),
    ("seed", int, 0, "order randomisation and bootstrap seed"),
    ("summary_out", str, "", "also write every agreement printed, as one JSON list, to this file"),
    *JUDGE_FLAGS,
    *DISTRIBUTED_FLAGS,
)


def parse_args(argv):
    choices = dict(task=tuple(TASK_TEMPLATES), judge=tuple(JUDGES), **DISTRIBUTED_CHOICES)
    args = parse_command(
        "python -m dpo_jax.judge_agreement", argv, FLAGS, doc=__doc__, choices=choices, required=("labels",)
    )
    if not args.against:
        check_judge_flags(args)
    return args


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    apply_device_memory_settings()  # as `main` does: the GPU memory fraction and XLA's memory flags
    initialize_distributed(args.distributed, args.distributed_timeout_s)  # before any other JAX call
    from dpo_jax.analysis.judge_agreement import agreement, judge_labels, read_labels
    from dpo_jax.analysis.results import write_jsonl
    from dpo_jax.analysis.winrate_runs import safe_name
    from dpo_jax.judges import JudgeError
    from dpo_jax.judges.flags import judge_from_flags

    records = []

    def report(record):
        records.append(record)
        print_result(record)

    try:
        labels = read_labels(args.labels)
        report({"between": "raters of " + args.labels, **agreement(labels, seed=args.seed)})
        if args.against:
            for against in (a for a in args.against.split(",") if a):
                other = read_labels(against)
                report({"between": "raters of " + against, **agreement(other, seed=args.seed)})
                report({"between": f"{args.labels} and {against}", **agreement(labels, other, seed=args.seed)})
            _write_summary(args.summary_out, records)
            return 0
        judge = judge_from_flags(args, Path(args.labels).with_suffix(".judge_cache.jsonl"))
        judged = judge_labels(judge, labels, seed=args.seed)
        errors = [row for row in judged if "error" in row]
        if errors:
            raise JudgeError(f"{len(errors)} comparisons got no verdict (first: {errors[0]['error']}); rerun")
        out = args.out or str(Path(args.labels).with_suffix(f".{safe_name(judge.name)}.jsonl"))
        write_jsonl(out, judged)
        unparsable = sum(row["label"] is None for row in judged)
        summary = agreement(judged, labels, seed=args.seed)
        between = f"{judge.name} and {args.labels}"
        report({"between": between, "out": out, "unparsable": unparsable, **summary, "usage": judge.usage()})
        _write_summary(args.summary_out, records)
    except (JudgeError, ValueError, OSError) as error:
        print_error(error)
        return USER_ERROR_EXIT
    return 0


def _write_summary(path: str, records: list) -> None:
    from dpo_jax.config.runtime import writes_outputs

    if path and writes_outputs():
        from dpo_jax.analysis.results import write_json

        write_json(Path(path), {"agreements": records})


if __name__ == "__main__":
    run_command(main)

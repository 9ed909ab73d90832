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
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from dpo_jax.judges import JUDGES, TASK_TEMPLATES
from dpo_jax.judges.flags import JUDGE_FLAGS, check_judge_flags


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m dpo_jax.judge_agreement",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--labels", required=True, help="label file (JSONL): human labels, or a judge's")
    parser.add_argument("--against", default="", help="a second label file to compare with (no judge asked)")
    parser.add_argument("--task", choices=tuple(TASK_TEMPLATES), default="tldr", help="the judge's question")
    parser.add_argument("--out", default="", help="the judge's labels (default: LABELS.<judge>.jsonl)")
    parser.add_argument("--seed", type=int, default=0, help="order randomisation and bootstrap seed")
    for flag, kind, default, text in JUDGE_FLAGS:
        choices = tuple(JUDGES) if flag == "judge" else None
        parser.add_argument(f"--{flag}", type=kind, default=default, help=text, choices=choices)
    args = parser.parse_args(argv)
    if not args.against:
        check_judge_flags(parser, args)
    return args


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from dpo_jax.analysis.judge_agreement import agreement, judge_labels, read_labels
    from dpo_jax.analysis.results import result_line, write_jsonl
    from dpo_jax.analysis.winrate_runs import safe_name
    from dpo_jax.judges import JudgeError
    from dpo_jax.judges.flags import judge_from_flags

    report = lambda record: print(result_line(record), flush=True)
    try:
        labels = read_labels(args.labels)
        report({"between": "raters of " + args.labels, **agreement(labels, seed=args.seed)})
        if args.against:
            other = read_labels(args.against)
            report({"between": "raters of " + args.against, **agreement(other, seed=args.seed)})
            report(
                {"between": f"{args.labels} and {args.against}", **agreement(labels, other, seed=args.seed)}
            )
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
    except (JudgeError, ValueError, OSError) as error:
        print(f"judge_agreement: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

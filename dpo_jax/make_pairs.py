"""Command line: preference pairs for the IMDb sentiment experiment, from an SFT model and a classifier.

    python -m dpo_jax.make_pairs --workdir=/tmp/imdb-sft --num_samples=4 --out=/tmp/imdb_pairs.jsonl
    python -m dpo_jax.main --config=configs/imdb.py --workdir=/tmp/imdb-dpo \\
        --config.model.name_or_path=/tmp/imdb-sft --config.data.path=/tmp/imdb_pairs.jsonl

Review prefixes (2-8 words, as the DPO paper; the `imdb_prefixes` source of --data_path, split
--split) are each continued --num_samples times by the SFT model (--workdir: a finished SFT run or any
Hugging Face model), each continuation scored by --classifier (p(positive) of prefix + continuation;
the paper's ground truth is siebert/sentiment-roberta-large-english), and every pair of different
scores is written, the higher chosen (--format=pairs), or the continuations ranked best first for
Plackett-Luce (--format=ranked). The output is in the local JSONL format the trainer reads, with the
scores, and is written only once complete. Prints one `RESULT {json}` line with the counts.
On several hosts every process runs the command (--distributed, as `dpo_jax.main`): sampling and
scoring are collective programs, and process 0 alone writes the file and prints the line.
"""

from __future__ import annotations

import logging
import sys

from dpo_jax import USER_ERROR_EXIT, print_error
from dpo_jax.analysis.sentiment_pairs import PREFIX_CHOICES, prefix_flags
from dpo_jax.config.command_line import command_error, parse_command
from dpo_jax.config.runtime import (
    DISTRIBUTED_CHOICES,
    DISTRIBUTED_FLAGS,
    apply_device_memory_settings,
    initialize_distributed,
    writes_outputs,
)
from dpo_jax.judges import DEFAULT_SENTIMENT_CLASSIFIER

FLAGS = (
    ("workdir", str, None, "the SFT run (or a Hugging Face model) to sample"),
    ("out", str, None, "output JSONL file"),
    ("classifier", str, DEFAULT_SENTIMENT_CLASSIFIER, "sentiment classifier"),
    ("num_samples", int, 4, "continuations per prefix (K >= 2)"),
    ("format", str, "pairs", "pairs | ranked"),
    ("temperature", float, 1.0, "sampling temperature"),
    ("top_k", int, 0, "top-k sampling (0 = off)"),
    ("top_p", float, 1.0, "nucleus sampling (1 = off)"),
    ("tokenizer", str, "", "default: the model's own"),
    *prefix_flags(split="train", num_prompts=0),
    *DISTRIBUTED_FLAGS,
)


def parse_args(argv):
    args = parse_command(
        "python -m dpo_jax.make_pairs", argv, FLAGS, doc=__doc__,
        choices={"format": ("pairs", "ranked"), **PREFIX_CHOICES, **DISTRIBUTED_CHOICES}, required=("workdir", "out"),
    )  # fmt: skip
    if args.num_samples < 2:
        command_error("--num_samples must be >= 2: a pair needs two continuations")
    if args.num_prompts < 0 or args.batch_size < 1 or args.max_new_tokens < 1:
        command_error("need --num_prompts >= 0, --batch_size >= 1 and --max_new_tokens >= 1")
    return args


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    apply_device_memory_settings()  # as `main` does: the GPU memory fraction and XLA's memory flags
    initialize_distributed(args.distributed, args.distributed_timeout_s)  # before any other JAX call
    from dpo_jax.analysis.results import result_line, write_jsonl
    from dpo_jax.analysis.runs import load_policy, read_run
    from dpo_jax.analysis.sentiment_pairs import preference_records, prefixes_from_flags, score_per_prompt
    from dpo_jax.data import load_tokenizer
    from dpo_jax.judges import ClassifierJudge, JudgeError
    from dpo_jax.sampling.prompts import sample_policy

    try:
        run = read_run(args.workdir)
        prefixes = prefixes_from_flags(args)
        classifier = ClassifierJudge(args.classifier)
        model, params = load_policy(run.model_path, dtype=args.dtype)
        tokenizer = load_tokenizer(args.tokenizer or run.tokenizer_path())
        settings = dict(
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            max_new_tokens=args.max_new_tokens,
        )
        samples = sample_policy(
            model,
            params,
            tokenizer,
            prefixes,
            settings=settings,
            num_samples=args.num_samples,
            batch_size=args.batch_size,
            seed=args.seed,
        )
        completions = samples.per_prompt()
        scores = score_per_prompt(classifier, prefixes, completions)
        records, counts = preference_records(prefixes, completions, scores, output_format=args.format)
        if not records:
            raise ValueError(
                f"no preference pairs: every continuation of each prefix scored the same ({counts})"
            )
        write_jsonl(args.out, records)
    except (JudgeError, ValueError, FileNotFoundError, OSError) as error:
        print_error(error)
        return USER_ERROR_EXIT
    if writes_outputs():
        summary = {"out": args.out, "format": args.format, "classifier": args.classifier, **counts}
        print(result_line(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

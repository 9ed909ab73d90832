"""Command line: preference pairs for the IMDb sentiment experiment, from an SFT model and a classifier.

    python -m dpo_jax.make_pairs --workdir=/tmp/imdb-sft --num_samples=4 --out=/tmp/imdb_pairs.jsonl
    python -m dpo_jax.main --config=configs/imdb.py --workdir=/tmp/imdb-dpo \\
        --config.model.name_or_path=/tmp/imdb-sft --config.data.path=/tmp/imdb_pairs.jsonl

Review prefixes (2-8 tokens of the SFT model's tokenizer, as the DPO paper; --prefix_unit=words for words; of --data_path, split
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

from dpo_jax import USER_ERROR_EXIT
from dpo_jax.analysis.sentiment_pairs import PREFIX_CHOICES, prefix_flags
from dpo_jax.config.command_line import command_error, parse_command, print_error, print_result, run_command
from dpo_jax.config.runtime import (
    DISTRIBUTED_CHOICES,
    DISTRIBUTED_FLAGS,
    apply_device_memory_settings,
    initialize_distributed,
)
from dpo_jax.judges import DEFAULT_SENTIMENT_CLASSIFIER
from dpo_jax.sampling.settings import sampling_flags, settings_from_flags

FLAGS = (
    ("workdir", str, None, "the SFT run (or a Hugging Face model) to sample"),
    ("out", str, None, "output JSONL file"),
    ("classifier", str, DEFAULT_SENTIMENT_CLASSIFIER, "sentiment classifier"),
    ("num_samples", int, 4, "continuations per prefix (K >= 2)"),
    ("format", str, "pairs", "pairs | ranked"),
    ("tokenizer", str, "", "default: the model's own"),
    *prefix_flags(split="train", num_prompts=0),
    *sampling_flags(max_new_tokens=48, fields=("temperature", "top_k", "top_p")),
    *DISTRIBUTED_FLAGS,
)


def parse_args(argv):
    args = parse_command(
        "python -m dpo_jax.make_pairs", argv, FLAGS, doc=__doc__,
        choices={"format": ("pairs", "ranked"), **PREFIX_CHOICES, **DISTRIBUTED_CHOICES}, required=("workdir", "out"),
    )  # fmt: skip
    if args.num_samples < 2:
        command_error("--num_samples must be >= 2: a pair needs two continuations")
    if args.num_prompts < 0 or args.batch_size < 1:
        command_error("need --num_prompts >= 0 and --batch_size >= 1")
    return args


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    apply_device_memory_settings()  # as `main` does: the GPU memory fraction and XLA's memory flags
    initialize_distributed(args.distributed, args.distributed_timeout_s)  # before any other JAX call
    from dpo_jax.analysis.results import write_jsonl
    from dpo_jax.analysis.runs import load_policy, read_run
    from dpo_jax.analysis.sentiment_pairs import preference_records, prefixes_from_flags, score_per_prompt
    from dpo_jax.data import load_tokenizer
    from dpo_jax.judges import ClassifierJudge, JudgeError
    from dpo_jax.sampling.prompts import sample_policy

    try:
        run = read_run(args.workdir)
        tokenizer = load_tokenizer(args.tokenizer or run.tokenizer_path())
        prefixes, prompt_set = prefixes_from_flags(args, tokenizer)
        classifier = ClassifierJudge(args.classifier)
        model, params = load_policy(run.model_path, dtype=args.dtype)
        samples = sample_policy(
            model,
            params,
            tokenizer,
            prefixes,
            settings=settings_from_flags(args),
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
    summary = {"out": args.out, "format": args.format, "classifier": args.classifier, **counts}
    print_result({**summary, **prompt_set.summary()})
    return 0


if __name__ == "__main__":
    run_command(main)

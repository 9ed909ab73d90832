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
"""

from __future__ import annotations

import argparse
import logging
import sys

from dpo_jax.analysis.sentiment_pairs import add_prefix_flags
from dpo_jax.judges import DEFAULT_SENTIMENT_CLASSIFIER


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m dpo_jax.make_pairs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--workdir", required=True, help="the SFT run (or a Hugging Face model) to sample")
    parser.add_argument("--out", required=True, help="output JSONL file")
    parser.add_argument("--classifier", default=DEFAULT_SENTIMENT_CLASSIFIER, help="sentiment classifier")
    parser.add_argument("--num_samples", type=int, default=4, help="continuations per prefix (K >= 2)")
    parser.add_argument("--format", choices=("pairs", "ranked"), default="pairs")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top_k", type=int, default=0)
    parser.add_argument("--top_p", type=float, default=1.0)
    parser.add_argument("--tokenizer", default="", help="default: the model's own")
    add_prefix_flags(parser, split="train", num_prompts=0)
    args = parser.parse_args(argv)
    if args.num_samples < 2:
        parser.error("--num_samples must be >= 2: a pair needs two continuations")
    if args.num_prompts < 0 or args.batch_size < 1 or args.max_new_tokens < 1:
        parser.error("need --num_prompts >= 0, --batch_size >= 1 and --max_new_tokens >= 1")
    return args


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(sys.argv[1:] if argv is None else argv)
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
        print(f"make_pairs: {error}", file=sys.stderr)
        return 2
    print(
        result_line({"out": args.out, "format": args.format, "classifier": args.classifier, **counts}),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

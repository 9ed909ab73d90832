"""Preference data for the controlled-sentiment experiment: SFT samples ranked by a sentiment classifier.

As in the DPO paper's IMDb setting: for each review prefix (2-8 words), K completions are sampled from
the SFT model and scored by the classifier (p(positive) of prefix + completion); every pair with
different scores becomes a preference pair, the higher score chosen (or, for Plackett-Luce, the K
completions ranked best first). Records are in the `source="local"` schemas the trainer reads:
    pairs:  {"prompt", "chosen", "rejected", "chosen_score", "rejected_score"}
    ranked: {"prompt", "responses" (best first), "scores"}
Completions that repeat another completion of the same prefix are dropped first (a pair of identical
texts teaches nothing, and the trainer rejects identical ranked responses), and pairs with equal scores
are skipped (a ranking keeps the first of equally scored completions); both are counted.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import ml_collections
import numpy as np

from dpo_jax.data import read_examples
from dpo_jax.sampling.settings import sampling_flags

FORMATS = ("pairs", "ranked")


def preference_records(
    prompts: Sequence[str],
    completions: Sequence[Sequence[str]],
    scores: Sequence[Sequence[float]],
    *,
    output_format: str = "pairs",
) -> tuple[list[dict], dict[str, int]]:
    """(records, counts) from K scored completions per prompt; counts: prompts, records,
    duplicate_completions, tied_pairs, prompts_without_pairs."""
    if output_format not in FORMATS:
        raise ValueError(f"output format must be one of {FORMATS}, got {output_format!r}")
    records: list[dict] = []
    counts = dict(prompts=len(prompts), duplicate_completions=0, tied_pairs=0, prompts_without_pairs=0)
    for prompt, texts, values in zip(prompts, completions, scores, strict=True):
        unique: dict[str, float] = {}
        for text, value in zip(texts, values, strict=True):
            if text in unique:
                counts["duplicate_completions"] += 1
            else:
                unique[text] = float(value)
        ranked = sorted(unique.items(), key=lambda item: -item[1])
        made = 0
        if output_format == "ranked":
            # A ranking must be strict: of completions with equal scores only the first is kept.
            strict = [item for k, item in enumerate(ranked) if k == 0 or item[1] != ranked[k - 1][1]]
            counts["tied_pairs"] += len(ranked) - len(strict)
            ranked = strict
            if len(ranked) >= 2:
                records.append(
                    {"prompt": prompt, "responses": [t for t, _ in ranked], "scores": [s for _, s in ranked]}
                )
                made = 1
        else:
            for (better, better_score), (worse, worse_score) in itertools.combinations(ranked, 2):
                if better_score == worse_score:
                    counts["tied_pairs"] += 1
                    continue
                records.append(
                    {
                        "prompt": prompt,
                        "chosen": better,
                        "rejected": worse,
                        "chosen_score": better_score,
                        "rejected_score": worse_score,
                    }
                )
                made += 1
        counts["prompts_without_pairs"] += made == 0
    counts["records"] = len(records)
    return records, counts


def score_per_prompt(
    classifier, prompts: Sequence[str], completions: Sequence[Sequence[str]]
) -> list[np.ndarray]:
    """The classifier's score of prompt + completion for every completion, grouped per prompt."""
    flat_prompts = [p for p, texts in zip(prompts, completions) for _ in texts]
    flat_texts = [t for texts in completions for t in texts]
    flat = np.asarray(classifier.score(flat_prompts, flat_texts), np.float64)
    out, start = [], 0
    for texts in completions:
        out.append(flat[start : start + len(texts)])
        start += len(texts)
    return out


def imdb_prefixes(path: str, split: str, *, limit: int = 0, words: tuple[int, int] = (2, 8)) -> list[str]:
    """The distinct review prefixes (`imdb_prefixes` source: words[0]..words[1] words, the length fixed per
    review by a checksum) of `split` at `path` (a hub name, a directory, or "fixture:imdb")."""
    data = ml_collections.ConfigDict(
        dict(
            source="imdb_prefixes",
            path=path,
            train_split=split,
            eval_split="",
            max_length=512,
            max_prompt_length=64,
            imdb_prefix_min_words=words[0],
            imdb_prefix_max_words=words[1],
        )
    )
    examples, _ = read_examples(data, split="train", limit=limit, unique_prompts=True)
    if not examples:
        raise ValueError(f"no review prefixes in split {split!r} of {path!r}")
    return [e.prompt for e in examples]


def prefix_flags(*, split: str, num_prompts: int) -> tuple:
    """The flags both IMDb commands (make_pairs, frontier) take, as `config.command_line` rows: where
    the prefixes come from and how many tokens continue them (the sampling fragment's max_new_tokens).
    `prefixes_from_flags` reads the first group back."""
    return (
        ("data_path", str, "stanfordnlp/imdb", "IMDb reviews: hub name or directory"),
        ("split", str, split, "the split whose reviews give the prefixes"),
        ("num_prompts", int, num_prompts, "first N prefixes (0 = all)"),
        ("prefix_min_words", int, 2, "words per prefix at least"),
        ("prefix_max_words", int, 8, "words per prefix at most"),
        *sampling_flags(max_new_tokens=48, fields=("max_new_tokens",)),
        ("batch_size", int, 32, "prompts per generate call"),
        ("seed", int, 0, "sampling seed"),
        ("dtype", str, "float32", "float32 | bfloat16 compute"),
    )


PREFIX_CHOICES = {"dtype": ("float32", "bfloat16")}


def prefixes_from_flags(args) -> list[str]:
    if args.batch_size < 1:
        raise ValueError("--batch_size must be >= 1")
    words = (args.prefix_min_words, args.prefix_max_words)
    return imdb_prefixes(args.data_path, args.split, limit=args.num_prompts, words=words)

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
import zlib
from collections.abc import Sequence

import ml_collections
import numpy as np

from dpo_jax.data import read_examples

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


def imdb_prefixes(
    path: str,
    split: str,
    *,
    limit: int = 0,
    words: tuple[int, int] = (2, 8),
    seed: int = 0,
    tokenizer=None,
    tokens: tuple[int, int] = (2, 8),
) -> list[str]:
    """The distinct review prefixes of `split` at `path` (a hub name, a directory, or "fixture:imdb"):
    with a `tokenizer`, the review's first tokens[0]..tokens[1] tokens of it, decoded (the DPO paper's
    prefixes of 2-8 tokens); without one, its first words[0]..words[1] words (the `imdb_prefixes`
    source). The length is fixed per review by a checksum of its text (never by the run). `limit` > 0
    keeps a random subset of that many, drawn by `seed` (data/prompt_sets.py): IMDb's splits are
    ordered by label, so the first reviews are all negative."""
    return prefix_set(path, split, limit=limit, words=words, seed=seed, tokenizer=tokenizer, tokens=tokens)[0]


def prefix_set(path, split, *, limit=0, words=(2, 8), seed=0, tokenizer=None, tokens=(2, 8)):
    """(prefixes, their PromptSet) as `imdb_prefixes` describes."""
    from dpo_jax.data.prompt_sets import choose

    source = "imdb" if tokenizer is not None else "imdb_prefixes"
    data = ml_collections.ConfigDict(
        dict(
            source=source,
            path=path,
            train_split=split,
            eval_split="",
            max_length=1 << 20,  # read, not tokenised
            max_prompt_length=1 << 19,
            imdb_prefix_min_words=words[0],
            imdb_prefix_max_words=words[1],
        )
    )
    examples, _ = read_examples(data, split="train", unique_prompts=tokenizer is None)
    if tokenizer is None:
        texts = [e.prompt for e in examples]
    else:
        low, high = tokens
        if not 1 <= low <= high:
            raise ValueError(f"prefix lengths {low}..{high} tokens: need 1 <= min <= max")
        texts = []
        for example in examples:
            review = example.responses[0]
            length = low + zlib.crc32(review.encode()) % (high - low + 1)
            texts.append(tokenizer.decode(tokenizer.encode(review, add_special_tokens=False)[:length]))
        texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError(f"no review prefixes in split {split!r} of {path!r}")
    unit = "tokens" if tokenizer is not None else "words"
    return choose(texts, limit, seed=seed, what=f"IMDb prefixes ({unit}) of split {split!r} of {path!r}")


def prefix_flags(*, split: str, num_prompts: int) -> tuple:
    """The flags both IMDb commands (make_pairs, frontier) take, as `config.command_line` rows: where
    the prefixes come from and how continuations are sampled. `prefixes_from_flags` reads the first
    group back."""
    return (
        ("data_path", str, "stanfordnlp/imdb", "IMDb reviews: hub name or directory"),
        ("split", str, split, "the split whose reviews give the prefixes"),
        ("num_prompts", int, num_prompts, "N prefixes, a random subset drawn by --prompt_seed (0 = all)"),
        ("prompt_seed", int, 0, "which random subset of prefixes"),
        ("prefix_unit", str, "tokens", "tokens (of the policy's tokenizer, as the paper) | words"),
        ("prefix_min_tokens", int, 2, "tokens per prefix at least"),
        ("prefix_max_tokens", int, 8, "tokens per prefix at most"),
        ("prefix_min_words", int, 2, "words per prefix at least (--prefix_unit=words)"),
        ("prefix_max_words", int, 8, "words per prefix at most (--prefix_unit=words)"),
        ("max_new_tokens", int, 48, "tokens sampled at most per continuation"),
        ("batch_size", int, 32, "prompts per generate call"),
        ("seed", int, 0, "sampling seed"),
        ("dtype", str, "float32", "float32 | bfloat16 compute"),
    )


PREFIX_CHOICES = {"dtype": ("float32", "bfloat16"), "prefix_unit": ("tokens", "words")}


def prefixes_from_flags(args, tokenizer=None):
    """(prefixes, their PromptSet); `tokenizer` (the policy's) cuts them in tokens (--prefix_unit)."""
    if args.batch_size < 1 or args.max_new_tokens < 1:
        raise ValueError("--batch_size and --max_new_tokens must be >= 1")
    if args.prefix_unit == "tokens" and tokenizer is None:
        raise ValueError("--prefix_unit=tokens needs the policy's tokenizer")
    return prefix_set(
        args.data_path,
        args.split,
        limit=args.num_prompts,
        words=(args.prefix_min_words, args.prefix_max_words),
        seed=args.prompt_seed,
        tokenizer=tokenizer if args.prefix_unit == "tokens" else None,
        tokens=(args.prefix_min_tokens, args.prefix_max_tokens),
    )

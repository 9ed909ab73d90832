"""Paper-shaped data for a rehearsal: the shipped fixtures' rows laid out as the real data sets are.

    python -m dpo_jax.recipes.rehearsal_data --out=DIR/rehearsal_data

A rehearsal (`python -m dpo_jax.experiment --scale=paper --rehearse`) runs the paper-scale plan on this
data, so every property of the real data sets that the paper-scale path depends on is here too:
- tldr_sft (CarperAI/openai_summarize_tldr): splits train / valid / test, disjoint posts;
- tldr_comparisons (CarperAI/openai_summarize_comparisons): train / valid1 / valid2 / test, its test
  posts partly absent from tldr_sft's test split (so a human reference is not always there);
- hh (Anthropic/hh-rlhf): train / test, the test split ordered by subset (one subset's rows first, as
  the real split is) with multi-turn dialogues among them;
- imdb (stanfordnlp/imdb): train / test, each ordered by label (every negative review first, as the
  real splits are), so a first-N slice of prefixes is all negative;
- cnn_dailymail (abisee/cnn_dailymail 3.0.0): train / validation / test.
Each split is written as DIR/<source>/<split>.jsonl in the hub's columns. Rows are the fixtures' rows,
made distinct by a numbered variant of their text: their sizes exceed every rehearsal prompt count, so a
random subset and a first-N slice differ. Deterministic: the same files for the same --seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dpo_jax.config.command_line import parse_command, result_line, run_command

SIZES = {
    "tldr_sft": {"train": 32, "valid": 12, "test": 16},
    "tldr_comparisons": {"train": 40, "valid1": 8, "valid2": 8, "test": 16},
    "hh": {"train": 48, "test": 24},
    "imdb": {"train": 40, "test": 24},
    "cnn_dailymail": {"train": 8, "validation": 8, "test": 12},
}
TLDR_CUE = "\nTL;DR:"


FIELDS = {
    "tldr_sft": ("prompt", "label"),
    "hh": ("chosen", "rejected"),
    "imdb": ("text",),
    "cnn_dailymail": ("article", "highlights"),
}


def _fixture(source: str, split: str) -> list[dict]:
    """The fixture's well-formed rows (the fixtures also hold deliberately malformed rows, for the
    loaders' bad-row tests: those are left out here)."""
    from dpo_jax.data.readers import fixture_dir

    path = Path(fixture_dir(source), f"{split}.jsonl")
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and all(isinstance(row.get(f), str) and row[f].strip() for f in FIELDS[source]):
            rows.append(row)
    return rows


def _post(prompt: str, tag: str) -> str:
    """A post made distinct: its title carries the tag."""
    return prompt.replace("\nPOST:", f" ({tag})\nPOST:", 1)


def tldr(seed: int) -> dict[str, dict[str, list[dict]]]:
    base = _fixture("tldr_sft", "train") + _fixture("tldr_sft", "test")
    sft, posts = {}, {}
    for split, size in SIZES["tldr_sft"].items():
        rows = [base[i % len(base)] for i in range(size)]
        sft[split] = [{"prompt": _post(r["prompt"], f"{split} {i}"), "label": r["label"]} for i, r in enumerate(rows)]
        posts[split] = sft[split]
    rng = np.random.default_rng(seed)
    comparisons = {}
    for split, size in SIZES["tldr_comparisons"].items():
        if split == "test":  # three quarters of its posts in tldr_sft's test split, the rest absent
            present = [r for r in posts["test"][: size * 3 // 4]]
            absent = [
                {"prompt": _post(b["prompt"], f"comparisons only {i}"), "label": b["label"]}
                for i, b in enumerate(base[: size - len(present)])
            ]
            rows = present + absent
        else:
            source = posts["train"] if split == "train" else posts["valid"]
            rows = [source[i % len(source)] for i in range(size)]
        comparisons[split] = []
        for i, row in enumerate(rows):
            other = base[int(rng.integers(len(base)))]["label"]
            if other == row["label"]:
                other = "a summary that says nothing."
            prompt = row["prompt"][: -len(TLDR_CUE)] if row["prompt"].endswith(TLDR_CUE) else row["prompt"]
            chosen, rejected = " " + row["label"].strip(), " " + other.strip()
            if i % 2:  # not every chosen is the human reference
                chosen, rejected = rejected, chosen
            comparisons[split].append({"prompt": prompt, "chosen": "TL;DR:" + chosen, "rejected": "TL;DR:" + rejected})
    return {"tldr_sft": sft, "tldr_comparisons": comparisons}


def _dialogue(row: dict, tag: str) -> dict:
    """An HH row made distinct: its first human turn carries the tag."""
    marker = "\n\nAssistant:"
    return {key: row[key].replace(marker, f" ({tag}){marker}", 1) for key in ("chosen", "rejected")}


def hh() -> dict[str, list[dict]]:
    train, test = _fixture("hh", "train"), _fixture("hh", "test")
    out = {"train": [_dialogue(train[i % len(train)], f"train {i}") for i in range(SIZES["hh"]["train"])]}
    # The test split ordered by subset: the rows of one "subset" (the fixtures' test rows) first,
    # then another (its train rows), as the real test split lists harmless-base before helpful-base.
    size = SIZES["hh"]["test"]
    first = [_dialogue(test[i % len(test)], f"subset a {i}") for i in range(size // 2)]
    second = [_dialogue(train[i % len(train)], f"subset b {i}") for i in range(size - size // 2)]
    out["test"] = first + second
    return out


# Distinct first words, so that even a 2-token prefix tells two reviews apart.
OPENERS = (
    "Honestly", "Frankly", "Overall", "Yesterday", "Tonight", "Sadly", "Luckily", "Somehow", "Clearly",
    "Perhaps", "Sometimes", "Finally", "Surprisingly", "Admittedly", "Basically", "Strangely", "Curiously",
    "Naturally", "Obviously", "Meanwhile", "Initially", "Eventually", "Personally", "Technically",
    "Visually", "Musically", "Critics", "Friends", "Parents", "Students", "Teachers", "Neighbours",
    "Audiences", "Viewers", "Fans", "Reviewers", "Mom", "Dad", "Grandpa", "Grandma", "Everyone", "Nobody",
    "Somebody", "Anyone", "Twice", "Once", "Again", "Still", "Truly", "Really", "Mostly", "Partly",
    "Wow", "Hmm", "Well", "Okay", "Alright", "Listen", "Look", "Imagine", "Remember", "Believe",
    "Trust", "Seriously",
)


def imdb() -> dict[str, list[dict]]:
    reviews = _fixture("imdb", "train") + _fixture("imdb", "test")
    out, used = {}, 0
    for split, size in SIZES["imdb"].items():
        rows = []
        for i in range(size):
            review = reviews[i % len(reviews)]
            rows.append({"text": f"{OPENERS[used % len(OPENERS)]}, {review['text']}", "label": review["label"]})
            used += 1
        out[split] = sorted(rows, key=lambda r: r["label"])  # every negative review first
    return out


def cnn_dailymail() -> dict[str, list[dict]]:
    articles = _fixture("cnn_dailymail", "test") + _fixture("cnn_dailymail", "train")
    out = {}
    for split, size in SIZES["cnn_dailymail"].items():
        out[split] = [
            {**a, "article": f"(Item {split} {i}) {a['article']}", "id": f"{split}-{i}"}
            for i, a in enumerate(articles[i % len(articles)] for i in range(size))
        ]
    return out


def write(out: str, seed: int = 0) -> dict[str, dict[str, int]]:
    """Every source's splits under `out`; returns {source: {split: rows}}."""
    sources = {**tldr(seed), "hh": hh(), "imdb": imdb(), "cnn_dailymail": cnn_dailymail()}
    counts = {}
    for source, splits in sources.items():
        directory = Path(out, source)
        directory.mkdir(parents=True, exist_ok=True)
        for split, rows in splits.items():
            text = "".join(json.dumps(row) + "\n" for row in rows)
            (directory / f"{split}.jsonl").write_text(text, encoding="utf-8")
        counts[source] = {split: len(rows) for split, rows in splits.items()}
    return counts


FLAGS = (
    ("out", str, None, "the directory the data sets are written in"),
    ("seed", int, 0, "which variants of the fixtures' rows"),
)


def main(argv=None) -> int:
    args = parse_command("python -m dpo_jax.recipes.rehearsal_data", argv, FLAGS, doc=__doc__, required=("out",))
    print(result_line({"out": args.out, "rows": write(args.out, args.seed)}))  # one process: no jax here
    return 0


if __name__ == "__main__":
    run_command(main)

"""How often a judge agrees with human labels, with another judge, and humans with each other: the
machinery behind the DPO paper's judge-vs-human table (GPT-4's agreement with the human raters of the
same comparisons, beside the raters' agreement with each other).

A label file is JSONL, one label per row, of a comparison of two responses to one prompt:
    {"prompt": ..., "response_a": ..., "response_b": ..., "label": "A" | "B" | "tie" | null, "rater": ...}
`rater` is optional (several rows of one comparison are several raters' labels). `judge_labels` writes a
judge's verdicts in the same format (rater = the judge's name, label null where unparsable), so any two
files can be compared: judge vs humans, judge vs judge, humans vs humans.

Agreement is counted over the pairs of labels two sources give the same comparison (all pairs of
different raters within one file), both A or B: ties and missing labels are counted apart, not agreed
or disagreed with. The interval is a 95% percentile bootstrap over comparisons (a comparison's pairs are
resampled together: one comparison's labels are not independent of each other).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dpo_jax import UserError
from dpo_jax.analysis.winrate import order_coins
from dpo_jax.judges import TIE, A, B, Comparison, Judge

LABELS = (A, B, TIE)
Key = tuple[str, str, str]


def read_labels(path: str) -> list[dict]:
    """The rows of a label file, each checked; a UserError naming the file, line and field otherwise."""
    rows = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"label file {path}: cannot read it ({error})") from error
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"label file {path} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(f"{where}: not JSON ({error})") from error
        if not isinstance(row, dict):
            raise UserError(f"{where}: expected an object")
        for field in ("prompt", "response_a", "response_b"):
            if not isinstance(row.get(field), str):
                raise UserError(f"{where}: field {field!r} must be text, got {row.get(field)!r}")
        label = row.get("label")
        if label is not None and (
            not isinstance(label, str) or label.strip().upper() not in ("A", "B", "TIE")
        ):
            raise UserError(f"{where}: field 'label' must be A, B, tie or null, got {label!r}")
        normal = None if label is None else (TIE if label.strip().upper() == "TIE" else label.strip().upper())
        rows.append({**row, "label": normal, "rater": str(row.get("rater", f"line {number}"))})
    if not rows:
        raise UserError(f"label file {path}: no labels")
    return rows


def comparison_key(row: dict) -> Key:
    return row["prompt"], row["response_a"], row["response_b"]


def judge_labels(judge: Judge, rows: Sequence[dict], *, seed: int = 0) -> list[dict]:
    """The judge's label of each distinct comparison of `rows`, in the rows' A/B frame: each comparison
    is shown in the given or in the swapped order by a seeded coin, so the judge's position bias does
    not pass for agreement, and its answer is mapped back."""
    keys = list(dict.fromkeys(comparison_key(row) for row in rows))
    as_given = order_coins(len(keys), seed)
    shown = [Comparison(p, a, b) if keep else Comparison(p, b, a) for (p, a, b), keep in zip(keys, as_given)]
    out = []
    for (prompt, a, b), keep, verdict in zip(keys, as_given, judge.judge(shown)):
        label = verdict.choice
        if not keep and label in (A, B):
            label = B if label == A else A
        out.append(
            dict(
                prompt=prompt,
                response_a=a,
                response_b=b,
                label=label,
                rater=judge.name,
                shown_as_given=bool(keep),
            )
        )
        if verdict.error:
            out[-1]["error"] = verdict.reason
        elif label is None:
            out[-1]["raw"] = verdict.raw
    return out


def _pairs_per_comparison(first: Sequence[dict], second: Sequence[dict] | None) -> dict[Key, list[tuple]]:
    """Per comparison, the pairs of labels to compare: first x second, or (second None) all pairs of
    different raters within first."""
    groups: dict[Key, list[dict]] = {}
    for row in first:
        groups.setdefault(comparison_key(row), []).append(row)
    pairs: dict[Key, list[tuple]] = {}
    if second is None:
        for key, group in groups.items():
            found = [
                (x["label"], y["label"])
                for x, y in itertools.combinations(group, 2)
                if x["rater"] != y["rater"]
            ]
            if found:
                pairs[key] = found
        return pairs
    others: dict[Key, list[dict]] = {}
    for row in second:
        others.setdefault(comparison_key(row), []).append(row)
    for key, group in groups.items():
        if key in others:
            pairs[key] = [(x["label"], y["label"]) for x in group for y in others[key]]
    return pairs


def agreement(
    first: Sequence[dict], second: Sequence[dict] | None = None, *, num_resamples: int = 10_000, seed: int = 0
) -> dict:
    """{"agreement", "ci_low", "ci_high", "agree", "n" (pairs both A or B), "comparisons", "with_tie",
    "without_label", "unmatched"}: how often the labels of `first` and `second` (or, without `second`,
    of different raters within `first`) for the same comparison agree."""
    pairs = _pairs_per_comparison(first, second)
    counts = dict(with_tie=0, without_label=0)
    agree, total = [], []
    for key_pairs in pairs.values():
        decided = [(x, y) for x, y in key_pairs if x in (A, B) and y in (A, B)]
        counts["with_tie"] += sum(TIE in (x, y) and None not in (x, y) for x, y in key_pairs)
        counts["without_label"] += sum(None in (x, y) for x, y in key_pairs)
        if decided:
            agree.append(sum(x == y for x, y in decided))
            total.append(len(decided))
    agree, total = np.asarray(agree, np.float64), np.asarray(total, np.float64)
    rate, low, high = float("nan"), float("nan"), float("nan")
    if total.size:
        rate = float(agree.sum() / total.sum())
        picks = np.random.default_rng(seed).integers(0, total.size, (num_resamples, total.size))
        low, high = (float(q) for q in np.quantile(agree[picks].sum(1) / total[picks].sum(1), [0.025, 0.975]))
    unmatched = 0  # comparisons only one of the two files labels
    if second is not None:
        unmatched = len({comparison_key(r) for r in first} ^ {comparison_key(r) for r in second})
    return dict(
        agreement=rate,
        ci_low=low,
        ci_high=high,
        agree=int(agree.sum()),
        n=int(total.sum()),
        comparisons=int(total.size),
        **counts,
        unmatched=unmatched,
    )

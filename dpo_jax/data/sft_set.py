"""The SFT set of preference data: one example per distinct prompt, as the reference implementation
(eric-mitchell/direct-preference-optimization) builds it, rather than one per preference row.

HH and SHP repeat a prompt for each of its pairs; the reference groups the rows by prompt and trains SFT
on one target per prompt:
- rows with scores (SHP; local pairs with `chosen_score` and ranked lists with `scores`, as make_pairs
  writes them): the prompt's highest-scored response over all its rows (after the score-ratio filter),
  a text counting with the score of its first appearance, ties going to the earliest. make_pairs writes
  a prompt's pairs in ranked combination order, so its last row holds the 3rd best of 4 continuations:
  without the scores preferred-FT would train on that;
- rows without (HH, TL;DR comparisons, unscored local pairs and ranked lists), or a prompt where only
  some rows are scored: the preferred response of the prompt's LAST row (the reference overwrites the
  target with each row's chosen response).
Examples come in the order of each prompt's first row, as the reference's prompt dictionary orders them.
Every other row of a prompt is counted as `merged_prompt` in the data report, with its file and line.
A target that tokenisation then rejects (EOS in its text, no room) leaves its prompt without an example,
counted under that reason: the reference would train on it, and another row's target would not be its.
Data with one response per row (TL;DR human summaries, IMDb, local completions and chat) is not
grouped: each row is its own demonstration.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from dpo_jax.data.report import MERGED_PROMPT, BadInputReport, BadRow, RowLocation
from dpo_jax.data.sources import Example

Row = tuple[RowLocation, Example]


def one_example_per_prompt(rows: Iterable[Row], report: BadInputReport) -> Iterator[Row]:
    """(location of the row the target comes from, Example(prompt, (target,))) per distinct prompt."""
    groups: dict[str, list[Row]] = {}
    for location, example in rows:
        groups.setdefault(example.prompt, []).append((location, example))
    for prompt, group in groups.items():
        index, target = _target(group)
        source = group[index][0]
        for other, (location, _) in enumerate(group):
            if other != index:
                detail = f"one SFT example per prompt: this prompt's target is {source}'s"
                report.record(BadRow(MERGED_PROMPT, "prompt", detail), location)
        yield source, Example(prompt, (target,))


def _target(group: list[Row]) -> tuple[int, str]:
    """(index of the row in `group` whose response is the SFT target, that response)."""
    if all(example.scores is not None for _, example in group):
        first_score: dict[str, float] = {}
        best = None  # (score, row index, response)
        for index, (_, example) in enumerate(group):
            for response, score in zip(example.responses, example.scores):
                score = first_score.setdefault(response, score)
                if best is None or score > best[0]:
                    best = (score, index, response)
        return best[1], best[2]
    return len(group) - 1, group[-1][1].responses[0]

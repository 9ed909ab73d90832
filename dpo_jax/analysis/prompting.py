"""Prompting baselines: a base model asked through a template, zero-shot or with k examples (k-shot).

The DPO paper compares its policies with prompting a pretrained model: zero-shot GPT-J for TL;DR and
2-shot Pythia-2.8B for HH. Its prompt text is not ours to ship, so the template is a file the user
supplies (the repository ships plain ones of its own under configs/prompts/). A template is text with
the placeholders {prompt} (the evaluated prompt, as the dataset formats it) and, for k-shot, {examples}:
k demonstrations, each a train example's prompt followed by its preferred response, drawn without
replacement by a seed and never the evaluated prompt itself. The judge always sees the dataset's prompt,
not the template around it: the policy is judged on the task, the template only asks for it.
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Sequence

import numpy as np

from dpo_jax import UserError

PLACEHOLDERS = ("prompt", "examples")
SEPARATOR = "\n\n"  # between demonstrations


@dataclasses.dataclass(frozen=True)
class PromptTemplate:
    text: str
    source: str  # the file it came from
    shots: int = 0
    demonstrations: tuple[tuple[str, str], ...] = ()  # (prompt, response): shots + 1 drawn

    def __call__(self, prompt: str) -> str:
        shots = [(p, r) for p, r in self.demonstrations if p != prompt][: self.shots]
        examples = SEPARATOR.join(p + r for p, r in shots)
        return self.text.format(prompt=prompt, examples=examples + SEPARATOR if examples else "")


def read_template(path: str) -> str:
    """The template's text; a UserError naming the file and line for an unreadable file or a placeholder
    other than {prompt} / {examples} (a literal brace is written twice)."""
    try:
        text = open(path, encoding="utf-8").read()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"prompt template {path}: cannot read it ({error})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            fields = [field for _, field, _, _ in string.Formatter().parse(line) if field is not None]
        except ValueError as error:
            raise UserError(f"prompt template {path} line {number}: {error} (write {{{{ or }}}} for a brace)") from None
        for field in fields:
            if field not in PLACEHOLDERS:
                raise UserError(
                    f"prompt template {path} line {number}: unknown placeholder {{{field}}}; "
                    f"the known ones are {{prompt}} and {{examples}}"
                )
    if "{prompt}" not in text:
        raise UserError(f"prompt template {path}: no {{prompt}} placeholder")
    return text


def load_template(
    path: str, *, shots: int = 0, train_examples: Sequence = (), seed: int = 0
) -> PromptTemplate:
    """The template of `path` with `shots` demonstrations drawn by `seed` from `train_examples`
    (`Example`s with a preferred response); one more is drawn so that an evaluated prompt that is
    among them can be left out and k remain."""
    text = read_template(path)
    if shots < 0:
        raise UserError(f"--shots={shots}: must be >= 0")
    if shots and "{examples}" not in text:
        raise UserError(f"prompt template {path}: --shots={shots} needs an {{examples}} placeholder")
    if not shots:
        return PromptTemplate(text, path)
    usable = [e for e in train_examples if e.responses]
    if len(usable) < shots + 1:
        raise UserError(
            f"--shots={shots}: the train split has {len(usable)} examples with a response; need {shots + 1}"
        )
    rows = np.random.default_rng(seed).choice(len(usable), size=shots + 1, replace=False)
    drawn = tuple((usable[int(r)].prompt, usable[int(r)].responses[0]) for r in rows)
    return PromptTemplate(text, path, shots, drawn)

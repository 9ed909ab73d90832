"""What an LLM judge is asked, and how its answer is read.

A `JudgePrompt` is a template with the placeholders {prompt}, {response_a} and {response_b}, and the
prefix of the line that carries the verdict. The built-in ones (`TEMPLATES`, one per kind of task) are
in our own words and ask only what the task asks: which summary is the better summary (`summarization`
for TL;DR posts, `news_summarization` for news articles), which reply is more helpful (`dialogue`, for
Anthropic-HH). Each asks for a one-line comparison, then the verdict on a line of its own.

Any other wording, e.g. the DPO paper's own prompts (its Appendix C), comes from a file
(`load_template`) with its answer prefix ("More helpful:", say): the file must use each of the three
placeholders and no other ({{ and }} stand for literal braces).

`parse_choice` reads the last line that starts with the answer prefix (A or B, or "tie" when the
template offers a tie: it says the word), or else a last line that is nothing but the letter; anything
else is unparsable and counted as such, never guessed.
"""

from __future__ import annotations

import dataclasses
import re
import string
from pathlib import Path

from dpo_jax import UserError
from dpo_jax.judges.base import TIE

PLACEHOLDERS = ("prompt", "response_a", "response_b")
DEFAULT_ANSWER_PREFIX = "Preferred:"


@dataclasses.dataclass(frozen=True)
class JudgePrompt:
    text: str  # a str.format template over PLACEHOLDERS
    answer_prefix: str = DEFAULT_ANSWER_PREFIX
    source: str = ""  # a built-in template's name, or the file it came from

    @property
    def offers_tie(self) -> bool:
        return re.search(r"\btie\b", self.text, re.IGNORECASE) is not None

    def render(self, prompt: str, response_a: str, response_b: str) -> str:
        return self.text.format(
            prompt=prompt.strip(), response_a=response_a.strip(), response_b=response_b.strip()
        )

    def parse(self, reply: str) -> tuple[str | None, str]:
        return parse_choice(reply, answer_prefix=self.answer_prefix, allow_tie=self.offers_tie)


def _answer_format(what: str) -> str:
    return (
        f"First, in one sentence, compare the two {what}. Then give your verdict, the letter alone, "
        "on a line of its own. Use exactly this format:\n"
        "Comparison: <one sentence>\n"
        f"{DEFAULT_ANSWER_PREFIX} <A or B>"
    )


def _summary_template(document: str, label: str) -> str:
    return (
        f"Below are a {document} and two summaries of it, A and B. Which of the two is the better "
        f"summary of the {document}: the one that conveys its main points accurately and concisely?\n\n"
        f"{label}:\n{{prompt}}\n\n"
        "Summary A:\n{response_a}\n\n"
        "Summary B:\n{response_b}\n\n" + _answer_format("summaries")
    )


TEMPLATES = {
    "summarization": _summary_template("forum post", "Post"),
    "news_summarization": _summary_template("news article", "Article"),
    "dialogue": (
        "Below is a conversation between a person and an AI assistant, and two candidate replies, A and "
        "B, for the assistant's next turn. Which reply is more helpful to the person?\n\n"
        "Conversation:\n{prompt}\n\n"
        "Reply A:\n{response_a}\n\n"
        "Reply B:\n{response_b}\n\n" + _answer_format("replies")
    ),
}
# Which template a dataset task uses.
TASK_TEMPLATES = {"tldr": "summarization", "news": "news_summarization", "hh": "dialogue"}


def builtin_prompt(name: str) -> JudgePrompt:
    if name not in TEMPLATES:
        raise ValueError(f"unknown judge template {name!r}; known: {sorted(TEMPLATES)}")
    return JudgePrompt(TEMPLATES[name], DEFAULT_ANSWER_PREFIX, name)


def load_template(path: str, answer_prefix: str = DEFAULT_ANSWER_PREFIX) -> JudgePrompt:
    """A user's judge prompt from `path`; a UserError naming the file and line of any placeholder fault."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"judge template {path}: cannot read it ({error})") from error
    if not answer_prefix.strip():
        raise UserError("the judge's answer prefix is empty: give the text that starts the verdict line")
    found = set()
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            fields = list(string.Formatter().parse(line))
        except ValueError as error:  # a lone { or }
            message = f"judge template {path} line {number}: {error} (write {{{{ or }}}} for a brace)"
            raise UserError(message) from None
        for _, field, spec, conversion in fields:
            if field is None:
                continue
            if field not in PLACEHOLDERS or spec or conversion:
                raise UserError(
                    f"judge template {path} line {number}: unknown placeholder {{{field}}}; the known ones "
                    f"are {', '.join('{' + p + '}' for p in PLACEHOLDERS)} (write {{{{ or }}}} for a brace)"
                )
            found.add(field)
    missing = [p for p in PLACEHOLDERS if p not in found]
    if missing:
        raise UserError(f"judge template {path}: no {', '.join('{' + p + '}' for p in missing)} placeholder")
    return JudgePrompt(text, answer_prefix.strip(), str(path))


_COMPARISON = re.compile(r"^\s*\**\s*comparison\s*\**\s*:\s*(.*)$", re.IGNORECASE)


def _verdict_line(answer_prefix: str) -> re.Pattern:
    # The prefix as written, case aside, optionally in markdown bold; then the letter (or "tie").
    words = r"\s+".join(re.escape(word) for word in answer_prefix.rstrip(":").split())
    colon = r"\s*:" if answer_prefix.rstrip().endswith(":") else ""
    return re.compile(rf"^\s*\**\s*{words}{colon}\s*\**\s*[\"'(]?\s*(a|b|tie)\b", re.IGNORECASE)


_BARE = re.compile(r"^\s*[\"'(*]*\s*(a|b)\s*[\"')*.]*\s*$", re.IGNORECASE)


def parse_choice(
    reply: str, *, answer_prefix: str = DEFAULT_ANSWER_PREFIX, allow_tie: bool = False
) -> tuple[str | None, str]:
    """(choice or None, the judge's one-line reason) from a judge's reply."""
    lines = [line for line in reply.strip().splitlines() if line.strip()]
    reason = ""
    for line in lines:
        match = _COMPARISON.match(line)
        if match:
            reason = match.group(1).strip()
    verdict = _verdict_line(answer_prefix)
    for line in reversed(lines):
        match = verdict.match(line)
        if match:
            letter = match.group(1).lower()
            if letter == TIE:
                return (TIE if allow_tie else None), reason
            return letter.upper(), reason
    if lines:
        match = _BARE.match(lines[-1])
        if match:
            return match.group(1).upper(), reason
    return None, reason

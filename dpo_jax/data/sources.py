"""Source adapters: one function per public dataset, from a raw record to an `Example`.

An `Example` is a prompt and its responses ranked best first (two for a preference pair, one for SFT
data, none for prompt-only data). An adapter either returns one or raises `BadRow`. `SOURCES` maps each
config name to its adapter, its hub name, the columns it needs, and its default splits and truncation
side. The generic local schemas (`source="local"`) live in `local_schemas.py`.

Text conventions follow the reference DPO implementation (eric-mitchell/direct-preference-optimization):
- Anthropic HH: the prompt is the chosen text up to and including its last "\\n\\nAssistant:"; the
  responses are what follows it in chosen and rejected (so they start with a space). With
  `hh_single_turn` only prompts of exactly one "\\n\\nHuman:" turn are kept (the paper's single-turn
  dialogue subset); the others are filtered rows, counted in the data report.
- SHP: prompt "\\n\\nHuman: <history>\\n\\nAssistant:", responses " " + each reference, pairs kept only
  when score_ratio >= shp_min_score_ratio (2 in the reference).
- TL;DR: the post rendered as "SUBREDDIT: r/..\\nTITLE: ..\\nPOST: ..\\nTL;DR:" and summaries " <text>".
- CNN/DailyMail (the DPO paper's out-of-distribution test of TL;DR policies): the article rendered as
  "ARTICLE: <article>\\nTL;DR:" (our format: a news article in the TL;DR policy's own cue), the
  response its reference highlights as one line " <h1> <h2> ...".

For the SFT stage (`ParseOptions.sft`) an adapter of pairwise data returns the preferred response alone
and never checks the other one, since the SFT set does not use it: a pair unusable for DPO (an empty or
mismatched rejected response) is still an SFT example, as in the reference. SHP returns both responses
with their scores (the SFT target is the prompt's best-scored response; see sft_set.py).
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable
from typing import Any

from dpo_jax.data.fields import choice_field, dict_field, list_field, number_field, text_field
from dpo_jax.data.report import (
    BAD_VALUE,
    EMPTY_FIELD,
    FILTERED_NOT_SINGLE_TURN,
    FILTERED_SCORE_RATIO,
    NO_ASSISTANT_TURN,
    PROMPT_MISMATCH,
    BadRow,
)

HH_ASSISTANT_TAG = "\n\nAssistant:"
HH_HUMAN_TAG = "\n\nHuman:"
TLDR_TAG = "TL;DR:"

# What an adapter yields per row, which decides the stages it can feed.
PAIRS = "pairs"
RANKED = "ranked"
SINGLE = "single"
PROMPT_ONLY = "prompt_only"


@dataclasses.dataclass(frozen=True)
class Example:
    prompt: str
    responses: tuple[str, ...]  # best first
    scores: tuple[float, ...] | None = None  # one per response where the data has them (SHP, for SFT)


@dataclasses.dataclass(frozen=True)
class ParseOptions:
    """Knobs some adapters read; the defaults are the reference implementation's."""

    shp_min_score_ratio: float = 2.0
    imdb_prefix_min_words: int = 2
    imdb_prefix_max_words: int = 8
    # Renders chat `messages` to text; set when the tokenizer has a chat template (local source only).
    chat_renderer: Any = None
    # The SFT stage: pairwise adapters return the preferred response only, unchecked the rest (see above).
    sft: bool = False
    # HH: keep only prompts with exactly one human turn (the paper's single-turn dialogue subset).
    hh_single_turn: bool = False


Adapter = Callable[[dict[str, Any], ParseOptions], Example]


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    name: str
    hub_name: str
    hub_config: str | None
    required_columns: frozenset[str]
    adapter: Adapter
    kind: str
    default_train_split: str
    default_eval_split: str
    default_truncation: str


def _response(text: str, field: str) -> str:
    if not text.strip():
        raise BadRow(EMPTY_FIELD, field, "the response is empty")
    return text


def parse_hh(record: dict[str, Any], options: ParseOptions) -> Example:
    chosen = text_field(record, "chosen")
    rejected = None if options.sft else text_field(record, "rejected")
    cut = chosen.rfind(HH_ASSISTANT_TAG)
    if cut < 0:
        raise BadRow(NO_ASSISTANT_TURN, "chosen", f"no {HH_ASSISTANT_TAG!r} in the dialogue")
    prompt = chosen[: cut + len(HH_ASSISTANT_TAG)]
    turns = prompt.count(HH_HUMAN_TAG)
    if options.hh_single_turn and turns != 1:
        raise BadRow(FILTERED_NOT_SINGLE_TURN, "chosen", f"the prompt has {turns} human turns")
    if options.sft:
        return Example(prompt, (_response(chosen[len(prompt) :], "chosen"),))
    if not rejected.startswith(prompt):
        raise BadRow(PROMPT_MISMATCH, "rejected", "rejected does not start with the chosen dialogue's prompt")
    return Example(
        prompt, (_response(chosen[len(prompt) :], "chosen"), _response(rejected[len(prompt) :], "rejected"))
    )


def tldr_prompt(post_block: str) -> str:
    """A post ending in "TL;DR:", whether or not the dataset already put it there."""
    post_block = post_block.rstrip()
    return post_block if post_block.endswith(TLDR_TAG) else post_block + "\n" + TLDR_TAG


def tldr_summary(text: str, field: str) -> str:
    """A summary as " <text>", without the "TL;DR:" some datasets prefix it with."""
    text = text.strip()
    if text.startswith(TLDR_TAG):
        text = text[len(TLDR_TAG) :].strip()
    return " " + _response(text, field)


def reddit_post(subreddit: str, title: str, post: str) -> str:
    return f"SUBREDDIT: r/{subreddit}\nTITLE: {title}\nPOST: {post}"


def parse_tldr_comparisons(record: dict[str, Any], options: ParseOptions) -> Example:
    prompt = tldr_prompt(text_field(record, "prompt"))
    chosen = tldr_summary(text_field(record, "chosen"), "chosen")
    if options.sft:
        return Example(prompt, (chosen,))
    rejected = tldr_summary(text_field(record, "rejected"), "rejected")
    return Example(prompt, (chosen, rejected))


def parse_summarize_from_feedback(record: dict[str, Any], options: ParseOptions) -> Example:
    info = dict_field(record, "info")
    post = text_field(info, "post", path="info.post")
    title = text_field(info, "title", path="info.title")
    subreddit = text_field(info, "subreddit", path="info.subreddit")
    summaries = list_field(record, "summaries")
    if len(summaries) != 2 or not all(isinstance(s, dict) for s in summaries):
        raise BadRow(BAD_VALUE, "summaries", f"expected two summary objects, got {len(summaries)} entries")
    choice = choice_field(record, "choice", range(2))
    used = (choice,) if options.sft else (choice, 1 - choice)
    texts = tuple(
        tldr_summary(text_field(summaries[i], "text", path=f"summaries[{i}].text"), f"summaries[{i}].text")
        for i in used
    )
    return Example(tldr_prompt(reddit_post(subreddit, title, post)), texts)


def parse_tldr_sft(record: dict[str, Any], options: ParseOptions) -> Example:
    return Example(
        tldr_prompt(text_field(record, "prompt")), (tldr_summary(text_field(record, "label"), "label"),)
    )


def news_prompt(article: str) -> str:
    return tldr_prompt("ARTICLE: " + " ".join(article.split()))


def parse_cnn_dailymail(record: dict[str, Any], options: ParseOptions) -> Example:
    # The highlights are one bullet per line; the TL;DR policies write one line, and so does the reference.
    highlights = " ".join(
        line.strip() for line in text_field(record, "highlights").splitlines() if line.strip()
    )
    return Example(news_prompt(text_field(record, "article")), (" " + _response(highlights, "highlights"),))


def parse_imdb_review(record: dict[str, Any], options: ParseOptions) -> Example:
    # Unconditional LM on reviews: no prompt, the whole review is the response.
    return Example("", (text_field(record, "text"),))


def parse_imdb_prefix(record: dict[str, Any], options: ParseOptions) -> Example:
    words = text_field(record, "text").split()
    low, high = options.imdb_prefix_min_words, options.imdb_prefix_max_words
    # The prefix length varies per review but must not depend on the run (seed, process, order):
    # it is drawn from a checksum of the review itself.
    length = low + zlib.crc32(" ".join(words).encode()) % (high - low + 1)
    return Example(" ".join(words[:length]), ())


def parse_shp(record: dict[str, Any], options: ParseOptions) -> Example:
    history = text_field(record, "history")
    ref_a = text_field(record, "human_ref_A")
    ref_b = text_field(record, "human_ref_B")
    a_preferred = choice_field(record, "labels", range(2)) == 1
    ratio = number_field(record, "score_ratio")
    if ratio < options.shp_min_score_ratio:
        raise BadRow(FILTERED_SCORE_RATIO, "score_ratio", f"{ratio:.3g} < {options.shp_min_score_ratio:g}")
    preferred, other = (ref_a, ref_b) if a_preferred else (ref_b, ref_a)
    scores = None
    if options.sft:  # the SFT target is the prompt's best-scored response, over all its pairs
        score_a, score_b = number_field(record, "score_A"), number_field(record, "score_B")
        scores = (score_a, score_b) if a_preferred else (score_b, score_a)
    return Example("\n\nHuman: " + history + HH_ASSISTANT_TAG, (" " + preferred, " " + other), scores)


def _spec(
    name, hub_name, columns, adapter, kind, splits=("train", "test"), truncation="keep_start", config=None
):
    return SourceSpec(
        name, hub_name, config, frozenset(columns), adapter, kind, splits[0], splits[1], truncation
    )


# What DPO reads; the other SHP columns (ids, timestamps) may be absent. SFT also reads the raw scores
# score_A and score_B of each row (a row without them is a missing_field there).
SHP_COLUMNS = ("history", "human_ref_A", "human_ref_B", "labels", "score_ratio")

SOURCES: dict[str, SourceSpec] = {
    spec.name: spec
    for spec in (
        # Dialogue prompts keep their END when cut: the last turns are what the response answers.
        _spec("hh", "Anthropic/hh-rlhf", ("chosen", "rejected"), parse_hh, PAIRS, truncation="keep_end"),
        _spec(
            "tldr_comparisons",
            "CarperAI/openai_summarize_comparisons",
            ("prompt", "chosen", "rejected"),
            parse_tldr_comparisons,
            PAIRS,
        ),
        _spec(
            "summarize_from_feedback",
            "openai/summarize_from_feedback",
            ("info", "summaries", "choice"),
            parse_summarize_from_feedback,
            PAIRS,
            splits=("train", "validation"),
            config="comparisons",
        ),
        _spec(
            "tldr_sft",
            "CarperAI/openai_summarize_tldr",
            ("prompt", "label"),
            parse_tldr_sft,
            SINGLE,
            splits=("train", "valid"),
        ),
        _spec(
            "cnn_dailymail",
            "abisee/cnn_dailymail",
            ("article", "highlights"),
            parse_cnn_dailymail,
            SINGLE,
            config="3.0.0",
        ),
        _spec("imdb", "stanfordnlp/imdb", ("text",), parse_imdb_review, SINGLE),
        _spec("imdb_prefixes", "stanfordnlp/imdb", ("text",), parse_imdb_prefix, PROMPT_ONLY),
        # The reference keeps SHP prompts' START (keep_end is for HH only).
        _spec("shp", "stanfordnlp/SHP", SHP_COLUMNS, parse_shp, PAIRS),
    )
}

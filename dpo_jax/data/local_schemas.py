"""The generic schemas of `source="local"` files, and chat rendering for `messages` data.

Recognised column sets (checked in this order, from the table's columns):
- `messages`: one chat conversation per row for SFT; its last message is the assistant's response.
- `chosen` + `rejected` (+ `prompt`): a preference pair. Text rows need a text `prompt`. Chat rows hold
  lists of {role, content}: either full conversations that share every message but the last, or, when a
  `prompt` list is given, one assistant message each. Optional `chosen_score` (as make_pairs writes).
- `prompt` + `responses`: a ranked list, best first (Plackett-Luce; two responses is a plain pair).
  Optional `scores`, one per response.

Scores matter to the SFT set only: a prompt whose rows all carry them trains on its best-scored
response over all its rows, whatever the row order (sft_set.py), as SHP does.
- `prompt` + `completion`: one response, for SFT.

Chat data is rendered with the tokenizer's chat template: the prompt is the conversation so far with the
generation prompt appended, and the response is the rest of the rendered conversation.
"""

from __future__ import annotations

from typing import Any

from dpo_jax import UserError
from dpo_jax.data.fields import checked_number, checked_text, list_field, number_field, text_field
from dpo_jax.data.report import BAD_VALUE, CHAT_TEMPLATE_MISMATCH, EMPTY_FIELD, PROMPT_MISMATCH, BadRow
from dpo_jax.data.sources import PAIRS, RANKED, SINGLE, Adapter, Example, ParseOptions

Message = dict[str, str]


def messages_field(record: dict[str, Any], field: str) -> list[Message]:
    messages = list_field(record, field)
    checked = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRow(BAD_VALUE, f"{field}[{i}]", f"expected a {{role, content}} object, got {message!r}")
        role = text_field(message, "role", path=f"{field}[{i}].role")
        content = text_field(message, "content", path=f"{field}[{i}].content", allow_empty=True)
        checked.append({"role": role, "content": content})
    return checked


class ChatRenderer:
    """Splits a rendered conversation into prompt text and response text with a chat template."""

    def __init__(self, tokenizer):
        if not getattr(tokenizer, "chat_template", None):
            raise UserError(
                f"chat data needs a tokenizer with a chat_template; {tokenizer.name_or_path!r} has none"
            )
        self._tokenizer = tokenizer

    def _render(self, messages: list[Message], *, generation_prompt: bool, field: str) -> str:
        try:
            return self._tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=generation_prompt
            )
        except Exception as error:  # templates raise plain exceptions for conversations they reject
            raise BadRow(BAD_VALUE, field, f"the chat template rejected the conversation: {error}") from error

    def example(self, prompt: list[Message], replies: list[tuple[str, Message]]) -> Example:
        prompt_text = self._render(prompt, generation_prompt=True, field="prompt")
        responses = []
        for field, reply in replies:
            if reply["role"] != "assistant":
                raise BadRow(
                    BAD_VALUE, field, f"the last message is from {reply['role']!r}, not the assistant"
                )
            full = self._render(prompt + [reply], generation_prompt=False, field=field)
            if not full.startswith(prompt_text):
                raise BadRow(
                    CHAT_TEMPLATE_MISMATCH, field, "the rendered conversation does not extend its prompt"
                )
            responses.append(self._response_text(full[len(prompt_text) :], field))
        return Example(prompt_text, tuple(responses))

    def _response_text(self, text: str, field: str) -> str:
        # Templates often close a turn with the EOS token; tokenisation appends EOS to every response,
        # so a trailing one here would be doubled.
        text = text.rstrip()
        eos = self._tokenizer.eos_token
        if eos and text.endswith(eos):
            text = text[: -len(eos)].rstrip()
        if not text.strip():
            raise BadRow(EMPTY_FIELD, field, "the response is empty")
        return text


def _renderer(options: ParseOptions, field: str) -> ChatRenderer:
    if options.chat_renderer is None:
        raise UserError(f"field {field!r} holds chat messages, which need a tokenizer with a chat_template")
    return options.chat_renderer


def parse_chat_conversation(record: dict[str, Any], options: ParseOptions) -> Example:
    messages = messages_field(record, "messages")
    if not messages:
        raise BadRow(EMPTY_FIELD, "messages")
    return _renderer(options, "messages").example(messages[:-1], [("messages", messages[-1])])


def _parse_chat_pair(record: dict[str, Any], options: ParseOptions) -> Example:
    # SFT uses the chosen conversation only, so the rejected one is not read (sources.py, ParseOptions.sft).
    fields = ("chosen",) if options.sft else ("chosen", "rejected")
    conversations = {field: messages_field(record, field) for field in fields}
    for field, conversation in conversations.items():
        if not conversation:
            raise BadRow(EMPTY_FIELD, field)
    chosen = conversations["chosen"]
    if record.get("prompt") is not None:
        prompt = messages_field(record, "prompt")
        for field, conversation in conversations.items():
            if len(conversation) != 1:
                raise BadRow(BAD_VALUE, field, "with a prompt given, expected exactly one assistant message")
    else:
        prompt = chosen[:-1]
        if not options.sft and conversations["rejected"][:-1] != prompt:
            raise BadRow(PROMPT_MISMATCH, "rejected", "chosen and rejected differ before their last message")
    replies = [(field, conversation[-1]) for field, conversation in conversations.items()]
    return _renderer(options, "chosen").example(prompt, replies)


def parse_pair(record: dict[str, Any], options: ParseOptions) -> Example:
    if isinstance(record.get("chosen"), list):
        return _parse_chat_pair(record, options)
    prompt = text_field(record, "prompt", allow_empty=True)
    if options.sft:
        scored = record.get("chosen_score") is not None
        scores = (number_field(record, "chosen_score"),) if scored else None
        return Example(prompt, (text_field(record, "chosen"),), scores)
    return Example(prompt, (text_field(record, "chosen"), text_field(record, "rejected")))


def parse_ranked(record: dict[str, Any], options: ParseOptions) -> Example:
    prompt = text_field(record, "prompt", allow_empty=True)
    responses = list_field(record, "responses")
    if not responses:
        raise BadRow(EMPTY_FIELD, "responses")
    used = responses[:1] if options.sft else responses  # SFT: the best response alone
    texts = tuple(checked_text(r, f"responses[{i}]") for i, r in enumerate(used))
    scores = None
    if options.sft and record.get("scores") is not None:
        values = list_field(record, "scores")
        if len(values) != len(responses):
            raise BadRow(BAD_VALUE, "scores", f"{len(values)} scores for {len(responses)} responses")
        scores = (checked_number(values[0], "scores[0]"),)
    return Example(prompt, texts, scores)


def parse_completion(record: dict[str, Any], options: ParseOptions) -> Example:
    return Example(text_field(record, "prompt", allow_empty=True), (text_field(record, "completion"),))


# (columns that select the schema, columns it requires, adapter, kind)
LOCAL_SCHEMAS: tuple[tuple[frozenset[str], frozenset[str], Adapter, str], ...] = (
    (frozenset({"messages"}), frozenset({"messages"}), parse_chat_conversation, SINGLE),
    (frozenset({"chosen"}), frozenset({"chosen", "rejected"}), parse_pair, PAIRS),
    (frozenset({"rejected"}), frozenset({"chosen", "rejected"}), parse_pair, PAIRS),
    (frozenset({"responses"}), frozenset({"prompt", "responses"}), parse_ranked, RANKED),
    (frozenset({"completion"}), frozenset({"prompt", "completion"}), parse_completion, SINGLE),
)


def local_schema(columns: frozenset[str], description: str) -> tuple[frozenset[str], Adapter, str]:
    """The (required columns, adapter, kind) of a local table, or a ValueError naming what is missing."""
    for selector, required, adapter, kind in LOCAL_SCHEMAS:
        if selector <= columns:
            return required, adapter, kind
    raise UserError(
        f"{description}: columns {sorted(columns)} match no local schema; expected `messages`, "
        f"`prompt`+`chosen`+`rejected`, `prompt`+`responses` or `prompt`+`completion`"
    )

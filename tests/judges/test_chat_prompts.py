"""Judge prompts (issue 22 item 5): a user's template file with its own answer line, checked for its
placeholders with the faulty line named; built-in templates that ask only what the task asks; "tie" only
where the template offers it; a judge on another endpoint named by its model and costed only at a given
price."""

import pytest

from dpo_jax import UserError
from dpo_jax.judges import TEMPLATES, Comparison, JudgePrompt, OpenAIJudge, load_template, parse_choice
from tests.judges.chat_server import KEY, MODEL, ChatServer

USER_TEMPLATE = (
    "Dialogue so far:\n{prompt}\n\nFirst answer:\n{response_a}\n\nSecond answer:\n{response_b}\n\n"
    "Say which answer helps more. Reply with two lines:\nComparison: <why>\nMore helpful: <A or B>\n"
    "A literal brace: {{not a placeholder}}\n"
)


def write(tmp_path, text):
    path = tmp_path / "judge.txt"
    path.write_text(text)
    return path


def test_a_user_template_is_rendered_and_its_answer_line_parsed(tmp_path):
    prompt = load_template(str(write(tmp_path, USER_TEMPLATE)), "More helpful:")
    text = prompt.render(" hi ", "one", "two")
    assert text.startswith("Dialogue so far:\nhi\n\nFirst answer:\none\n") and "{not a placeholder}" in text
    assert prompt.parse("Comparison: the second is concrete.\nMore helpful: B") == (
        "B",
        "the second is concrete.",
    )
    assert prompt.parse("**More helpful:** A")[0] == "A"
    # The built-in answer line is not this template's: unparsable, never guessed.
    assert prompt.parse("Comparison: x\nPreferred: A\nMore helpful: maybe")[0] is None
    assert parse_choice("Comparison: x\nMore helpful: A")[0] is None  # the default prefix is "Preferred:"


@pytest.mark.parametrize(
    "text, message",
    [
        ("{prompt}\n{response_a}\n", r"judge\.txt: no \{response_b\} placeholder"),
        (
            "{prompt}\n{response_a}\n{response_b}\nsee {answer}\n",
            r"judge\.txt line 4: unknown placeholder \{answer\}",
        ),
        ("{prompt}\n{response_a!r}\n{response_b}\n", r"line 2: unknown placeholder"),
        ("{prompt}\n{response_a}\n{response_b}\nJSON: {\n", r"line 4: .*write \{\{ or \}\} for a brace"),
    ],
)
def test_a_template_missing_a_placeholder_or_with_an_unknown_one_is_refused(tmp_path, text, message):
    with pytest.raises(UserError, match=message):
        load_template(str(write(tmp_path, text)))


def test_tie_only_where_the_template_offers_it():
    assert not any(JudgePrompt(text).offers_tie for text in TEMPLATES.values())
    assert JudgePrompt("{prompt}{response_a}{response_b}").parse("Preferred: tie")[0] is None
    offers = JudgePrompt("{prompt} {response_a} {response_b} Answer A, B or tie.")
    assert offers.offers_tie and offers.parse("Preferred: Tie")[0] == "tie"


def test_builtin_templates_ask_only_what_the_task_asks():
    assert "helpful" in TEMPLATES["dialogue"]
    for name, text in TEMPLATES.items():
        assert not any(word in text.lower() for word in ("harmless", "honest", "safe")), name
    assert "news article" in TEMPLATES["news_summarization"] and "forum post" in TEMPLATES["summarization"]


def test_a_judge_on_another_endpoint_is_named_by_its_model_and_costed_only_at_a_given_price(tmp_path):
    with ChatServer(model="gpt-4o") as server:  # a local server may serve any name
        options = dict(
            cache_path=tmp_path / "c.jsonl", base_url=server.base_url, api_key=KEY, backoff_s=0.001
        )
        with pytest.raises(ValueError, match="needs its model's name"):
            OpenAIJudge(**options)
        judge = OpenAIJudge(**options, model="gpt-4o")
        judge.judge([Comparison("post 1", "GOOD a", "weak b")])
        assert judge.name == "gpt-4o" and judge.usage()["cost_usd"] is None
        priced = OpenAIJudge(
            **{**options, "cache_path": tmp_path / "d.jsonl"}, model=MODEL, price_per_million=(1, 2)
        )
        assert priced.name == MODEL
    official = OpenAIJudge(cache_path=tmp_path / "e.jsonl", api_key=KEY)
    assert official.name.startswith("openai:gpt-4o") and official.usage()["cost_usd"] == 0.0

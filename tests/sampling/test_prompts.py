"""Prompt files for `python -m dpo_jax.sample`: text or JSON lines; a bad line names file, line and field."""

import pytest

from dpo_jax import MissingInputError, UserError
from dpo_jax.sampling.prompts import read_prompts


def _file(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_text_and_json_lines_prompts(tmp_path):
    assert read_prompts(_file(tmp_path, "p.txt", b"one\n\n  \ntwo\n")) == ["one", "two"]
    jsonl = b'"plain"\n\n{"prompt": "Human: a\\n\\nAssistant:", "id": 3}\n'
    assert read_prompts(_file(tmp_path, "p.jsonl", jsonl)) == ["plain", "Human: a\n\nAssistant:"]


@pytest.mark.parametrize(
    "name, data, message",
    [
        (
            "p.jsonl",
            b'{"prompt": "ok"}\n{"prompt": "cut\n',
            r"p.jsonl, line 2: not valid JSON \(Unterminated string",
        ),
        (
            "p.jsonl",
            b'{"prompt": "ok"}\n\n{"text": "x"}\n',
            r"p.jsonl, line 3: no `prompt` field \(its fields: text\)",
        ),
        ("p.jsonl", b'{"prompt": null}\n', r"p.jsonl, line 1: field `prompt` is null, not a string"),
        ("p.jsonl", b'{"prompt": ["a"]}\n', r"p.jsonl, line 1: field `prompt` is a JSON list, not a string"),
        ("p.jsonl", b"17\n", r"p.jsonl, line 1: a JSON int; expected a string or an object"),
        ("p.txt", b"fine\ncaf\xe9\n", r"p.txt, line 2: not UTF-8 text \(byte 0xe9 at column 4\)"),
    ],
)
def test_a_bad_line_is_named_by_file_line_and_field(tmp_path, name, data, message):
    with pytest.raises(UserError, match=message):
        read_prompts(_file(tmp_path, name, data))


def test_a_missing_prompt_file_is_named(tmp_path):
    with pytest.raises(MissingInputError, match=r"--prompts_file=.*nothing.txt: no such file"):
        read_prompts(str(tmp_path / "nothing.txt"))

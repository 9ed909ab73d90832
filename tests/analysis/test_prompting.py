"""Prompting baselines' templates (issue 28 item 5): zero-shot and k-shot from a user's file."""

import pytest

from dpo_jax import UserError
from dpo_jax.analysis.prompting import load_template
from dpo_jax.data import Example

TRAIN = [Example(f"Human: q{i}\n\nAssistant:", (f" a{i}",)) for i in range(6)]


def test_zero_shot_and_k_shot(tmp_path):
    zero = tmp_path / "zero.txt"
    zero.write_text("Summarize {{briefly}}:\n{prompt}")
    assert load_template(str(zero))("POST") == "Summarize {briefly}:\nPOST"
    two = tmp_path / "two.txt"
    two.write_text("Conversations:\n\n{examples}{prompt}")
    template = load_template(str(two), shots=2, train_examples=TRAIN, seed=0)
    text = template("Human: new\n\nAssistant:")
    assert text.startswith("Conversations:\n\n") and text.endswith("\n\nHuman: new\n\nAssistant:")
    assert text.count("Human:") == 3 and all(s[0] + s[1] in text for s in template.demonstrations[:2])
    # An evaluated prompt that is among the demonstrations is never shown its own answer.
    first = template.demonstrations[0][0]
    shown = template(first)
    assert shown.count(first) == 1 and shown.count("Human:") == 3
    assert load_template(str(two), shots=2, train_examples=TRAIN, seed=1).demonstrations != template.demonstrations


def test_template_mistakes_name_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("ok\nAnswer {question}\n")
    with pytest.raises(UserError, match=r"bad.txt line 2: unknown placeholder \{question\}"):
        load_template(str(bad))
    (tmp_path / "none.txt").write_text("no placeholder")
    with pytest.raises(UserError, match="no {prompt} placeholder"):
        load_template(str(tmp_path / "none.txt"))
    (tmp_path / "zero.txt").write_text("{prompt}")
    with pytest.raises(UserError, match="needs an {examples} placeholder"):
        load_template(str(tmp_path / "zero.txt"), shots=2, train_examples=TRAIN)
    with pytest.raises(UserError, match="cannot read it"):
        load_template(str(tmp_path / "missing.txt"))
    two = tmp_path / "two.txt"
    two.write_text("{examples}{prompt}")
    with pytest.raises(UserError, match="has 2 examples with a response; need 3"):
        load_template(str(two), shots=2, train_examples=TRAIN[:2])

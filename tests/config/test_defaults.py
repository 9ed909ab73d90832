"""docs/defaults.md's "Defaults and the reference implementation" table is the one place that compares our defaults
with the reference implementation's: its "ours" column must be what the configs set, so it cannot drift."""

import ast
import importlib
from pathlib import Path

import pytest

from dpo_jax.config import base_config

README = Path(__file__).resolve().parents[2] / "docs" / "defaults.md"  # linked from README.md
HEADING = "### Defaults and the reference implementation"
# Fields the table must cover: the optimisation, data, evaluation and precision settings the reference
# implementation fixes, and the optimizer of every config's SFT stage.
REQUIRED = {
    ("base", field)
    for field in (
        "optimizer",
        "learning_rate",
        "lr_schedule",
        "warmup_steps",
        "max_grad_norm",
        "global_batch_size",
        "num_epochs",
        "beta",
        "label_smoothing",
        "data.max_length",
        "data.max_prompt_length",
        "data.truncation_mode",
        "data.max_eval_examples",
        "eval_every_examples",
        "do_first_eval",
        "eval_samples",
        "model.dropout_rate",
        "model.param_dtype",
        "model.dtype",
        "reference.param_dtype",
    )
} | {(f"{name}:sft", field) for name in ("hh", "tldr", "imdb") for field in ("optimizer", "learning_rate")}


def table_rows() -> list[dict[str, str]]:
    text = README.read_text(encoding="utf-8")
    assert text.count(HEADING) == 1, f"README needs exactly one {HEADING!r} section"
    lines = text.split(HEADING, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    header, _, *body = table
    assert header == ["config", "field", "ours", "reference", "why different"]
    return [dict(zip(header, row, strict=True)) for row in body]


def config_for(name: str):
    if name == "base":
        return base_config()
    file, _, variant = name.partition(":")
    return importlib.import_module(f"configs.{file}").get_config(variant or None)


def config_value(config, dotted: str):
    for part in dotted.split("."):
        config = config[part]
    return config


ROWS = table_rows()


def test_the_table_covers_the_reference_settings():
    covered = {(row["config"], row["field"].strip("`")) for row in ROWS}
    assert REQUIRED <= covered, f"missing rows: {sorted(REQUIRED - covered)}"
    assert len(covered) == len(ROWS), "a (config, field) row is repeated"


@pytest.mark.parametrize("row", ROWS, ids=[f"{r['config']}-{r['field'].strip('`')}" for r in ROWS])
def test_ours_column_is_what_the_config_sets(row):
    written = row["ours"]
    assert written.startswith("`") and written.endswith("`"), f"'ours' must be a `python literal`: {written}"
    expected = ast.literal_eval(written.strip("`"))
    actual = config_value(config_for(row["config"]), row["field"].strip("`"))
    assert actual == expected and type(actual) is type(expected), (
        f"README says {row['config']} {row['field']} = {expected!r}; the config sets {actual!r}"
    )


@pytest.mark.parametrize(
    "variant, model, tokenizer, arch",
    [
        ("", "CarperAI/openai_summarize_tldr_sft", "EleutherAI/gpt-j-6b", None),
        ("sft", "EleutherAI/gpt-j-6b", "EleutherAI/gpt-j-6b", None),
        ("pythia", "EleutherAI/pythia-2.8b", "", None),
        ("sft,pythia", "EleutherAI/pythia-2.8b", "", None),
        ("tiny", "random", "tiny", "gpt2"),
        ("tiny,gptj", "random", "tiny", "gptj"),
        ("sft,tiny,gptj", "random", "tiny", "gptj"),
    ],
)
def test_tldr_trains_the_papers_gpt_j_by_default(variant, model, tokenizer, arch):
    from configs import tldr

    config = tldr.get_config(variant)
    assert (config.model.name_or_path, config.tokenizer) == (model, tokenizer)
    if arch:
        assert config.model.random_init_config.model_type == arch


@pytest.mark.parametrize("variant, message", [("tiny,neox,gptj", "choose one"), ("tiny,pythia", "tiny,neox")])
def test_conflicting_model_variants_are_refused(variant, message):
    from configs import tldr

    with pytest.raises(ValueError, match=message):
        tldr.get_config(variant)

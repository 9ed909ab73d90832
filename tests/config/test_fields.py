"""The one table of config fields: every field of every shipped config is classified once, no entry is
stale, and the three readers (resume check, synthetic stage fingerprint, recipe dry-run de-duplication)
agree with it."""

from __future__ import annotations

import importlib
import itertools
import re
from pathlib import Path

import pytest

from dpo_jax.config import base_config
from dpo_jax.config.fields import (
    FIELDS,
    PROGRAMS,
    TRAINING,
    UNKNOWN,
    changes_programs,
    changes_training,
    effect,
    entry_of,
    flatten,
)

REPO = Path(__file__).resolve().parents[2]
CONFIG_FILES = sorted(p.stem for p in (REPO / "configs").glob("*.py") if p.stem not in ("__init__", "common"))


def known_variants(module) -> list[str]:
    """The variants a config file accepts, as its own error message lists them."""
    with pytest.raises(ValueError, match="known:|variants:") as error:
        module.get_config("no_such_variant")
    message = str(error.value)
    if "known:" in message:  # configs/synthetic.py: "... known: ['tiny', 'rlhf']"
        return re.findall(r"'([a-z_]+)'", message.split("known:")[1])
    return re.findall(r"[a-z_]+", message.split("variants:")[1])  # configs/common.py: "(variants: a, b)"


def every_config():
    """(name, config) for base_config and every config file with each variant and each pair of them."""
    yield "base_config", base_config()
    for name in CONFIG_FILES:
        module = importlib.import_module(f"configs.{name}")
        variants = known_variants(module)
        for arg in ["", *variants, *(",".join(pair) for pair in itertools.combinations(variants, 2))]:
            try:
                yield f"configs/{name}.py:{arg}", module.get_config(arg or None)
            except ValueError:
                continue  # a combination the config refuses


ALL_FIELDS = {field: label for label, config in every_config() for field in flatten(config)}


def unclassified(fields) -> list[str]:
    return sorted(field for field in fields if entry_of(field) is None)


def test_every_field_of_every_config_is_in_the_table():
    assert len(ALL_FIELDS) > 100
    missing = unclassified(ALL_FIELDS)
    assert not missing, (
        f"config fields missing from dpo_jax/config/fields.py (first seen in {ALL_FIELDS[missing[0]]}): "
        f"{missing}; classify each as TRAINING, PROGRAMS, both or COSMETIC"
    )


def test_the_check_sees_a_new_field():
    config = base_config()
    with config.unlocked():
        config.data.new_option = 3
    assert unclassified(flatten(config)) == ["data.new_option"]
    # Until it is classified, it counts as changing both (never reused wrongly).
    assert effect("data.new_option") == UNKNOWN == TRAINING | PROGRAMS


def test_no_entry_is_stale_or_classified_twice():
    stale = sorted(
        entry for entry in FIELDS if not any(f == entry or f.startswith(entry + ".") for f in ALL_FIELDS)
    )
    assert not stale, f"entries naming no config field: {stale}"  # e.g. the old model.attention_impl
    nested = [(a, b) for a in FIELDS for b in FIELDS if b.startswith(a + ".")]
    assert not nested, f"entries inside another entry's subtree: {nested}"


def test_the_classes_say_what_they_should():
    assert (changes_training("beta"), changes_programs("beta")) == (True, False)
    assert (changes_training("model.attention"), changes_programs("model.attention")) == (False, True)
    assert (changes_training("log_every_steps"), changes_programs("log_every_steps")) == (False, False)
    assert changes_training("global_batch_size") and changes_programs("global_batch_size")
    # A subtree's entry classifies its leaves.
    assert entry_of("model.random_init_config.n_layer") == "model.random_init_config"
    assert entry_of("synthetic.sft.learning_rate") == "synthetic.sft"


def test_the_recipe_dry_run_drops_exactly_the_fields_that_change_no_program():
    from dpo_jax.recipes import run

    config = importlib.import_module("configs.tldr").get_config(None)
    kept = flatten(run._program_fields(config))
    assert set(kept) == {f for f in flatten(config) if changes_programs(f)}
    assert "beta" not in kept and "seed" not in kept and "model.attention" in kept


def test_a_synthetic_stage_fingerprint_reads_the_table():
    """The demo's stages on the recipe engine: a stage's fingerprinted arguments carry the run's changes
    it reads that change its training; the rest reach it untracked (a changed kernel reuses the stage)."""
    from dpo_jax.recipes.synthetic_demo import plan_demo

    def stage(name, **values):
        config = importlib.import_module("configs.synthetic").get_config("tiny")
        for key, value in values.items():
            *parents, leaf = key.split(".")
            target = config
            for parent in parents:
                target = target[parent]
            target[leaf] = value
        plan = plan_demo(config, f"{REPO}/configs/synthetic.py:tiny", "/demo", "/demo")
        return next(s for s in plan.shared + plan.run if s.name == name)

    base = stage("dpo_beta_0.1").args
    for cosmetic in ({"model.attention": "xla"}, {"eval_samples": 3}, {"synthetic.betas": "0.1,0.5"}):
        assert stage("dpo_beta_0.1", **cosmetic).args == base, cosmetic
    assert "--config.model.attention=xla" in stage("dpo_beta_0.1", **{"model.attention": "xla"}).untracked
    assert stage("dpo_beta_0.1", **{"data.max_length": 7}).args == base  # the stages never read `data`
    assert stage("dpo_beta_0.1", learning_rate=0.5).args != base
    assert "--config.beta=0.5" in stage("dpo_beta_0.5", beta=0.5).args  # DPO reads beta ...
    assert stage("sft", beta=0.5).args == stage("sft").args  # ... SFT does not
    assert stage("sft", learning_rate=0.5).args == stage("sft").args  # synthetic.sft sets its own

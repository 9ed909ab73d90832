"""The reference log-prob cache: one computation per (reference, data, tokenisation, lengths).

Two DPO runs of a beta sweep share one entry (the second reuses it and trains exactly as a run that
computed the arrays itself); a changed max_length or reference is another entry; a truncated,
altered or manifest-less entry is reported and recomputed, never read.
"""

import json
import logging

import numpy as np
import pytest

from dpo_jax import data as data_lib
from dpo_jax.evaluation import reference_cache
from dpo_jax.training import train_and_evaluate
from tests.train_helpers import read_metrics, tiny_config

QUIET = dict(num_train_steps=1, do_first_eval=False, eval_samples=0, eval_every_examples=10**6)


def _dpo(cache_dir, **overrides):
    config = tiny_config("hh", "tiny,precompute", **QUIET, **overrides)
    config.reference.logps_cache_dir = str(cache_dir)
    return config


def _status(workdir) -> dict:
    return json.loads((workdir / reference_cache.STATUS_FILENAME).read_text())


def test_a_beta_sweep_computes_once_and_a_damaged_entry_is_recomputed(tmp_path, caplog):
    cache = tmp_path / "cache"
    train_and_evaluate(_dpo(cache, beta=0.1), str(tmp_path / "beta_0.1"))
    first = _status(tmp_path / "beta_0.1")
    assert first["status"] == "computed" and len(list(cache.glob("*.npz"))) == 1

    train_and_evaluate(_dpo(cache, beta=0.5), str(tmp_path / "beta_0.5"))
    assert _status(tmp_path / "beta_0.5") == {**first, "status": "reused"}
    uncached = _dpo(cache, beta=0.5)
    uncached.reference.cache_logps = False
    train_and_evaluate(uncached, str(tmp_path / "uncached"))
    assert _status(tmp_path / "uncached")["status"] == "computed"
    # Same bits in (the stored float32 arrays are the computed ones), same program: equal metrics.
    reused, computed = read_metrics(tmp_path / "beta_0.5")[1], read_metrics(tmp_path / "uncached")[1]
    for name in ("loss", "rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected"):
        assert reused[name] == computed[name], name

    entry = cache / f"{first['key']}.npz"
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])  # a write cut short
    with caplog.at_level(logging.WARNING, logger="dpo_jax"):
        train_and_evaluate(_dpo(cache, beta=0.3), str(tmp_path / "beta_0.3"))
    assert _status(tmp_path / "beta_0.3")["status"] == "computed"
    assert "ignoring damaged entry" in caplog.text
    counts = json.loads((cache / f"{first['key']}.json").read_text())["counts"]
    assert reference_cache.load_entry(str(cache), first["key"], counts) is not None  # rewritten whole


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    config = tiny_config("hh", "tiny,precompute")
    tokenizer = data_lib.load_tokenizer("tiny")
    cache_dir = str(tmp_path_factory.mktemp("data"))
    short = config.copy_and_resolve_references()
    short.data.max_length = 48
    return config, {
        length: data_lib.build_datasets(c.data, tokenizer, stage="dpo", cache_dir=cache_dir)
        for length, c in ((64, config), (48, short))
    }


def test_the_key_covers_lengths_reference_and_numerics_but_not_beta(prepared):
    config, by_length = prepared
    key = reference_cache.identity_key(reference_cache.reference_logps_identity(config, by_length[64]))
    assert key == reference_cache.identity_key(
        reference_cache.reference_logps_identity(config, by_length[64])
    )
    changed = [reference_cache.reference_logps_identity(config, by_length[48])]
    for field, value in (("beta", 0.5), ("loss", "ipo"), ("data.share_prompt", False)):
        same = tiny_config("hh", "tiny,precompute", **{field: value})
        assert (
            reference_cache.identity_key(reference_cache.reference_logps_identity(same, by_length[64])) == key
        )
    for field, value in (("seed", 1), ("reference.param_dtype", "bfloat16"), ("length_normalize", True)):
        changed.append(
            reference_cache.reference_logps_identity(
                tiny_config("hh", "tiny,precompute", **{field: value}), by_length[64]
            )
        )
    assert len({key, *map(reference_cache.identity_key, changed)}) == 1 + len(changed)


def test_a_local_reference_is_named_by_its_file_contents(tmp_path):
    from tests.train_helpers import tiny_config as make

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"weights-1")
    config = make("hh", "tiny")
    config.reference.name_or_path = str(model)
    before = reference_cache.reference_weights_identity(config)
    (model / "model.safetensors").write_bytes(b"weights-2")
    assert reference_cache.reference_weights_identity(config) != before
    config.reference.name_or_path = "EleutherAI/pythia-2.8b"
    assert reference_cache.reference_weights_identity(config) == {"hub": "EleutherAI/pythia-2.8b"}


def test_damaged_entries_are_never_read(tmp_path, caplog):
    arrays = {"train": np.arange(6, dtype=np.float32).reshape(3, 2), "eval": np.ones((2, 2), np.float32)}
    counts = {"train": 3, "eval": 2}
    reference_cache.save_entry(str(tmp_path), "k", arrays, {"x": 1})
    got = reference_cache.load_entry(str(tmp_path), "k", counts)
    assert all(np.array_equal(got[s], arrays[s]) for s in arrays)
    assert not list(tmp_path.glob("*.tmp.*"))
    assert reference_cache.load_entry(str(tmp_path), "k", {"train": 4, "eval": 2}) is None  # other data

    npz = tmp_path / "k.npz"
    good = npz.read_bytes()
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF
    with caplog.at_level(logging.WARNING, logger="dpo_jax"):
        npz.write_bytes(bytes(flipped))
        assert reference_cache.load_entry(str(tmp_path), "k", counts) is None
        assert "checksum mismatch" in caplog.text
        npz.write_bytes(good)
        (tmp_path / "k.json").unlink()  # arrays renamed, manifest never written
        assert reference_cache.load_entry(str(tmp_path), "k", counts) is None
        assert "no manifest" in caplog.text


def test_a_resumed_run_still_counts_the_arrays_it_computed(tmp_path):
    cache, workdir = tmp_path / "cache", tmp_path / "run"
    train_and_evaluate(_dpo(cache), str(workdir))
    assert _status(workdir)["status"] == "computed"
    # Resumed (here: trained further) in its own workdir, it reads back its own entry: still computed.
    longer = _dpo(cache)
    longer.num_train_steps = 2
    train_and_evaluate(longer, str(workdir))
    assert _status(workdir)["status"] == "computed"  # (another run reusing it: the first test)

"""The IMDb sentiment pipeline end to end on tiny models and the shipped IMDb fixture:
SFT (trainer) -> `python -m dpo_jax.make_pairs` (SFT samples scored by a tiny random sentiment classifier)
-> DPO on those pairs (trainer) -> `python -m dpo_jax.frontier` (reward and sampled KL)."""

import json

import ml_collections
import numpy as np
import pytest

from dpo_jax import frontier, make_pairs
from dpo_jax.analysis.runs import expand_workdirs
from dpo_jax.analysis.sentiment_pairs import imdb_prefixes, preference_records
from dpo_jax.data import load_tokenizer, read_examples
from dpo_jax.training import train_and_evaluate
from tests.judges.tiny_classifiers import save_tiny_classifier
from tests.tolerances import f32_bound
from tests.train_helpers import tiny_config

SAMPLING = ["--data_path=fixture:imdb", "--max_new_tokens=8", "--batch_size=8"]


def results(capsys) -> list[dict]:
    out = capsys.readouterr().out
    return [json.loads(line[len("RESULT ") :]) for line in out.splitlines() if line.startswith("RESULT ")]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("imdb")
    train_and_evaluate(tiny_config("imdb", "sft,tiny", num_train_steps=2), str(root / "sft"))
    classifier = save_tiny_classifier(root / "classifier", num_labels=2)
    pairs = root / "pairs.jsonl"
    args = [f"--workdir={root / 'sft'}", f"--classifier={classifier}", "--num_samples=4", f"--out={pairs}"]
    assert make_pairs.main([*args, "--num_prompts=8", *SAMPLING]) == 0
    # One DPO run keeps the test short; a sweep is several such runs (launch/sweep.py).
    dpo = tiny_config("imdb", "tiny", num_train_steps=2, beta=0.5, tokenizer="")
    dpo.checkpoint_every_steps, dpo.keep_checkpoints = 1, 5  # both steps kept, for the frontier over training
    dpo.model.name_or_path = str(root / "sft")
    dpo.data.path, dpo.data.eval_split = str(pairs), ""  # as the full config: one pair file
    train_and_evaluate(dpo, str(root / "beta_0.5"))
    return dict(root=root, classifier=classifier, pairs=pairs)


def test_make_pairs_writes_scored_pairs_the_trainer_reads(pipeline):
    records = [json.loads(line) for line in pipeline["pairs"].read_text().splitlines()]
    # Issue 28 item 7: prefixes of 2-8 tokens of the SFT model's tokenizer (the paper's), a seeded
    # random subset of the train reviews (issue 28 item 3), not the first 8.
    tokenizer = load_tokenizer(str(pipeline["root"] / "sft" / "export"))
    prefixes = imdb_prefixes("fixture:imdb", "train", limit=8, tokenizer=tokenizer)
    lengths = [len(tokenizer.encode(p, add_special_tokens=False)) for p in prefixes]
    assert len(prefixes) == 8 and all(2 <= n <= 8 for n in lengths) and len(set(lengths)) > 1
    assert {r["prompt"] for r in records} <= set(prefixes)
    every = imdb_prefixes("fixture:imdb", "train", tokenizer=tokenizer)
    assert set(prefixes) < set(every) and prefixes != every[:8]
    assert imdb_prefixes("fixture:imdb", "train", limit=8, tokenizer=tokenizer, seed=1) != prefixes
    assert all(r["chosen_score"] > r["rejected_score"] and r["chosen"] != r["rejected"] for r in records)
    assert all(0.0 <= r["rejected_score"] and r["chosen_score"] <= 1.0 for r in records)
    # At most K(K-1)/2 = 6 pairs per prefix, and DPO trained on them (both runs exported a policy).
    assert len(records) <= 8 * 6 and len(records) >= 8  # the trainer needs a global batch of 8
    assert (pipeline["root"] / "beta_0.5" / "export" / "config.json").exists()


def test_ranked_output_is_read_as_plackett_luce_data(pipeline, tmp_path):
    out = tmp_path / "ranked.jsonl"
    args = [f"--workdir={pipeline['root'] / 'sft'}", f"--classifier={pipeline['classifier']}", f"--out={out}"]
    assert make_pairs.main([*args, "--format=ranked", "--num_samples=3", "--num_prompts=4", *SAMPLING]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records and all(r["scores"] == sorted(r["scores"], reverse=True) for r in records)
    examples, _ = read_examples(
        ml_collections.ConfigDict(dict(source="local", path=str(out), max_length=64, max_prompt_length=32)),
        split="train",
    )
    assert [list(e.responses) for e in examples] == [r["responses"] for r in records]


def test_preference_records_pairs_and_ranking():
    completions = [["a", "b", "c", "a"], ["x", "y"]]
    scores = [[0.2, 0.9, 0.5, 0.2], [0.4, 0.4]]
    records, counts = preference_records(["p", "q"], completions, scores)
    assert [(r["chosen"], r["rejected"]) for r in records] == [("b", "c"), ("b", "a"), ("c", "a")]
    assert counts == dict(
        prompts=2, duplicate_completions=1, tied_pairs=1, prompts_without_pairs=1, records=3
    )
    ranked, counts = preference_records(["p", "q"], completions, scores, output_format="ranked")
    assert ranked == [{"prompt": "p", "responses": ["b", "c", "a"], "scores": [0.9, 0.5, 0.2]}]
    assert counts["tied_pairs"] == 1 and counts["prompts_without_pairs"] == 1


def test_frontier_reports_reward_and_kl_per_run(pipeline, capsys):
    root = pipeline["root"]
    args = [
        f"--workdirs={root / 'beta_0.5'}",
        f"--classifier={pipeline['classifier']}",
        "--split=test",
        "--num_prompts=4",
        "--num_samples=4",
        f"--out_dir={root / 'frontier'}",
        *SAMPLING,
    ]
    assert frontier.main(args) == 0
    points = results(capsys)
    assert [p["method"] for p in points] == ["reference", "dpo"]
    assert [(p["parameter"], p.get("value")) for p in points] == [(None, None), ("beta", 0.5)]
    reference = points[0]
    # The reference scored against itself: sampled and teacher-forced log-probs agree, so KL is 0.
    assert abs(reference["kl"]) < 1e-4 and reference["kl_stderr"] < 1e-4
    for point in points:
        assert 0.0 <= point["reward"] <= 1.0 and point["num_samples"] == 16 and point["num_prompts"] == 4
        assert np.isfinite(point["kl"]) and np.isfinite(point["reward_stderr"])
    saved = json.loads((root / "frontier" / "frontier.json").read_text())
    assert saved["points"] == json.loads(json.dumps(points))
    assert (root / "frontier" / "frontier.png").stat().st_size > 0
    # A sweep root stands for all its runs.
    assert expand_workdirs(str(root)) == [str(root / "beta_0.5")]


def test_frontier_over_training_one_point_per_checkpoint(pipeline, capsys, tmp_path):
    """Issue 22 item 9: --checkpoints gives one point per kept checkpoint, each with its step."""
    run = pipeline["root"] / "beta_0.5"
    args = [
        f"--workdirs={run}",
        f"--classifier={pipeline['classifier']}",
        "--split=test",
        "--num_prompts=2",
        "--num_samples=2",
        f"--out_dir={tmp_path}",
        "--no_reference_point",
        "--checkpoints=all",
        *SAMPLING,
    ]
    assert frontier.main(args) == 0
    points = results(capsys)
    assert [(p["method"], p["value"], p["step"]) for p in points] == [("dpo", 0.5, 1), ("dpo", 0.5, 2)]
    assert all(np.isfinite(p["kl"]) and 0.0 <= p["reward"] <= 1.0 for p in points)
    # The last checkpoint holds the exported policy: the same samples, so the same numbers up to the
    # rounding of two loads of the same weights (another layout, another reduction order). KL is a
    # difference of sequence log-probs of up to 8 tokens, each at most log(V) = log(512) nats, each a
    # log-softmax over V logits: per sequence 8 + log2(V) roundings, for the policy and the reference.
    final = frontier.main([*args[:-1], "--checkpoints=final"]) == 0 and results(capsys)[0]
    kl_bound = f32_bound(8 * np.log(512), 2 * (8 + 9))
    assert abs(final["kl"] - points[1]["kl"]) <= kl_bound < abs(points[1]["kl"] - points[0]["kl"])
    assert final["reward"] == pytest.approx(points[1]["reward"], abs=f32_bound(1.0, 64))


def test_errors_are_one_clear_message(pipeline, capsys, tmp_path):
    out = tmp_path / "pairs.jsonl"
    args = [f"--workdir={pipeline['root'] / 'sft'}", f"--out={out}", f"--classifier={tmp_path / 'none'}"]
    assert make_pairs.main([*args, *SAMPLING]) == 2
    assert "cannot load a sequence-classification model" in capsys.readouterr().err and not out.exists()
    assert frontier.main([f"--workdirs={tmp_path}", f"--classifier={pipeline['classifier']}"]) == 2
    assert "holds no preference run" in capsys.readouterr().err

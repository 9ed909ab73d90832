"""Scoring on the mesh (`judges.scoring`): sharded params give the unsharded model's logits, lengths fall in
a few buckets, and the Flax judges (RoBERTa classifier, our reward models) run where torch cannot import
(and our reward models import none where it can)."""

import dataclasses
import json
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
import transformers

from dpo_jax.data import load_tokenizer
from dpo_jax.judges import ClassifierJudge, RewardModelJudge
from dpo_jax.judges.scoring import MIN_BUCKET, MeshScorer, bucket_length, jit_score_program, scorer_dtype
from dpo_jax.judges.sequence_classifier import classifier_config
from dpo_jax.models import from_hf
from dpo_jax.models.reward import ScalarHeadModel, export_reward_model
from dpo_jax.models.roberta import RobertaConfig, RobertaForSequenceClassification
from dpo_jax.sharding import make_mesh
from tests import deviceless
from tests.judges.test_reward_scoring import PROMPTS, RESPONSES, tiny_reward_model
from tests.judges.tiny_classifiers import save_tiny_classifier, save_tiny_roberta_classifier
from tests.tolerances import bf16_bound
from tests.train_helpers import REPO, process_env


def test_bucket_lengths_are_powers_of_two_within_the_model():
    assert [bucket_length(n, 64) for n in (1, 16, 17, 33, 64)] == [MIN_BUCKET, 16, 32, 64, 64]
    assert bucket_length(40, 38) == 38


def test_sharded_scoring_equals_the_unsharded_model(tmp_path):
    model, params = from_hf(save_tiny_roberta_classifier(tmp_path / "roberta"))
    rng = np.random.RandomState(0)
    sequences = [[0, *rng.randint(3, 259, n), 2] for n in (3, 30, 7, 12, 20)]
    scorer = MeshScorer(model, params, mesh=make_mesh((2, 2, 2)), batch_size=3)
    assert scorer.batch_rows == 4  # rounded up to the data-parallel size (data x fsdp)
    specs = {str(leaf.sharding.spec) for leaf in jax.tree.leaves(scorer.params)}
    assert any("fsdp" in spec or "tensor" in spec for spec in specs)  # the mesh's rules, not one device
    ours = scorer.logits(sequences, pad_id=1)
    fn, abstract_args = jit_score_program(model, scorer.mesh, (4, 64))  # what aot compiles: no weights needed
    assert fn.lower(*abstract_args).compile() is not None
    # Five lengths in two chunks of 4 rows, (5, 9, 14, 22) and (32,): both padded to 32, one compile.
    assert scorer.bucket_lengths == {32}
    # The reference: the model on one device, one right-padded batch (padding parity: test_roberta.py).
    ids = np.ones((len(sequences), 32), np.int32)
    mask = np.zeros_like(ids)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)], mask[row, : len(sequence)] = sequence, 1
    alone = np.asarray(jax.jit(model.apply)({"params": params}, ids, mask))
    # Same fp32 sums split across shards: a few ulps of O(10) logits through 2 layers.
    np.testing.assert_allclose(ours, alone, rtol=0, atol=1e-4)


NO_TORCH_SCRIPT = """
import json, sys
sys.modules["torch"] = None  # any `import torch` now fails
from dpo_jax.judges import ClassifierJudge, JudgeError, RewardModelJudge
prompts, responses, dirs = json.loads(sys.argv[1])
out = {
    "classifier": ClassifierJudge(dirs["roberta"]).score(prompts, responses).tolist(),
    "reward": RewardModelJudge(dirs["reward"]).score(prompts, responses).tolist(),
}
try:
    ClassifierJudge(dirs["gpt2_classifier"])
except JudgeError as error:
    out["gpt2_classifier"] = str(error)
print("RESULT " + json.dumps(out))
"""


def _script_result(script: str, argument) -> dict:
    """Runs `python -c script json(argument)` on 8 fake devices -> the record of its `RESULT {json}` line."""
    run = subprocess.run(
        [sys.executable, "-c", script, json.dumps(argument)],
        env=process_env(devices=8),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.split("RESULT ", 1)[1])


def test_the_jax_judges_need_no_torch(tmp_path):
    tokenizer = load_tokenizer("tiny")
    model, params = tiny_reward_model(tokenizer)
    dirs = {
        "roberta": save_tiny_roberta_classifier(tmp_path / "roberta"),
        "reward": export_reward_model(model, params, str(tmp_path / "reward"), tokenizer=tokenizer),
        "gpt2_classifier": save_tiny_classifier(tmp_path / "gpt2", num_labels=2),
    }
    texts = [p for p in PROMPTS], [r for r in RESPONSES]
    result = _script_result(NO_TORCH_SCRIPT, [*texts, dirs])
    # The same programs on the same 8 fake devices as in this process: the same numbers.
    np.testing.assert_allclose(
        result["classifier"], ClassifierJudge(dirs["roberta"]).score(*texts), atol=1e-6
    )
    np.testing.assert_allclose(result["reward"], RewardModelJudge(dirs["reward"]).score(*texts), atol=1e-6)
    assert "pip install 'dpo_jax[torch]'" in result["gpt2_classifier"]


OUR_EXPORT_SCRIPT = """
import json, sys
from dpo_jax.judges import RewardModelJudge
prompts, responses, directory = json.loads(sys.argv[1])
scores = RewardModelJudge(directory).score(prompts, responses).tolist()
print("RESULT " + json.dumps({"scores": scores, "torch_imported": "torch" in sys.modules}))
"""


def test_our_reward_models_are_judged_without_importing_torch(tmp_path):
    """torch installed, as here: its config and tokenizer are read without transformers' config classes,
    which import it (~2 s a process), and its config is what transformers makes of it."""
    tokenizer = load_tokenizer("tiny")
    model, params = tiny_reward_model(tokenizer)
    directory = export_reward_model(model, params, str(tmp_path / "reward"), tokenizer=tokenizer)
    ours, theirs = classifier_config(directory), transformers.AutoConfig.from_pretrained(directory)
    assert (ours["model_type"], ours["id2label"], len(ours["id2label"]), ours.get("pad_token_id")) == (
        theirs.model_type,
        theirs.id2label,
        theirs.num_labels,
        theirs.pad_token_id,
    )
    texts = [p for p in PROMPTS], [r for r in RESPONSES]
    result = _script_result(OUR_EXPORT_SCRIPT, [*texts, directory])
    assert not result["torch_imported"]
    np.testing.assert_allclose(result["scores"], RewardModelJudge(directory).score(*texts), atol=1e-6)


@pytest.mark.parametrize("label", ["POSITIVE", 1])
def test_the_label_is_chosen_by_name_or_index(tmp_path, label):
    judge = ClassifierJudge(save_tiny_roberta_classifier(tmp_path / "roberta"), positive_label=label)
    assert judge.positive_index == 1


def test_scorers_compute_in_bf16_on_accelerators_and_fp32_on_a_cpu():
    assert [scorer_dtype(p) for p in ("gpu", "cuda", "tpu", "cpu")] == ["bfloat16"] * 3 + ["float32"]
    assert scorer_dtype() == "float32"  # this host: the judges' scores stay fp32 here


def test_bf16_scores_equal_fp32_within_the_rounding_bound(tmp_path):
    """bf16 compute with fp32 params and heads (what the judges load on a GPU or TPU) against fp32: the
    RoBERTa classifier's logits (2 layers, post-LN) and a GPT-2 reward model's values (1 layer, pre-LN),
    within `bf16_bound` of their size; the classifier's positive-class probability, the IMDb reward,
    moves by at most a quarter of its logit difference's change."""
    one_device = make_mesh((1, 1, 1), devices=jax.devices()[:1])
    directory = save_tiny_roberta_classifier(tmp_path / "roberta")
    rng = np.random.RandomState(0)
    sequences = [[0, *rng.randint(3, 259, n), 2] for n in (3, 30, 7, 12, 20, 50, 60, 9)]
    logits = {}
    for dtype in ("float32", "bfloat16"):
        model, params = from_hf(directory, dtype=dtype)
        logits[dtype] = MeshScorer(model, params, mesh=one_device, batch_size=8).logits(sequences, pad_id=1)
    want, got = logits["float32"], logits["bfloat16"]
    bound = bf16_bound(want, layers=model.config.num_layers)
    np.testing.assert_allclose(got, want, rtol=0, atol=bound)
    probability = lambda x: 1 / (1 + np.exp(x[:, 0] - x[:, 1]))  # noqa: E731
    np.testing.assert_allclose(probability(got), probability(want), rtol=0, atol=2 * bound / 4)
    assert np.abs(got - want).max() > 0  # bf16 did run

    tokenizer = load_tokenizer(str(tmp_path / "roberta"))
    reward, reward_params = tiny_reward_model(tokenizer)
    ids = [tokenizer(p + r)["input_ids"] for p, r in zip(PROMPTS, RESPONSES)]
    scores = {}
    for dtype in ("float32", "bfloat16"):
        model = ScalarHeadModel(dataclasses.replace(reward.config, dtype=dtype))
        scores[dtype] = MeshScorer(model, reward_params, mesh=one_device, batch_size=4).logits(ids, pad_id=1)
    bound = bf16_bound(scores["float32"], layers=reward.config.num_layers)
    np.testing.assert_allclose(scores["bfloat16"], scores["float32"], rtol=0, atol=bound)


def test_a_bf16_roberta_scorer_compiles_to_cudnn_attention_for_an_h100():
    reason = deviceless.cuda_plugin_missing()
    if reason:
        pytest.skip(reason)
    config = RobertaConfig(
        vocab_size=512, hidden_size=128, num_layers=1, num_heads=2, intermediate_size=256,
        max_position_embeddings=130, type_vocab_size=1, pad_token_id=1, num_labels=2, dtype="bfloat16",
    )  # fmt: skip
    mesh = make_mesh((1, 1, 1), devices=list(deviceless.h100_mesh().devices.flat))
    fn, args = jit_score_program(RobertaForSequenceClassification(config), mesh, (4, 128))
    with deviceless.cudnn_checks_from_target(), jax.default_matmul_precision("default"):
        hlo = fn.lower(*args).compile().as_text()
    assert "__cudnn$fmhaSoftmax" in re.findall(r'custom_call_target="([^"]+)"', hlo)

"""A reward model trained here scores a (prompt, response) the same at training, in the reward-model judge
(Best-of-N), and in its transformers export: at the EOS the trainer appends, with the tokenizer's pad = EOS."""

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers

from dpo_jax.data import load_tokenizer
from dpo_jax.data.loader import EvalBatches
from dpo_jax.data.report import BadInputReport, RowLocation
from dpo_jax.data.sources import Example
from dpo_jax.data.tokenization import TokenizeSettings, tokenize_examples
from dpo_jax.judges import RewardModelJudge
from dpo_jax.models import from_hf_config, init_params
from dpo_jax.models.reward import ScalarHeadModel, export_reward_model, sequence_scores
from dpo_jax.training.step import make_value_fn

PROMPTS = ["The film was", "I expected", "Honestly, the acting was"]
RESPONSES = [" a joy from start to end.", " nothing", " wooden, and the plot thin."]


def tiny_reward_model(tokenizer):
    cfg = from_hf_config(
        dict(
            model_type="gpt2",
            vocab_size=len(tokenizer),
            n_layer=1,
            n_embd=32,
            n_head=2,
            n_positions=64,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    model = ScalarHeadModel(cfg)
    params = init_params(model, jax.random.PRNGKey(0))
    params["score"] = params["score"] * 50  # scores far enough apart that a wrong token shows
    return model, params


def training_scores(model, params, tokenizer):
    """What `reward_batch_loss` reads: the trainer's tokenisation and padded batch, value at the last real token."""
    examples = [
        (RowLocation("texts", i + 1), Example(p, (r,))) for i, (p, r) in enumerate(zip(PROMPTS, RESPONSES))
    ]
    report = BadInputReport("eval")
    split = tokenize_examples(examples, tokenizer, TokenizeSettings(64, 32, "keep_end"), report=report)
    batch = EvalBatches(
        split,
        global_batch_size=len(PROMPTS),
        process_index=0,
        process_count=1,
        pad_id=tokenizer.pad_token_id,
        max_length=64,
    ).batch(0)
    ids, mask = (jnp.asarray(batch[k][:, 0]) for k in ("input_ids", "attention_mask"))
    values = make_value_fn(model)(params, ids, mask)
    before_eos = np.asarray(values)[np.arange(len(PROMPTS)), np.asarray(mask).sum(-1) - 2]
    return np.asarray(sequence_scores(values, mask)), before_eos, batch


def test_training_judge_and_export_score_the_same_token(tmp_path):
    tokenizer = load_tokenizer("tiny")
    assert tokenizer.pad_token_id == tokenizer.eos_token_id  # the case that went wrong
    model, params = tiny_reward_model(tokenizer)
    trained, before_eos, batch = training_scores(model, params, tokenizer)
    # Reading the last content token instead (the defect) would be told apart by far more than 1e-4.
    assert np.abs(before_eos - trained).min() > 1e-2
    assert (
        batch["input_ids"][np.arange(3), 0, batch["attention_mask"][:, 0].sum(-1) - 1]
        == tokenizer.eos_token_id
    ).all()

    export = str(tmp_path / "run" / "export")  # where the trainer writes it
    export_reward_model(model, params, export, tokenizer=tokenizer, pad_id=tokenizer.pad_token_id)

    # Best-of-N and the reward-model judge: batched, padded, on the 8 fake devices.
    judge = RewardModelJudge(str(tmp_path / "run"), batch_size=2)  # a workdir names its export
    judged = judge.score(PROMPTS, RESPONSES)
    # A decoded sample that kept its EOS text is the same sequence, not one with two EOS.
    # (Other rows in the batch may change the blocking of the sums: a few ulps, not the 0.1s a shifted token gives.)
    with_eos = judge.score(PROMPTS[:1], [RESPONSES[0] + tokenizer.eos_token])
    np.testing.assert_allclose(with_eos, judged[:1], rtol=0, atol=1e-4)

    hf = transformers.AutoModelForSequenceClassification.from_pretrained(export).eval()
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(export)
    assert hf.config.pad_token_id == hf_tokenizer.pad_token_id != hf_tokenizer.eos_token_id
    inputs = hf_tokenizer(
        PROMPTS, [r + hf_tokenizer.eos_token for r in RESPONSES], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        exported = hf(**inputs).logits[:, 0].numpy()

    # Errors: fp32 sums over 32 features of O(1) hidden values times a head of size ~1, a few 1e-6 each.
    np.testing.assert_allclose(judged, trained, rtol=0, atol=1e-4)
    np.testing.assert_allclose(exported, trained, rtol=0, atol=1e-4)
    assert np.ptp(trained) > 1e-2  # the three texts are told apart

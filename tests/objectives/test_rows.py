"""Shared-prompt and packed rows give today's padded computation to fp32 rounding: log-probs, loss,
metrics and gradients, for GPT-2 (learned positions) and GPT-NeoX (rotary), K = 2 and K = 4, with
truncated examples, sharded over the 8 fake devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpo_jax.data.loader import _BatchBuilder
from dpo_jax.data.packing import build_rows, example_row_lengths, plan_rows
from dpo_jax.data.tokenization import TokenizedSplit, truncate_example
from dpo_jax.objectives.batch_loss import batch_loss, reference_logps
from dpo_jax.sharding import make_global_batch, make_mesh
from dpo_jax.training.step import make_apply_fn
from tests.synthetic.tiny_models import tiny_lm

VOCAB, PAD, MAX_LENGTH, MAX_PROMPT = 64, 0, 20, 8
NUM_EXAMPLES = 8
BETA = 0.5


def truncated_split(num_responses: int, seed: int = 0) -> TokenizedSplit:
    """Random examples cut by the reference truncation rule (long prompts and responses get cut); one
    has a 1-token prompt (nothing left to share but the copied token)."""
    rng = np.random.default_rng(seed)
    prompts, responses = [], []
    for i in range(NUM_EXAMPLES):
        prompt = list(rng.integers(1, VOCAB, size=1 if i == 3 else int(rng.integers(2, 16))))
        ranked = [
            list(rng.integers(1, VOCAB, size=int(rng.integers(1, 18)))) + [PAD] for _ in range(num_responses)
        ]
        prompt, ranked = truncate_example(
            prompt, ranked, max_length=MAX_LENGTH, max_prompt_length=MAX_PROMPT, truncation_mode="keep_end"
        )
        prompts.append(prompt)
        responses.extend(ranked)
    offsets = lambda parts: np.cumsum([0] + [len(p) for p in parts])  # noqa: E731
    return TokenizedSplit(
        np.concatenate(prompts).astype(np.int32),
        offsets(prompts),
        np.concatenate(responses).astype(np.int32),
        offsets(responses),
        num_responses,
    )


@pytest.fixture(scope="module")
def mesh():
    return make_mesh((8, 1, 1))


def padded_batch(split):
    builder = _BatchBuilder(split, pad_id=PAD, max_length=MAX_LENGTH)
    rows = np.arange(split.num_examples)
    return builder.build(rows, seq_len=MAX_LENGTH, real=np.ones(len(rows), bool))


def row_batch(split, *, share_prompt, pack):
    lengths = example_row_lengths(split, share_prompt)
    # Room for the longest example beside the shortest: packing must put several in some row.
    row_length = int(lengths.max() + lengths.min())
    plan = plan_rows(lengths, row_length=row_length, slots=4, pack=pack, row_multiple=8)
    indices = np.arange(split.num_examples)
    real = np.ones(len(indices), bool)
    return build_rows(
        split, indices, real, plan, range(len(plan.rows)), share_prompt=share_prompt, pad_id=PAD
    )


# Each case compiles twice (padded, rows); the layouts rotate over the cases to keep the test short.
CASES = [
    ("gpt2", 2, "dpo", dict(share_prompt=True, pack=False)),
    ("gpt2", 4, "plackett_luce", dict(share_prompt=True, pack=True)),
    ("gpt_neox", 2, "unlikelihood", dict(share_prompt=False, pack=True)),
    ("gpt_neox", 2, "dpo", dict(share_prompt=True, pack=True)),
    ("gpt_neox", 4, "plackett_luce", dict(share_prompt=True, pack=False)),
    ("gpt2", 1, "sft", dict(share_prompt=True, pack=True)),  # the SFT stage packs through the same path
]


@pytest.mark.parametrize("arch,num_responses,loss_name,layout", CASES)
def test_rows_match_padded_sequences(mesh, arch, num_responses, loss_name, layout):
    model, params = tiny_lm(arch, VOCAB, max_positions=MAX_LENGTH)
    apply_fn = make_apply_fn(model)
    reference = jax.tree.map(lambda x: x * 0.9, params)
    split = truncated_split(num_responses)
    assert split.sequence_lengths().max() == MAX_LENGTH  # truncation happened at the limit

    def loss_and_grad(batch):
        def loss(p):
            return batch_loss(p, reference, batch, apply_fn=apply_fn, loss_name=loss_name, beta=BETA)

        (_, metrics), grads = jax.value_and_grad(loss, has_aux=True)(params)
        return reference_logps(params, batch, apply_fn=apply_fn), metrics, grads

    run = jax.jit(loss_and_grad)
    want_logps, want_metrics, want_grads = run(make_global_batch(padded_batch(split), mesh))
    host = row_batch(split, **layout)
    logps, metrics, grads = run(make_global_batch(host, mesh))
    index, real = host["example_index"], host["example_mask"] > 0
    assert sorted(index[real]) == list(range(NUM_EXAMPLES))
    if layout["pack"]:
        assert real.sum(axis=1).max() > 1  # some row really holds several examples
    np.testing.assert_allclose(
        np.asarray(logps)[real], np.asarray(want_logps)[index[real]], rtol=1e-5, atol=1e-4
    )
    assert_same_metrics_and_grads(metrics, want_metrics, grads, want_grads, beta=BETA)


def assert_same_metrics_and_grads(metrics, want_metrics, grads, want_grads, *, beta):
    """`batch_loss` metrics (sum, count) and gradients equal to fp32 rounding.

    A metric is a sum over the examples of terms made of their policy and reference log-probs, which the
    other layout reduces in another order: its rounding scales with the magnitude S of those log-probs
    (twice the policy's, the reference's being alike; times beta for the rewards), not with its own value
    (a reward margin is a small difference of large log-probs). It is held to 4 fp32 epsilons of S."""
    assert set(metrics) == set(want_metrics)
    logps = 2 * sum(abs(float(total)) for name, (total, _) in want_metrics.items() if name.startswith("logps/"))
    for name, (total, count) in want_metrics.items():
        assert float(metrics[name][1]) == float(count), name
        rounding = 4 * np.finfo(np.float32).eps * logps * (beta if name.startswith("rewards/") else 1.0)
        np.testing.assert_allclose(
            float(metrics[name][0]), float(total), rtol=1e-5, atol=1e-5 + rounding, err_msg=name
        )
    # fp32 rounding of sums taken in another order: relative to each tensor's largest gradient.
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5 * np.abs(b).max()),
        grads,
        want_grads,
    )


def test_row_layout_positions_and_masks():
    """Hand-checked layout of one pair with a 3-token prompt: prefix, then each branch restarting."""
    split = TokenizedSplit(
        np.array([5, 6, 7], np.int32),
        np.array([0, 3]),
        np.array([8, 0, 9, 9, 0], np.int32),
        np.array([0, 2, 5]),
        2,
    )
    plan = plan_rows(example_row_lengths(split, True), row_length=10, slots=1, pack=False)
    rows = build_rows(split, np.array([0]), np.array([True]), plan, range(1), share_prompt=True, pad_id=PAD)
    np.testing.assert_array_equal(rows["input_ids"][0], [5, 6, 7, 8, 0, 7, 9, 9, 0, PAD])
    np.testing.assert_array_equal(rows["position_ids"][0], [0, 1, 2, 3, 4, 2, 3, 4, 5, 0])
    np.testing.assert_array_equal(rows["branch_ids"][0], [0, 0, 1, 1, 1, 2, 2, 2, 2, 0])
    np.testing.assert_array_equal(rows["segment_ids"][0], [1] * 9 + [0])
    np.testing.assert_array_equal(rows["loss_mask"][0], [0, 0, 0, 1, 1, 0, 1, 1, 1, 0])
    from dpo_jax.objectives.rows import row_attention_mask

    mask = np.asarray(row_attention_mask(jax.tree.map(jnp.asarray, rows)).pairwise())[0]
    # The second branch's copied prompt token sees the prefix and its own branch, not the first branch.
    np.testing.assert_array_equal(mask[5, :9], [1, 1, 0, 0, 0, 1, 1, 1, 1])
    assert not mask[9, :9].any()  # padding sees nothing of the example

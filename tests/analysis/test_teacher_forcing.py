"""Teacher-forced scores of sampled completions ([left-padded prompt | right-padded completion]) are the
same on every attention backend: cuDNN's call (routed to XLA's reference path) equals XLA, in float32
(which the routed call allows) so that the bound is sharp."""

import jax.numpy as jnp
import numpy as np

from dpo_jax.analysis.teacher_forcing import score_completions
from dpo_jax.models import ModelConfig, build_model
from dpo_jax.sampling.batched import Samples
from tests.models.test_attention_padding import float_tolerance, prompts_and_responses, route_cudnn_to_xla
from tests.synthetic.tiny_models import random_params


def test_teacher_forcing_with_cudnn_equals_xla(monkeypatch):
    prompt_ids, prompt_mask, tokens, mask = prompts_and_responses(8, 7, 5, vocab=64)
    samples = Samples(prompt_ids, prompt_mask, tokens, mask, np.zeros(8), [], num_samples=1)
    config = ModelConfig("gpt_neox", 64, 32, 2, 2, 64, 32, attention="xla")
    params = random_params(build_model(config), seed=7, std=0.3)
    want = score_completions(build_model(config), params, samples, batch_size=8)
    route_cudnn_to_xla(monkeypatch)
    got = score_completions(build_model(config.replace(attention="cudnn")), params, samples, batch_size=8)
    ids, real = np.concatenate([prompt_ids, tokens], 1), np.concatenate([prompt_mask, mask], 1)
    logits = build_model(config).apply({"params": params}, ids, attention_mask=real)
    magnitude = np.abs(np.asarray(logits, np.float32)[real > 0]).max()
    # The bound for 2 layers over the row's keys, on the logits; a token's log-prob moves at most twice
    # as far as its logits, and a completion sums up to 5 of them.
    tol = 5 * 2 * float_tolerance(jnp.float32, magnitude, ids.shape[1], layers=2)
    np.testing.assert_allclose(got, want, atol=tol)

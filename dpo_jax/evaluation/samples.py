"""Policy and reference completions for the same eval prompts, side by side (as the reference repo logs).

Written at each eval to WORKDIR/samples/step_<N>.jsonl: one object per prompt with the prompt text and
the policy's and the reference's completions, so a reader sees what the preference training changed.
"""

from __future__ import annotations

import json

import jax
import numpy as np

from dpo_jax.sampling import SamplingSettings, generate
from dpo_jax.sampling.prompts import left_pad


def left_padded_prompts(split, num_prompts: int, pad_id: int, eos_id: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `num_prompts` prompts of a tokenised split, left padded to a common width.

    An empty prompt (IMDb reviews for SFT) becomes the EOS token alone, GPT-2's convention for
    unconditional generation: a model needs at least one token to condition on.
    """
    prompts = [split.prompt(i) for i in range(min(num_prompts, split.num_examples))]
    prompts = [p if len(p) else np.array([eos_id], np.int32) for p in prompts]
    return left_pad(prompts, pad_id)


def _decode(tokenizer, tokens: np.ndarray, mask: np.ndarray) -> list[str]:
    return [tokenizer.decode(row[m.astype(bool)], skip_special_tokens=True) for row, m in zip(tokens, mask)]


def side_by_side_samples(
    model, policy_params, reference_params, prepared, tokenizer, config, step: int
) -> list[dict]:
    """Sample both models on the same prompts with the same key: only the params differ."""
    split = prepared.eval if prepared.eval is not None else prepared.train
    ids, mask = left_padded_prompts(split, config.eval_samples, prepared.pad_id, prepared.eos_id)
    room = model.config.max_position_embeddings - ids.shape[1]
    max_new = min(config.eval_sample_max_new_tokens, room)
    if max_new < 1:
        return []
    rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), step)
    settings = SamplingSettings(temperature=config.eval_sample_temperature, max_new_tokens=max_new)
    options = dict(settings=settings, rng=rng)
    options.update(eos_id=prepared.eos_id, pad_id=prepared.pad_id)
    out = {"policy": generate(model, policy_params, ids, mask, **options)}
    if reference_params is not None:
        out["reference"] = generate(model, reference_params, ids, mask, **options)
    prompts = _decode(tokenizer, ids, mask)
    texts = {
        name: _decode(tokenizer, np.asarray(r["tokens"]), np.asarray(r["mask"])) for name, r in out.items()
    }
    return [
        {"step": step, "prompt": p, **{name: texts[name][i] for name in texts}} for i, p in enumerate(prompts)
    ]


def write_samples(workdir, step: int, samples: list[dict]) -> None:
    if jax.process_index() != 0 or not samples:
        return
    directory = workdir / "samples"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"step_{step}.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))

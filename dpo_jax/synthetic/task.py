"""A small preference task whose RLHF optimum can be computed exactly.

Owns `SyntheticTask`: prompts of `prompt_length` tokens, responses of exactly `response_length`
tokens over a vocabulary of `vocab_size` (every token legal, no EOS), so a model whose vocabulary
is exactly `vocab_size` defines a normalised distribution over all C = vocab_size ** response_length
completions and every expectation can be summed instead of sampled.

Two hidden, seeded pieces stand in for the world of the paper's controlled-sentiment experiment:
  * the generator (the "human demonstrations" behind SFT): a prompt-conditioned Markov chain,
    p(y_t | x, y_<t) = softmax(A[y_{t-1}] + B[x_{t mod P}]), with y_{-1} = x_{P-1};
  * the reward (the "sentiment classifier"): r(x, y) = reward_scale * sum_t (v[y_t] + m * [y_t == x_{t mod P}]),
    a per-token value (some tokens are "positive") plus a bonus for echoing the aligned prompt token.
    Its scale is chosen so that beta in 0.05 .. 1 spans KL(pi*_beta || generator) from several nats
    down to about 0.1 nats (tests/synthetic/test_task.py checks it), i.e. an informative frontier.

Everything is float64 numpy; randomness comes from numpy Generators passed in by the caller.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from dpo_jax.synthetic.exact import log_normalise

# Spread of the generator's logits: peaked enough that the SFT model is far from uniform, flat
# enough that the generator leaves reward on the table for preference learning to find.
_GENERATOR_LOGIT_STD = 1.0
# Per-token reward values and the echo bonus, before `reward_scale`.
_TOKEN_VALUE_STD = 0.4
_ECHO_BONUS = 0.4


def as_generator(rng: np.random.Generator | int) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


@dataclasses.dataclass(frozen=True)
class SyntheticTask:
    vocab_size: int = 8
    prompt_length: int = 4
    response_length: int = 4
    seed: int = 0
    reward_scale: float = 1.0

    def __post_init__(self):
        for field in ("vocab_size", "prompt_length", "response_length"):
            if getattr(self, field) < 1:
                raise ValueError(f"SyntheticTask.{field}={getattr(self, field)} must be >= 1")
        if self.vocab_size < 2:
            raise ValueError(f"SyntheticTask.vocab_size={self.vocab_size} must be >= 2")

    @property
    def num_completions(self) -> int:
        return self.vocab_size**self.response_length

    @functools.cached_property
    def _hidden(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        v = self.vocab_size
        return {
            "previous_logits": _GENERATOR_LOGIT_STD * rng.standard_normal((v, v)),
            "prompt_logits": _GENERATOR_LOGIT_STD * rng.standard_normal((v, v)),
            "token_values": _TOKEN_VALUE_STD * rng.standard_normal(v),
        }

    @functools.cached_property
    def _next_token_logprobs(self) -> np.ndarray:
        """[previous token, aligned prompt token, next token] log-probs of the generator."""
        hidden = self._hidden
        logits = hidden["previous_logits"][:, None, :] + hidden["prompt_logits"][None, :, :]
        return log_normalise(logits)

    def _aligned_prompt_tokens(self, prompts: np.ndarray) -> np.ndarray:
        """[..., T]: the prompt token each response position is conditioned on and rewarded against."""
        return prompts[..., np.arange(self.response_length) % self.prompt_length]

    def _previous_tokens(self, prompts: np.ndarray, completions: np.ndarray) -> np.ndarray:
        prompts, completions = np.broadcast_arrays(prompts[..., -1:], completions)
        return np.concatenate([prompts[..., :1], completions[..., :-1]], axis=-1)

    def all_completions(self) -> np.ndarray:
        """[C, T] int32, every response in lexicographic order (row c is `completion_index` c)."""
        shape = (self.vocab_size,) * self.response_length
        return np.stack(np.unravel_index(np.arange(self.num_completions), shape), axis=-1).astype(np.int32)

    def completion_index(self, completions: np.ndarray) -> np.ndarray:
        """[...] row of `all_completions()` for each [..., T] response."""
        completions = np.asarray(completions)
        shape = (self.vocab_size,) * self.response_length
        return np.ravel_multi_index(tuple(np.moveaxis(completions, -1, 0)), shape)

    def sample_prompts(self, n: int, rng: np.random.Generator | int) -> np.ndarray:
        """[n, P] int32 prompts, uniform over the vocabulary."""
        return as_generator(rng).integers(0, self.vocab_size, (n, self.prompt_length)).astype(np.int32)

    def generator_samples(self, prompts: np.ndarray, rng: np.random.Generator | int) -> np.ndarray:
        """[N, T] int32: one response per prompt from the hidden generator (the SFT data)."""
        rng = as_generator(rng)
        prompts = np.asarray(prompts)
        aligned = self._aligned_prompt_tokens(prompts)
        previous = prompts[:, -1]
        tokens = []
        for t in range(self.response_length):
            probs = np.exp(self._next_token_logprobs[previous, aligned[:, t]])
            cdf = np.cumsum(probs, axis=-1)
            draws = rng.random(len(prompts))[:, None] * cdf[:, -1:]
            previous = np.minimum((cdf <= draws).sum(-1), self.vocab_size - 1)
            tokens.append(previous)
        return np.stack(tokens, axis=-1).astype(np.int32)

    def generator_logprobs(self, prompts: np.ndarray, completions: np.ndarray | None = None) -> np.ndarray:
        """[N, C] float64 log p_generator(y|x) (all completions when `completions` is None)."""
        prompts = np.asarray(prompts)[:, None, :]
        completions = self.all_completions() if completions is None else np.asarray(completions)
        completions = completions[None]
        previous = self._previous_tokens(prompts, completions)
        aligned = np.broadcast_to(self._aligned_prompt_tokens(prompts), previous.shape)
        token_logprobs = self._next_token_logprobs[
            previous, aligned, np.broadcast_to(completions, previous.shape)
        ]
        return token_logprobs.sum(-1)

    def _rowwise_reward(self, prompts: np.ndarray, completions: np.ndarray) -> np.ndarray:
        """r(x, y) for broadcastable [..., P] prompts and [..., T] completions."""
        echoes = completions == self._aligned_prompt_tokens(prompts)
        per_token = self._hidden["token_values"][completions] + _ECHO_BONUS * echoes
        return self.reward_scale * per_token.sum(-1)

    def paired_reward(self, prompts: np.ndarray, completions: np.ndarray) -> np.ndarray:
        """[M] float64 hidden reward of row m's completion [M, T] for row m's prompt [M, P]."""
        return self._rowwise_reward(np.asarray(prompts), np.asarray(completions))

    def reward(self, prompts: np.ndarray, completions: np.ndarray) -> np.ndarray:
        """[N, C] float64 hidden reward of every (prompt, completion) combination."""
        return self._rowwise_reward(np.asarray(prompts)[:, None, :], np.asarray(completions)[None, :, :])

    def sample_pairs(
        self,
        prompts: np.ndarray,
        logp_ref: np.ndarray,
        rng: np.random.Generator | int,
        pairs_per_prompt: int,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Preference pairs as in the paper: y1, y2 ~ pi_ref(.|x), labelled by Bradley-Terry on r.

        y1 and y2 are drawn exactly from the categorical over all completions given by `logp_ref`
        [N, C] (rows indexed like `all_completions()`); y1 is preferred with probability
        sigmoid(r(x, y1) - r(x, y2)). Draws with y1 == y2 carry no preference and are dropped:
        `len(prompts) * pairs_per_prompt - len(prompt_index)` is their count.

        Returns:
          (chosen [M, T] int32, rejected [M, T] int32, prompt_index [M] int64 rows of `prompts`).
        """
        rng = as_generator(rng)
        prompts, logp_ref = np.asarray(prompts), np.asarray(logp_ref, np.float64)
        if logp_ref.shape != (len(prompts), self.num_completions):
            raise ValueError(
                f"logp_ref has shape {logp_ref.shape}; expected {(len(prompts), self.num_completions)}"
            )
        cdf = np.cumsum(np.exp(log_normalise(logp_ref)), axis=-1)
        uniforms = rng.random((len(prompts), 2 * pairs_per_prompt)) * cdf[:, -1:]
        # Inverse-CDF sampling, row by row: exact, and zero-probability completions are never drawn.
        draws = np.stack([np.searchsorted(row, u, side="right") for row, u in zip(cdf, uniforms)])
        draws = np.minimum(draws, self.num_completions - 1).reshape(len(prompts), pairs_per_prompt, 2)
        prompt_index = np.repeat(np.arange(len(prompts)), pairs_per_prompt)
        first, second = draws[..., 0].ravel(), draws[..., 1].ravel()
        distinct = first != second
        prompt_index, first, second = prompt_index[distinct], first[distinct], second[distinct]
        completions = self.all_completions()
        margin = self._rowwise_reward(prompts[prompt_index], completions[first]) - self._rowwise_reward(
            prompts[prompt_index], completions[second]
        )
        first_wins = rng.random(len(margin)) < 1.0 / (1.0 + np.exp(-margin))
        chosen = np.where(first_wins, first, second)
        rejected = np.where(first_wins, second, first)
        return completions[chosen], completions[rejected], prompt_index

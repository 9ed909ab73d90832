"""The trainer's own passes without gradients: eval metrics and precomputed reference log-probs
(`passes`), and the side-by-side policy / reference samples written at each eval (`samples`).
The paper's analyses (win rates, the reward-vs-KL frontier, preference pairs) live in `dpo_jax.analysis`."""

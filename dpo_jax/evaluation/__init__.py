"""Evaluation without gradients: the trainer's eval passes and side-by-side samples (`passes`, `samples`),
judged win rates across temperatures (`winrate*`), sampled KL and reward (`kl_estimate`,
`teacher_forcing`, `sentiment_frontier`) and the IMDb preference pairs (`sentiment_pairs`)."""

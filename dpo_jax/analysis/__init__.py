"""The paper's analyses of trained runs: judged win rates across temperatures (`winrate`,
`winrate_sweep`, `winrate_runs`), sampled KL and reward (`kl_estimate`, `teacher_forcing`,
`sentiment_frontier`), the IMDb preference pairs (`sentiment_pairs`), figures (`plots`), result files
written whole (`results`), and what a run is and holds (`runs`, `saved_policy`)."""

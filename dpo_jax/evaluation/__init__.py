"""Evaluation: judged win rates, KL estimates and the IMDb sentiment pipeline."""

"""The `news` recipe: the paper's out-of-distribution table, the TL;DR policies (DPO, PPO) summarising
CNN/DailyMail test articles, judged against the articles' reference highlights at temperatures 0 and
0.25 (Table 1).

    python -m dpo_jax.experiment --recipe=news --scale=tiny --workdir=/tmp/tldr-recipe

Its training stages are the tldr recipe's (the same commands), so in the tldr recipe's DIR they are
reused. Every policy on one prompt set: a seeded random subset of the test articles.
"""

from __future__ import annotations

from dpo_jax.recipes import rehearsal, tldr, win_rates
from dpo_jax.recipes.base import Recipe
from dpo_jax.recipes.paper import PAPER_CLAIMS
from dpo_jax.recipes.stages import name_with

FIGURE = "Table 1: out-of-distribution (CNN/DailyMail) win rates"
SOURCES = {
    "temperatures": "paper Table 1: temperatures 0 and 0.25",
    "betas": "paper: its TL;DR DPO policy (beta 0.5)",
}


def config(scale: str):
    c = tldr.config(scale)
    c.task = "news"
    c.temperatures = (0.0, 0.25)
    return c


def stages(c) -> list:
    out = [rehearsal.data_stage(c)] if c.rehearse else []
    out += win_rates.training_stages(_as_tldr(c), ("sft", "dpo", "ppo", "reward_model"))
    policies = {name_with("dpo_beta", b): f"{{root}}/{name_with('dpo_beta', b)}" for b in c.betas}
    policies["ppo"] = "{root}/ppo"
    return out + win_rates.method_winrates(c, "news_", policies)


def _as_tldr(c):
    """The training stages are tldr's: built from the same fields with the tldr task."""
    t = c.copy_and_resolve_references()
    t.task = "tldr"
    return t


def report(c, root):
    notes = win_rates.sources_notes(c, SOURCES)
    return win_rates.report("news", FIGURE, c, root, stages(c), PAPER_CLAIMS["news"], [], notes)


RECIPE = Recipe("news", FIGURE, config, stages, report, rehearsal=win_rates.REHEARSAL, sources=lambda c: SOURCES)

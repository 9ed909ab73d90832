"""The `tldr` recipe: the paper's TL;DR win rates against the human reference summaries, by temperature
(Figure 2, right).

    python -m dpo_jax.experiment --recipe=tldr --scale=tiny --workdir=/tmp/tldr-recipe
    python -m dpo_jax.experiment --recipe=tldr --scale=paper --rehearse --workdir=/tmp/tldr-rehearsal

Stages: SFT on the human TL;DRs -> a reward model on the comparisons (PPO's reward, Best-of-N's
selector) -> DPO over `betas` (0.5, as the paper's TL;DR runs) -> preferred-FT on the comparisons'
chosen summaries -> PPO (adaptive KL controller) -> win rates of SFT, DPO, preferred-FT, PPO, Best of
`best_of_n` of the SFT model and zero-shot prompting of `prompting_model` (a template file: ours by
default, the paper's text is the user's to supply), each against the human reference TL;DR of the
same posts, at `temperatures`. Every method on one prompt set: a seeded random subset of the posts of
tldr_sft's test split (each has its human TL;DR).
The judge: at --scale=paper the OpenAI-compatible judge (`--recipe.judge_model`; the paper's was
gpt-4-0314); at --scale=tiny and in a rehearsal our own tiny reward model (a stand-in that needs no
network: the numbers exercise the machinery and mean nothing about quality).
"""

from __future__ import annotations

from dpo_jax.recipes import rehearsal, win_rates
from dpo_jax.recipes.base import Recipe
from dpo_jax.recipes.paper import PAPER_CLAIMS
from dpo_jax.recipes.stages import prompting_model

FIGURE = "Figure 2 (right): TL;DR win rate vs temperature"
METHODS = ("sft", "dpo", "preferred_ft", "ppo", "best_of_n", "prompting", "reward_model")
SOURCES = {
    "betas": "paper Sec. 6: beta 0.5 for its TL;DR runs",
    "temperatures": "paper Fig. 2 (right): temperatures 0 to 1",
    "best_of_n": "(check) paper: Best of N of the SFT model, N = 128",
    "ppo_kl_target": "(check) the paper's TL;DR PPO baseline reports no KL target; ours",
    "ppo_steps": "(check) the paper trains PPO until convergence; ours",
    "prompting_model": "paper Fig. 2 (right): zero-shot prompting of GPT-J-6B",
    "num_prompts": "(check) a random subset of the test posts; 256 ours",
}


def config(scale: str):
    c = win_rates.config("tldr", scale)
    c.prompting_model = "EleutherAI/gpt-j-6b"
    return c


def policies(c) -> dict[str, str]:
    return win_rates.policies(c, "preferred_ft", "ppo")


def stages(c, prefix: str = "", methods=None) -> list:
    out = [rehearsal.data_stage(c)] if c.rehearse else []
    out += win_rates.training_stages(c, METHODS)
    return out + win_rates.method_winrates(c, prefix, methods or policies(c))


def missing(c) -> list[str]:
    return [] if prompting_model(c) else ["zero-shot prompting: --recipe.prompting_model is empty"]


def report(c, root):
    notes = win_rates.sources_notes(c, SOURCES)
    return win_rates.report("tldr", FIGURE, c, root, stages(c), PAPER_CLAIMS["tldr"], missing(c), notes)


RECIPE = Recipe(
    "tldr", FIGURE, config, stages, report, missing, rehearsal=win_rates.REHEARSAL, sources=lambda c: SOURCES
)

"""The `hh` recipe: the paper's Anthropic-HH single-turn win rates against the test set's chosen
responses, and DPO's win rate over the course of training (Figure 3, left and right).

    python -m dpo_jax.experiment --recipe=hh --scale=tiny --workdir=/tmp/hh-recipe
    python -m dpo_jax.experiment --recipe=hh --scale=paper --rehearse --workdir=/tmp/hh-rehearsal

Stages: SFT = preferred-FT on the chosen responses of HH's train split (the paper's Preferred-FT and
its reference model) -> a reward model (Best-of-N's selector) -> DPO (beta 0.1), a checkpoint kept every
`eval_every` steps -> win rates of preferred-FT, DPO, Best of `best_of_n` of preferred-FT and 2-shot
prompting of `prompting_model` (two train dialogues drawn by the seed, through a template file) against
the chosen responses at `temperatures` -> DPO's win rate at every kept checkpoint, at
`over_training_temperatures`. Every method on one prompt set: a seeded random subset of HH's
single-turn test prompts (the test split is ordered by subset: its first rows are one subset's).
"""

from __future__ import annotations

from dpo_jax.recipes import rehearsal, win_rates
from dpo_jax.recipes.base import Recipe
from dpo_jax.recipes.paper import PAPER_CLAIMS
from dpo_jax.recipes.stages import name_with, prompting_model, winrate_stage

FIGURE = "Figure 3: Anthropic-HH win rate vs chosen, and over training"
METHODS = ("sft", "dpo", "best_of_n", "prompting", "reward_model")
SOURCES = {
    "betas": "paper Sec. 6: beta 0.1",
    "best_of_n": "paper Fig. 3: Best of 128 of preferred-FT, selected by a reward model learned from HH",
    "prompting_model": "paper Fig. 3: 2-shot prompting of the base Pythia-2.8B",
    "shots": "paper Fig. 3: 2-shot",
    "over_training_temperatures": "(check) paper Fig. 3 (right): one line per temperature, 0.7 and 1.0",
    "eval_every": "(check) paper Fig. 3 (right): win rate over training from early checkpoints on; ours",
    "num_prompts": "(check) a random subset of the single-turn test prompts; 256 ours",
}


def config(scale: str):
    c = win_rates.config("hh", scale)
    c.prompting_model = "EleutherAI/pythia-2.8b"
    c.shots = 2
    c.over_training_temperatures = (0.7, 1.0)
    c.eval_every = 2 if scale == "tiny" else 250  # DPO's checkpoints, each a point over training
    c.keep_checkpoints = 1000
    return c


REHEARSAL = {**win_rates.REHEARSAL, "eval_every": 2}


def policies(c) -> dict[str, str]:
    return win_rates.policies(c)


def stages(c) -> list:
    out = [rehearsal.data_stage(c)] if c.rehearse else []
    out += win_rates.training_stages(c, METHODS)
    out += win_rates.method_winrates(c, "", policies(c))
    # The paper's second HH figure: DPO's win rate at every kept checkpoint, at two temperatures.
    policy = name_with("dpo_beta", c.betas[0])
    temperatures = c.over_training_temperatures
    flags = {
        **win_rates.sampling_flags(c, temperatures),
        "checkpoints": f"every:{c.eval_every}",
        **win_rates.judge_flags(c, "winrate_over_training"),
    }
    out.append(
        winrate_stage(
            "winrate_over_training",
            f"{{root}}/{policy}",
            flags,
            after=(policy, *win_rates.judge_after(c)),
            extra=c.args.winrate,
            plan={**win_rates.judge_calls(c, 1, temperatures), "note": f"per checkpoint (every {c.eval_every} steps)"},
        )
    )
    return out


def missing(c) -> list[str]:
    return [] if prompting_model(c) else ["2-shot prompting: --recipe.prompting_model is empty"]


def report(c, root):
    notes = win_rates.sources_notes(c, SOURCES)
    return win_rates.report("hh", FIGURE, c, root, stages(c), PAPER_CLAIMS["hh"], missing(c), notes)


RECIPE = Recipe("hh", FIGURE, config, stages, report, missing, rehearsal=REHEARSAL, sources=lambda c: SOURCES)

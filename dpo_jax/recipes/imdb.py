"""The `imdb` recipe: the paper's controlled-sentiment reward-vs-KL frontier (Figure 2, left).

    python -m dpo_jax.experiment --recipe=imdb --scale=tiny --workdir=/tmp/imdb-recipe
    python -m dpo_jax.experiment --recipe=imdb --scale=paper --rehearse --workdir=/tmp/imdb-rehearsal

Stages: SFT on IMDb reviews -> preference pairs from the SFT model's samples of train prefixes (2-8
tokens), scored by the sentiment classifier (make_pairs) -> DPO over `betas` (reference log-probs
computed once, reused by the other betas) -> preferred-FT over `preferred_ft_seeds` -> unlikelihood
over `unlikelihood_alphas` -> a reward model on the pairs and PPO with the adaptive KL controller over
`ppo_kl_targets` -> PPO-GT (the classifier itself as the reward) over `ppo_gt_kl_targets` -> the
frontier: every run saved every `eval_every` steps and each checkpoint evaluated (reward and sampled
KL on a seeded random subset of the test prefixes), so each run is a curve of points, as the paper's;
Best-of-N of the SFT policy over `best_of_n`, selected by the reward model, at its analytic KL.

The grids are the paper's (its Section 6 and Appendix C): 22 runs. --scale=paper is the paper's
setting (GPT-2-large, the IMDb train split's prefixes, 4 samples each, the RoBERTa-large sentiment
classifier); --scale=tiny runs the same DAG on the shipped fixture with tiny random models.
"""

from __future__ import annotations

from pathlib import Path

import ml_collections

from dpo_jax.recipes import rehearsal
from dpo_jax.recipes.base import Recipe, Report, command_stage, common_fields, configs_dir
from dpo_jax.recipes.paper import PAPER_CLAIMS
from dpo_jax.recipes.stages import (
    after_data,
    cadence,
    data_inputs,
    data_overrides,
    data_path,
    name_with,
    read_output,
    small,
    training_stage,
    variant,
)
from dpo_jax.recipes.table import frontier_table

SENTIMENT_CLASSIFIER = "siebert/sentiment-roberta-large-english"  # as dpo_jax.judges' default

# Where each grid value comes from (the report prints them). "(check)": the paper is less definite.
SOURCES = {
    "betas": "paper Sec. 6 / App. C: DPO beta in {0.05, 0.1, 1, 5}",
    "ppo_kl_targets": "paper App. C: PPO with the adaptive KL controller, target KL in {3, 6, 9, 12}",
    "ppo_gt_kl_targets": "as PPO (the paper's PPO-GT, the classifier as the reward)",
    "unlikelihood_alphas": "paper App. C: unlikelihood alpha in {0.05, 0.1, 0.5, 1}",
    "preferred_ft_seeds": "(check) the paper: preferred-FT 'over several random seeds'; we run 3",
    "eval_every": "paper App. C: every run evaluated every 100 training steps",
    "ppo_steps": (
        "(check) the paper trains PPO 'until convergence' and gives no count; our default 1000 rollout "
        "steps of 64 prompts is about 2.6 passes over the 25k train prefixes"
    ),
    "best_of_n": "paper App. D.1: N in {1, 4, 16, 64, 128} (N=1 is the SFT point)",
    "num_samples": "paper Sec. 6: 4 samples per prefix",
}


def config(scale: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    common_fields(c, scale)
    tiny = scale == "tiny"
    c.betas = (0.05, 0.1, 1.0, 5.0)
    c.ppo_kl_targets = (3.0, 6.0, 9.0, 12.0)
    c.ppo_gt_kl_targets = (3.0, 6.0, 9.0, 12.0)
    c.unlikelihood_alphas = (0.05, 0.1, 0.5, 1.0)
    c.preferred_ft_seeds = (0, 1, 2)
    c.best_of_n = (4,) if tiny else (4, 16, 64, 128)
    c.num_prompts = 16 if tiny else 0  # train prefixes for the pairs; 0 = every train review
    c.num_samples = 4
    c.frontier_prompts = 8 if tiny else 256  # a seeded random subset of the test prefixes
    c.frontier_samples = 4
    c.max_new_tokens = 8 if tiny else 64
    c.train_steps = 4 if tiny else 0  # per training stage; 0 = the config's (one epoch)
    c.ppo_steps = 4 if tiny else 1000
    c.eval_every = 2 if tiny else 100  # steps between checkpoints, each a point of the frontier
    c.keep_checkpoints = 1000  # every checkpoint of a run is kept (the frontier evaluates each)
    c.classifier = "" if tiny else SENTIMENT_CLASSIFIER  # "" = a tiny random classifier (a stage)
    c.sampling_batch_size = 8 if tiny else 64
    for kind in ("sft", "pairs", "dpo", "preferred_ft", "unlikelihood", "reward_model", "ppo", "ppo_gt"):
        c.args[kind] = ""
    c.args.frontier = ""
    return c


REHEARSAL = dict(
    num_prompts=16,
    frontier_prompts=4,
    max_new_tokens=8,
    train_steps=4,
    ppo_steps=4,
    eval_every=2,
    sampling_batch_size=8,
    best_of_n=(2, 4),
)


def missing(c) -> list[str]:
    return []  # every method of the paper's figure is a stage (Best-of-N: in the frontier stage)


def policy_stages(c) -> dict[str, tuple[str, float | None]]:
    """Stage name -> (method, its sweep parameter), for every policy on the frontier."""
    out = {name_with("dpo_beta", b): ("dpo", b) for b in c.betas}
    out.update({name_with("preferred_ft_seed", s): ("preferred-ft", None) for s in c.preferred_ft_seeds})
    out.update({name_with("unlikelihood_alpha", a): ("unlikelihood", a) for a in c.unlikelihood_alphas})
    out.update({name_with("ppo_kl_target", k): ("ppo", k) for k in c.ppo_kl_targets})
    out.update({name_with("ppo_gt_kl_target", k): ("ppo-gt", k) for k in c.ppo_gt_kl_targets})
    return out


def stages(c) -> list:
    imdb = f"{configs_dir(c)}/imdb.py"
    inputs = (imdb, f"{configs_dir(c)}/common.py")
    fixtures = data_inputs(c, "imdb")
    sampling = {
        "max_new_tokens": c.max_new_tokens,
        "batch_size": c.sampling_batch_size,
        "seed": c.seed,
        "prompt_seed": c.seed,
        "data_path": data_path(c, "imdb", "stanfordnlp/imdb"),
    }
    out = [rehearsal.data_stage(c)] if c.rehearse else []
    out.append(
        training_stage(
            "sft",
            c,
            imdb,
            variant(c, "sft"),
            {"seed": c.seed, **data_overrides(c, "imdb", "test")},
            inputs=inputs + fixtures,
            args=c.args.sft,
            steps=c.train_steps,
        )
    )
    classifier, after_classifier = c.classifier, ()
    if not classifier:
        out.append(
            command_stage(
                "classifier",
                "dpo_jax.recipes.tiny_classifier",
                {"out": "{root}/classifier/model", "seed": c.seed},
                kind="model",
                outputs={"model": "{root}/classifier/model"},
            )
        )
        classifier, after_classifier = "{root}/classifier/model", ("classifier",)
    out.append(
        command_stage(
            "pairs",
            "dpo_jax.make_pairs",
            {
                "workdir": "{root}/sft",
                "classifier": classifier,
                "num_samples": c.num_samples,
                "num_prompts": c.num_prompts,
                "out": "{root}/pairs/pairs.jsonl",
                "split": "train",
                **sampling,
            },
            after=(*after_data(c), "sft", *after_classifier),
            inputs=fixtures,
            extra=c.args.pairs,
            kind="sample",
            outputs={"pairs": "{root}/pairs/pairs.jsonl"},
            plan=dict(
                samples=f"{c.num_prompts or 'all'} train prefixes x {c.num_samples}",
                classifier_calls="one per sample",
            ),
        )
    )
    on_pairs = {
        "model.name_or_path": "{root}/sft",
        "data.source": "local",
        "data.path": "{root}/pairs/pairs.jsonl",
        "data.eval_split": "",
        "seed": c.seed,
        **cadence(c),
    }
    train = dict(after=("sft", "pairs"), inputs=inputs, steps=c.train_steps)
    for beta in c.betas:
        fields = {**on_pairs, "beta": beta, "reference.precompute_logps": True}
        out.append(training_stage(name_with("dpo_beta", beta), c, imdb, variant(c), fields, args=c.args.dpo, **train))
    for seed in c.preferred_ft_seeds:
        fields = {**on_pairs, "seed": int(seed)}
        name = name_with("preferred_ft_seed", seed)
        out.append(training_stage(name, c, imdb, variant(c, "sft"), fields, args=c.args.preferred_ft, **train))
    for alpha in c.unlikelihood_alphas:
        fields = {**on_pairs, "loss": "unlikelihood", "unlikelihood_alpha": alpha}
        name = name_with("unlikelihood_alpha", alpha)
        out.append(training_stage(name, c, imdb, variant(c), fields, args=c.args.unlikelihood, **train))
    rm = {**on_pairs, "stage": "reward_model", "loss": "bradley_terry"}
    rm.pop("checkpoint_every_steps", None), rm.pop("keep_checkpoints", None)
    out.append(training_stage("reward_model", c, imdb, variant(c), rm, args=c.args.reward_model, **train))
    ppo = {
        **on_pairs,
        "stage": "ppo",
        "ppo.max_new_tokens": c.max_new_tokens,
        "tokenizer": "{root}/sft/export",  # the PPO export carries no tokenizer
        **({"ppo.num_minibatches": 1, "ppo.num_epochs": 1} if small(c) else {}),
    }
    rl = dict(inputs=inputs, steps=c.ppo_steps, plan={"samples": "a rollout batch per step"})
    for target in c.ppo_kl_targets:  # the adaptive controller moves kl_coef toward the target KL
        fields = {**ppo, "ppo.kl_target": target, "ppo.reward_model": "{root}/reward_model"}
        name = name_with("ppo_kl_target", target)
        out.append(
            training_stage(
                name, c, imdb, variant(c), fields, after=("sft", "pairs", "reward_model"), args=c.args.ppo, **rl
            )
        )
    for target in c.ppo_gt_kl_targets:  # the ground truth as the reward: the classifier's p(POSITIVE)
        gt = {"ppo.kl_target": target, "ppo.reward_model": classifier, "ppo.reward_label": "POSITIVE"}
        name = name_with("ppo_gt_kl_target", target)
        out.append(
            training_stage(
                name,
                c,
                imdb,
                variant(c),
                {**ppo, **gt},
                after=("sft", "pairs", *after_classifier),
                args=c.args.ppo_gt,
                **rl,
            )
        )
    out.append(_frontier_stage(c, classifier, after_classifier, sampling, fixtures))
    return out


def _frontier_stage(c, classifier: str, after_classifier: tuple, sampling: dict, fixtures: tuple):
    policies = list(policy_stages(c))
    if any(not float(n).is_integer() or n < 2 for n in c.best_of_n):
        raise ValueError(f"recipe.best_of_n={c.best_of_n}: each N must be a whole number >= 2")
    best_of_n = sorted({int(n) for n in c.best_of_n})
    best_of = {"best_of": best_of_n, "best_of_reward": "{root}/reward_model"} if best_of_n else {}
    every = {"checkpoints": f"every:{c.eval_every}"} if c.eval_every else {}
    prefixes = f"{c.frontier_prompts} test prefixes x {c.frontier_samples}"
    evaluated = f"every {c.eval_every} steps" if c.eval_every else "its export"
    samples = f"{len(policies)} runs, each at {evaluated}, + the reference: {prefixes} per point"
    if best_of_n:  # the Ns share one draw of the largest
        samples += f"; Best-of-N (N={','.join(map(str, best_of_n))}): {prefixes} x {best_of_n[-1]}"
    return command_stage(
        "frontier",
        "dpo_jax.frontier",
        {
            "workdirs": ",".join(f"{{root}}/{p}" for p in policies),
            "classifier": classifier,
            "out_dir": "{root}/frontier",
            "num_prompts": c.frontier_prompts,
            "num_samples": c.frontier_samples,
            "split": "test",
            **every,
            **best_of,
            **sampling,
        },
        after=(*after_data(c), *after_classifier, *(("reward_model",) if best_of_n else ()), *policies),
        inputs=fixtures,
        extra=c.args.frontier,
        kind="sample",
        outputs={"frontier": "{root}/frontier/frontier.json"},
        plan=dict(
            samples=samples,
            classifier_calls="one per sample (Best-of-N: per pick)",
            **({"reward_model_calls": "one per Best-of-N sample"} if best_of_n else {}),
        ),
    )


def report(c, root: Path) -> Report:
    frontier_stage = next(s for s in stages(c) if s.name == "frontier")
    frontier = read_output(root, frontier_stage, "frontier")
    by_stage = policy_stages(c)
    points = []
    for point in frontier["points"]:
        name = Path(point["run"]).name
        if point["method"] == "reference":  # the SFT run's export
            method, parameter, name = "sft (reference)", None, "sft"
        elif point["method"] == "best-of-n":  # the SFT policy's samples, selected by the reward model
            method, parameter, name = "best-of-n", point["value"], "sft + reward_model"
        else:
            method, parameter = by_stage[name]
        sweep = point["parameter"] if parameter is not None else None  # its name: "beta", "N", ...
        points.append({**point, "method": method, "parameter": parameter, "sweep": sweep, "stage": name})
    if c.scale == "tiny":
        models = "tiny random GPT-2, tiny random classifier"
    elif c.rehearse:
        models = "a rehearsal of the paper-scale plan: tiny random GPT-2 and classifier, counts capped"
    else:
        models = "GPT-2-large"
    notes = [f"prompts: {frontier['num_prompts']} test prefixes, seed {frontier.get('prompt_seed')}, "
             f"set {frontier.get('prompt_set')}"]
    notes += [f"{field} = {c[field]}: {source}" for field, source in SOURCES.items()]
    if c.rehearsal:
        notes.append(f"rehearsal caps: {c.rehearsal}")
    return frontier_table(
        points,
        root / "report" / "imdb",
        title="IMDb: reward vs KL (the paper's Figure 2, left)",
        ours_label=f"ours ({c.scale}: {models})",
        claims=PAPER_CLAIMS["imdb"],
        missing=missing(c),
        notes=notes,
    )


RECIPE = Recipe(
    "imdb",
    "Figure 2 (left): IMDb reward-vs-KL frontier",
    config,
    stages,
    report,
    missing,
    rehearsal=REHEARSAL,
    sources=lambda c: SOURCES,
)

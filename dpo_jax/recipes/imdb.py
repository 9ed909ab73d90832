"""The `imdb` recipe: the paper's controlled-sentiment reward-vs-KL frontier (Figure 2, left).

    python -m dpo_jax.experiment --recipe=imdb --scale=tiny --workdir=/tmp/imdb-recipe

Stages: SFT on IMDb reviews -> preference pairs from the SFT model's samples, scored by the sentiment
classifier (make_pairs) -> DPO over `betas` (reference log-probs computed once, reused by the other
betas) -> preferred-FT on the pairs -> unlikelihood over `unlikelihood_alphas` -> a reward model on the
pairs and PPO over `ppo_kl_coefs` -> PPO-GT (the classifier itself as the reward) over
`ppo_gt_kl_coefs` -> the frontier (reward and sampled KL of every policy on held-out prefixes, and
Best-of-N of the SFT policy over `best_of_n`, selected by the reward model, at its analytic KL) -> the
figure and table, ours beside the paper's claim.

--scale=paper is the paper's setting (GPT-2-large, the full IMDb train split's prefixes, 4 samples
each, the RoBERTa-large sentiment classifier); --scale=tiny runs the same DAG on the shipped IMDb
fixture with tiny random models and a tiny random classifier on a CPU in minutes.
"""

from __future__ import annotations

import json
from pathlib import Path

import ml_collections

from dpo_jax.recipes.base import (
    Recipe,
    Report,
    command_stage,
    common_fields,
    config_ref,
    configs_dir,
    main_stage,
    parameter_label,
)
from dpo_jax.recipes.paper import PAPER_CLAIMS
from dpo_jax.recipes.table import frontier_table

SENTIMENT_CLASSIFIER = "siebert/sentiment-roberta-large-english"  # as dpo_jax.judges' default


def config(scale: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    common_fields(c, scale)
    tiny = scale == "tiny"
    # The paper sweeps beta for DPO (0.1 in most of its runs); this grid spans KLs on both sides of it.
    c.betas = (0.05, 0.1, 0.5, 1.0, 5.0)
    # A fixed KL coefficient per PPO run. The adaptive controller (config.ppo.kl_target) is the other
    # knob; it applies to every PPO stage alike through --recipe.args.ppo="--config.ppo.kl_target=X".
    c.ppo_kl_coefs = (0.05, 0.2)
    c.ppo_gt_kl_coefs = (0.05,) if tiny else (0.05, 0.2)  # PPO-GT: the classifier is the reward
    # config.unlikelihood_alpha per run; REFERENCE.md lists no alphas, so one point, the plain loss.
    c.unlikelihood_alphas = (1.0,)
    # Best-of-N of the SFT policy, selected by the reward model (the paper's TL;DR goes up to 128).
    c.best_of_n = (4,) if tiny else (4, 16, 64, 128)
    c.num_prompts = 16 if tiny else 0  # prefixes for the pairs; 0 = every train review
    c.num_samples = 4  # samples per prefix (the paper's 4)
    c.frontier_prompts = 8 if tiny else 256  # held-out test prefixes for reward and KL
    c.frontier_samples = 4
    c.max_new_tokens = 8 if tiny else 64
    c.train_steps = 4 if tiny else 0  # per training stage; 0 = the config's (one epoch)
    c.ppo_steps = 2 if tiny else 0
    c.classifier = "" if tiny else SENTIMENT_CLASSIFIER  # "" = a tiny random classifier (a stage)
    c.sampling_batch_size = 8 if tiny else 64
    kinds = (
        "sft",
        "pairs",
        "dpo",
        "preferred_ft",
        "unlikelihood",
        "reward_model",
        "ppo",
        "ppo_gt",
        "frontier",
    )
    for kind in kinds:
        c.args[kind] = ""
    return c


def _dpo_name(beta: float) -> str:
    return f"dpo_beta_{parameter_label(beta)}"


def _ppo_name(kl: float) -> str:
    return f"ppo_kl_{parameter_label(kl)}"


def _ppo_gt_name(kl: float) -> str:
    return f"ppo_gt_kl_{parameter_label(kl)}"


def _unlikelihood_name(alpha: float) -> str:
    return f"unlikelihood_alpha_{parameter_label(alpha)}"


def missing(c) -> list[str]:
    return []  # every method of the paper's figure is a stage (Best-of-N: in the frontier stage)


def policy_stages(c) -> dict[str, tuple[str, float | None]]:
    """Stage name -> (method, its sweep parameter), for every policy on the frontier."""
    out = {_dpo_name(b): ("dpo", b) for b in c.betas}
    out["preferred_ft"] = ("preferred-ft", None)
    out.update({_unlikelihood_name(a): ("unlikelihood", a) for a in c.unlikelihood_alphas})
    out.update({_ppo_name(k): ("ppo", k) for k in c.ppo_kl_coefs})
    out.update({_ppo_gt_name(k): ("ppo-gt", k) for k in c.ppo_gt_kl_coefs})
    return out


def stages(c) -> list:
    from dpo_jax.data.readers import fixture_dir

    tiny = c.scale == "tiny"
    imdb = f"{configs_dir(c)}/imdb.py"
    variant = ",tiny" if tiny else ""
    steps = {"num_train_steps": c.train_steps} if c.train_steps else {}
    data_inputs = (imdb, f"{configs_dir(c)}/common.py") + ((fixture_dir("imdb"),) if tiny else ())
    sampling = {"max_new_tokens": c.max_new_tokens, "batch_size": c.sampling_batch_size, "seed": c.seed}
    if tiny:
        sampling["data_path"] = "fixture:imdb"
    out = [
        main_stage(
            "sft",
            config_ref(imdb, "sft" + variant),
            {"seed": c.seed, **steps},
            inputs=data_inputs,
            extra=c.args.sft,
            plan=dict(steps=c.train_steps or "1 epoch"),
            aot=True,
        )
    ]
    classifier = c.classifier
    after_classifier: tuple[str, ...] = ()
    if not classifier:
        out.append(
            command_stage(
                "classifier",
                "dpo_jax.recipes.tiny_classifier",
                {"out": "{root}/classifier/model", "seed": c.seed},
                kind="model",
            )
        )
        classifier, after_classifier = "{root}/classifier/model", ("classifier",)
    num_pairs_prompts = c.num_prompts or "all"
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
                **sampling,
            },
            after=("sft", *after_classifier),
            inputs=data_inputs[2:],
            extra=c.args.pairs,
            kind="sample",
            plan=dict(
                samples=f"{num_pairs_prompts} prefixes x {c.num_samples}", classifier_calls="one per sample"
            ),
        )
    )
    on_pairs = {
        "model.name_or_path": "{root}/sft",
        "data.source": "local",
        "data.path": "{root}/pairs/pairs.jsonl",
        "data.eval_split": "",
        "seed": c.seed,
        **steps,
    }
    train = dict(
        after=("sft", "pairs"), inputs=data_inputs[:2], aot=True, plan=dict(steps=c.train_steps or "1 epoch")
    )
    for beta in c.betas:
        out.append(
            main_stage(
                _dpo_name(beta),
                config_ref(imdb, variant.lstrip(",")),
                {**on_pairs, "beta": beta, "reference.precompute_logps": True},
                extra=c.args.dpo,
                **train,
            )
        )
    out.append(
        main_stage(
            "preferred_ft", config_ref(imdb, "sft" + variant), on_pairs, extra=c.args.preferred_ft, **train
        )
    )
    for alpha in c.unlikelihood_alphas:
        out.append(
            main_stage(
                _unlikelihood_name(alpha),
                config_ref(imdb, variant.lstrip(",")),
                {**on_pairs, "loss": "unlikelihood", "unlikelihood_alpha": alpha},
                extra=c.args.unlikelihood,
                **train,
            )
        )
    out.append(
        main_stage(
            "reward_model",
            config_ref(imdb, variant.lstrip(",")),
            {**on_pairs, "stage": "reward_model", "loss": "bradley_terry"},
            extra=c.args.reward_model,
            **train,
        )
    )
    ppo = {
        **on_pairs,
        **({"num_train_steps": c.ppo_steps} if c.ppo_steps else {}),
        "stage": "ppo",
        "ppo.max_new_tokens": c.max_new_tokens,
        "tokenizer": "{root}/sft/export",  # the PPO export carries no tokenizer
        **({"ppo.num_minibatches": 1, "ppo.num_epochs": 1} if tiny else {}),
    }
    rl = dict(
        inputs=data_inputs[:2],
        aot=True,
        plan=dict(steps=c.ppo_steps or "config", samples="a rollout batch per step"),
    )
    for kl in c.ppo_kl_coefs:
        out.append(
            main_stage(
                _ppo_name(kl),
                config_ref(imdb, variant.lstrip(",")),
                {**ppo, "ppo.kl_coef": kl, "ppo.reward_model": "{root}/reward_model"},
                after=("sft", "pairs", "reward_model"),
                extra=c.args.ppo,
                **rl,
            )
        )
    for kl in c.ppo_gt_kl_coefs:  # the ground truth as the reward: the classifier's p(POSITIVE)
        gt = {"ppo.kl_coef": kl, "ppo.reward_model": classifier, "ppo.reward_label": "POSITIVE"}
        out.append(
            main_stage(
                _ppo_gt_name(kl),
                config_ref(imdb, variant.lstrip(",")),
                {**ppo, **gt},
                after=("sft", "pairs", *after_classifier),
                extra=c.args.ppo_gt,
                **rl,
            )
        )
    policies = list(policy_stages(c))
    if any(not float(n).is_integer() or n < 2 for n in c.best_of_n):
        raise ValueError(f"recipe.best_of_n={c.best_of_n}: each N must be a whole number >= 2")
    best_of_n, best_of = sorted({int(n) for n in c.best_of_n}), {}
    if best_of_n:
        best_of = {"best_of": best_of_n, "best_of_reward": "{root}/reward_model"}
    prefixes = f"{c.frontier_prompts} prefixes x {c.frontier_samples}"
    samples = f"{len(policies) + 1} policies x {prefixes}"
    if best_of_n:  # the Ns share one draw of the largest
        samples += f", Best-of-N (N={','.join(map(str, best_of_n))}): {prefixes} x {best_of_n[-1]}"
    out.append(
        command_stage(
            "frontier",
            "dpo_jax.frontier",
            {
                "workdirs": ",".join(f"{{root}}/{p}" for p in policies),
                "classifier": classifier,
                "out_dir": "{root}/frontier",
                "num_prompts": c.frontier_prompts,
                "num_samples": c.frontier_samples,
                **best_of,
                **sampling,
            },
            after=(*after_classifier, *(("reward_model",) if best_of_n else ()), *policies),
            inputs=data_inputs[2:],
            extra=c.args.frontier,
            kind="sample",
            plan=dict(
                samples=samples,
                classifier_calls="one per sample (Best-of-N: per pick)",
                **({"reward_model_calls": "one per Best-of-N sample"} if best_of_n else {}),
            ),
        )
    )
    return out


def report(c, root: Path) -> Report:
    frontier = json.loads((root / "frontier" / "frontier.json").read_text())
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
    ours = f"ours ({c.scale}: {'tiny random GPT-2, tiny random classifier' if c.scale == 'tiny' else 'GPT-2-large'})"
    return frontier_table(
        points,
        root / "report" / "imdb",
        title="IMDb: reward vs KL (the paper's Figure 2, left)",
        ours_label=ours,
        claims=PAPER_CLAIMS["imdb"],
        missing=missing(c),
    )


RECIPE = Recipe("imdb", "Figure 2 (left): IMDb reward-vs-KL frontier", config, stages, report, missing)

"""A win-rate evaluation of one trained run, from its workdir to result files (what `dpo_jax.winrate` runs).

The run's held-out prompts are the first `num_prompts` distinct prompts of its eval split (the data
config it trained with, or `data_source` / `data_path` for a plain model directory; for task "news", the
test split of CNN/DailyMail). The policy (or its
Best-of-N) is compared at each temperature with the baseline:
- "human" (the default for tldr and news, as the paper): the human-written reference of the same
  prompt. For tldr that is the TL;DR summary the SFT dataset (`tldr_sft`, CarperAI/openai_summarize_tldr,
  its test split) holds for the same post, whatever dataset the run trained on; posts it lacks are left
  out and counted (`without_human_reference`). For news, the article's highlights.
- "chosen" (the default for hh): the eval data's preferred response. For tldr comparisons that is one
  labeller's preferred summary of two model samples, not the human reference.
- "reference": the run's reference model, sampled; or the path of another model, sampled.
Results go to OUT_DIR/<name>.json and OUT_DIR/<name>.comparisons.jsonl, written only once complete.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path

import ml_collections

from dpo_jax.analysis.over_training import parse_checkpoints, run_policies
from dpo_jax.analysis.results import write_json, write_jsonl
from dpo_jax.analysis.runs import RunInfo, load_policy
from dpo_jax.analysis.winrate import judge_win_rate
from dpo_jax.analysis.winrate_sweep import Contender, win_rate_sweep
from dpo_jax.data import Example, load_tokenizer, read_examples
from dpo_jax.data.prompt_sets import PromptSet, choose
from dpo_jax.data.sources import SOURCES
from dpo_jax.judges import RewardModelJudge


@dataclasses.dataclass(frozen=True)
class WinRateRequest:
    task: str  # "tldr" | "hh" (the judge's question is chosen from it)
    baseline: str = ""  # "" = the task's default (DEFAULT_BASELINES)
    human_reference_path: str = ""  # tldr's human references: "" = HUMAN_REFERENCES[task]
    human_reference_split: str = "test"
    best_of: int = 1  # > 1: the policy is Best-of-N by `best_of_n_reward`
    best_of_n_reward: str = ""
    temperatures: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    num_prompts: int = 256
    max_new_tokens: int = 128
    batch_size: int = 16
    seed: int = 0
    prompt_seed: int = 0  # which random subset of the split's prompts (the same for every method)
    baseline_temperature: float | None = None  # a sampled baseline's own temperature (None: the policy's)
    dtype: str = "float32"
    data_source: str = ""
    data_path: str = ""
    name: str = ""
    checkpoints: str = "final"  # final | all | every:N (over_training.py)
    unparsable: str = "drop"  # "drop" | "loss": what a verdict the judge gave but we cannot read counts as
    single_turn: bool = False  # hh: only prompts of one human turn (the paper's single-turn subset)
    prompt_template: str = ""  # a prompting baseline: the policy is asked through this template file
    shots: int = 0  # its demonstrations, drawn from the train split (analysis/prompting.py)

    def __post_init__(self):
        for field in ("num_prompts", "max_new_tokens", "batch_size", "best_of"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be >= 1, got {getattr(self, field)}")
        parse_checkpoints(self.checkpoints)  # refused before any model or judge is loaded
        if not self.baseline:
            object.__setattr__(self, "baseline", DEFAULT_BASELINES.get(self.task, "chosen"))
        if self.baseline == "human" and self.task == "hh":
            raise ValueError("--baseline=human: HH has no human-written reference; use chosen")
        if self.shots and not self.prompt_template:
            raise ValueError(f"--shots={self.shots} needs --prompt_template (a file with an {{examples}} placeholder)")
        if self.baseline_temperature is not None and self.baseline_temperature < 0:
            raise ValueError(f"--baseline_temperature={self.baseline_temperature}: must be >= 0")
        if self.single_turn and self.task != "hh":
            raise ValueError(f"--single_turn is HH's single-turn subset; --task={self.task} has no turns")


DEFAULT_BASELINES = {"tldr": "human", "news": "human", "hh": "chosen"}
# Where each task's human-written reference lives when it is not the eval data's own response:
# (source, default path). news needs none: its eval data's only response is the reference highlights.
HUMAN_REFERENCES = {"tldr": ("tldr_sft", "CarperAI/openai_summarize_tldr")}
# Tasks whose prompts are not the run's own data: (source, default path). news is the paper's
# out-of-distribution test: a TL;DR policy summarising CNN/DailyMail articles (the test split).
TASK_DATA = {"news": ("cnn_dailymail", "abisee/cnn_dailymail")}


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def candidate_examples(run: RunInfo, request: WinRateRequest) -> tuple[list[Example], str]:
    """(every distinct prompt's example the evaluation may draw from, what they are: file and split).

    The run's eval split (the data config it trained with, or `data_source` / `data_path`); for a task
    whose prompts are not the run's data (news) the task's own test split; and for a human-reference
    baseline (tldr) the posts of the human-reference split itself, so every method of a task, whatever
    split it trained or validated on, is judged on the same posts, each with its reference."""
    if (
        run.config is None
        and request.task not in TASK_DATA
        and not (request.data_source and request.data_path)
        and not uses_reference_posts(request)
    ):
        raise ValueError(
            f"{run.path} is not a dpo_jax workdir: give --data_source and --data_path for its prompts"
        )
    base = (
        run.config.data.to_dict() if run.config is not None else dict(max_length=512, max_prompt_length=256)
    )
    data = ml_collections.ConfigDict(base)
    source, path = TASK_DATA.get(request.task, (data.get("source"), data.get("path")))
    data.source = request.data_source or source
    data.path = request.data_path or path
    if data.source != base.get("source"):  # another dataset than the run's: its own held-out split
        data.eval_split = SOURCES[data.source].default_eval_split if data.source in SOURCES else "test"
    if uses_reference_posts(request):
        data.source, default_path = HUMAN_REFERENCES[request.task]
        data.path = request.human_reference_path or default_path
        data.eval_split = request.human_reference_split
    data.hh_single_turn = request.single_turn  # multi-turn prompts filtered, counted in the data report
    examples, _ = read_examples(data, split="eval", unique_prompts=True)
    where = f"split {data.eval_split!r} of {data.path!r}" + (" (single-turn prompts)" if request.single_turn else "")
    if not examples:
        raise ValueError(f"{run.path}: the eval {where} holds no usable examples")
    return examples, where


def uses_reference_posts(request: WinRateRequest) -> bool:
    """tldr's prompts are the human-reference split's posts (against the human TL;DR, or any sampled
    baseline), unless the comparison needs the run's own data (--baseline=chosen) or names its data."""
    return (
        request.task in HUMAN_REFERENCES
        and request.baseline != "chosen"
        and not (request.data_source or request.data_path)
    )


def held_out_examples(run: RunInfo, request: WinRateRequest) -> tuple[list[Example], PromptSet]:
    """`num_prompts` of the candidates, a random subset drawn by `prompt_seed` (data/prompt_sets.py)."""
    examples, where = candidate_examples(run, request)
    return choose(
        examples, request.num_prompts, seed=request.prompt_seed, what=where, text=lambda e: e.prompt
    )


def human_references(
    request: WinRateRequest, examples: list[Example]
) -> tuple[list[Example], list[str], int]:
    """(the examples that have one, their human-written references, how many have none)."""
    if request.task not in HUMAN_REFERENCES:
        return examples, [e.responses[0] for e in examples if e.responses], 0
    source, default_path = HUMAN_REFERENCES[request.task]
    data = ml_collections.ConfigDict(
        dict(
            source=source,
            path=request.human_reference_path or default_path,
            train_split=request.human_reference_split,  # as "train": a single file is accepted too
            eval_split="",
            max_length=1 << 20,  # read, not tokenised: no limit applies
            max_prompt_length=1 << 19,
        )
    )
    references: dict[str, str] = {}
    for example in read_examples(data, split="train")[0]:
        references.setdefault(example.prompt, example.responses[0])
    kept = [e for e in examples if e.prompt in references]
    if not kept:
        raise ValueError(
            f"--baseline=human: none of the {len(examples)} prompts has a human reference in split "
            f"{request.human_reference_split!r} of {data.path!r} (matched by the post's text)"
        )
    return kept, [references[e.prompt] for e in kept], len(examples) - len(kept)


def prompt_template(run: RunInfo, request: WinRateRequest):
    """The prompting baseline's template (None: the policy sees the prompt as it is); k-shot
    demonstrations come from the train split of the run's data (or --data_source / --data_path)."""
    if not request.prompt_template:
        return None
    from dpo_jax.analysis.prompting import load_template

    train = []
    if request.shots:
        base = run.config.data.to_dict() if run.config is not None else {}
        data = ml_collections.ConfigDict({**dict(max_length=512, max_prompt_length=256), **base})
        data.source = request.data_source or data.get("source")
        data.path = request.data_path or data.get("path")
        data.hh_single_turn = request.single_turn
        train, _ = read_examples(data, split="train", unique_prompts=True)
    return load_template(request.prompt_template, shots=request.shots, train_examples=train, seed=request.prompt_seed)


def make_baseline(run: RunInfo, request: WinRateRequest, examples: list[Example]) -> Contender:
    if request.baseline == "human":
        _, texts, _ = human_references(request, examples)
        return Contender("human", texts=texts)
    if request.baseline == "chosen":
        if any(not e.responses for e in examples):
            raise ValueError(f"{run.path}: its eval data has no responses, which --baseline=chosen needs")
        return Contender("chosen", texts=[e.responses[0] for e in examples])
    path = run.reference_path if request.baseline == "reference" else request.baseline
    model, params = load_policy(path, dtype=request.dtype)
    label = "reference" if request.baseline == "reference" else Path(path.rstrip("/")).name
    return Contender(label, model=model, params=params)


def evaluate_run(
    run: RunInfo, judge, request: WinRateRequest, out_dir: Path, on_result: Callable[[dict], None]
) -> tuple[str, list[dict]]:
    """(result name, per-temperature summaries); `on_result` sees each summary as it is ready.

    With `request.checkpoints` other than "final", the policy of each selected checkpoint is judged in
    turn (over_training.py): its files are <name>_step<N>.*, its summaries carry "step", and a
    checkpoint that does not read gives a summary with its "error" instead of numbers."""
    examples, prompt_set = held_out_examples(run, request)
    without_reference = 0
    if request.baseline == "human":
        examples, _, without_reference = human_references(request, examples)
    tokenizer = load_tokenizer(run.tokenizer_path())
    reward = RewardModelJudge(request.best_of_n_reward) if request.best_of > 1 else None
    template = prompt_template(run, request)
    baseline = make_baseline(run, request, examples)
    counts = {"without_human_reference": without_reference, **prompt_set.summary()}
    policy_label = "policy" if request.best_of == 1 else f"best_of_{request.best_of}"
    subset = "_single_turn" if request.single_turn else ""
    name = request.name or safe_name(f"{policy_label}_vs_{baseline.label}_{judge.name}{subset}")
    summaries = []
    for step, policy_params, error in run_policies(
        run, parse_checkpoints(request.checkpoints), dtype=request.dtype
    ):
        at_step = {} if step is None else {"step": step}
        if policy_params is None:
            summaries.append({"run": run.path, **at_step, "error": error})
            on_result(summaries[-1])
            continue
        policy = Contender(
            run.label, *policy_params, best_of=request.best_of, reward_judge=reward, prompt_format=template
        )
        results = win_rate_sweep(
            judge,
            tokenizer,
            [e.prompt for e in examples],
            policy,
            baseline,
            request.temperatures,
            max_new_tokens=request.max_new_tokens,
            batch_size=request.batch_size,
            seed=request.seed,
            unparsable=request.unparsable,
            baseline_temperature=request.baseline_temperature,
            on_result=lambda temperature, summary, at_step=at_step: on_result(
                {"run": run.path, **at_step, "baseline": baseline.label, **counts, **summary}
            ),
        )
        step_name = name if step is None else f"{name}_step{step}"
        _write_results(
            out_dir / step_name, run, judge, request, len(examples), {**at_step, **counts, **prompt_set.to_json()}, results
        )
        summaries.extend({**at_step, **summary} for summary, _ in results)
    return name, summaries


def _write_results(stem: Path, run: RunInfo, judge, request, num_prompts: int, extra: dict, results) -> None:
    write_jsonl(
        stem.with_name(stem.name + ".comparisons.jsonl"),
        [{"temperature": s["temperature"], **r} for s, records in results for r in records],
    )
    # The same comparisons as a label file (analysis/judge_agreement.py): A is the policy, B the
    # baseline, the label this judge's pick; another judge or human raters can label the same file.
    write_jsonl(
        stem.with_name(stem.name + ".labels.jsonl"),
        [
            comparison_label(r, judge.name, s["temperature"])
            for s, records in results
            for r in records
            if r["choice"] != "identical"
        ],
    )
    write_json(
        stem.with_name(stem.name + ".json"),
        {
            "run": run.path,
            **dataclasses.asdict(request),
            "num_prompts": num_prompts,
            **extra,
            "judge": judge.name,
            "judge_usage": judge.usage(),
            "temperatures": [summary for summary, _ in results],
        },
    )


def comparison_label(record: dict, rater: str, temperature: float) -> dict:
    """A win-rate comparison record in the label-file format, in the policy-is-A frame."""
    choice = record["choice"]
    if choice in ("A", "B") and not record["policy_is_a"]:
        choice = "B" if choice == "A" else "A"
    label = choice if choice in ("A", "B") else ("tie" if choice is not None else None)
    return {
        "prompt": record["prompt"],
        "response_a": record["policy"],
        "response_b": record["baseline"],
        "label": label,
        "rater": rater,
        "temperature": temperature,
    }


def check_judge(run: RunInfo, judge, request: WinRateRequest, out_dir: Path) -> dict:
    """How often the judge prefers the dataset's chosen response to its rejected one (order randomised):
    the judge's agreement with the human labels. Written to OUT_DIR/judge_agreement_<judge>.json."""
    examples, where = candidate_examples(run, dataclasses.replace(request, baseline="chosen"))
    pairs = [e for e in examples if len(e.responses) >= 2]
    if not pairs:
        raise ValueError(f"{run.path}: checking the judge needs preference pairs in the eval data")
    pairs, prompt_set = choose(
        pairs, request.num_prompts, seed=request.prompt_seed, what=f"{where} (pairs)", text=lambda e: e.prompt
    )
    summary, records = judge_win_rate(
        judge,
        [e.prompt for e in pairs],
        [e.responses[0] for e in pairs],
        [e.responses[1] for e in pairs],
        seed=request.seed,
    )
    summary = {
        "run": run.path,
        "agreement_with_dataset_labels": summary.pop("win_rate"),
        **summary,
        **prompt_set.summary(),
    }
    name = request.name or safe_name(f"judge_agreement_{judge.name}")
    write_jsonl(out_dir / f"{name}.comparisons.jsonl", records)
    write_json(out_dir / f"{name}.json", {**summary, **prompt_set.to_json(), "judge_usage": judge.usage()})
    return summary

"""Preference data: raw datasets -> tokenised examples -> step-indexed, process-sliced numpy batches.

Usage (what the trainer does):

    tokenizer = load_tokenizer(config.tokenizer)            # hub name, local dir, or "tiny"
    prepared = build_datasets(config.data, tokenizer, stage="dpo")   # or "sft" / "prompts"
    metrics.update(prepared.report_metrics())               # data/train/bad/<reason>, ...
    loader = make_train_loader(prepared, global_batch_size=64, seed=config.seed,
                               process_index=jax.process_index(), process_count=jax.process_count())
    start = loader.check_position(saved_position) if saved_position else 0
    for step in range(start, num_steps):
        batch = loader.batch(step)                           # this process's rows of global step `step`
        save_with_checkpoint(loader.position(step + 1))      # JSON dict: where the next step starts
    for batch in make_eval_batches(prepared, global_batch_size=64, process_index=..., process_count=...):
        ...                                                  # weight per-example results by example_mask

Batch (numpy, B = global_batch_size / process_count, K = prepared.num_responses, L = max_length):
    input_ids, attention_mask, loss_mask: int32 [B, K, L]; example_mask: int32 [B].
    Responses are ranked best first along K (K = 2: chosen, rejected; K = 1 for SFT). loss_mask[t] = 1
    iff input_ids[t] is a response token, its EOS included; a model scores token t from logits at t - 1,
    so the log-prob of a response is sum_t loss_mask[t] * log p(input_ids[t] | input_ids[:t]).
    Prompt length = sum(attention_mask - loss_mask) over L. Rows (shared prompt, packing): `packing.py`.

Position (JSON-able): {"step", "epoch", "step_in_epoch", "seed", "global_batch_size", "num_examples",
    "dataset_fingerprint"}; `check_position` raises ValueError if it was taken on other data or settings.

`data_config` fields (attribute access, e.g. an ml_collections.ConfigDict; None means the default):
    source              "hh" | "tldr_comparisons" | "summarize_from_feedback" | "tldr_sft" | "imdb" |
                        "imdb_prefixes" | "shp" | "local"
    path                hub name, local file/directory, or "fixture:<name>" ("" = the source's hub dataset)
    train_split, eval_split   split names, or file paths; eval_split "" = no eval set
    max_length, max_prompt_length, truncation_mode ("keep_end" | "keep_start"; "" = source default)
    cache_dir           tokenised-data cache ("" = none; build_datasets(cache_dir=...) overrides it)
    max_train_examples / max_eval_examples   first N usable examples (0 = all)
    shp_min_score_ratio (2.0), imdb_prefix_min_words (2), imdb_prefix_max_words (8)
    hh_single_turn (False)   hh: keep only prompts of exactly one human turn; the rest filtered, counted

Stages: "dpo" uses every ranked response; "sft" keeps one response, and on preference data one example
per distinct prompt, as the reference implementation (`sft_set.py`: HH's last chosen, SHP's best scored);
"prompts" keeps one entry per distinct prompt with no response (K = 1, loss_mask all 0), for sampling.
Per-example arrays computed at run time (e.g. reference log-probs [N, K], gathered in order with
`make_eval_batches(prepared, ..., split="train")`) ride along in every batch: attach them with
`dataclasses.replace(prepared, train=prepared.train.with_extras(name=array))`, then
`loader = loader.with_data(prepared)`. Shipped fixtures: path "fixture:hh", `fixture_dir("hh")`, etc.
"""

from dpo_jax.data.loader import (
    EvalBatches,
    TrainLoader,
    epoch_permutation,
    make_eval_batches,
    make_train_loader,
)
from dpo_jax.data.prepare import (
    STAGES,
    DataSettings,
    PreparedData,
    build_datasets,
    read_examples,
    read_settings,
)
from dpo_jax.data.readers import FIXTURES_DIR, check_data_path, fixture_dir
from dpo_jax.data.report import BadInputReport, BadRow
from dpo_jax.data.sources import SOURCES, Example
from dpo_jax.data.tokenization import TokenizedSplit, truncate_example
from dpo_jax.data.tokenizer import load_tokenizer, tokenizer_fingerprint

__all__ = [
    "check_data_path",
    "FIXTURES_DIR",
    "SOURCES",
    "STAGES",
    "BadInputReport",
    "BadRow",
    "DataSettings",
    "EvalBatches",
    "Example",
    "PreparedData",
    "TokenizedSplit",
    "TrainLoader",
    "build_datasets",
    "epoch_permutation",
    "fixture_dir",
    "load_tokenizer",
    "make_eval_batches",
    "make_train_loader",
    "read_examples",
    "read_settings",
    "tokenizer_fingerprint",
    "truncate_example",
]

"""Command line: completions of a trained policy for a file of prompts.

    python -m dpo_jax.sample --workdir=/tmp/hh-dpo --prompts_file=prompts.txt --temperature=0
    python -m dpo_jax.sample --model=EXPORT_DIR --tokenizer=tiny --prompts_file=prompts.jsonl

--model is a Hugging Face model directory or a dpo_jax workdir: its exported policy, or, before the run
has exported one (still training, preempted, killed), the policy of its newest readable checkpoint (the
step is logged); --workdir is the same flag under the name a run's directory goes by. The tokenizer
defaults to the one saved with the model (for a checkpoint: the one the run trained with). Prompts: one per line of a text file (blank lines skipped), or, for a `.jsonl`
file, one JSON string or {"prompt": ...} object per line (so prompts may contain newlines, as HH's do).
Prompts are encoded without special tokens (as training does), left padded, sampled with the KV cache
(`dpo_jax.sampling.generate`) until EOS or --max_new_tokens, and printed as one JSON line per prompt:
{"prompt": ..., "completion": ...}. --temperature=0 is greedy and deterministic. Sampling runs on every
device (params replicated over the data axis, prompts split across devices and processes; on several
hosts every process runs this command (--distributed: jax.distributed joins them, as in
`dpo_jax.main`) and process 0 alone prints them and writes the resume file). With --resume_file,
finished prompts are appended to that file as they complete and a rerun of the same command samples only the rest (same completions).
"""

from __future__ import annotations

import json
import logging
import sys

from absl import logging as absl_logging

from dpo_jax import UserError
from dpo_jax.config.command_line import exit_with_user_error, parse_command, report_user_errors, run_command
from dpo_jax.config.runtime import (
    DISTRIBUTED_CHOICES,
    DISTRIBUTED_FLAGS,
    apply_device_memory_settings,
    initialize_distributed,
    writes_outputs,
)
from dpo_jax.sampling.settings import sampling_flags, settings_from_flags

FLAGS = (
    ("model", str, None, "Hugging Face model directory, hub name or dpo_jax workdir."),
    ("workdir", str, None, "A dpo_jax run's workdir (alias of --model)."),
    ("prompts_file", str, None, "Text file (one prompt per line) or .jsonl file."),
    ("tokenizer", str, "", "Tokenizer name or directory; '' = the model's own."),
    ("seed", int, 0, "Sampling seed."),
    ("batch_size", int, 16, "Prompts per generate call."),
    ("dtype", str, "float32", "Compute dtype."),
    ("resume_file", str, "", "JSON-lines file of finished prompts: a rerun after a kill reuses them ('' = none)."),
    *sampling_flags(max_new_tokens=64),
    *DISTRIBUTED_FLAGS,
)  # fmt: skip
CHOICES = dict(dtype=("float32", "bfloat16"), **DISTRIBUTED_CHOICES)

logger = logging.getLogger("dpo_jax")


def parse_args(argv):
    args = parse_command("python -m dpo_jax.sample", argv, FLAGS, doc=__doc__, choices=CHOICES)
    if bool(args.model) == bool(args.workdir):
        exit_with_user_error("pass exactly one of --model and --workdir")
    if not args.prompts_file:
        exit_with_user_error("--prompts_file is required")
    if args.batch_size < 1:
        exit_with_user_error("--batch_size must be >= 1")
    return args


def _load_tokenizer(name: str, policy_tokenizer: str):
    from dpo_jax.data import load_tokenizer

    try:
        return load_tokenizer(name or policy_tokenizer)
    except (OSError, ValueError) as error:
        if name:
            raise
        raise UserError(f"{policy_tokenizer} has no usable tokenizer ({error}); pass --tokenizer") from error


@report_user_errors
def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax logs every restore at INFO
    logging.getLogger("dpo_jax").setLevel(logging.INFO)  # e.g. which checkpoint step it samples from
    apply_device_memory_settings()  # as `main` does: the GPU memory fraction and XLA's memory flags
    initialize_distributed(args.distributed, args.distributed_timeout_s)
    from dpo_jax.analysis.saved_policy import load_saved_policy
    from dpo_jax.sampling.prompts import read_prompts, sample_completions

    prompts = read_prompts(args.prompts_file)  # before the model: a bad file is found in a second
    if not prompts:
        raise UserError(f"{args.prompts_file} holds no prompts")
    policy = load_saved_policy(args.model or args.workdir, dtype=args.dtype)
    tokenizer = _load_tokenizer(args.tokenizer, policy.tokenizer)
    completions = sample_completions(
        policy.model,
        policy.params,
        tokenizer,
        prompts,
        settings=settings_from_flags(args),
        batch_size=args.batch_size,
        seed=args.seed,
        resume_path=args.resume_file or None,
        model_identity=policy.source,
    )
    if not writes_outputs():
        return
    for prompt, completion in zip(prompts, completions):
        sys.stdout.write(json.dumps({"prompt": prompt, "completion": completion}, ensure_ascii=False) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    run_command(main)

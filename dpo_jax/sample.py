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

from absl import app, flags
from absl import logging as absl_logging

from dpo_jax import UserError, parse_flags_or_exit, report_user_errors
from dpo_jax.config.command_line import define_flags
from dpo_jax.config.runtime import (
    DISTRIBUTED_CHOICES,
    DISTRIBUTED_FLAGS,
    apply_device_memory_settings,
    initialize_distributed,
    writes_outputs,
)
from dpo_jax.sampling.settings import sampling_flags, settings_from_flags

_MODEL = flags.DEFINE_string("model", None, "Hugging Face model directory, hub name or dpo_jax workdir.")
_WORKDIR = flags.DEFINE_string("workdir", None, "A dpo_jax run's workdir (alias of --model).")
_PROMPTS = flags.DEFINE_string("prompts_file", None, "Text file (one prompt per line) or .jsonl file.")
_TOKENIZER = flags.DEFINE_string("tokenizer", "", "Tokenizer name or directory; '' = the model's own.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "Prompts per generate call.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
_RESUME_FILE = flags.DEFINE_string(
    "resume_file", "", "JSON-lines file of finished prompts: a rerun after a kill reuses them ('' = none)."
)
define_flags(flags.FLAGS, (*sampling_flags(max_new_tokens=64), *DISTRIBUTED_FLAGS), DISTRIBUTED_CHOICES)

logger = logging.getLogger("dpo_jax")


def _load_tokenizer(name: str, policy_tokenizer: str):
    from dpo_jax.data import load_tokenizer

    try:
        return load_tokenizer(name or policy_tokenizer)
    except (OSError, ValueError) as error:
        if name:
            raise
        raise UserError(f"{policy_tokenizer} has no usable tokenizer ({error}); pass --tokenizer") from error


@report_user_errors
def main(argv):
    del argv
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax logs every restore at INFO
    logging.getLogger("dpo_jax").setLevel(logging.INFO)  # e.g. which checkpoint step it samples from
    apply_device_memory_settings()  # as `main` does: the GPU memory fraction and XLA's memory flags
    initialize_distributed(flags.FLAGS.distributed, flags.FLAGS.distributed_timeout_s)
    if bool(_MODEL.value) == bool(_WORKDIR.value):
        raise UserError("pass exactly one of --model and --workdir")
    if not _PROMPTS.value:
        raise UserError("--prompts_file is required")
    if _BATCH_SIZE.value < 1:
        raise UserError("--batch_size must be >= 1")
    from dpo_jax.analysis.saved_policy import load_saved_policy
    from dpo_jax.sampling.prompts import read_prompts, sample_completions

    prompts = read_prompts(_PROMPTS.value)  # before the model: a bad file is found in a second
    if not prompts:
        raise UserError(f"{_PROMPTS.value} holds no prompts")
    policy = load_saved_policy(_MODEL.value or _WORKDIR.value, dtype=_DTYPE.value)
    model, params = policy.model, policy.params
    tokenizer = _load_tokenizer(_TOKENIZER.value, policy.tokenizer)
    completions = sample_completions(
        model,
        params,
        tokenizer,
        prompts,
        settings=settings_from_flags(flags.FLAGS),
        batch_size=_BATCH_SIZE.value,
        seed=_SEED.value,
        resume_path=_RESUME_FILE.value or None,
        model_identity=policy.source,
    )
    if not writes_outputs():
        return
    for prompt, completion in zip(prompts, completions):
        sys.stdout.write(json.dumps({"prompt": prompt, "completion": completion}, ensure_ascii=False) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags_or_exit)

"""A stage's inputs, before its run: the workdir made and locked, then the tokenizer and the tokenised
data (cached by content), for the trainer's stages and PPO alike.

    with locked_workdir(workdir):                       # a second run on the workdir stops here, at once
        tokenizer, prepared = load_stage_data(config, workdir, data_stage="dpo")
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from etils import epath

from dpo_jax import data as data_lib
from dpo_jax.models.loading import tokenizer_source
from dpo_jax.run.workdir import WorkdirLock, prepare_workdir, workdir_path


def default_cache_dir(config, workdir: str) -> str:
    """Where tokenised data is cached: config.data.cache_dir, else beside the run in a local workdir.

    A gs:// workdir (TPU VMs) gets a local per-host cache instead: the cache is plain files keyed by
    content, so it is safe to share between runs and must not go through pathlib onto a URL.
    """
    if config.data.cache_dir:
        return config.data.cache_dir
    if "://" in workdir:
        return os.path.expanduser("~/.cache/dpo_jax/data")
    return str(workdir_path(workdir) / "data_cache")


@contextlib.contextmanager
def locked_workdir(workdir: str) -> Iterator[epath.Path]:
    """The workdir, made, proven writable and locked for the block (before any data is read, so a
    second run on it stops at once); the run scaffold inside takes the same lock again."""
    path = workdir_path(workdir)
    prepare_workdir(path)
    with WorkdirLock(path):
        yield path


def load_stage_data(config, workdir: str, *, data_stage: str, tokenizer=None):
    """(tokenizer, prepared data) of the config's dataset for a stage reading `data_stage` examples
    ("sft", "dpo" or "prompts"), through the tokenised-data cache (`tokenizer`: one loaded already)."""
    tokenizer = tokenizer or data_lib.load_tokenizer(tokenizer_source(config))
    prepared = data_lib.build_datasets(
        config.data, tokenizer, stage=data_stage, cache_dir=default_cache_dir(config, workdir)
    )
    return tokenizer, prepared

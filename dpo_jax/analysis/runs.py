"""What an evaluation needs to know about a trained run: its policy, its reference, its data, its label.

A run is a dpo_jax workdir (WORKDIR/run_config.json and the exported policy in WORKDIR/export) or a
plain Hugging Face model directory or hub name (then there is no config: no reference, no data).
The reference of a run is what it trained against: config.reference.name_or_path, or else the model
it started from (config.model.name_or_path), the paper's setting.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import ml_collections

from dpo_jax.analysis.methods import RUN_CONFIG, Method, run_method
from dpo_jax.models.hf_io import resolve_checkpoint_dir
from dpo_jax.models.loading import resolve_model_path


@dataclasses.dataclass(frozen=True)
class RunInfo:
    path: str  # as given
    model_path: str  # the policy's Hugging Face directory or hub name
    config: ml_collections.ConfigDict | None  # the run's config, when `path` is a dpo_jax workdir

    @property
    def label(self) -> str:
        return Path(self.path.rstrip("/")).name or self.path

    @property
    def reference_path(self) -> str:
        if self.config is None:
            raise ValueError(
                f"{self.path} is not a dpo_jax workdir (no {RUN_CONFIG}): it names no reference model"
            )
        name = self.config.reference.name_or_path or self.config.model.name_or_path
        if name == "random":
            raise ValueError(f"{self.path} started from a random model: it has no reference to sample")
        return resolve_model_path(name)

    def method(self, *, best_of: int = 1) -> Method:
        """The run's method and sweep parameter (methods.run_method); "model" for a plain model."""
        if self.config is None:
            return Method("best-of-n", "N", float(best_of)) if best_of > 1 else Method("model")
        return run_method(self.config, best_of=best_of)

    def tokenizer_path(self) -> str:
        """The policy's own tokenizer, else the run's configured one."""
        if os.path.isdir(self.model_path):
            directory = resolve_checkpoint_dir(self.model_path)
            if os.path.exists(os.path.join(directory, "tokenizer_config.json")):
                return directory
        if self.config is not None and self.config.tokenizer:
            return self.config.tokenizer
        return self.model_path


def read_run_config(path: str) -> ml_collections.ConfigDict | None:
    """The config a dpo_jax workdir was trained with (WORKDIR/run_config.json); None for any other path."""
    config_file = Path(path, RUN_CONFIG)
    if not config_file.is_file():
        return None
    try:
        return ml_collections.ConfigDict(json.loads(config_file.read_text()))
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_file}: not valid JSON ({error})") from error


def read_run(path: str) -> RunInfo:
    return RunInfo(path=path, model_path=resolve_model_path(path), config=read_run_config(path))


def load_policy(path: str, *, dtype: str = "float32"):
    """(model, params) of a Hugging Face directory, hub name or finished workdir."""
    from dpo_jax.models import from_hf

    return from_hf(resolve_model_path(path), dtype=dtype)


def expand_workdirs(spec: str) -> list[str]:
    """Runs named directly, or the preference runs (not SFT: that is the reference) inside a sweep root."""
    runs = []
    for entry in (w for w in spec.split(",") if w):
        path = Path(entry)
        if path.is_dir() and not (path / RUN_CONFIG).exists() and not (path / "config.json").exists():
            found = [str(p.parent) for p in sorted(path.glob(f"*/{RUN_CONFIG}"))]
            found = [run for run in found if read_run(run).method().name != "sft"]
            if not found:
                raise FileNotFoundError(f"{entry} holds no preference run ({RUN_CONFIG} of a non-SFT run)")
            runs.extend(found)
        else:
            runs.append(entry)
    return runs

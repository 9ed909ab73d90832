"""The sampling benchmark: new tokens per second of our sampler on a random-init published architecture,
optionally side by side with transformers' `generate` on the same shapes and the same weights.

    python -m dpo_jax.bench --program=sample --model=gpt2 --batch=16 --prompt_length=64 --new_tokens=64 \\
        --dtype=float32 [--layers=6 --width=512] [--num_samples=1] [--compare=transformers] [--repeats=5] \\
        [--temperature=1 --top_k=0 --top_p=1]

Every prompt token is real and no row stops at EOS (there is none: `eos_id` is off on both sides and
transformers is held to `min_new_tokens`), so both sides produce exactly batch x num_samples x
new_tokens tokens per call. With --compare=transformers our params are exported with `to_hf` and
loaded by `AutoModelForCausalLM` (torch, this host's CPU threads), and the two are timed in turns,
`--repeats` calls each, ours then theirs, so that a machine shared with other work loads both alike;
the medians and their ratio are reported, with the load average before and after. A greedy call on
each side checks that both decode the same weights (rows whose tokens agree exactly). Prints one line
`RESULT {json}`.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import jax
import numpy as np

from dpo_jax.config.command_line import command_error, parse_command
from dpo_jax.models import build_model, from_hf_config, init_params
from dpo_jax.models.presets import MODEL_PRESETS, preset
from dpo_jax.sampling import generate
from dpo_jax.sampling.settings import sampling_flags, settings_from_flags

COMPARISONS = ("none", "transformers")


FLAGS = (
    ("program", str, "sample", "train: the DPO train step; sample: this benchmark"),
    ("model", str, "gpt2", "a published architecture (dpo_jax.models.presets)"),
    ("layers", int, 0, "override the preset's layer count (0: keep)"),
    ("width", int, 0, "override the hidden size (0: keep); heads of 64"),
    ("batch", int, 16, "prompts per call"),
    ("num_samples", int, 1, "completions per prompt, one batch"),
    ("prompt_length", int, 64, "prompt tokens"),
    ("new_tokens", int, 64, "tokens generated per completion (no EOS: exactly this many)"),
    ("dtype", str, "float32", "compute dtype"),
    *sampling_flags(max_new_tokens=64, fields=("temperature", "top_k", "top_p")),
    ("repeats", int, 5, "timed calls per side"),
    ("compare", str, "none", "none | transformers: its generate on the same weights, side by side"),
    ("seed", int, 0, "init, prompts and sampling seed"),
)
CHOICES = dict(
    program=("train", "sample"), model=sorted(MODEL_PRESETS), dtype=("float32", "bfloat16"), compare=COMPARISONS
)


def parse_args(argv: Sequence[str] | None) -> SimpleNamespace:
    prog = "python -m dpo_jax.bench --program=sample"
    args = parse_command(prog, argv, FLAGS, doc=__doc__, choices=CHOICES)
    if args.program != "sample":
        command_error(f"--program={args.program}: this is the sampling benchmark (--program=sample)")
    for name in ("batch", "num_samples", "prompt_length", "new_tokens", "repeats"):
        if getattr(args, name) < 1:
            command_error(f"--{name} must be >= 1")
    if args.layers < 0 or args.width < 0 or args.width % 64:
        command_error("--layers must be >= 0 and --width a multiple of 64 (heads of 64), 0 keeping the preset's")
    args.sampling = settings_from_flags(args, max_new_tokens=args.new_tokens)
    return args


def model_config(args: SimpleNamespace):
    """The preset's architecture, with --layers / --width (heads of 64, MLP 4x) if given."""
    overrides: dict[str, Any] = dict(dtype=args.dtype)
    if args.layers:
        overrides["num_layers"] = args.layers
    if args.width:
        overrides.update(hidden_size=args.width, num_heads=args.width // 64, intermediate_size=4 * args.width)
    return from_hf_config(preset(args.model), **overrides)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class _Ours:
    def __init__(self, model, params, ids, args):
        self.model, self.params, self.args = model, params, args
        self.ids, self.mask = ids, np.ones_like(ids)

    def __call__(self, temperature: float | None = None, seed: int = 0) -> np.ndarray:
        out = generate(
            self.model,
            self.params,
            self.ids,
            self.mask,
            settings=self.args.sampling if temperature is None else self.args.sampling.replace(temperature=temperature),
            rng=jax.random.key(seed),
            num_samples=self.args.num_samples if temperature is None else 1,
        )
        return np.asarray(jax.block_until_ready(out["tokens"]))


class _Transformers:
    """transformers' `generate` on our weights, exported with `to_hf`."""

    def __init__(self, model, params, ids, args):
        import torch
        import transformers

        from dpo_jax.models import to_hf

        self.torch, self.args = torch, args
        with tempfile.TemporaryDirectory() as export:
            to_hf(model, params, export)
            dtype = torch.float32 if args.dtype == "float32" else torch.bfloat16
            self.model = transformers.AutoModelForCausalLM.from_pretrained(export, dtype=dtype).eval()
        self.ids = torch.from_numpy(ids.astype(np.int64))
        self.version = transformers.__version__

    def __call__(self, temperature: float | None = None, seed: int = 0) -> np.ndarray:
        settings = self.args.sampling
        temperature = settings.temperature if temperature is None else temperature
        if temperature:
            sampling = dict(do_sample=True, temperature=temperature, top_k=settings.top_k, top_p=settings.top_p)
        else:
            sampling = dict(do_sample=False)
        self.torch.manual_seed(seed)
        with self.torch.inference_mode():
            out = self.model.generate(
                self.ids,
                attention_mask=self.torch.ones_like(self.ids),
                max_new_tokens=self.args.new_tokens,
                min_new_tokens=self.args.new_tokens,
                num_return_sequences=self.args.num_samples if temperature else 1,
                eos_token_id=None,
                pad_token_id=0,
                **sampling,
            )
        return out[:, self.ids.shape[1] :].numpy()


def run_sample_benchmark(args: SimpleNamespace) -> dict[str, Any]:
    config = model_config(args)
    model = build_model(config)
    params = init_params(model, jax.random.key(args.seed))
    ids = np.random.default_rng(args.seed).integers(0, config.vocab_size, (args.batch, args.prompt_length))
    ids = ids.astype(np.int32)
    sides: dict[str, Any] = {"dpo_jax": _Ours(model, params, ids, args)}
    if args.compare == "transformers":
        sides["transformers"] = _Transformers(model, params, ids, args)
    load_before = os.getloadavg()
    compile_seconds = _timed(sides["dpo_jax"])  # first call: tracing and compiling
    # One greedy completion per prompt on each side: equal tokens mean equal weights and model.
    greedy = {name: side(temperature=0.0) for name, side in sides.items()}
    for side in list(sides.values())[1:]:
        side()  # warm-up
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    for repeat in range(args.repeats):
        for name, side in sides.items():
            seconds[name].append(_timed(lambda side=side, seed=repeat: side(seed=seed)))
    load_after = os.getloadavg()
    new_tokens = args.batch * args.num_samples * args.new_tokens

    def timing(name: str) -> dict[str, Any]:
        median = statistics.median(seconds[name])
        return dict(
            seconds=round(median, 4),
            seconds_all=[round(s, 4) for s in seconds[name]],
            new_tokens_per_second=round(new_tokens / median, 1),
        )

    result: dict[str, Any] = dict(
        system="dpo_jax",
        program="sample",
        model=args.model,
        layers=config.num_layers,
        width=config.hidden_size,
        n_params=config.num_params(),
        batch=args.batch,
        num_samples=args.num_samples,
        prompt_length=args.prompt_length,
        new_tokens=args.new_tokens,
        new_tokens_per_call=new_tokens,
        dtype=args.dtype,
        temperature=args.sampling.temperature,
        top_k=args.sampling.top_k,
        top_p=args.sampling.top_p,
        repeats=args.repeats,
        **timing("dpo_jax"),
        compile_seconds=round(compile_seconds, 2),
        device_kind=jax.devices()[0].device_kind,
        device_count=jax.device_count(),
        jax_version=jax.__version__,
        load_average_before=[round(x, 2) for x in load_before],
        load_average_after=[round(x, 2) for x in load_after],
    )
    if "transformers" in sides:
        theirs = sides["transformers"]
        result["transformers"] = dict(
            **timing("transformers"), version=theirs.version, torch_threads=theirs.torch.get_num_threads()
        )
        medians = {name: statistics.median(times) for name, times in seconds.items()}
        result["speedup"] = round(medians["transformers"] / medians["dpo_jax"], 2)
        result["speedup_per_repeat"] = [
            round(t / o, 2) for o, t in zip(seconds["dpo_jax"], seconds["transformers"])
        ]
        result["greedy_rows_equal"] = int(np.all(greedy["dpo_jax"] == greedy["transformers"], axis=1).sum())
    return result

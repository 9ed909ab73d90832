"""Beta sweep: one training run per beta, each in its own workdir WORKDIR_ROOT/beta_<value>.

    python launch/sweep.py --config=configs/tldr.py --workdir_root=/tmp/sweep \\
        --betas=0.05,0.1,0.25,0.5,1.0 --mode=print --config.learning_rate=1e-6

--alphas=A,B,... sweeps the unlikelihood baseline's weight instead, as the paper does for its unlikelihood
points: one `--config.loss=unlikelihood --config.unlikelihood_alpha=A` run per alpha (alpha >= 0; 0 is
preferred-FT), in WORKDIR_ROOT/alpha_<value>.

--mode=local runs the runs one after another on this machine; --mode=print writes one command per
line for a cluster scheduler. A beta whose workdir holds the finished marker is skipped unless
--force. Arguments of the form --config.NAME=VALUE are passed to every run unchanged.

This script deliberately does not import jax (or the package): it only builds command lines, so it
starts instantly and runs on a login node without accelerators.

Why this stays a launcher and is not a recipe (dpo_jax/recipes/engine.py): the recipe engine runs its
stages one after another on the machine (or slice) it is started on, each stage using all of its
devices, and reuses or resumes them in one DIR. A sweep printed here is one independent run per beta
for a scheduler (SLURM, a queue of TPU VMs) to place on its own hosts, side by side, which the engine
does not do; and it sweeps any config file, where a recipe is one paper figure. For a sweep on one
machine (or one slice), reused and resumed stage by stage, use a recipe's grid instead:

    python -m dpo_jax.experiment --recipe=imdb --workdir=/tmp/imdb --recipe.betas=0.05,0.1,1,5 \\
        --recipe.unlikelihood_alphas=0.1,1

(tldr and hh take `--recipe.betas=` too; docs/recipes.md). Its flags are argparse's, not the package's
command-line stack (`dpo_jax.config.command_line`), for the same reason it imports nothing of the
package; a mistake in them is exit status 2, as in the package's commands.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys

DEFAULT_BETAS = "0.05,0.1,0.25,0.5,1.0"
# Written by the training loop into its workdir once the last step's checkpoint is saved.
DEFAULT_FINISHED_MARKER = "FINISHED"


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument(
        "--config", required=True, help="config file, e.g. configs/tldr.py or configs/tldr.py:tiny"
    )
    parser.add_argument("--workdir_root", required=True, help="each run writes to WORKDIR_ROOT/beta_<value>")
    parser.add_argument(
        "--betas", default=None, help=f"comma-separated positive betas (default {DEFAULT_BETAS})"
    )
    parser.add_argument(
        "--alphas", default=None, help="comma-separated unlikelihood alphas >= 0, instead of betas"
    )
    parser.add_argument("--mode", choices=("local", "print"), default="print")
    parser.add_argument("--module", default="dpo_jax.main", help="python module run with -m for each beta")
    parser.add_argument(
        "--python",
        default=None,
        help="interpreter for the runs (default: this one locally, `python` printed)",
    )
    parser.add_argument("--finished_marker", default=DEFAULT_FINISHED_MARKER)
    parser.add_argument("--force", action="store_true", help="rerun betas whose workdir is marked finished")
    args, passthrough = parser.parse_known_args(argv)
    if args.python is None:
        args.python = sys.executable if args.mode == "local" else "python"
    not_overrides = [arg for arg in passthrough if not arg.startswith("--config.")]
    if not_overrides:
        parser.error(
            f"unrecognised arguments {not_overrides}; only --config.NAME=VALUE overrides pass through"
        )
    if args.alphas is not None and args.betas is not None:
        parser.error("--betas and --alphas: a sweep varies one setting")
    args.swept = "alpha" if args.alphas is not None else "beta"
    owned = {"beta": ("--config.beta",), "alpha": ("--config.unlikelihood_alpha", "--config.loss")}[
        args.swept
    ]
    for arg in passthrough:
        if arg.split("=", 1)[0] in owned:
            parser.error(f"{arg.split('=', 1)[0]} is set by the sweep itself; use --{args.swept}s")
    return args, passthrough


def parse_betas(betas: str, swept: str = "beta") -> list[str]:
    """Canonical spellings ("1" -> "1.0") so that workdir names do not depend on how beta was typed.
    Betas must be positive; unlikelihood alphas (`swept="alpha"`) may be 0."""
    parsed = []
    for text in betas.split(","):
        try:
            value = float(text)
        except ValueError:
            raise ValueError(
                f"--{swept}s entry {text!r} is not a number (from --{swept}s={betas!r})"
            ) from None
        if not (value > 0 if swept == "beta" else 0 <= value < float("inf")):
            bound = "positive" if swept == "beta" else "a finite number >= 0"
            raise ValueError(f"--{swept}s entry {text!r} must be {bound} (from --{swept}s={betas!r})")
        parsed.append(repr(value))
    if len(set(parsed)) != len(parsed):
        raise ValueError(f"--{swept}s={betas!r} lists a {swept} twice")
    return parsed


def run_command(args: argparse.Namespace, value: str, workdir: str, overrides: list[str]) -> list[str]:
    if args.swept == "alpha":
        setting = ["--config.loss=unlikelihood", f"--config.unlikelihood_alpha={value}"]
    else:
        setting = [f"--config.beta={value}"]
    return [
        args.python,
        "-m",
        args.module,
        f"--config={args.config}",
        f"--workdir={workdir}",
        *setting,
        *overrides,
    ]


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    swept = args.swept
    try:
        betas = parse_betas(args.alphas if swept == "alpha" else args.betas or DEFAULT_BETAS, swept)
    except ValueError as error:
        print(f"sweep: {error}", file=sys.stderr)
        return 2
    # String joining, not pathlib, so that gs:// roots keep their double slash.
    root = args.workdir_root.rstrip("/")
    if "://" in root:
        print(
            f"sweep: cannot look for finished markers under {root}; every {swept} is listed", file=sys.stderr
        )
    failed_betas = []
    for beta in betas:
        workdir = f"{root}/{swept}_{beta}"
        marker = f"{workdir}/{args.finished_marker}"
        if os.path.exists(marker) and not args.force:
            print(f"sweep: skipping {swept}={beta}, {marker} exists", file=sys.stderr)
            continue
        command = run_command(args, beta, workdir, overrides)
        if args.mode == "print":
            print(shlex.join(command), flush=True)
            continue
        print(f"sweep: {swept}={beta}: {shlex.join(command)}", file=sys.stderr, flush=True)
        if subprocess.run(command, check=False).returncode != 0:
            failed_betas.append(beta)
    if failed_betas:
        print(f"sweep: runs failed for {swept}s {failed_betas}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The reward-vs-KL frontier of a synthetic-benchmark sweep: one figure and one table for all betas.

    python launch/sweep.py --config=configs/synthetic.py --workdir_root=/tmp/dpo-sweep --mode=local \\
        --config.synthetic.reference_workdir=/tmp/dpo-sweep/shared
    python launch/frontier.py --root=/tmp/dpo-sweep

Reads every ROOT/beta_*/synthetic_eval.json, prints the comparison table (every beta's DPO policy,
the optimum at each beta, the baselines) and draws the exact frontier with every method's point to
ROOT/synthetic_frontier.png (or --out). Nothing is trained or evaluated here: the figures are the
runs' exact evaluations.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _report_module():
    # The package of this checkout, as `python -m dpo_jax.main` run from it would use (whether or not,
    # or wherever else, dpo_jax is installed).
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from dpo_jax.synthetic import report

    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument("--root", required=True, help="the sweep's --workdir_root (holds beta_*/ runs)")
    parser.add_argument("--out", default=None, help="PNG to write (default ROOT/synthetic_frontier.png)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    report = _report_module()
    out = args.out or str(Path(args.root) / "synthetic_frontier.png")
    try:
        table, drawn = report.summarise_sweep(args.root, out)
    except FileNotFoundError as error:
        print(f"frontier: {error}", file=sys.stderr)
        return 2
    print(table)
    if drawn is not None:
        print(f"figure: {drawn}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

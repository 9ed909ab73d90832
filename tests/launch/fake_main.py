"""Stand-in for `python -m dpo_jax.main` in the sweep tests: records its argv in the run's workdir."""

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> None:
    workdir = next(arg.split("=", 1)[1] for arg in argv if arg.startswith("--workdir="))
    Path(workdir).mkdir(parents=True, exist_ok=True)
    (Path(workdir) / "argv.json").write_text(json.dumps(argv))
    if "--config.beta=0.5" in argv:
        sys.exit(3)


if __name__ == "__main__":
    main(sys.argv[1:])

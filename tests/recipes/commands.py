"""`python -m dpo_jax.experiment` as the recipe tests run it: the command line, one run of it that must
exit 0 and print one RESULT line (returned, with the run's stdout), and a recipe's paper-scale plan
rehearsed (`--scale=paper --rehearse`)."""

import json
import subprocess
import sys

from tests.train_helpers import REPO, process_env


def experiment_command(recipe: str, root, *extra: str) -> list[str]:
    return [sys.executable, "-m", "dpo_jax.experiment", f"--recipe={recipe}", f"--workdir={root}", *extra]


def run_experiment(command: list[str], timeout: int = 1800, **env: str) -> tuple[dict, str]:
    """`env`: variables added to the tests' environment (tests.train_helpers.process_env)."""
    done = subprocess.run(
        command, cwd=REPO, env=process_env(**env), capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, done.stdout[-3000:]
    return json.loads(lines[0][len("RESULT ") :]), done.stdout


def rehearsal_command(recipe: str, root, *extra: str) -> list[str]:
    return experiment_command(recipe, root, "--scale=paper", "--rehearse", *extra)


def rehearse(recipe: str, root, *extra: str, **env: str) -> dict:
    """The recipe's paper-scale plan on tiny models and paper-shaped data (recipes/rehearsal_data.py),
    counts capped -> its RESULT record."""
    result, stdout = run_experiment(rehearsal_command(recipe, root, *extra), timeout=2400, **env)
    assert stdout.index("| method") < stdout.index("RESULT ")  # the table before the RESULT line (item 8)
    assert result["rehearse"] and result["scale"] == "paper" and result["stages"][0]["name"] == "rehearsal_data"
    return result


def statuses(result: dict) -> dict[str, str]:
    return {s["name"]: s["status"] for s in result["stages"]}

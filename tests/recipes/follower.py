"""The engine tests' two-host recipe, and worker 1 of it (a follower) as its own process:

    python -m tests.recipes.follower ROOT SESSION MARKER

prints each stage's status, or `failed: ...` and exits with the stage's status."""

import sys

from dpo_jax.recipes.engine import Runner, Stage, StageFailed


def two_host_stages(marker: str) -> list[Stage]:
    """a on the devices (both hosts join it, as a collective program); m without devices (the lead alone runs it; fails while MARKER exists); b on
    the devices, reading m's output (so a follower must not start it before m is finished)."""
    echo = ("tests.recipes.echo_stage",)
    return [
        Stage("a", (*echo, "--out={root}/a/out.txt", "--value=1", "--join={root}/a/joined:2"), kind="train"),
        Stage(
            "m", (*echo, "--out={root}/m/out.txt", "--value=2", f"--fail_if_exists={marker}"), kind="model"
        ),
        Stage(
            "b",
            (
                *echo,
                "--out={root}/b/out.txt",
                "--value=3",
                "--input={root}/m/out.txt",
                "--join={root}/b/joined:2",
            ),
            ("a", "m"),
            kind="score",
        ),
    ]


if __name__ == "__main__":
    root, session, marker = sys.argv[1:4]
    runner = Runner(root, worker=1, session=session, log=lambda line: None)
    try:
        for stage in two_host_stages(marker):
            print(runner.run(stage).status, flush=True)
    except StageFailed as error:
        print(f"failed: {error}", flush=True)
        sys.exit(error.exit_status)

"""A stand-in stage for the engine tests: writes --value (and --input's text) to --out, or exits --fail,
or joins a stand-in collective, or exits 3 while --fail_if_exists names a file, or waits for a SIGTERM and exits 75 as a preempted trainer does,
or dies of a SIGTERM as a stage still starting up (before its handler) or already exiting does; --run_config writes
a run_config.json beside --out naming a path, as a trainer's names its model."""

import argparse
import sys
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--out", required=True)
parser.add_argument("--value", default="")
parser.add_argument("--input", default="")
parser.add_argument("--fail", type=int, default=0)
parser.add_argument("--join", default="", help="DIR:N: wait until N processes have joined in DIR (a collective)")
parser.add_argument("--fail_if_exists", default="", help="exit 3 when this file exists (a transient failure)")
parser.add_argument("--wait_for_sigterm", default="", help="write this file, then wait: SIGTERM exits 75")
parser.add_argument("--wait_unhandled", default="", help="write this file, then wait: SIGTERM kills it")
parser.add_argument("--finish_then_sigterm_recipe", action="store_true", help="write --out, SIGTERM the recipe, exit")
parser.add_argument("--error_line", default="", help="print `error: <this>` before failing")
parser.add_argument("--run_config", default="", help="a path for run_config.json beside --out to name")
args = parser.parse_args()
print(f"echo stage writing {args.out}")
if args.wait_unhandled:
    import time

    Path(args.wait_unhandled).write_text("ready")
    time.sleep(120)
    sys.exit(1)  # not signalled in time
if args.wait_for_sigterm:
    import signal
    import time

    def preempted(signum, frame):
        print("saved, preempted", flush=True)
        sys.exit(75)

    signal.signal(signal.SIGTERM, preempted)
    Path(args.wait_for_sigterm).write_text("ready")
    time.sleep(120)
    sys.exit(1)  # not signalled in time
if args.join:
    import os
    import time

    directory, count = args.join.rsplit(":", 1)
    Path(directory).mkdir(parents=True, exist_ok=True)
    (Path(directory) / str(os.getpid())).write_text("")
    deadline = time.time() + 60
    while len(list(Path(directory).iterdir())) < int(count):
        if time.time() > deadline:
            sys.exit(4)
        time.sleep(0.05)
if args.fail_if_exists and Path(args.fail_if_exists).exists():
    args.fail = 3
if args.fail:
    print("stage went wrong here")
    if args.error_line:
        print(f"error: {args.error_line}", file=sys.stderr)
        print("a line after it")
    sys.exit(args.fail)
text = args.value + (Path(args.input).read_text() if args.input else "")
Path(args.out).parent.mkdir(parents=True, exist_ok=True)
Path(args.out).write_text(text)
if args.run_config:
    import json

    (Path(args.out).parent / "run_config.json").write_text(json.dumps({"model": {"name_or_path": args.run_config}}))
if args.finish_then_sigterm_recipe:  # finished (its outputs written), then the notice while it exits
    import os
    import signal
    import time

    os.kill(os.getppid(), signal.SIGTERM)
    time.sleep(30)  # the recipe passes the notice on: it dies here, as a stage tearing down would

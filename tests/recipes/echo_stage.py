"""A stand-in stage for the engine tests: writes --value (and --input's text) to --out, or exits --fail,
or joins a stand-in collective, or exits 3 while --fail_if_exists names a file, or waits for a SIGTERM and exits 75 as a preempted trainer does."""

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
args = parser.parse_args()
print(f"echo stage writing {args.out}")
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
    sys.exit(args.fail)
text = args.value + (Path(args.input).read_text() if args.input else "")
Path(args.out).parent.mkdir(parents=True, exist_ok=True)
Path(args.out).write_text(text)

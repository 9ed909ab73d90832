"""A stand-in stage for the engine tests: writes --value (and --input's text) to --out, or exits --fail."""

import argparse
import sys
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--out", required=True)
parser.add_argument("--value", default="")
parser.add_argument("--input", default="")
parser.add_argument("--fail", type=int, default=0)
args = parser.parse_args()
print(f"echo stage writing {args.out}")
if args.fail:
    print("stage went wrong here")
    sys.exit(args.fail)
text = args.value + (Path(args.input).read_text() if args.input else "")
Path(args.out).parent.mkdir(parents=True, exist_ok=True)
Path(args.out).write_text(text)

"""Test-wide setup: 8 fake CPU devices so that every sharding path runs on a laptop or CI box, CPU code
compiled small (LLVM at -O0: `tests.train_helpers.xla_flags_for_tests`), and one compilation cache for
the whole run.

XLA_FLAGS must be set before jax is first imported, which is why this lives in conftest.py.

Most of the suite's time is XLA compiling the same tiny programs again: every training run, in this
process or in a `dpo_jax.main` subprocess, builds fresh jitted functions, so jax's in-memory cache
never sees them twice. JAX's persistent compilation cache is keyed on the program itself (its HLO, the
compile options, the devices, jaxlib and XLA flags), so the second run of a program loads the first
one's executable instead of compiling it. The directory is made for this run and removed after it:
nothing carries over from one run to the next, and every program is still compiled once per run.
The settings go through the environment, so subprocesses (and pytest-xdist workers) share it; the
thresholds are zeroed because the tests' programs are small and fast to compile, yet numerous.
"""

import atexit
import os
import shutil
import tempfile

from tests.train_helpers import xla_flags_for_tests  # imports no jax: before jax, as the flags must be

if xla_flags_for_tests() not in os.environ.get("XLA_FLAGS", ""):  # xdist's workers inherit the controller's
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {xla_flags_for_tests()}".strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):  # set by a caller (or xdist's controller): shared
    _cache_dir = tempfile.mkdtemp(prefix="dpo_jax-tests-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache_dir
    atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


# --- The order the two xdist workers take the files in ------------------------------------------------
# With `-n 2 --dist loadfile` each file runs on one worker, and a worker takes the next file when it is
# done. xdist orders the files by their number of tests, which puts the few, long end-to-end files (a
# recipe's rehearsal: five tests, ten minutes) last, where one worker runs them alone while the other
# idles. Instead, the files below start first, longest first (figures from `--durations=20`; a file
# not listed keeps its place after them), and the short files fill in around them.
LONG_FILES = (
    "tests/recipes/test_rehearsal.py",  # ~460 s: tldr, news, judge_agreement and hh rehearsed
    "tests/recipes/test_imdb.py",  # ~410 s: imdb rehearsed, reused, killed and resumed
    "tests/training/test_loop.py",
    "tests/training/test_loop_resume.py",
    "tests/synthetic/test_experiment.py",
    "tests/perf/test_aot.py",
    "tests/models/test_attention.py",
    "tests/ppo/test_scaffold.py",
    "tests/recipes/test_synthetic.py",
)


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist: keep the collection's order
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        path = item.nodeid.split("::")[0]
        return LONG_FILES.index(path) if path in LONG_FILES else len(LONG_FILES)

    items.sort(key=rank)  # stable: within a file, and among the unlisted files, the collection's order

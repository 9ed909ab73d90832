"""The evaluation commands on 2 processes x 4 CPU devices, joined by jax.distributed through the
environment as on a multi-host slice, write the files one process x 8 devices writes, byte for byte:
the sampler's tokens do not depend on how prompts are split over processes (tests/sampling), the
scores come from the same per-device programs (the Flax reward model) or from process 0 alone (the
torch classifier, broadcast bit for bit), and the files hold only those. Process 0 alone writes them
and prints the RESULT lines; process 1, given other output names, leaves none."""

import json
import shutil

import pytest

from dpo_jax import make_pairs, winrate
from dpo_jax.data import load_tokenizer
from dpo_jax.models import to_hf
from dpo_jax.models.loading import EXPORT_DIRNAME
from tests.judges.tiny_classifiers import save_tiny_classifier
from tests.synthetic.tiny_models import tiny_lm
from tests.train_helpers import run_command_processes


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny exported policy, a torch sentiment classifier (GPT-2, two labels: no Flax model) and a
    Flax-scored reward model (GPT-2, one output)."""
    root = tmp_path_factory.mktemp("multihost")
    model, params = tiny_lm("gpt2", 512, seed=0, std=0.5, max_positions=128)
    to_hf(model, params, str(root / "sft" / EXPORT_DIRNAME), tokenizer=load_tokenizer("tiny"))
    return {
        "sft": root / "sft",
        "classifier": save_tiny_classifier(root / "classifier", num_labels=2),
        "reward": save_tiny_classifier(root / "rm", num_labels=1),
    }


def result_lines(text: str) -> list[dict]:
    return [json.loads(line[len("RESULT ") :]) for line in text.splitlines() if line.startswith("RESULT ")]


def two_processes(module: str, per_process: list[list[str]]):
    procs = run_command_processes([[module, *args] for args in per_process])
    for proc in procs:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert not result_lines(procs[1].stdout)
    return procs


@pytest.mark.slow
def test_make_pairs_on_two_processes(models, tmp_path, capsys):
    args = [
        f"--workdir={models['sft']}",
        f"--classifier={models['classifier']}",
        "--num_samples=4",
        "--num_prompts=8",
        "--data_path=fixture:imdb",
        "--max_new_tokens=8",
        "--batch_size=8",
    ]
    assert make_pairs.main([*args, f"--out={tmp_path / 'one.jsonl'}"]) == 0
    (want,) = result_lines(capsys.readouterr().out)
    procs = two_processes("dpo_jax.make_pairs", [[*args, f"--out={tmp_path / f'process{i}.jsonl'}"] for i in (0, 1)])
    assert (tmp_path / "process0.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    assert not (tmp_path / "process1.jsonl").exists()
    (got,) = result_lines(procs[0].stdout)
    assert got == {**want, "out": str(tmp_path / "process0.jsonl")} and want["records"] > 0


@pytest.mark.slow
def test_best_of_n_win_rates_judged_by_a_reward_model_on_two_processes(models, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(models["sft"], run)  # results go to RUN/winrate
    args = [
        f"--workdir={run}",
        "--task=tldr",
        "--data_source=tldr_comparisons",
        "--data_path=fixture:tldr_comparisons",
        "--baseline=chosen",
        "--policy=best_of_n:2",
        f"--best_of_n_reward={models['reward']}",
        "--judge=reward_model",
        f"--judge_path={models['reward']}",
        "--temperatures=0,1",
        "--num_prompts=6",
        "--max_new_tokens=8",
        "--batch_size=8",
    ]
    assert winrate.main(args) == 0
    want = result_lines(capsys.readouterr().out)
    (run / "winrate").rename(tmp_path / "one_process")
    elsewhere = [*args, "--name=process1", f"--out_dir={tmp_path / 'process1'}"]
    procs = two_processes("dpo_jax.winrate", [args, elsewhere])
    assert result_lines(procs[0].stdout) == want and len(want) == 2
    written = sorted(p.name for p in (run / "winrate").iterdir())
    assert written == sorted(p.name for p in (tmp_path / "one_process").iterdir())
    for name in (n for n in written if not n.endswith(".png")):  # a figure's bytes are matplotlib's
        assert (run / "winrate" / name).read_bytes() == (tmp_path / "one_process" / name).read_bytes(), name
    assert not list(tmp_path.rglob("process1*"))

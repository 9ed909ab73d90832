"""The synthetic benchmark end to end (`configs/synthetic.py:tiny,rlhf` on the 8 fake CPU devices: DPO, the
paper's preferred-FT and unlikelihood baselines and the RLHF ones), its stages on the recipe engine as
`python -m dpo_jax.main` runs them: every stage trains through the real trainer, the JSON and the figure
are written, DPO raises the exact reward, the reward model trains on the DPO pairs, PPO runs with the true
and the learned reward, best-of-N is exact; reruns reuse finished stages, a changed setting re-runs only the
stages that read it, a sweep shares the beta-independent stages, and the pieces it is built of (synthetic
PreparedData, tree tables, the sweep report) do what they claim."""

import contextlib
import io
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from configs.synthetic import get_config
from dpo_jax.data import make_train_loader
from dpo_jax.recipes.synthetic_demo import run_demo, wait_for_lock
from dpo_jax.synthetic import SyntheticTask, completion_logprobs
from dpo_jax.synthetic.data import prepared_from_arrays
from dpo_jax.synthetic.report import format_table, merge_sweep
from dpo_jax.synthetic.rlhf import ppo_runs
from dpo_jax.synthetic.tables import all_completion_logprobs
from tests.synthetic.tiny_models import tiny_lm
from tests.train_helpers import process_env

REPO = Path(__file__).resolve().parents[2]
VARIANT = "tiny,rlhf"
PPO_STAGES = ("ppo_true_reward_kl_0.1", "ppo_learned_reward_kl_0.1")
STAGES = ("sft", "preferred_ft", "unlikelihood", "dpo_beta_0.1", "reward_model", *PPO_STAGES)
CONFIG = f"{REPO}/configs/synthetic.py:{VARIANT}"


def same(a, b) -> bool:
    """Equal as JSON (NaN, the gain ratio of pi_ref itself, is not equal to itself as a float)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def run(workdir, **synthetic):
    config = get_config(VARIANT)
    config.synthetic.update(synthetic)
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        result = run_demo(config, str(workdir), CONFIG)
    return result, stdout.getvalue()


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("synthetic") / "run"
    result, printed = run(workdir)
    return workdir, result, printed


def test_tiny_benchmark_writes_every_figure(first_run):
    workdir, result, printed = first_run
    saved = json.loads((workdir / "synthetic_eval.json").read_text())
    assert saved["beta"] == 0.1 and saved["loss"] == "dpo"
    for method in ("dpo", "preferred_ft", "unlikelihood"):
        assert {"kl", "reward", "optimum_reward", "gain_ratio"} <= set(saved[method])
        # Every policy sits on or below the exact frontier at its own KL.
        assert saved[method]["reward"] <= saved[method]["optimum_reward"] + 1e-6
    assert saved["optimum_at_same_kl"]["reward"] == saved["dpo"]["optimum_reward"]
    assert saved["gain_ratio"] == saved["dpo"]["gain_ratio"]
    assert set(saved["reference"]) == {"kl", "reward"} and saved["reference"]["kl"] == 0.0
    kls = [point["kl"] for point in sorted(saved["frontier"], key=lambda p: p["beta"])]
    assert len(kls) >= 3 and all(np.diff(kls) < 0)
    assert (workdir / "synthetic_frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {workdir / 'synthetic_eval.json'} and {workdir / 'synthetic_frontier.png'}" in printed
    for stage in STAGES:
        assert (workdir / stage / "FINISHED").exists() and (
            workdir / stage / "export" / "config.json"
        ).exists()
    assert "gain ratio" in printed and "DPO" in printed and "unlikelihood" in printed
    assert same(result, saved)


def test_short_dpo_run_raises_the_exact_reward_over_pi_ref(first_run):
    _, result, _ = first_run
    assert result["dpo"]["kl"] > 0
    assert result["dpo"]["reward"] > result["reference"]["reward"]
    assert result["gain_ratio"] > 0


def test_every_rlhf_baseline_is_evaluated_exactly(first_run):
    workdir, result, printed = first_run
    saved = json.loads((workdir / "synthetic_eval.json").read_text())
    assert 0.0 <= saved["reward_model"]["eval_pair_accuracy"] <= 1.0
    assert [p["n"] for p in saved["best_of_n"]] == [1, 2, 8]
    # N = 1 is pi_ref itself.
    assert saved["best_of_n"][0]["kl"] == pytest.approx(0.0, abs=1e-6)
    assert saved["best_of_n"][0]["reward"] == pytest.approx(saved["reference"]["reward"], abs=1e-6)
    assert np.isnan(saved["best_of_n"][0]["gain_ratio"])  # no gain ratio for pi_ref itself
    for name in ("ppo_true_reward", "ppo_learned_reward", "best_of_n"):
        for point in saved[name]:
            assert point["reward"] <= point["optimum_reward"] + 1e-6 and point["kl"] >= -1e-9
    assert [p["kl_coef"] for p in saved["ppo_true_reward"]] == [0.1]
    for label in ("PPO (true reward)", "PPO (learned RM)", "best-of-N (learned RM)", "reward model"):
        assert label in printed


def test_ppo_settings_are_checked():
    config = get_config("tiny")
    config.synthetic.ppo_kl_coefs = "0.1,0.1"
    with pytest.raises(ValueError, match="ppo_kl_coefs"):
        ppo_runs(config.synthetic)
    config.synthetic.ppo_kl_coefs, config.synthetic.ppo_rewards = "0.1", "oracle"
    with pytest.raises(ValueError, match="unknown"):
        ppo_runs(config.synthetic)
    assert np.all([kind in ("true", "learned") for kind, _ in ppo_runs(get_config("rlhf").synthetic)])


def test_rerun_skips_finished_stages(first_run):
    workdir, result, _ = first_run
    marks = {stage: (workdir / stage / "FINISHED").stat().st_mtime_ns for stage in STAGES}
    again, _ = run(workdir)
    assert all(again["seconds"][stage] == 0.0 for stage in STAGES)
    assert {stage: (workdir / stage / "FINISHED").stat().st_mtime_ns for stage in STAGES} == marks
    for key in ("dpo", "preferred_ft", "unlikelihood", "reference", "frontier", "ppo_true_reward", "best_of_n"):
        assert same(again[key], result[key])


def test_the_readme_command_reuses_the_same_stages(first_run):
    """`python -m dpo_jax.main --config=configs/synthetic.py:tiny,rlhf` names the stages as `run_demo` does:
    on the same workdir it reuses every one and prints the table and one RESULT line."""
    workdir, result, _ = first_run
    done = subprocess.run(
        [sys.executable, "-m", "dpo_jax.main", f"--config=configs/synthetic.py:{VARIANT}", f"--workdir={workdir}"],
        cwd=REPO,
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    summary = json.loads(line[len("RESULT ") :])
    assert {s["status"] for s in summary["stages"]} == {"reused"}
    assert summary["gain_ratio"] == result["gain_ratio"] and summary["figure"]
    assert "gain ratio" in done.stdout and f"wrote {workdir / 'synthetic_eval.json'}" in done.stdout


def test_sweep_shares_the_reference_and_baselines(first_run, tmp_path):
    shared, first, _ = first_run
    result, _ = run(tmp_path / "beta_0.3", betas="0.3", reference_workdir=str(shared))
    assert result["seconds"]["sft"] == result["seconds"]["preferred_ft"] == 0.0
    assert result["seconds"]["dpo_beta_0.3"] > 0 and (tmp_path / "beta_0.3" / "dpo_beta_0.3").is_dir()
    assert result["reference"] == first["reference"] and result["preferred_ft"] == first["preferred_ft"]
    (tmp_path / "beta_0.1").mkdir()
    shutil.copy(shared / "synthetic_eval.json", tmp_path / "beta_0.1")
    printed = subprocess.run(
        [sys.executable, str(REPO / "launch" / "frontier.py"), f"--root={tmp_path}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    dpo_rows = [line for line in printed.splitlines() if line.startswith("DPO")]
    assert [row.split()[1] for row in dpo_rows] == ["0.100", "0.300"]
    assert (tmp_path / "synthetic_frontier.png").exists()


def test_sigterm_stops_a_stage_with_75_and_the_same_command_resumes_it(first_run):
    workdir, _, _ = first_run
    command = [
        sys.executable,
        "-m",
        "dpo_jax.main",
        f"--config=configs/synthetic.py:{VARIANT}",
        f"--workdir={workdir}",
        "--config.synthetic.betas=0.3",
    ]
    process = subprocess.Popen(command, cwd=REPO, env=process_env(), stdout=subprocess.DEVNULL)
    started = workdir / "dpo_beta_0.3" / "STAGE.started.json"
    deadline = time.time() + 300
    while not started.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=300) == 75
    assert started.exists() and not (workdir / "dpo_beta_0.3" / "STAGE.json").exists()
    done = subprocess.run(command, cwd=REPO, env=process_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "stage dpo_beta_0.3: resuming an interrupted run" in done.stdout
    assert (workdir / "dpo_beta_0.3" / "FINISHED").exists()


def test_a_changed_setting_reruns_only_the_stages_that_read_it(first_run):
    workdir, result, _ = first_run
    again, printed = run(workdir, unlikelihood=dict(learning_rate=0.5))
    assert {stage for stage, seconds in again["seconds"].items() if seconds > 0} == {
        "unlikelihood",
        "evaluation",
    }
    assert "--config.synthetic.unlikelihood.learning_rate: (absent) -> 0.5" in printed
    assert list((workdir / ".superseded").glob("unlikelihood.*"))  # the old run is kept, not deleted
    assert again["dpo"] == result["dpo"] and again["preferred_ft"] == result["preferred_ft"]
    assert again["unlikelihood"] != result["unlikelihood"]


def test_a_sweeps_runs_wait_for_the_shared_directory(tmp_path):
    """Runs of a sweep started together: the one training the shared stages holds their directory, the
    others wait for it (then reuse them) instead of failing or racing."""
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(tmp_path)],
        cwd=REPO,
        env=process_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    said = []
    with wait_for_lock(tmp_path, said.append, poll_s=0.1):  # refused while held, taken once let go
        assert holder.wait(timeout=60) == 0
    assert said == [f"waiting for another run's stages in {tmp_path} (its lock)"]
    assert not (tmp_path / "RUN_LOCK").exists()


LOCK_HOLDER = """
import sys, time
from dpo_jax.run.workdir import WorkdirLock
with WorkdirLock(sys.argv[1], single_process=True):
    print("held", flush=True)
    time.sleep(2)
"""


def test_merge_sweep_orders_betas_and_keeps_the_baselines():
    def record(beta):
        point = {"beta": beta, "kl": 1 / beta, "reward": 1.0, "optimum_reward": 1.1, "gain_ratio": 0.9}
        return {
            "beta": beta,
            "reference": {"kl": 0.0, "reward": 0.5},
            "dpo_by_beta": [point],
            "optimum_by_beta": [{"beta": beta, "kl": 1.2 / beta, "reward": 1.2}],
            "preferred_ft": {"kl": 0.1, "reward": 0.6, "optimum_reward": 0.7, "gain_ratio": 0.5},
            "frontier": [],
        }

    merged = merge_sweep([record(1.0), record(0.1)])
    assert [p["beta"] for p in merged["dpo_by_beta"]] == [0.1, 1.0]
    table = format_table(merged)
    assert table.count("\nDPO") == 2 and "preferred-FT" in table and "unlikelihood" not in table


def test_synthetic_prepared_data_masks_exactly_the_response_tokens():
    prompts = np.arange(12, dtype=np.int32).reshape(4, 3) % 5
    responses = np.arange(32, dtype=np.int32).reshape(4, 2, 4) % 5
    prepared = prepared_from_arrays("dpo", (prompts, responses))
    assert prepared.num_responses == 2 and prepared.max_length == 7 and prepared.eval is None
    loader = make_train_loader(prepared, global_batch_size=4, seed=0, process_index=0, process_count=1)
    batch = loader.batch(0)
    rows = loader.global_rows(0)
    np.testing.assert_array_equal(batch["input_ids"][:, :, :3], np.repeat(prompts[rows][:, None], 2, axis=1))
    np.testing.assert_array_equal(batch["input_ids"][:, :, 3:], responses[rows])
    assert batch["loss_mask"][:, :, :3].sum() == 0 and batch["loss_mask"][:, :, 3:].all()
    assert batch["attention_mask"].all()
    other = prepared_from_arrays("dpo", (prompts, responses[:, ::-1]))
    assert other.fingerprint != prepared.fingerprint


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox"])
def test_tree_tables_equal_teacher_forcing(arch):
    task = SyntheticTask(vocab_size=4, prompt_length=3, response_length=3, seed=2)
    model, params = tiny_lm(arch, task.vocab_size, std=0.5)
    prompts = task.sample_prompts(5, 0)
    apply_fn = lambda p, ids, mask: model.apply({"params": p}, ids, attention_mask=mask)
    expected = completion_logprobs(apply_fn, params, prompts, task.all_completions(), batch_size=256)
    # batch_size 32 = two prompts per call: the last call is padded with repeated prompts.
    table = all_completion_logprobs(model, params, prompts, vocab_size=4, response_length=3, batch_size=32)
    assert table.shape == expected.shape and table.dtype == np.float64
    np.testing.assert_allclose(table, expected, atol=2e-5)
    one_token = all_completion_logprobs(model, params, prompts, vocab_size=4, response_length=1, batch_size=8)
    np.testing.assert_allclose(np.exp(one_token).sum(-1), 1.0, atol=1e-5)

"""The sampler on a mesh: the same seed gives the same completions on 1 device, on 8 devices and on 2
processes x 4 devices, whatever the batching; a killed job resumes with its finished prompts; the
decode program's placement costs no collective per generated token where the FSDP layout gathers
every weight."""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpo_jax.perf.hlo import decode_loop_collectives
from dpo_jax.sampling import batched
from dpo_jax.sampling.batched import MeshSampler, sample_token_ids
from dpo_jax.sampling.settings import SamplingSettings
from dpo_jax.sampling.sharded import batch_arrays, decode_placement, decode_program, place_params
from dpo_jax.sharding import DEFAULT_LOGICAL_AXIS_RULES, make_mesh
from tests.synthetic.tiny_models import tiny_lm
from tests.train_helpers import free_port, run_worker_processes

VOCAB, EOS, PAD = 16, 3, 0
LENGTHS = [5, 2, 4, 1, 3, 3, 5, 2, 1, 4, 2]  # 11 prompts: batches never come out even
SETTINGS = {
    "sampled": SamplingSettings(temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=6),
    "greedy": SamplingSettings(temperature=0.0, top_k=0, top_p=1.0, max_new_tokens=6),
    "nucleus": SamplingSettings(temperature=0.8, top_k=0, top_p=0.9, max_new_tokens=6),
}


def prompts():
    rng = np.random.default_rng(0)
    width = max(LENGTHS)
    ids, mask = np.zeros((len(LENGTHS), width), np.int32), np.zeros((len(LENGTHS), width), np.int32)
    for row, length in enumerate(LENGTHS):
        ids[row, width - length :] = rng.integers(1, VOCAB, length)
        mask[row, width - length :] = 1
    return ids, mask


def sample(mesh, settings, *, batch_size, num_samples=3, **options):
    model, params = tiny_lm("gpt2", VOCAB)
    ids, mask = prompts()
    return sample_token_ids(
        model,
        params,
        ids,
        mask,
        settings=settings,
        num_samples=num_samples,
        batch_size=batch_size,
        seed=7,
        eos_id=EOS,
        pad_id=PAD,
        mesh=mesh,
        **options,
    )


def one_device():
    return make_mesh((1, 1, 1), devices=jax.devices()[:1])


def assert_same(got, want):
    np.testing.assert_array_equal(got.tokens, want.tokens)
    np.testing.assert_array_equal(got.mask, want.mask)
    # Sums of <= 6 fp32 log-probs of magnitude <= log(16) each: a few ulps of 17, whatever the
    # rounding of differently blocked matmuls.
    np.testing.assert_allclose(got.logps, want.logps, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", ["sampled", "greedy", "nucleus"])
def test_one_device_and_eight_devices_give_the_same_completions(name):
    want = sample(one_device(), SETTINGS[name], batch_size=6)
    assert want.tokens.shape == (3 * len(LENGTHS), 6)
    # Another batch size, batch axes over data and fsdp, the rows of a batch spread over 8 devices.
    assert_same(sample(make_mesh((2, 4, 1)), SETTINGS[name], batch_size=24), want)
    if name == "sampled":
        # The K samples of a prompt differ: each has its own key.
        per_prompt = want.tokens.reshape(len(LENGTHS), 3, -1)
        assert any(len({tuple(s) for s in samples}) > 1 for samples in per_prompt)
        assert np.any(want.mask == 0)  # some rows stopped at EOS: the early-exit path ran


class Killed(Exception):
    """The job stops mid-way, as if killed."""


def test_a_killed_job_resumes_with_its_finished_prompts(tmp_path, monkeypatch):
    resume = str(tmp_path / "finished.jsonl")
    want = sample(one_device(), SETTINGS["sampled"], batch_size=6)
    calls, kill_at = [], [3]
    original = batched.decode_program

    def dies_on_the_third_batch(*args, **kwargs):
        program = original(*args, **kwargs)

        def run(*inputs):
            calls.append(1)
            if len(calls) == kill_at[0]:
                raise Killed
            return program(*inputs)

        return run

    monkeypatch.setattr(batched, "decode_program", dies_on_the_third_batch)
    with pytest.raises(Killed):
        sample(one_device(), SETTINGS["sampled"], batch_size=6, resume_path=resume)
    lines = open(resume).read().splitlines()
    assert len(lines) == 4  # two batches of two prompts (6 rows / 3 samples) were finished
    with open(resume, "a") as f:
        f.write('{"job": "cut sho')  # the kill interrupted a write
    calls.clear()
    kill_at[0] = None
    resumed = sample(make_mesh((8, 1, 1)), SETTINGS["sampled"], batch_size=24, resume_path=resume)
    assert_same(resumed, want)
    assert len(calls) == 1  # the 7 remaining prompts fill one batch of 8 on 8 devices
    # Other settings are another job: nothing is reused.
    calls.clear()
    sample(one_device(), SETTINGS["greedy"], batch_size=6, resume_path=resume)
    assert len(calls) == -(-len(LENGTHS) // 2)


def compiled_decode(mesh, device_bytes=None):
    """(placement, collectives per generated token) of the decode program on `mesh`."""
    model, params = tiny_lm("gpt2", VOCAB)
    placement = decode_placement(model, mesh, DEFAULT_LOGICAL_AXIS_RULES, device_bytes=device_bytes)
    ids, mask = prompts()
    rows = np.arange(8)
    inputs = batch_arrays(placement.mesh, dict(ids=ids[rows], mask=mask[rows], index=rows.astype(np.int32)))
    options = dict(max_new_tokens=4, num_samples=2, filter_tokens=False, eos_id=EOS, pad_id=PAD)
    program = decode_program(model, (placement.mesh, placement.rules), **options)
    settings = (jnp.float32(1.0), jnp.int32(0), jnp.float32(1.0))
    lowered = program.lower(
        place_params(params, placement), inputs["ids"], inputs["mask"], inputs["index"], jnp.uint32(0), settings
    )
    return placement, decode_loop_collectives(lowered.compile().as_text())


def test_decode_placement_costs_no_collective_per_token_and_splits_over_tensor_what_does_not_fit():
    mesh = make_mesh((1, 8, 1))  # the training layout splits weights over fsdp
    placement, per_token = compiled_decode(mesh)
    assert placement.mesh.shape == mesh.shape and placement.layout.startswith("replicated")
    assert all(sharding.is_fully_replicated for sharding in jax.tree.leaves(placement.shardings))
    assert per_token == {}
    # A device too small for a whole copy: the 8 devices regrouped with a tensor axis of 2 (the tiny
    # model has 2 heads), the weights split over it. Per token: one forward's reductions (attention
    # and MLP outputs, the vocabulary-split embedding lookup and logits), never a weight gathered: the
    # only gather is the sampler's CDF search's block sums of a device's own rows (8 prompts x 2
    # samples over 4 data shards: 4 rows x 128 blocks x 4 bytes, the padded vocabulary of 128).
    whole = placement.param_bytes_per_device
    placement, per_token = compiled_decode(mesh, device_bytes=whole)
    assert dict(placement.mesh.shape) == {"data": 4, "fsdp": 1, "tensor": 2}
    assert placement.param_bytes_per_device < whole
    assert per_token.get("all-gather", {"bytes": 0})["bytes"] <= (16 // 4) * 128 * 4
    assert per_token["all-reduce"]["count"] >= 3


def test_a_mesh_sampler_is_placed_once_and_reused():
    model, params = tiny_lm("gpt2", VOCAB)
    sampler = MeshSampler.create(model, params, make_mesh((8, 1, 1)))
    ids, mask = prompts()
    options = dict(settings=SETTINGS["sampled"], num_samples=3, batch_size=6, seed=7, eos_id=EOS, pad_id=PAD)
    got = sample_token_ids(model, sampler, ids, mask, **options)
    assert_same(got, sample(one_device(), SETTINGS["sampled"], batch_size=6))


def two_process_worker(process_id: int, port: int, out_dir: str) -> None:
    """One of 2 processes x 4 CPU devices: samples every setting on the 8-device mesh, saves the result."""
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id)
    mesh = make_mesh((8, 1, 1))
    results = {}
    for name, settings in SETTINGS.items():
        got = sample(mesh, settings, batch_size=24)
        results.update({f"{name}_tokens": got.tokens, f"{name}_mask": got.mask, f"{name}_logps": got.logps})
    np.savez(f"{out_dir}/samples{process_id}.npz", **results)
    print("done", json.dumps(jax.process_count()), flush=True)


@pytest.mark.slow
def test_two_processes_give_the_same_completions_as_one_device(tmp_path):
    outputs = run_worker_processes(__file__, [str(free_port()), str(tmp_path)], devices=4)
    assert all("done 2" in output for output in outputs)
    for name, settings in SETTINGS.items():
        want = sample(one_device(), settings, batch_size=6)
        for process_id in range(2):
            saved = np.load(tmp_path / f"samples{process_id}.npz")
            fields = (saved[f"{name}_{field}"] for field in ("tokens", "mask", "logps"))
            got = batched.Samples(None, None, *fields, [], 3)
            assert_same(got, want)


if __name__ == "__main__":
    two_process_worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])

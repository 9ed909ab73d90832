"""The realistic-shape workload: the anchor's length profiles read and counted as the anchor counts them,
and one bench run on them through the row layout (compiled FLOPs per real token, precomputed reference)."""

import json

import numpy as np
import pytest

from dpo_jax import bench
from dpo_jax.config.command_line import parse_result_line
from dpo_jax.data.packing import example_row_lengths
from dpo_jax.perf.workload import (
    anchor_real_tokens,
    host_batch,
    layout_for,
    pairs_split,
    profile_pairs,
    read_lengths,
)


@pytest.fixture()
def profile(tmp_path):
    path = tmp_path / "lengths.tsv"
    path.write_text("5\t3\t4\n2\t6\t1\n\n7\t2\t2\n")
    return str(path)


def test_profile_cycles_in_file_order_and_counts_like_the_anchor(profile):
    pairs = profile_pairs(read_lengths(profile), 4)
    np.testing.assert_array_equal(pairs, [[5, 3, 4], [2, 6, 1], [7, 2, 2], [5, 3, 4]])
    # The anchor: per pair the prompt twice, both responses, one EOS each.
    assert anchor_real_tokens(pairs) == (10 + 7 + 2) + (4 + 7 + 2) + (14 + 4 + 2) + (10 + 7 + 2)


def test_pairs_end_with_eos_and_share_their_prompt_in_rows(profile):
    pairs = profile_pairs(read_lengths(profile), 4)
    split = pairs_split(pairs, vocab_size=50, eos_id=49, seed=0)
    np.testing.assert_array_equal(split.response_lengths(), pairs[:, 1:] + 1)
    assert all(
        split.response(i, k)[-1] == 49 and 49 not in split.response(i, k)[:-1]
        for i in range(4)
        for k in (0, 1)
    )
    rows = host_batch(
        split,
        layout_for("share_pack", pack_length=0, row_multiple=2),
        pad_id=49,
        process_index=0,
        process_count=1,
    )
    assert (
        (rows["segment_ids"] > 0).sum()
        == example_row_lengths(split, True).sum()
        == anchor_real_tokens(pairs) - pairs[:, 0].sum() + 4
    )
    assert sorted(rows["example_index"][rows["example_mask"] > 0]) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "text,where", [("5\t3\n", "line 1"), ("1\t2\t3\n4\tx\t1\n", "line 2"), ("", "no length rows")]
)
def test_a_bad_profile_names_file_and_line(tmp_path, text, where):
    path = tmp_path / "bad.tsv"
    path.write_text(text)
    with pytest.raises(ValueError, match=where):
        read_lengths(str(path))


@pytest.mark.slow
def test_bench_on_a_profile_with_shared_packed_rows(capsys, profile):
    argv = [
        "--model=tiny",
        "--pairs=16",
        "--micro=16",
        "--steps=1",
        "--warmup=0",
        "--precompute_ref",
        f"--lengths={profile}",
        "--layout=share_pack",
        "--pack_length=32",
    ]
    result = bench.main(argv)
    printed = [parse_result_line(line) for line in capsys.readouterr().out.splitlines()]
    assert [record for record in printed if record is not None] == [json.loads(json.dumps(result))]
    pairs = profile_pairs(read_lengths(profile), 16)
    assert result["real_tokens_per_step"] == anchor_real_tokens(pairs)
    assert result["model_tokens_per_step"] < result["real_tokens_per_step"]  # each prompt once
    assert result["batch_shape"][1] == 32 and result["batch_shape"][0] < 16
    assert result["compiled_flops_per_real_token"] > 0
    assert result["tokens_per_second"] == pytest.approx(
        result["real_tokens_per_step"] / result["step_seconds"], rel=1e-3
    )
    assert result["loss_first"] == pytest.approx(np.log(2.0), abs=1e-3)  # the reference is the initial policy

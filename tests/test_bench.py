"""The benchmark command: its RESULT line is complete and self-consistent (not its speed), the presets
count the same N as transformers (and hence as the TRL anchor), and its pieces keep the trainer's layout.

N convention: every parameter once, GPT-2's tied output head once (torch's `model.parameters()`
deduplicates it, which is what the anchor sums); Pythia's untied `embed_out` counts separately.
"""

import json
import math

import jax
import numpy as np
import pytest

from dpo_jax import bench
from dpo_jax.config.command_line import parse_result_line, peek_flag
from dpo_jax.evaluation.passes import jit_reference_logps_step
from dpo_jax.models import abstract_params, build_model
from dpo_jax.models.config import from_hf_config
from dpo_jax.models.presets import MODEL_PRESETS, preset
from dpo_jax.objectives import reference_logps
from dpo_jax.perf import benchmark
from dpo_jax.sharding import DEFAULT_LOGICAL_AXIS_RULES, make_global_batch, make_mesh

# Published sizes (the anchor's "params" field for the same configs).
EXPECTED_N = {
    "tiny": 3_382_080,
    "gpt2": 124_439_808,
    "gpt2-large": 774_030_080,
    "pythia-410m": 405_334_016,
    "pythia-1.4b": 1_414_647_808,
    "pythia-2.8b": 2_775_208_960,
    "gpt-j-6b": 6_050_882_784,  # as transformers counts GPTJForCausalLM (vocabulary 50400, untied head + bias)
}
TINY = ["--model=tiny", "--seq=32"]


def _run(capsys, argv):
    returned = bench.main(argv)
    lines = [parse_result_line(line) for line in capsys.readouterr().out.splitlines()]
    lines = [record for record in lines if record is not None]
    assert len(lines) == 1
    result = lines[0]
    assert result == json.loads(json.dumps(returned))
    return result


def _check_consistent(result, *, pairs, micro, factor):
    assert result["n_params"] == EXPECTED_N["tiny"]
    assert (result["pairs"], result["seq"], result["micro"]) == (pairs, 32, micro)
    assert result["accum"] == pairs // micro
    assert result["flops_per_token_factor"] == factor
    assert result["step_seconds"] > 0 and result["compile_seconds"] > 0
    tokens_per_second = pairs * 2 * 32 / result["step_seconds"]
    assert result["tokens_per_second"] == pytest.approx(tokens_per_second, rel=1e-3)
    tflops = factor * result["n_params"] * result["tokens_per_second"] / 1e12
    assert result["tflops"] == pytest.approx(tflops, rel=1e-3, abs=1e-3)
    # CPU: no peak FLOP/s and no allocator statistics to report.
    assert result["mfu"] is None and result["peak_memory_gb"] is None
    assert result["device_count"] == jax.device_count() and result["jax_version"] == jax.__version__
    assert math.isfinite(result["loss_first"]) and math.isfinite(result["loss_last"])


@pytest.mark.slow
def test_tiny_bench_with_reference(capsys):
    result = _run(capsys, [*TINY, "--pairs=8", "--steps=2", "--warmup=1"])
    _check_consistent(result, pairs=8, micro=8, factor=8)
    assert result["precompute_ref"] is False and result["remat"] == "none"
    assert result["attention"] == "auto" and result["attention_kernel"] == "xla"  # auto on a CPU
    # The reference is the initial policy: bf16 weights and bf16 compute give identical log-probs.
    assert result["loss_first"] == pytest.approx(math.log(2.0), abs=1e-6)


@pytest.mark.slow
def test_tiny_bench_precomputed_reference_remat_accumulation(capsys):
    argv = [
        *TINY,
        "--steps=1",
        "--warmup=0",
        "--pairs=16",
        "--micro=8",
        "--precompute_ref",
        "--remat=save_matmuls_attention",
        "--attention=splash",  # Pallas interpret mode on CPU, inside the sharded 8-device step
        "--adam_mu_dtype=bfloat16",
    ]
    result = _run(capsys, argv)
    _check_consistent(result, pairs=16, micro=8, factor=6)
    assert result["precompute_ref"] is True and result["remat"] == "save_matmuls_attention"
    assert result["attention"] == "splash" and result["adam_mu_dtype"] == "bfloat16"
    assert result["mesh"] == {"data": jax.device_count(), "fsdp": 1, "tensor": 1}
    # Precomputed from the fp32 policy weights that the step also starts from.
    assert result["loss_first"] == pytest.approx(math.log(2.0), abs=1e-4)


@pytest.mark.parametrize("name", sorted(MODEL_PRESETS))
def test_preset_parameter_count_matches_transformers(name):
    config = from_hf_config(preset(name))
    abstract_count = sum(
        math.prod(leaf.shape) for leaf in jax.tree.leaves(abstract_params(build_model(config)))
    )
    # The model's tables hold the vocabulary padded to a multiple of 128; N counts the real one.
    padding = (config.padded_vocab_size - config.vocab_size) * config.hidden_size
    padding *= 1 if config.tie_word_embeddings else 2
    if config.arch == "gptj":  # and GPT-J's head bias
        padding += config.padded_vocab_size - config.vocab_size
    assert config.num_params() == abstract_count - padding == EXPECTED_N[name]
    torch = pytest.importorskip("torch")
    import transformers

    fields = preset(name)
    config_class = {
        "gpt2": transformers.GPT2Config,
        "gpt_neox": transformers.GPTNeoXConfig,
        "gptj": transformers.GPTJConfig,
    }[
        fields.pop("model_type")
    ]
    with torch.device("meta"):
        hf_model = transformers.AutoModelForCausalLM.from_config(config_class(**fields))
    assert sum(p.numel() for p in hf_model.parameters()) == EXPECTED_N[name]


def test_synthetic_pairs_layout():
    batch = benchmark.synthetic_pairs(rows=3, seq=10, prompt=4, vocab_size=50, seed=0)
    assert batch["input_ids"].shape == (3, 2, 10) and batch["example_mask"].shape == (3,)
    np.testing.assert_array_equal(batch["input_ids"][:, 0, :4], batch["input_ids"][:, 1, :4])
    assert batch["attention_mask"].all()
    assert (batch["loss_mask"][:, :, :4] == 0).all() and (batch["loss_mask"][:, :, 4:] == 1).all()


def test_precomputed_reference_logps_keep_row_order():
    """The trainer's reference pass over strided micro-batches: the log-probs come back on their rows."""
    vocab = 11
    params = {"table": jax.random.normal(jax.random.PRNGKey(0), (vocab, vocab))}

    def apply_fn(params, input_ids, attention_mask):
        del attention_mask
        return params["table"][input_ids]  # a bigram model: cheap and row-dependent

    mesh = make_mesh((-1, 1, 1))
    host = benchmark.synthetic_pairs(rows=16, seq=6, prompt=2, vocab_size=vocab, seed=1)
    expected = reference_logps(params, make_global_batch(host, mesh), apply_fn=apply_fn)
    host["example_index"] = np.arange(16, dtype=np.int32)
    step = jit_reference_logps_step(apply_fn, mesh, DEFAULT_LOGICAL_AXIS_RULES, length_normalize=False)
    got = benchmark.with_reference_logps(step, params, host, num_examples=16, num_micro=2, mesh=mesh)
    assert got["reference_logps"].shape == (16, 2) and got["reference_logps"].dtype == np.float32
    # The same program on the same rows; only the batch blocking differs: a few float32 ulps of the
    # summed log-probs (4 response tokens, each |log p| < 10).
    np.testing.assert_allclose(got["reference_logps"], np.asarray(expected), rtol=1e-5)


@pytest.mark.parametrize(
    "argv",
    [["--pairs=12", "--micro=8"], ["--seq=8", "--prompt=8"], ["--steps=0"], ["--model=llama"]],
)
def test_bad_arguments_fail_at_start(argv):
    with pytest.raises(SystemExit):
        bench.parse_args(argv)


def test_defaults_fit_the_device():
    args = bench.parse_args(["--model=tiny"])
    assert jax.default_backend() == "cpu" and (args.pairs, args.seq, args.micro) == (8, 64, 8)
    args = bench.parse_args(["--model=tiny", "--pairs=64", "--seq=512"])  # the anchor's shape when asked
    assert (args.pairs, args.seq) == (64, 512)


def test_program_parses_in_both_spellings(capsys):
    """`--program train` was accepted by the dispatch, then rejected by the train parser."""
    for argv in (["--program", "train"], ["--program=train"], []):
        assert bench.parse_args([*argv, "--model=tiny"]).program == "train"
    program = lambda argv: peek_flag(argv, "program", "train")  # how bench.main picks the table
    assert program(["--program", "sample"]) == program(["--program=sample"]) == "sample"
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--program=serve"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith("error: command line: flag --program=serve")

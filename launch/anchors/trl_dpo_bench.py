"""Anchor benchmark: TRL DPOTrainer throughput on a random-init GPT-2 / Pythia model.

Synthetic data with a word-level tokenizer so every example has exactly
PROMPT prompt tokens and RESP response tokens (chosen and rejected), i.e.
sequence length PROMPT+RESP. Prints one JSON line per configuration.
With LENGTHS=lengths_hh.tsv (or lengths_tldr.tsv, see make_lengths.py) every pair takes its
prompt / chosen / rejected lengths from that file instead, in file order, and tokens/s counts
real tokens (prompt twice, each response, one EOS each), not padding.

usage: python trl_dpo_bench.py MODEL MICRO_BS GRAD_ACC STEPS [FLAGS]
FLAGS: comma-separated, any of gc (gradient checkpointing), pre (precompute reference log-probs)
MODEL in gpt2, gpt2-large, pythia-410m, pythia-1.4b, pythia-2.8b, tiny
"""
import json
import os
import sys
import time

import torch
from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPTNeoXConfig,
    PreTrainedTokenizerFast,
    TrainerCallback,
)
from trl import DPOConfig, DPOTrainer

PROMPT, RESP = int(os.environ.get("PROMPT", 256)), int(os.environ.get("RESP", 255))
LENGTHS = os.environ.get("LENGTHS", "")

CONFIGS = {
    "tiny": lambda: GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=50257, n_positions=1024),
    "gpt2": lambda: GPT2Config(vocab_size=50257),
    "gpt2-6x512": lambda: GPT2Config(n_layer=6, n_embd=512, n_head=8, vocab_size=50257),  # CPU side by side
    "gpt2-large": lambda: GPT2Config(n_layer=36, n_embd=1280, n_head=20, vocab_size=50257),
    "pythia-410m": lambda: GPTNeoXConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                         intermediate_size=4096, vocab_size=50304, rotary_pct=0.25,
                                         max_position_embeddings=2048, use_parallel_residual=True),
    "pythia-1.4b": lambda: GPTNeoXConfig(hidden_size=2048, num_hidden_layers=24, num_attention_heads=16,
                                         intermediate_size=8192, vocab_size=50304, rotary_pct=0.25,
                                         max_position_embeddings=2048, use_parallel_residual=True),
    "pythia-2.8b": lambda: GPTNeoXConfig(hidden_size=2560, num_hidden_layers=32, num_attention_heads=32,
                                         intermediate_size=10240, vocab_size=50304, rotary_pct=0.25,
                                         max_position_embeddings=2048, use_parallel_residual=True),
}


def word_tokenizer(vocab_size):
    vocab = {f"w{i}": i for i in range(vocab_size - 1)}
    vocab["<eos>"] = vocab_size - 1
    tok = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>")


def main():
    if not torch.cuda.is_available():  # CPU side by side: the box's 2 cores, fp32 (bf16 is cuda-only here)
        torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "2")))
    name, micro, acc, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    flags = sys.argv[5].split(",") if len(sys.argv) > 5 else []
    gc, pre = "gc" in flags, "pre" in flags
    cfg = CONFIGS[name]()
    tok = word_tokenizer(1000)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(dev):
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa")
        ref = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa")
    n_params = sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(0)
    def words(n):
        return " ".join(f"w{i}" for i in torch.randint(1, 998, (n,), generator=g).tolist())
    n_ex = micro * acc * (steps + 1)
    if LENGTHS:
        rows = [tuple(map(int, line.split("\t"))) for line in open(LENGTHS) if line.strip()]
        rows = [rows[i % len(rows)] for i in range(n_ex)]
    else:
        rows = [(PROMPT, RESP, RESP)] * n_ex
    ds = Dataset.from_list([{"prompt": words(p) + " ", "chosen": words(c), "rejected": words(r)} for p, c, r in rows])
    max_len = max(p + max(c, r) + 1 for p, c, r in rows)
    times = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if dev == "cuda":
                torch.cuda.synchronize()
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if dev == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t)

    args = DPOConfig(output_dir="/tmp/trl_out", per_device_train_batch_size=micro, gradient_accumulation_steps=acc,
                     max_steps=steps, max_length=max_len, bf16=(dev == "cuda"), gradient_checkpointing=gc,
                     logging_steps=1000, save_strategy="no", report_to="none", beta=0.1, learning_rate=1e-6,
                     dataloader_num_workers=2, disable_tqdm=True, precompute_ref_log_probs=pre)
    trainer = DPOTrainer(model=model, ref_model=None if pre else ref, args=args, train_dataset=ds, processing_class=tok,
                         callbacks=[Clock()])
    trainer.train()
    warm = times[2:] if len(times) > 3 else times
    step = sorted(warm)[len(warm) // 2]
    pairs = micro * acc
    # Real tokens per step: the data's mean per pair x pairs (the trainer shuffles, so steps draw at random).
    tokens = pairs * sum(2 * p + c + r + 2 for p, c, r in rows) / len(rows)
    flops = (6 if pre else 8) * n_params * tokens  # policy fwd+bwd (6N) + reference fwd (2N); attention excluded
    out = dict(system="trl-" + __import__("trl").__version__, model=name, params=n_params, micro=micro, acc=acc,
               gc=gc, precompute_ref=pre, seq=max_len, lengths=os.path.basename(LENGTHS) or None, step_s=round(step, 4), tokens_per_s=round(tokens / step),
               tflops=round(flops / step / 1e12, 1),
               peak_mem_gb=round(torch.cuda.max_memory_allocated() / 2**30, 1) if dev == "cuda" else None)
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()

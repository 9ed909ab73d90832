"""Where a GPT-2-small decode step goes on this CPU: the whole step and its parts, jitted apart at the
step's shapes (16 rows, cache of 128 at position 64) and timed in turns (BENCHMARKS.md 6.1).

    python launch/profile_decode_step.py [ROUNDS]

The parts run as separate programs, so the body's time includes returning its cache (a copy the
decode loop, which updates the cache in place, does not make): read the shares, not the sums.
"""

import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp

from dpo_jax.models import build_model, from_hf_config, init_cache, init_params
from dpo_jax.models.layers import cached_attention
from dpo_jax.models.presets import preset
from dpo_jax.sampling.generate import head_logits, inverse_cdf

B, P, T = 16, 64, 64
cfg = from_hf_config(preset("gpt2"), dtype="float32")
model = build_model(cfg)
params = init_params(model, jax.random.key(0))
L = P + T
cache = init_cache(model, B, L)
ids = jnp.ones((B, 1), jnp.int32)
mask = jnp.ones((B, L), jnp.int32)
pos = jnp.full((B, 1), P, jnp.int32)
# fill cache index to P (mid-way)
cache = jax.tree.map(lambda c: jnp.full_like(c, P) if c.ndim == 0 or c.dtype == jnp.int32 else c, cache)


@jax.jit
def body(params, cache):
    hidden, state = model.apply(
        {"params": params, "cache": cache}, ids, mask, pos, decode=True, return_hidden=True, mutable=["cache"]
    )
    return hidden[:, -1], state["cache"]


@jax.jit
def step(params, cache):
    h, c = body(params, cache)
    return head_logits(model, params, h), c


hidden = jnp.ones((B, cfg.hidden_size))
head = jax.jit(lambda p, h: head_logits(model, p, h))
logits = head(params, hidden)
keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(jnp.arange(B))
u = jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, 3)))(keys)
choose = jax.jit(lambda x, u: inverse_cdf(jnp.exp(x - jnp.max(x, axis=-1, keepdims=True)), u))
# attention over the cache alone: 12 layers' einsums at [B, H, L, D], a key and a value buffer per
# layer (24 distinct buffers, as the decode loop holds them: one shared buffer would sit in cache)
H, D = cfg.num_heads, cfg.hidden_size // cfg.num_heads
kvs = [jax.random.normal(jax.random.key(i), (B, H, L, D)) for i in range(2 * cfg.num_layers)]
q = jnp.ones((B, 1, H, D))
attn = jax.jit(
    lambda q, kvs: sum(
        cached_attention(q, kvs[2 * i], kvs[2 * i + 1], mask, scale=0.125, query_offset=P).sum()
        for i in range(cfg.num_layers)
    )
)
parts = {
    "step (body + head)": lambda: step(params, cache),
    "body (12 layers, cache write)": lambda: body(params, cache),
    "head (768 x 50304)": lambda: head(params, hidden),
    "token choice": lambda: choose(logits, u),
    "attention over cache (12 layers)": lambda: attn(q, kvs),
}
for f in parts.values():
    jax.block_until_ready(f())
times = {k: [] for k in parts}
for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 20):
    for k, f in parts.items():
        t = time.perf_counter()
        jax.block_until_ready(f())
        times[k].append(time.perf_counter() - t)
for k, v in times.items():
    print(f"{k:36s} median {1e3 * statistics.median(v):7.2f} ms  min {1e3 * min(v):7.2f} ms")
print("load", os.getloadavg())

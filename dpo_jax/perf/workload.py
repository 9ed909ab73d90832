"""The benchmark's pairs: fixed shapes, or the realistic length profiles of the TRL anchor.

A length profile (launch/lengths/lengths_hh.tsv, lengths_tldr.tsv) holds one pair per line,
`prompt<TAB>chosen<TAB>rejected` token counts without EOS; pair i of a run takes line i modulo the
file's length, in file order, as the anchor's `LENGTHS=...` mode does. Real tokens are counted as the
anchor counts them, whatever the layout computes: per pair the prompt twice, both responses and one
EOS each (2p + c + r + 2). Token ids are random; each response gets the EOS appended, as tokenisation
does, and the pairs go through the trainer's own batch builders (`dpo_jax.data.loader`), padded or in
rows (`dpo_jax.data.packing`).
"""

from __future__ import annotations

import numpy as np

from dpo_jax.data.loader import EvalBatches
from dpo_jax.data.packing import RowLayout
from dpo_jax.data.tokenization import TokenizedSplit

LAYOUTS = ("padded", "share", "pack", "share_pack")


def read_lengths(path: str) -> np.ndarray:
    """[M, 3] int64 (prompt, chosen, rejected) from a length profile; a bad line is one clear error."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            fields = line.rstrip("\n").split("\t")
            try:
                values = [int(field) for field in fields]
            except ValueError:
                values = []
            if len(values) != 3 or values[0] < 0 or min(values[1:]) < 0:
                raise ValueError(
                    f"{path} line {line_number}: expected 'prompt<TAB>chosen<TAB>rejected' non-negative "
                    f"token counts, got {line.rstrip()!r}"
                )
            rows.append(values)
    if not rows:
        raise ValueError(f"{path}: no length rows")
    return np.asarray(rows, dtype=np.int64)


def profile_pairs(lengths: np.ndarray, pairs: int) -> np.ndarray:
    """The (prompt, chosen, rejected) lengths of the first `pairs` pairs, cycling over the file."""
    return lengths[np.arange(pairs) % len(lengths)]


def fixed_pairs(pairs: int, seq: int, prompt: int) -> np.ndarray:
    """The anchor's fixed shapes: every sequence exactly `seq` tokens, its EOS included."""
    return np.tile([prompt, seq - prompt - 1, seq - prompt - 1], (pairs, 1))


def anchor_real_tokens(pair_lengths: np.ndarray) -> int:
    """Real tokens of these pairs as the anchor counts them: 2p + c + r + 2 per pair."""
    return int((2 * pair_lengths[:, 0] + pair_lengths[:, 1] + pair_lengths[:, 2] + 2).sum())


def pairs_split(pair_lengths: np.ndarray, vocab_size: int, eos_id: int, seed: int) -> TokenizedSplit:
    """Random-token pairs of these lengths; responses end with EOS (ids avoid it elsewhere)."""
    rng = np.random.default_rng(seed)
    prompt_lengths = pair_lengths[:, 0]
    response_lengths = pair_lengths[:, 1:].reshape(-1) + 1

    def draw(total):
        ids = rng.integers(0, vocab_size - 1, size=total, dtype=np.int32)
        return np.where(ids >= eos_id, ids + 1, ids).astype(np.int32)  # skip eos_id

    response_offsets = np.concatenate([[0], np.cumsum(response_lengths)])
    responses = draw(int(response_offsets[-1]))
    responses[response_offsets[1:] - 1] = eos_id
    return TokenizedSplit(
        draw(int(prompt_lengths.sum())),
        np.concatenate([[0], np.cumsum(prompt_lengths)]),
        responses,
        response_offsets,
        2,
    )


def layout_for(name: str, *, pack_length: int, row_multiple: int) -> RowLayout | None:
    if name not in LAYOUTS:
        raise ValueError(f"unknown layout {name!r}; expected one of {LAYOUTS}")
    if name == "padded":
        return None
    return RowLayout(
        share_prompt=name.startswith("share"),
        pack=name.endswith("pack"),
        pack_length=pack_length,
        row_multiple=row_multiple,
    )


def host_batch(split: TokenizedSplit, layout, *, pad_id: int, process_index: int, process_count: int):
    """This process's rows of the one global batch holding every pair of `split` (padded to the longest)."""
    return EvalBatches(
        split,
        global_batch_size=split.num_examples,
        process_index=process_index,
        process_count=process_count,
        pad_id=pad_id,
        max_length=int(split.sequence_lengths().max()),
        layout=layout,
    ).batch(0)

"""Reading a compiled program's optimised HLO text: collectives per step and custom calls.

Collectives inside a `while` body (the micro-batch scan, scanned layers) run once per iteration, so
each computation's collectives are multiplied by the loop's trip count: the one XLA records on the loop
(`known_trip_count`, as the GPU compiler keeps it), else the one its condition spells out (the TPU
compiler drops the record; a `lax.scan` / `fori_loop` counter starts at 0 and the condition is
`counter < N` with N a constant); a loop with neither (a data-dependent `while_loop`) counts once and
is flagged.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import re

COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")

_BYTES = {
    "pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4,
    "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16, "f8e4m3fn": 1, "f8e5m2": 1, "s4": 1, "u4": 1,
}  # fmt: skip
_SHAPE = re.compile(r"\b([a-z][a-z0-9]*)\[([0-9,]*)\]")
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s*\(.*\)\s*->.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(.*?)\s+([a-z][a-z0-9\-]*)\((.*)$")
_CALLED = re.compile(
    r"\b(body|to_apply|calls|branch_computations|true_computation|false_computation)=\{?%?([\w.\-, %]+)\}?"
)
_TRIP_COUNT = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')
_CONDITION = re.compile(r"\bcondition=%?([\w.\-]+)")
_S32_CONSTANT = re.compile(r"^\s*%?([\w.\-]+)\s*=\s*s32\[\]\S*\s+constant\((\d+)\)")
_LESS_THAN = re.compile(
    r"^\s*ROOT\s+%?[\w.\-]+\s*=\s*pred\[\]\S*\s+compare\(%?([\w.\-]+),\s*%?([\w.\-]+)\).*direction=LT"
)
_CUSTOM_CALL_TARGET = re.compile(r'custom_call_target="([^"]+)"')


def shape_bytes(text: str) -> int:
    """Bytes of every array shape written in `text` (a result type, possibly a tuple)."""
    total = 0
    for dtype, dims in _SHAPE.findall(text):
        if dtype in _BYTES:
            total += _BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
    return total


@dataclasses.dataclass
class _Computation:
    collectives: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    collective_bytes: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    custom_calls: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    calls: list = dataclasses.field(default_factory=list)  # (callee, times)


def _collective_kind(opcode: str) -> str | None:
    base = opcode.removesuffix("-start")
    return base if base in COLLECTIVES else None


def _result_bytes(kind: str, opcode: str, result_type: str) -> int:
    """Bytes a collective produces. An async start's result is a tuple (operands, outputs[, ...]):
    its outputs are the larger half for all-gather and the same size as the operands otherwise."""
    if not opcode.endswith("-start") or not result_type.startswith("("):
        return shape_bytes(result_type)
    sizes = [shape_bytes(m.group(0)) for m in _SHAPE.finditer(result_type)]
    half = len(sizes) // 2
    if kind == "all-gather" and half:
        return sum(sizes[half : 2 * half])
    return sum(sizes[:half]) if half else sum(sizes)


def _counted_trips(condition_lines: list[str]) -> int | None:
    """N when a loop's condition is `counter < N` with N an s32 constant of the condition itself."""
    constants = dict(m.groups() for m in map(_S32_CONSTANT.match, condition_lines) if m)
    for line in condition_lines:
        compare = _LESS_THAN.match(line)
        if compare and compare.group(2) in constants:
            return int(constants[compare.group(2)])
    return None


def _parse(hlo_text: str) -> tuple[dict[str, _Computation], str | None, bool]:
    computations: dict[str, _Computation] = {}
    # The lines a loop's condition is read from (`_counted_trips`): s32 constants and less-than compares.
    lines: dict[str, list[str]] = collections.defaultdict(list)
    entry, current, name, unknown_trips = None, None, None, False
    for line in hlo_text.splitlines():
        header = _COMPUTATION.match(line)
        if header:
            name = header.group(1)
            current = computations.setdefault(name, _Computation())
            if line.startswith("ENTRY"):
                entry = name
            continue
        if name is not None and (_S32_CONSTANT.match(line) or _LESS_THAN.match(line)):
            lines[name].append(line)
        instruction = _INSTRUCTION.match(line)
        if current is None or not instruction:
            continue
        result_type, opcode, rest = instruction.groups()
        kind = _collective_kind(opcode)
        if kind:
            current.collectives[kind] += 1
            current.collective_bytes[kind] += _result_bytes(kind, opcode, result_type)
        if opcode == "custom-call":
            target = _CUSTOM_CALL_TARGET.search(rest)
            current.custom_calls[target.group(1) if target else "?"] += 1
        times: int | str = 1
        if opcode == "while":
            trip, condition = _TRIP_COUNT.search(rest), _CONDITION.search(rest)
            # the condition's name, read once every computation is parsed (it may come later)
            times = int(trip.group(1)) if trip else condition.group(1) if condition else 0
        for key, callees in _CALLED.findall(rest):
            if opcode == "while" and key != "body":
                continue  # the condition runs collectives-free comparisons
            for callee in callees.replace("%", "").split(","):
                if callee.strip():
                    current.calls.append((callee.strip(), times))
    for computation in computations.values():
        for index, (callee, times) in enumerate(computation.calls):
            if not isinstance(times, int) or times == 0:
                counted = _counted_trips(lines.get(times, [])) if isinstance(times, str) else None
                unknown_trips |= counted is None
                computation.calls[index] = (callee, counted or 1)
    return computations, entry, unknown_trips


def _totals(name: str, computations: dict[str, _Computation], memo: dict) -> _Computation:
    if name in memo:
        return memo[name]
    memo[name] = _Computation()  # guards against recursion in malformed text
    own = computations.get(name, _Computation())
    total = _Computation(
        collections.Counter(own.collectives),
        collections.Counter(own.collective_bytes),
        collections.Counter(own.custom_calls),
    )
    for callee, times in own.calls:
        child = _totals(callee, computations, memo)
        for field in ("collectives", "collective_bytes", "custom_calls"):
            counter = getattr(total, field)
            for key, value in getattr(child, field).items():
                counter[key] += value * times
    memo[name] = total
    return total


def summarize_hlo(hlo_text: str) -> dict:
    """{"collectives": {kind: {"count", "bytes"}} per step, "custom_calls": {target: count}, ...}."""
    computations, entry, unknown_trips = _parse(hlo_text)
    if entry is None:
        raise ValueError("HLO text has no ENTRY computation")
    total = _totals(entry, computations, {})
    return {
        "collectives": {
            kind: {"count": total.collectives[kind], "bytes": total.collective_bytes[kind]}
            for kind in COLLECTIVES
            if total.collectives[kind]
        },
        "custom_calls": dict(sorted(total.custom_calls.items())),
        "loops_without_trip_count": unknown_trips,
    }


_ATTENTION_KERNELS = (
    ("cudnn$fmha", "cudnn flash attention"),
    ("tpu_custom_call", "pallas/mosaic kernel"),
    ("mosaic", "pallas/mosaic kernel"),
    ("triton", "triton kernel"),
)


def attention_implementation(custom_calls: dict) -> str:
    """Which attention the program runs: a fused kernel's custom call, else XLA's dense softmax."""
    found = sorted(
        {label for target in custom_calls for key, label in _ATTENTION_KERNELS if key in target.lower()}
    )
    return ", ".join(found) if found else "xla dense (masked softmax, no kernel)"


def collective_result_types(hlo_text: str, kind: str) -> list[str]:
    """The result type of every `kind` collective instruction (sync or async start), as written."""
    types = []
    for line in hlo_text.splitlines():
        instruction = _INSTRUCTION.match(line)
        if instruction and _collective_kind(instruction.group(2)) == kind:
            types.append(instruction.group(1))
    return types


def array_dims(result_type: str) -> list[tuple[str, tuple[int, ...]]]:
    """(dtype, dims) of every array in a result type: "(f32[2,3], s32[4])" -> [("f32", (2, 3)), ...]."""
    return [
        (dtype, tuple(int(d) for d in dims.split(",") if d)) for dtype, dims in _SHAPE.findall(result_type)
    ]


_WHILE = re.compile(r"\bwhile\(.*\bbody=%?([\w.\-]+).*op_name=\"([^\"]*)\"")
# A jitted function's own loop: "jit(f)/while", or "jit(f)/jit(g)/while" when it calls a jitted g
# (PPO's rollout program calls the sampler's `decode_loop`).
_OUTERMOST_WHILE = re.compile(r"(?:jit\([^/]*\)/)+while")


def decode_loop_collectives(hlo_text: str) -> dict:
    """{kind: {"count", "bytes"}} of the collectives one iteration of a program's outermost traced
    `lax.while_loop` runs (the sampler's decode loop: one iteration per generated token), nested
    loops inside it counted by their trip counts. Fails if the program has no such loop."""
    computations, _, _ = _parse(hlo_text)
    bodies = []
    for line in hlo_text.splitlines():
        match = _WHILE.search(line)
        # The outermost loop of a jitted function is named "jit(f)/while" (nested jits only add
        # "jit(g)/" steps); other loops (the random bits', a scanned stack's) carry longer paths.
        if match and _OUTERMOST_WHILE.fullmatch(match.group(2)):
            bodies.append(match.group(1))
    if not bodies:
        raise ValueError("the program has no outermost while loop (no decode loop)")
    totals = [_totals(body, computations, {}) for body in set(bodies)]
    return {
        kind: {
            "count": sum(t.collectives[kind] for t in totals),
            "bytes": sum(t.collective_bytes[kind] for t in totals),
        }
        for kind in COLLECTIVES
        if any(t.collectives[kind] for t in totals)
    }

"""Collectives per step from HLO text: loop bodies count once per iteration, async starts by their outputs."""

from dpo_jax.perf.hlo import array_dims, attention_implementation, shape_bytes, summarize_hlo

HLO = """\
HloModule jit_step, entry_computation_layout={(f32[8]{0})->f32[8]{0}}

%add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %sum = f32[] add(%a, %b)
}

%body (p: (s32[], f32[8])) -> (s32[], f32[8]) {
  %p = (s32[], f32[8]{0}) parameter(0)
  %x = f32[8]{0} get-tuple-element(%p), index=1
  %ag = (f32[2]{0}, f32[8]{0}) all-gather-start(%x), dimensions={0}
  %agd = f32[8]{0} all-gather-done(%ag)
  %ar = f32[8]{0} all-reduce(%agd), to_apply=%add
  %i = s32[] get-tuple-element(%p), index=0
  ROOT %t = (s32[], f32[8]{0}) tuple(%i, %ar)
}

%cond (p: (s32[], f32[8])) -> pred[] {
  %p = (s32[], f32[8]{0}) parameter(0)
  ROOT %c = pred[] constant(true)
}

ENTRY %main (x: f32[8]) -> f32[8] {
  %x = f32[8]{0} parameter(0)
  %rs = bf16[4,2]{1,0} reduce-scatter(%x), dimensions={0}, to_apply=%add
  %kernel = f32[8]{0} custom-call(%x), custom_call_target="__cudnn$fmhaSoftmax"
  %init = (s32[], f32[8]{0}) tuple(%x, %x)
  %w = (s32[], f32[8]{0}) while(%init), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"4"}}
  ROOT %out = f32[8]{0} get-tuple-element(%w), index=1
}
"""


def test_collectives_inside_a_loop_count_per_iteration():
    summary = summarize_hlo(HLO)
    assert summary["collectives"] == {
        "all-gather": {"count": 4, "bytes": 4 * 32},  # the gathered f32[8], not the f32[2] operand
        "reduce-scatter": {"count": 1, "bytes": 16},
        "all-reduce": {"count": 4, "bytes": 4 * 32},
    }
    assert summary["custom_calls"] == {"__cudnn$fmhaSoftmax": 1}
    assert not summary["loops_without_trip_count"]
    assert attention_implementation(summary["custom_calls"]) == "cudnn flash attention"
    assert attention_implementation({}).startswith("xla dense")


def test_a_loop_without_trip_count_is_flagged():
    summary = summarize_hlo(HLO.replace(', backend_config={"known_trip_count":{"n":"4"}}', ""))
    assert summary["loops_without_trip_count"]
    assert summary["collectives"]["all-reduce"]["count"] == 1


# The TPU compiler drops `known_trip_count`; a lax.scan's condition still says `counter < N`
# (as in a compiled v4-8 program: a constant of the condition, compared with direction=LT).
COUNTED_CONDITION = """%cond (p: (s32[], f32[8])) -> pred[] {
  %limit = s32[]{:T(128)} constant(28)
  %p = (s32[], f32[8]{0}) parameter(0)
  %i = s32[]{:T(128)} get-tuple-element(%p), index=0
  ROOT %lt = pred[]{:T(512)} compare(%i, %limit), direction=LT, metadata={op_name="jit(f)/while/cond/lt"}
}"""
CONSTANT_CONDITION = """%cond (p: (s32[], f32[8])) -> pred[] {
  %p = (s32[], f32[8]{0}) parameter(0)
  ROOT %c = pred[] constant(true)
}"""


def test_a_loop_without_a_recorded_trip_count_counts_the_trips_its_condition_spells_out():
    hlo = HLO.replace(', backend_config={"known_trip_count":{"n":"4"}}', "")
    summary = summarize_hlo(hlo.replace(CONSTANT_CONDITION, COUNTED_CONDITION))
    assert not summary["loops_without_trip_count"]
    assert summary["collectives"]["all-reduce"] == {"count": 28, "bytes": 28 * 32}
    # A data-dependent condition (the limit a loop value, not a constant) is still flagged, counted once.
    data_dependent = COUNTED_CONDITION.replace(
        "%limit = s32[]{:T(128)} constant(28)", "%limit = s32[] get-tuple-element(%p), index=0"
    )
    summary = summarize_hlo(hlo.replace(CONSTANT_CONDITION, data_dependent))
    assert summary["loops_without_trip_count"]
    assert summary["collectives"]["all-reduce"]["count"] == 1


def test_shapes():
    assert shape_bytes("(bf16[2,3]{1,0}, s32[4]{0}, pred[])") == 12 + 16 + 1
    assert array_dims("(f32[2,3]{1,0}, s32[])") == [("f32", (2, 3)), ("s32", ())]

"""Judge agreement (issue 22 item 11): a judge against human labels, two label files against each other,
raters within one file; counts, a bootstrap interval over comparisons, position bias kept out."""

import json

import numpy as np
import pytest

from dpo_jax import UserError
from dpo_jax.analysis.judge_agreement import agreement, judge_labels, read_labels
from dpo_jax.judges import Judge, Verdict


class PrefersGood(Judge):
    """Picks the response containing GOOD wherever it is shown; unparsable when neither does."""

    name = "prefers-good"

    def judge(self, comparisons):
        out = []
        for c in comparisons:
            if "GOOD" in c.response_a:
                out.append(Verdict("A"))
            elif "GOOD" in c.response_b:
                out.append(Verdict("B"))
            else:
                out.append(Verdict(None, raw="no idea"))
        return out


def row(i, label, rater, good_first=True):
    a, b = (f"GOOD {i}", f"weak {i}") if good_first else (f"weak {i}", f"GOOD {i}")
    return dict(prompt=f"post {i}", response_a=a, response_b=b, label=label, rater=rater)


HUMANS = [
    row(0, "A", "h1"),
    row(0, "A", "h2"),  # h1, h2 agree
    row(1, "B", "h1", good_first=False),
    row(1, "A", "h2", good_first=False),  # disagree
    row(2, "A", "h1"),
    row(2, "tie", "h2"),  # a tie: counted apart
    row(3, None, "h1"),  # no label
    row(4, "B", "h1"),  # the only label of post 4, against the GOOD response
]


def test_agreement_counts_pairs_of_decided_labels():
    within = agreement(HUMANS)
    assert (within["agree"], within["n"], within["comparisons"], within["with_tie"]) == (1, 2, 2, 1)
    assert within["agreement"] == 0.5 and within["without_label"] == 0
    judged = judge_labels(PrefersGood(), HUMANS, seed=3)
    assert [r["label"] for r in judged] == ["A", "B", "A", "A", "A"]  # GOOD's side, however it was shown
    assert {r["shown_as_given"] for r in judged} == {True, False}  # the coin did swap some
    versus = agreement(judged, HUMANS)
    # post 0: 2/2, post 1: 1/2, post 2: 1/1 (+1 tie), post 3: no label, post 4: 0/1.
    assert (versus["agree"], versus["n"], versus["comparisons"]) == (4, 6, 4)
    assert (versus["with_tie"], versus["without_label"], versus["unmatched"]) == (1, 1, 0)
    assert versus["agreement"] == pytest.approx(4 / 6) and versus["ci_low"] <= 4 / 6 <= versus["ci_high"]
    itself = agreement(judged, judged)  # a file against itself: every decided pair agrees
    assert itself["agreement"] == itself["ci_low"] == itself["ci_high"] == 1.0


def test_the_interval_resamples_comparisons():
    rng = np.random.default_rng(0)
    rows = [row(i, "A" if rng.random() < 0.7 else "B", "h") for i in range(400)]
    summary = agreement(judge_labels(PrefersGood(), rows), rows, num_resamples=2000)
    rate = summary["agreement"]
    # The binomial standard error of 400 independent comparisons; the interval spans about 4 of them.
    se = np.sqrt(rate * (1 - rate) / 400)
    assert summary["ci_low"] < rate < summary["ci_high"]
    assert 2.5 * se < summary["ci_high"] - summary["ci_low"] < 6 * se


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"prompt": "p", "response_a": "a", "response_b": "b", "label": "C"}', "line 2: field 'label'"),
        ('{"prompt": "p", "response_a": 3, "response_b": "b", "label": "A"}', "line 2: field 'response_a'"),
        ("not json", "line 2: not JSON"),
    ],
)
def test_a_bad_label_row_is_named(tmp_path, line, message):
    path = tmp_path / "labels.jsonl"
    path.write_text(json.dumps(HUMANS[0]) + "\n" + line + "\n")
    with pytest.raises(UserError, match=message):
        read_labels(str(path))

"""Agreement with TRL's DPO losses, through golden values stored by golden/make_trl_golden.py (TRL 1.16.0)."""

import json
import pathlib

import numpy as np
import pytest

from dpo_jax.objectives.losses import preference_loss

GOLDEN = json.loads((pathlib.Path(__file__).parent / "golden" / "trl_losses.json").read_text())

# TRL loss_type -> our loss name. TRL's "aot" on one pair at a time is conservative DPO (see the script).
OUR_NAME = {"sigmoid": "dpo", "hinge": "hinge", "ipo": "ipo", "robust": "robust", "aot": "dpo"}


def our_loss_and_metrics(case):
    policy = np.asarray(case["policy_logps"])
    reference = np.asarray(case["reference_logps"])
    if case["trl_loss_type"] == "ipo":
        # TRL length-normalises IPO's log-ratios: our length_normalize=True, i.e. per-token mean log-probs.
        num_tokens = np.asarray(case["num_tokens"])
        policy, reference = policy / num_tokens, reference / num_tokens
    options = {"label_smoothing": case["label_smoothing"]} if case["label_smoothing"] else {}
    return preference_loss(
        OUR_NAME[case["trl_loss_type"]],
        policy.astype(np.float32),
        reference.astype(np.float32),
        beta=case["beta"],
        **options,
    )


def test_golden_file_covers_every_trl_loss_we_mirror():
    assert GOLDEN["producer"].startswith("trl 1.16.0")
    assert {case["trl_loss_type"] for case in GOLDEN["cases"]} == set(OUR_NAME)


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=[case["name"] for case in GOLDEN["cases"]])
def test_loss_and_metrics_match_trl(case):
    loss, metrics = our_loss_and_metrics(case)
    np.testing.assert_allclose(float(loss), case["loss"], rtol=1e-6, atol=1e-6)
    # TRL reports IPO's rewards and log-probs from sums although its IPO loss uses per-token means; ours all
    # come from the log-probs the loss sees, so for IPO only the loss is comparable.
    if "metrics" not in case or case["trl_loss_type"] == "ipo":
        return
    for name, trl_value in case["metrics"].items():
        total, count = metrics[name]
        np.testing.assert_allclose(float(total) / float(count), trl_value, rtol=1e-6, atol=1e-6, err_msg=name)

"""Writes trl_losses.json: TRL's own DPO loss values on fixed inputs, the oracle for test_trl_golden.py.

Run by hand (pytest does not collect it) with TRL installed in a throwaway environment:

    python -m venv --system-site-packages /tmp/trlvenv
    /tmp/trlvenv/bin/pip install trl==1.16.0
    /tmp/trlvenv/bin/python tests/objectives/golden/make_trl_golden.py

TRL 1.16 has no standalone loss function: the losses live inside `DPOTrainer._compute_loss(model, inputs)`.
Building a real trainer needs a model, a dataset and an accelerator, none of which the loss reads, so this
script builds the trainer object without running `__init__` and sets only the attributes `_compute_loss`
reads. The "model" is a stand-in returning fixed per-token log-probs; reference log-probs are passed as
precomputed, which is one of TRL's own code paths. Everything is float64 so the stored values are exact
to far below the tolerance the test uses.

TRL 1.16's "sigmoid" loss ignores `label_smoothing` (the silently-ignored-setting bug the reference sheet
lists), so conservative DPO comes from TRL's "aot" loss called on one pair at a time: "aot" sorts the
batch's log-ratios before applying the label-smoothed sigmoid loss, and sorting a single pair is the
identity, which leaves exactly -(1-eps) log sig(u) - eps log sig(-u).
"""

import json
import math
import pathlib
import re
import types
from collections import defaultdict

import numpy as np
import torch
import trl
from trl.trainer.dpo_trainer import DPOTrainer

NUM_PAIRS = 8
SEQUENCE_LENGTH = 12
PROMPT_LENGTH = 2

# (name of the case, TRL loss_type, beta, label_smoothing, one pair per TRL call)
CASES = [
    ("sigmoid_beta0.1", "sigmoid", 0.1, 0.0, False),
    ("sigmoid_beta0.5", "sigmoid", 0.5, 0.0, False),
    ("hinge_beta0.1", "hinge", 0.1, 0.0, False),
    ("hinge_beta0.5", "hinge", 0.5, 0.0, False),
    ("ipo_beta0.1", "ipo", 0.1, 0.0, False),
    ("ipo_beta0.5", "ipo", 0.5, 0.0, False),
    ("robust_beta0.1_eps0.1", "robust", 0.1, 0.1, False),
    ("robust_beta0.5_eps0.3", "robust", 0.5, 0.3, False),
    ("aot_single_pair_beta0.1_eps0.2", "aot", 0.1, 0.2, True),
]
METRIC_NAMES = [
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
]


class FixedLogProbModel:
    """Plays the policy: returns the per-token log-probs it was built with, whatever the inputs."""

    training = True

    def __init__(self, per_token_logps):
        self.per_token_logps = per_token_logps

    def __call__(self, **kwargs):
        shape = self.per_token_logps.shape
        return types.SimpleNamespace(
            log_probs=self.per_token_logps,
            entropy=torch.zeros(shape, dtype=torch.float64),
            mean_logits=torch.zeros(shape, dtype=torch.float64),
            is_top1=torch.zeros(shape, dtype=torch.bool),
        )


class SingleProcessAccelerator:
    device = torch.device("cpu")

    @staticmethod
    def gather(tensor):
        return tensor

    @staticmethod
    def gather_for_metrics(tensor):
        return tensor


def bare_trainer(loss_type, beta, label_smoothing, model):
    trainer = object.__new__(DPOTrainer)
    trainer.beta = beta
    trainer.loss_types = [loss_type]
    trainer.loss_weights = [1.0]
    trainer.label_smoothing = label_smoothing
    trainer.ld_alpha = None
    trainer.f_divergence_type = "reverse_kl"
    trainer.f_alpha_divergence_coef = 1.0
    trainer.use_weighting = False
    trainer.precompute_ref_logps = True
    trainer.aux_loss_enabled = False
    trainer.accelerator = SingleProcessAccelerator()
    trainer._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    trainer._total_train_tokens = 0
    trainer._tp_size = 1
    trainer.model = model
    return trainer


def random_pairs(rng):
    """Per-token log-probs and completion masks for chosen rows then rejected rows, as TRL stacks them."""
    num_rows = 2 * NUM_PAIRS
    completion_lengths = rng.integers(2, SEQUENCE_LENGTH - PROMPT_LENGTH + 1, size=num_rows)
    completion_mask = np.zeros((num_rows, SEQUENCE_LENGTH), dtype=np.int64)
    for row, length in enumerate(completion_lengths):
        completion_mask[row, PROMPT_LENGTH : PROMPT_LENGTH + length] = 1
    # TRL's fused head returns 0 where labels are -100, and sums over the whole (shifted) row.
    policy_tokens = -rng.gamma(2.0, 1.0, size=(num_rows, SEQUENCE_LENGTH - 1)) * completion_mask[:, 1:]
    reference_tokens = -rng.gamma(2.0, 1.0, size=(num_rows, SEQUENCE_LENGTH - 1)) * completion_mask[:, 1:]
    return policy_tokens, reference_tokens, completion_mask


def trl_loss_and_metrics(loss_type, beta, label_smoothing, policy_tokens, reference_logps, completion_mask):
    num_pairs = policy_tokens.shape[0] // 2
    model = FixedLogProbModel(torch.tensor(policy_tokens, dtype=torch.float64))
    trainer = bare_trainer(loss_type, beta, label_smoothing, model)
    mask = torch.tensor(completion_mask)
    inputs = {
        "input_ids": torch.zeros_like(mask),
        "attention_mask": torch.ones_like(mask),
        "completion_mask": mask,
        "ref_chosen_logps": torch.tensor(reference_logps[:num_pairs], dtype=torch.float64),
        "ref_rejected_logps": torch.tensor(reference_logps[num_pairs:], dtype=torch.float64),
    }
    loss = trainer._compute_loss(model, inputs, return_outputs=False)
    metrics = {name: trainer._metrics["train"][name][-1] for name in METRIC_NAMES}
    return float(loss), metrics


def main():
    rng = np.random.default_rng(20240503)
    cases = []
    for case_name, loss_type, beta, label_smoothing, one_pair_per_call in CASES:
        policy_tokens, reference_tokens, completion_mask = random_pairs(rng)
        reference_logps = reference_tokens.sum(axis=1)
        num_tokens = completion_mask.sum(axis=1)

        def split_pairs(rows):
            return np.stack([rows[:NUM_PAIRS], rows[NUM_PAIRS:]], axis=1).tolist()

        case = {
            "name": case_name,
            "trl_loss_type": loss_type,
            "beta": beta,
            "label_smoothing": label_smoothing,
            "policy_logps": split_pairs(policy_tokens.sum(axis=1)),
            "reference_logps": split_pairs(reference_logps),
            "num_tokens": split_pairs(num_tokens.astype(np.float64)),
        }
        if one_pair_per_call:
            pair_losses = []
            for pair in range(NUM_PAIRS):
                rows = [pair, NUM_PAIRS + pair]
                pair_loss, _ = trl_loss_and_metrics(
                    loss_type,
                    beta,
                    label_smoothing,
                    policy_tokens[rows],
                    reference_logps[rows],
                    completion_mask[rows],
                )
                pair_losses.append(pair_loss)
            case["loss"] = float(np.mean(pair_losses))
        else:
            case["loss"], case["metrics"] = trl_loss_and_metrics(
                loss_type, beta, label_smoothing, policy_tokens, reference_logps, completion_mask
            )
        assert math.isfinite(case["loss"])
        cases.append(case)

    golden = {
        "producer": f"trl {trl.__version__}, DPOTrainer._compute_loss on a bare trainer (make_trl_golden.py)",
        "torch": torch.__version__,
        "cases": cases,
    }
    path = pathlib.Path(__file__).with_name("trl_losses.json")
    # One [chosen, rejected] pair per line keeps the file reviewable.
    text = re.sub(
        r"\[\s+([^\[\]{}]*?)\s+\]",
        lambda m: "[" + " ".join(m.group(1).split()) + "]",
        json.dumps(golden, indent=1),
    )
    path.write_text(text + "\n")
    print(f"wrote {len(cases)} cases to {path}")


if __name__ == "__main__":
    main()

"""The two figures are drawn (PNG files), and without matplotlib they fail with the install hint."""

import builtins

import pytest

from dpo_jax.analysis.plots import MissingMatplotlib, plot_reward_vs_kl, plot_win_rates

WIN_RATES = {"dpo": [dict(temperature=t, win_rate=0.6, ci_low=0.5, ci_high=0.7) for t in (0.0, 0.5, 1.0)]}
POINTS = {
    "dpo": [
        dict(kl=k, kl_stderr=0.1, reward=0.5 + k / 10, reward_stderr=0.02, beta=1 / (k + 1)) for k in (1, 3)
    ]
}


def test_figures_are_written(tmp_path):
    assert plot_win_rates(WIN_RATES, tmp_path / "w.png", title="tldr").read_bytes()[:4] == b"\x89PNG"
    assert plot_reward_vs_kl(POINTS, tmp_path / "sub" / "f.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["f.png", "sub", "w.png"]  # no temporary left


def test_the_best_of_n_curve_is_drawn_beside_the_sampled_ones(tmp_path):
    best_of_n = [
        dict(
            kl=k,
            kl_stderr=0.0,
            kl_kind="analytic_bound",
            reward=0.6,
            reward_stderr=0.03,
            parameter="N",
            value=n,
        )
        for n, k in ((4, 0.636), (16, 1.835))
    ]
    path = plot_reward_vs_kl({**POINTS, "best-of-n": best_of_n}, tmp_path / "f.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_missing_matplotlib_names_the_extra(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(MissingMatplotlib, match=r"pip install 'dpo_jax\[plot\]'"):
        plot_win_rates(WIN_RATES, tmp_path / "w.png")

"""The synthetic frontier figure marks where DPO aims (pi*_beta at the run's beta) and the generator."""

from dpo_jax.synthetic import plot as plot_module
from dpo_jax.synthetic.report import plot

RESULT = {
    "beta": 0.1,
    "reference": {"kl": 0.0, "reward": 0.5},
    "generator": {"kl": 0.8, "reward": 0.45},
    "dpo_by_beta": [{"beta": 0.1, "kl": 2.0, "reward": 1.0}, {"beta": 0.3, "kl": 1.0, "reward": 0.8}],
    "optimum_by_beta": [{"beta": 0.1, "kl": 2.5, "reward": 1.3}, {"beta": 0.3, "kl": 1.1, "reward": 1.0}],
    "frontier": [{"kl": 1.1, "reward": 1.0}, {"kl": 2.5, "reward": 1.3}, {"kl": 4.0, "reward": 1.4}],
}


def test_the_figure_marks_the_optimum_at_each_runs_beta_and_the_generator(tmp_path, monkeypatch):
    drawn = {}
    real = plot_module.plot_frontier

    def spy(line, points, path, **options):
        drawn.update(points=points, **options)
        return real(line, points, path, **options)

    monkeypatch.setattr(plot_module, "plot_frontier", spy)
    path = plot(RESULT, tmp_path / "frontier.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert drawn["optimum_points"] == [(2.5, 1.3), (1.1, 1.0)]
    assert drawn["points"]["generator (SFT data)"] == [(0.8, 0.45)]

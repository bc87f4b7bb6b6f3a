from pyro_vae.plots.anomaly import plot_auroc_by_member
from pyro_vae.plots.base import save_figure


def test_the_auroc_figure_draws_each_score_over_the_members(tmp_path):
    rows = [{"value": f"digit_{d}",
             "scores": {"neg_elbo": {"auroc": 0.1 * d}, "likelihood_ratio": {"auroc": 0.9 - 0.1 * d}}}
            for d in range(3)]
    fig = plot_auroc_by_member({"key": "experiment.variant", "rows": rows}, ["neg_elbo", "likelihood_ratio"])
    lines = {line.get_label(): list(line.get_ydata()) for line in fig.axes[0].get_lines()}
    assert lines["neg_elbo"] == [0.0, 0.1, 0.2] and lines["likelihood_ratio"] == [0.9, 0.8, 0.7]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["digit_0", "digit_1", "digit_2"]
    assert save_figure(fig, tmp_path / "auroc.png").stat().st_size > 5000

from pyro_vae.plots import study
from pyro_vae.plots.base import save_figure


def _rows(with_ll=True):
    return [{"value": z, "test_loss": 150.0 - z, "test_recon": -(140.0 - 2 * z), "test_kl": 10.0 + z,
             "log_likelihood": (-145.0 + z) if with_ll else None, "log_likelihood_stderr": 0.5 if with_ll else None}
            for z in (2, 5, 20)]


def test_sweep_figure_with_and_without_log_likelihoods(tmp_path):
    for with_ll in (True, False):
        result = {"key": "model.z_dim", "num_samples": 100, "rows": _rows(with_ll)}
        fig = study.plot_sweep(result, title="t")
        assert fig.get_suptitle() == "t"
        path = save_figure(fig, tmp_path / f"sweep_{with_ll}.png")
        assert path.stat().st_size > 10000


def test_gap_figure(tmp_path):
    gap = {"approximation_gap": 4.0, "amortization_gap": 2.5}
    assert save_figure(study.plot_amortization_gap(gap), tmp_path / "gap.png").stat().st_size > 5000


def test_a_point_mass_run_s_bound_is_marked_apart_from_the_sampled_estimates():
    rows = [{**row, "value": name, "point_mass": name == "vq"} for row, name in zip(_rows(), ("gaussian", "vq", "r"))]
    fig = study.plot_sweep({"key": "experiment.variant", "num_samples": 1000, "rows": rows})
    left = fig.axes[0]
    labels = [text.get_text() for text in left.get_legend().get_texts()]
    assert labels == ["-ELBO (test)", "-log p(x), K = 1000 (test)", "-log p(x) bound, a point-mass q (K = 1; = -ELBO)"]
    assert all(line.get_linestyle() == "None" for line in left.get_lines())  # variants are points, not a curve


def test_the_accuracy_figure_draws_every_set_and_each_legend_entry_once():
    # the first size has one run and no reference: the mean and the reference still reach the legend
    summary = [{"labelled": 50, "sets": [0.8], "mean": (0.8, None), "baseline_sets": [0.6],
                "baseline_mean": (0.6, None)},
               {"labelled": 100, "sets": [0.9, 0.92, 0.94], "mean": (0.92, 0.05), "baseline_sets": [0.7, 0.72, 0.74],
                "baseline_mean": (0.72, 0.05)}]
    fig = study.plot_accuracy_by_labelled(summary, {100: ((0.93, 0.006), (0.77, 0.016))}, "Pyro's tutorial")
    left, right = fig.axes
    for ax, sets in ((left, [0.8, 0.9, 0.92, 0.94]), (right, [0.6, 0.7, 0.72, 0.74])):
        drawn = [y for line in ax.lines if line.get_marker() == "o" for y in line.get_ydata()]
        assert drawn == sets
        assert [t.get_text() for t in ax.get_legend().get_texts()] == [
            "one labelled set", "mean of its sets +- 95% bound", "Pyro's tutorial: mean +- 95% bound"]
    assert [t.get_text() for t in left.get_xticklabels()] == ["50", "100"]

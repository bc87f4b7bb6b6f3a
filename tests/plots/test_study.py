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

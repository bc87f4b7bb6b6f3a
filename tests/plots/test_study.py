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

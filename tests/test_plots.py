import torch

from pyro_vae import plots
from pyro_vae.build import build_model

from .helpers import make_tiny_data, tiny_config


def _vae(prior="standard", **prior_kw):
    vae, guide = build_model(tiny_config(prior={"type": prior, **prior_kw}), 64)
    return vae, guide


def test_principal_axes_of_the_correlated_prior():
    vae, _ = _vae("correlated")
    loc, axes, sds = plots.principal_axes(vae)
    assert torch.allclose(sds**2, torch.tensor([1.8, 0.2]), atol=1e-5)  # eigenvalues of [[1, .8], [.8, 1]]
    assert torch.allclose(axes.T @ axes, torch.eye(2), atol=1e-6)
    assert torch.allclose(axes[:, 0].abs(), torch.full((2,), 2**-0.5), atol=1e-6)  # the 45-degree axis
    assert plots.has_tilt(vae)


def test_standard_and_isotropic_priors_have_no_tilt():
    assert not plots.has_tilt(_vae("standard")[0])
    assert not plots.has_tilt(_vae("correlated", covariance=[[2.0, 0.0], [0.0, 2.0]])[0])
    assert plots.principal_axes(_vae("mixture")[0]) is None


def test_image_grid_tiles_rows_and_columns():
    images = torch.arange(6).float().repeat_interleave(784).reshape(6, 784)
    grid = plots.image_grid(images, 2, 3)
    assert grid.shape == (56, 84)
    assert grid[0, 0] == 0 and grid[0, 28] == 1 and grid[28, 0] == 3 and grid[55, 83] == 5


def test_draw_figures_for_a_2d_correlated_model(tmp_path):
    vae, guide = _vae("correlated")
    data = make_tiny_data()
    codes = guide.posterior(data.images).mean.detach()
    history = [{"epoch": 1, "train_loss": 200.0, "test_loss": 190.0, "test_recon": -185.0, "test_kl": 5.0,
                "seconds": 1}]
    written = plots.draw_figures(tmp_path, vae, data, codes, history)
    names = sorted(p.name for p in written)
    assert names == sorted(["training_curves.png", "reconstructions.png", "prior_samples.png",
                            "latent_scatter.png", "manifold.png", "manifold_tilted.png"])
    assert all(p.stat().st_size > 5000 for p in written)


def test_draw_figures_for_higher_dimensions_skips_the_2d_plots(tmp_path):
    vae, guide = build_model(tiny_config(model={"z_dim": 5}), 64)
    data = make_tiny_data()
    codes = guide.posterior(data.images).mean.detach()
    history = [{"epoch": 1, "train_loss": 200.0, "seconds": 1}]  # no test terms (mean-field runs)
    names = {p.name for p in plots.draw_figures(tmp_path, vae, data, codes, history)}
    assert names == {"training_curves.png", "reconstructions.png", "prior_samples.png"}

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


def _ten_class_data(n: int = 40):
    data = make_tiny_data(n)
    data.labels = torch.arange(n) % 10
    return data


def test_example_indices_take_the_first_image_of_each_class():
    labels = torch.tensor([3, 1, 1, 0, 3, 2, 0])
    assert plots.example_indices(labels, 4).tolist() == [3, 1, 5, 0]  # classes 0, 1, 2, 3
    assert plots.example_indices(labels, 6).tolist() == [3, 1, 5, 0, 2, 4]  # then the first others
    assert plots.example_indices(torch.tensor([5, 5]), 10).tolist() == [0, 1]


def test_interpolation_runs_from_the_first_3_to_the_first_8(tmp_path):
    vae, guide = _vae()
    data = _ten_class_data()
    codes = guide.posterior(data.images).mean.detach()
    path = plots.draw_interpolation(vae, data, codes, tmp_path / "interpolation.png")
    assert path.stat().st_size > 2000
    assert plots.draw_interpolation(vae, make_tiny_data(), codes, tmp_path / "none.png") is None  # no 8s


def test_interpolation_decodes_the_straight_line_between_the_codes(tmp_path, monkeypatch):
    vae, _ = _vae()
    seen = []
    monkeypatch.setattr(plots, "decode_grid", lambda vae, z: seen.append(z) or torch.zeros(len(z), 784))
    plots.plot_interpolation(vae, torch.zeros(784), torch.ones(784), torch.tensor([0.0, 2.0]),
                             torch.tensor([1.0, -2.0]), tmp_path / "i.png", steps=5)
    (z,) = seen
    assert torch.allclose(z, torch.tensor([[0.0, 2.0], [0.25, 1.0], [0.5, 0.0], [0.75, -1.0], [1.0, -2.0]]))


def test_draw_figures_for_a_3d_model_with_snapshots(tmp_path):
    vae, guide = build_model(tiny_config(model={"z_dim": 3}), 40)
    data = _ten_class_data()
    codes = guide.posterior(data.images).mean.detach()
    shown = plots.example_indices(data.labels)
    snapshots = {str(e): {"reconstructions": torch.rand(10, 784), "codes": codes + e} for e in (0, 1, 5)}
    history = [{"epoch": 1, "train_loss": 200.0, "seconds": 1}]
    written = plots.draw_figures(tmp_path, vae, data, codes, history, snapshots=snapshots)
    names = {p.name for p in written}
    assert names == {"training_curves.png", "reconstructions.png", "prior_samples.png", "interpolation.png",
                     "latent_scatter_3d.png", "latent_projections.png", "manifold_slices.png",
                     "reconstructions_over_epochs.png"}  # no posterior frames for 3-D codes
    assert len(shown) == 10 and all(p.stat().st_size > 3000 for p in written)


def test_preview_png_is_smaller_and_at_most_the_width(tmp_path):
    from PIL import Image
    import io

    vae, _ = _vae()
    path = plots.plot_manifold(vae, tmp_path / "manifold.png")
    preview = plots.preview_png(path, width=300)
    with Image.open(io.BytesIO(preview)) as image, Image.open(path) as original:
        assert image.width == 300 and abs(image.height / image.width - original.height / original.width) < 0.01
    assert len(preview) < path.stat().st_size

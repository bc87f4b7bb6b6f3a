import torch

from pyro_vae.plots import latent
from pyro_vae.plots.base import save_figure
from pyro_vae.workflow.build import build_model

from ..helpers import tiny_config


def _vae(prior="standard", **prior_kw):
    vae, guide = build_model(tiny_config(prior={"type": prior, **prior_kw}), 64)
    return vae, guide


def test_principal_axes_of_the_correlated_prior():
    vae, _ = _vae("correlated")
    loc, axes, sds = latent.principal_axes(vae)
    assert torch.allclose(sds**2, torch.tensor([1.8, 0.2]), atol=1e-5)  # eigenvalues of [[1, .8], [.8, 1]]
    assert torch.allclose(axes.T @ axes, torch.eye(2), atol=1e-6)
    assert torch.allclose(axes[:, 0].abs(), torch.full((2,), 2**-0.5), atol=1e-6)  # the 45-degree axis
    assert latent.has_tilt(vae)


def test_standard_and_isotropic_priors_have_no_tilt():
    assert not latent.has_tilt(_vae("standard")[0])
    assert not latent.has_tilt(_vae("correlated", covariance=[[2.0, 0.0], [0.0, 2.0]])[0])
    assert latent.principal_axes(_vae("mixture")[0]) is None
    assert latent.plot_tilted_manifold(_vae("mixture")[0]) is None


def test_manifold_decodes_a_grid_with_z1_growing_upwards(monkeypatch):
    seen = []
    monkeypatch.setattr(latent, "decode_grid", lambda vae, z: seen.append(z) or torch.zeros(z.shape[0] ** 2, 784))
    fig = latent.plot_manifold(_vae()[0], n=4)
    (z,) = seen
    assert z.shape == (4, 4, 2) and z[0, 0].tolist() == [-3.0, 3.0] and z[-1, -1].tolist() == [3.0, -3.0]
    assert fig.axes[0].get_title() == "Decoded manifold, z on a 4x4 grid over [-3, 3]^2"


def test_scatter_and_tilted_manifold_figures_are_written(tmp_path):
    vae, _ = _vae("correlated")
    codes, labels = torch.randn(200, 2), torch.arange(200) % 10
    fig = latent.plot_latent_scatter(codes, labels, vae)
    assert fig.axes[0].get_xlabel() == "z[0]" and fig.axes[1].get_ylabel() == "digit"  # the colour bar
    assert save_figure(fig, tmp_path / "s.png").stat().st_size > 5000
    fig = latent.plot_tilted_manifold(vae, n=5)
    assert [ax.get_title() for ax in fig.axes] == ["Manifold along the prior's principal axes",
                                                   "Where the tilted grid lies in z (with prior contours)"]
    assert save_figure(fig, tmp_path / "t.png").stat().st_size > 5000

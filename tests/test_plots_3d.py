import torch

from pyro_vae import plots_3d
from pyro_vae.build import build_model

from .helpers import tiny_config


def test_manifold_slices_fix_z2_at_each_level(tmp_path, monkeypatch):
    vae, _ = build_model(tiny_config(model={"z_dim": 3}), 10)
    seen = []
    monkeypatch.setattr(plots_3d, "decode_grid", lambda vae, z: seen.append(z) or torch.zeros(z.shape[0] ** 2, 784))
    plots_3d.plot_manifold_slices(vae, tmp_path / "slices.png", slices=(-1.0, 0.0, 1.0), n=4)
    assert [z.shape for z in seen] == [(4, 4, 3)] * 3
    assert [z[..., 2].unique().tolist() for z in seen] == [[-1.0], [0.0], [1.0]]
    assert seen[0][0, 0, :2].tolist() == [-3.0, 3.0]  # top-left corner: smallest z0, largest z1


def test_projection_and_scatter_figures_are_written(tmp_path):
    codes, labels = torch.randn(200, 3), torch.arange(200) % 10
    assert plots_3d.plot_latent_3d(codes, labels, tmp_path / "a.png").stat().st_size > 5000
    assert plots_3d.plot_latent_projections(codes, labels, tmp_path / "b.png").stat().st_size > 5000

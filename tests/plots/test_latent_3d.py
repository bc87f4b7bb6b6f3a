import torch

from pyro_vae.plots import latent_3d
from pyro_vae.plots.base import save_figure
from pyro_vae.workflow.build import build_model

from ..helpers import tiny_config


def test_manifold_slices_fix_z2_at_each_level(monkeypatch):
    vae, _ = build_model(tiny_config(model={"z_dim": 3}), 10)
    seen = []
    monkeypatch.setattr(latent_3d, "decode_grid", lambda vae, z: seen.append(z) or torch.zeros(z.shape[0] ** 2, 784))
    fig = latent_3d.plot_manifold_slices(vae, slices=(-1.0, 0.0, 1.0), n=4)
    assert [z.shape for z in seen] == [(4, 4, 3)] * 3
    assert [z[..., 2].unique().tolist() for z in seen] == [[-1.0], [0.0], [1.0]]
    assert seen[0][0, 0, :2].tolist() == [-3.0, 3.0]  # top-left corner: smallest z0, largest z1
    assert [ax.get_title() for ax in fig.axes] == ["z[2] = -1", "z[2] = 0", "z[2] = 1"]


def test_projection_and_scatter_figures_are_written(tmp_path):
    codes, labels = torch.randn(200, 3), torch.arange(200) % 10
    fig = latent_3d.plot_latent_3d(codes, labels)
    assert fig.axes[0].name == "3d" and fig.axes[0].get_zlabel() == "z[2]"
    assert save_figure(fig, tmp_path / "a.png").stat().st_size > 5000
    fig = latent_3d.plot_latent_projections(codes, labels)
    assert [ax.get_title() for ax in fig.axes[:3]] == ["z[0] vs z[1]", "z[0] vs z[2]", "z[1] vs z[2]"]
    assert save_figure(fig, tmp_path / "b.png").stat().st_size > 5000

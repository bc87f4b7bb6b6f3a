import io

import numpy as np
import torch
from matplotlib.figure import Figure

from pyro_vae.plots import images, latent
from pyro_vae.plots.base import save_figure
from pyro_vae.workflow.build import build_model

from ..helpers import tiny_config


def _vae():
    return build_model(tiny_config(), 64)[0]


def test_interpolation_decodes_the_straight_line_between_the_codes(tmp_path, monkeypatch):
    vae = _vae()
    seen = []
    monkeypatch.setattr(images, "decode_grid", lambda vae, z: seen.append(z) or torch.zeros(len(z), 784))
    fig = images.plot_interpolation(vae, torch.zeros(784), torch.ones(784), torch.tensor([0.0, 2.0]),
                                    torch.tensor([1.0, -2.0]), steps=5)
    (z,) = seen
    assert torch.allclose(z, torch.tensor([[0.0, 2.0], [0.25, 1.0], [0.5, 0.0], [0.75, -1.0], [1.0, -2.0]]))
    assert isinstance(fig, Figure) and save_figure(fig, tmp_path / "i.png").stat().st_size > 1000


def test_training_curves_with_and_without_test_terms(tmp_path):
    full = [{"epoch": e, "train_loss": 200.0 - e, "test_loss": 190.0 - e, "test_recon": -185.0, "test_kl": 5.0}
            for e in (1, 2)]
    for name, history in (("full", full), ("train_only", [{"epoch": 1, "train_loss": 200.0}])):
        fig = images.plot_training_curves(history)
        assert [ax.get_title() for ax in fig.axes] == ["total loss (-ELBO)", "reconstruction  -E_q log p(x|z)",
                                                       "KL(q(z|x) || p(z))"]
        assert save_figure(fig, tmp_path / f"{name}.png").stat().st_size > 5000


def test_training_curves_draw_the_validation_loss_and_mark_the_best_epoch():
    history = [{"epoch": e, "train_loss": 200.0 - e, "test_loss": 190.0, "test_recon": -185.0, "test_kl": 5.0,
                "valid_loss": v} for e, v in ((1, 192.0), (2, 189.0), (3, 191.0))]
    fig = images.plot_training_curves(history, best_epoch=2)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["train", "test", "validation",
                                                                           "best epoch (2)"]
    assert list(fig.axes[0].lines[2].get_ydata()) == [192.0, 189.0, 191.0]


def test_reconstructions_and_image_grid(tmp_path):
    fig = images.plot_reconstructions(torch.rand(10, 784), torch.rand(10, 784))
    assert [ax.get_title() for ax in fig.axes] == ["test images", "reconstructions"]
    assert save_figure(fig, tmp_path / "r.png").stat().st_size > 5000
    fig = images.plot_image_grid(torch.rand(100, 784), 10, 10, "samples")
    assert fig.axes[0].get_title() == "samples" and fig.axes[0].images[0].get_array().shape == (280, 280)


def test_preview_png_is_smaller_and_at_most_the_width(tmp_path):
    from PIL import Image

    path = save_figure(latent.plot_manifold(_vae()), tmp_path / "manifold.png")
    preview = images.preview_png(path, width=300)
    with Image.open(io.BytesIO(preview)) as image, Image.open(path) as original:
        assert image.width == 300 and abs(image.height / image.width - original.height / original.width) < 0.01
    assert len(preview) < path.stat().st_size


def test_preview_png_keeps_the_ten_digit_colours_of_a_sparse_scatter(tmp_path):
    """Ten small clusters in matplotlib's tab10 colours on a white page (a latent scatter): each colour is
    still in the shrunk figure's 256-colour palette, within an RGB distance of 30 (0-255 per channel; a
    median-cut palette misses some by 40, at 64 colours by 94: several digits then share one shade)."""
    import matplotlib
    from PIL import Image

    torch.manual_seed(0)
    fig = Figure(figsize=(10, 4))
    ax = fig.subplots()
    for digit in range(10):
        points = torch.randn(150, 2) * 0.2 + torch.tensor([digit * 1.0, 0.0])
        ax.scatter(points[:, 0], points[:, 1], s=1, color=f"C{digit}")
    ax.plot(torch.linspace(0, 9, 50), torch.sin(torch.linspace(0, 9, 50)), color="0.5")  # grey shades beside them
    path = save_figure(fig, tmp_path / "scatter.png")
    with Image.open(io.BytesIO(images.preview_png(path, width=640, colors=256))) as preview:
        palette = torch.from_numpy(np.array(preview.convert("RGB"))).reshape(-1, 3).float().unique(dim=0)
    for digit in range(10):
        colour = torch.tensor(matplotlib.colors.to_rgb(f"C{digit}")) * 255
        assert (palette - colour).norm(dim=1).min() < 30, f"C{digit} lost"

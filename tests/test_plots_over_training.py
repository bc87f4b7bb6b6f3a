import torch
from PIL import Image

from pyro_vae import plots_over_training

from .helpers import make_tiny_data


def _snapshots(epochs=(0, 1, 2, 10)):
    g = torch.Generator().manual_seed(0)
    return {str(e): {"reconstructions": torch.rand(10, 784, generator=g), "codes": torch.randn(64, 2, generator=g) * e}
            for e in epochs}


def test_frames_and_gif_have_one_frame_per_snapshot_in_epoch_order(tmp_path):
    data = make_tiny_data()
    shown = torch.arange(10)
    written = plots_over_training.draw_training_snapshots(tmp_path, data, _snapshots(), shown)
    assert [p.name for p in written] == ["reconstructions_over_epochs.png", "posterior_during_training.png",
                                         "posterior_during_training.gif"]
    with Image.open(tmp_path / "posterior_during_training.gif") as gif:
        assert gif.n_frames == 4
    assert plots_over_training._epochs({"10": {}, "2": {}, "0": {}}) == ["0", "2", "10"]  # numeric, not text


def test_reconstruction_grid_has_a_row_per_snapshot(tmp_path, monkeypatch):
    seen = []
    real = plots_over_training.image_grid
    monkeypatch.setattr(plots_over_training, "image_grid",
                        lambda images, rows, cols: seen.append((rows, cols)) or real(images, rows, cols))
    plots_over_training.plot_reconstructions_over_epochs(torch.rand(10, 784), _snapshots(), tmp_path / "r.png")
    assert seen == [(5, 10)]  # the test digits + 4 epochs

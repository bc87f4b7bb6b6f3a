import numpy as np
import torch
from PIL import Image

from pyro_vae.plots import over_training
from pyro_vae.plots.base import save_figure


def _snapshots(epochs=(0, 1, 2, 10)):
    g = torch.Generator().manual_seed(0)
    return {str(e): {"reconstructions": torch.rand(10, 784, generator=g), "codes": torch.randn(64, 2, generator=g) * e}
            for e in epochs}


def test_snapshots_in_numeric_epoch_order():
    assert over_training._epochs({"10": {}, "2": {}, "0": {}}) == ["0", "2", "10"]  # numeric, not text


def test_gif_has_one_frame_per_snapshot_in_epoch_order(tmp_path):
    labels = torch.arange(64) % 4
    path = over_training.save_posterior_gif(_snapshots(), labels, tmp_path / "sub" / "p.gif", seconds_per_frame=0.5)
    assert path == tmp_path / "sub" / "p.gif"
    with Image.open(path) as gif:
        assert gif.n_frames == 4 and gif.size == (400, 400) and gif.info["loop"] == 0
        frames = []
        for i in range(gif.n_frames):
            gif.seek(i)
            assert gif.info["duration"] == 500
            frames.append(np.asarray(gif.convert("RGB")))
    assert all((a != b).any() for a, b in zip(frames, frames[1:]))  # each frame drawn anew
    with Image.open(over_training.save_posterior_gif(_snapshots((0, 3)), labels, tmp_path / "two.gif")) as gif:
        assert gif.n_frames == 2


def test_posterior_frames_have_a_panel_per_snapshot_with_axis_labels_and_a_digit_legend(tmp_path):
    fig = over_training.plot_posterior_frames(_snapshots((0, 1, 2, 5, 10)), torch.arange(64) % 10)
    shown = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_title() for ax in shown] == ["before training", "after epoch 1", "after epoch 2", "after epoch 5",
                                                "after epoch 10"]
    assert len(fig.axes) == 8  # two rows of four, the last three blank
    assert all(ax.get_xlabel() == "z1" and ax.get_ylabel() == "z2" for ax in shown)
    (legend,) = fig.legends
    assert legend.get_title().get_text() == "digit" and [t.get_text() for t in legend.get_texts()] == list("0123456789")
    assert fig.get_suptitle() == "Test-set posterior means E_q[z|x] during training"
    assert save_figure(fig, tmp_path / "f.png").stat().st_size > 5000


def test_which_snapshots_have_2d_codes():
    assert over_training.has_2d_codes(_snapshots())
    assert not over_training.has_2d_codes({"0": {"reconstructions": torch.rand(10, 784)}})
    assert not over_training.has_2d_codes({"0": {"reconstructions": torch.rand(10, 784), "codes": torch.randn(5, 3)}})


def test_reconstruction_grid_has_a_row_per_snapshot(monkeypatch):
    seen = []
    real = over_training.image_grid
    monkeypatch.setattr(over_training, "image_grid",
                        lambda images, rows, cols: seen.append((rows, cols)) or real(images, rows, cols))
    fig = over_training.plot_reconstructions_over_epochs(torch.rand(10, 784), _snapshots())
    assert seen == [(5, 10)]  # the test digits + 4 epochs
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["test", "epoch 0", "epoch 1", "epoch 2",
                                                                     "epoch 10"]

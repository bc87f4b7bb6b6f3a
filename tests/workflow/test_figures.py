import torch
from PIL import Image

from pyro_vae.workflow import figures
from pyro_vae.workflow.build import build_model
from pyro_vae.workflow.data import example_indices, first_index

from ..helpers import make_tiny_data, tiny_config

HISTORY = [{"epoch": 1, "train_loss": 200.0, "test_loss": 190.0, "test_recon": -185.0, "test_kl": 5.0, "seconds": 1}]
EVERY_RUN = {"training_curves.png", "reconstructions.png", "prior_samples.png"}
SNAPSHOT_FIGURES = ["reconstructions_over_epochs.png", "posterior_during_training.png",
                    "posterior_during_training.gif"]


def _parts(**sections):
    vae, guide = build_model(tiny_config(**sections), 40)
    return vae, guide


def _ten_class_data(n: int = 40):
    data = make_tiny_data(n)
    data.labels = torch.arange(n) % 10
    return data


def _snapshots(codes, epochs=(0, 1, 5)):
    return {str(e): {"reconstructions": torch.rand(10, 784), "codes": codes + e} for e in epochs}


def test_example_indices_take_the_first_image_of_each_class():
    labels = torch.tensor([3, 1, 1, 0, 3, 2, 0])
    assert example_indices(labels, 4).tolist() == [3, 1, 5, 0]  # classes 0, 1, 2, 3
    assert example_indices(labels, 6).tolist() == [3, 1, 5, 0, 2, 4]  # then the first others
    assert example_indices(torch.tensor([5, 5]), 10).tolist() == [0, 1]
    assert first_index(labels, 2) == 5 and first_index(labels, 7) is None


def test_draw_figures_for_a_2d_correlated_model(tmp_path):
    vae, guide = _parts(prior={"type": "correlated"})
    data = make_tiny_data()
    codes = guide.posterior(data.images).mean.detach()
    written = figures.draw_figures(tmp_path, vae, data.images, data.labels, codes, HISTORY)
    names = sorted(p.name for p in written)
    assert names == sorted(EVERY_RUN | {"latent_scatter.png", "manifold.png", "manifold_tilted.png"})  # no 8s
    assert all(p.stat().st_size > 5000 for p in written)


def test_draw_figures_for_a_2d_model_with_snapshots_writes_every_figure(tmp_path):
    vae, guide = _parts()
    data = _ten_class_data()
    codes = guide.posterior(data.images).mean.detach()
    written = figures.draw_figures(tmp_path, vae, data.images, data.labels, codes, HISTORY,
                                   snapshots=_snapshots(codes, (0, 1, 2, 5)))
    names = [p.name for p in written]
    assert set(names) == EVERY_RUN | {"interpolation.png", "latent_scatter.png", "manifold.png", *SNAPSHOT_FIGURES}
    assert names[-3:] == SNAPSHOT_FIGURES  # no tilted manifold under the standard prior
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names) and all(p.stat().st_size > 3000 for p in written)
    with Image.open(tmp_path / "posterior_during_training.gif") as gif:
        assert gif.n_frames == 4


def test_draw_figures_for_higher_dimensions_skips_the_2d_plots(tmp_path):
    vae, guide = build_model(tiny_config(model={"z_dim": 5}), 64)
    data = make_tiny_data()
    codes = guide.posterior(data.images).mean.detach()
    history = [{"epoch": 1, "train_loss": 200.0, "seconds": 1}]  # no test terms (mean-field runs)
    names = {p.name for p in figures.draw_figures(tmp_path, vae, data.images, data.labels, codes, history)}
    assert names == EVERY_RUN


def test_draw_figures_for_a_3d_model_with_snapshots(tmp_path):
    vae, guide = _parts(model={"z_dim": 3})
    data = _ten_class_data()
    codes = guide.posterior(data.images).mean.detach()
    shown = example_indices(data.labels)
    history = [{"epoch": 1, "train_loss": 200.0, "seconds": 1}]
    written = figures.draw_figures(tmp_path, vae, data.images, data.labels, codes, history,
                                   snapshots=_snapshots(codes))
    names = {p.name for p in written}
    assert names == EVERY_RUN | {"interpolation.png", "latent_scatter_3d.png", "latent_projections.png",
                                 "manifold_slices.png", "reconstructions_over_epochs.png"}  # no frames for 3-D codes
    assert len(shown) == 10 and all(p.stat().st_size > 3000 for p in written)


def test_snapshot_figures_follow_the_snapshot_images(tmp_path, monkeypatch):
    """A guide without an encoder follows training images: their labels colour the frames."""
    vae, guide = _parts()
    test, train = _ten_class_data(), make_tiny_data(30, seed=1)
    codes = guide.posterior(test.images).mean.detach()
    snapshots = {str(e): {"reconstructions": torch.rand(10, 784), "codes": torch.randn(30, 2), "split": "train"}
                 for e in (0, 3)}
    seen = {}
    for name in ("plot_posterior_frames", "plot_reconstructions_over_epochs"):
        real = getattr(figures.over_training, name)
        monkeypatch.setattr(figures.over_training, name,
                            lambda *args, name=name, real=real: seen.setdefault(name, args) and real(*args))
    written = figures.draw_figures(tmp_path, vae, test.images, test.labels, codes, HISTORY, snapshots=snapshots,
                                   snapshot_images=train.images, snapshot_labels=train.labels)
    assert seen["plot_posterior_frames"][1] is train.labels
    assert torch.equal(seen["plot_reconstructions_over_epochs"][0], train.images[example_indices(train.labels)])
    assert [p.name for p in written][-3:] == SNAPSHOT_FIGURES


def test_training_snapshots_in_epoch_order(tmp_path):
    data = make_tiny_data()
    snapshots = {str(e): {"reconstructions": torch.rand(10, 784), "codes": torch.randn(64, 2) * e}
                 for e in (10, 0, 2, 1)}
    written = figures.draw_training_snapshots(tmp_path, data.images, data.labels, snapshots, torch.arange(10))
    assert [p.name for p in written] == SNAPSHOT_FIGURES
    with Image.open(tmp_path / "posterior_during_training.gif") as gif:
        assert gif.n_frames == 4


def test_interpolation_runs_from_the_first_3_to_the_first_8(tmp_path):
    vae, guide = _parts()
    data = _ten_class_data()
    codes = guide.posterior(data.images).mean.detach()
    path = figures.draw_interpolation(vae, data.images, data.labels, codes, tmp_path / "interpolation.png")
    assert path.stat().st_size > 2000
    tiny = make_tiny_data()  # no 8s
    assert figures.draw_interpolation(vae, tiny.images, tiny.labels, codes, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()

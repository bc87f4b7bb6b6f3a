"""``pyro-vae score``: the user's images read or refused in one line, a CSV row per image."""

import numpy as np
import pytest
import torch
from PIL import Image

from pyro_vae.cli import main
from pyro_vae.infer.scores import SCORES
from pyro_vae.workflow.data import DataError
from pyro_vae.workflow.scores import read_scores, read_user_images
from pyro_vae.workflow.training import train

from ..helpers import tiny_config


def test_user_images_from_an_npz_of_bytes_or_floats_and_from_a_folder_of_pngs(tmp_path):
    images = (np.arange(3 * 784) % 256).astype(np.uint8).reshape(3, 28, 28)
    np.savez(tmp_path / "bytes.npz", images)
    np.savez(tmp_path / "floats.npz", x=images.reshape(3, 784) / 255.0)
    assert torch.allclose(read_user_images(tmp_path / "bytes.npz"), read_user_images(tmp_path / "floats.npz"))
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i}.png")
    assert torch.allclose(read_user_images(folder), torch.from_numpy(images.reshape(3, 784) / 255.0).float())


@pytest.mark.parametrize("make, message", [
    (lambda p: np.savez(p / "a.npz", np.zeros((2, 32, 32))), r"shape \(2, 32, 32\); expected \(N, 28, 28\)"),
    (lambda p: np.savez(p / "a.npz", np.full((2, 784), 1.5)), "values from 1.5 to 1.5; grey values must be in"),
    (lambda p: np.savez(p / "a.npz", np.zeros((0, 784))), r"shape \(0, 784\)"),
    (lambda p: (p / "a.npz").mkdir(), "holds no .png files"),
    (lambda p: Image.fromarray(np.zeros((20, 28), np.uint8)).save(p / "a.png") or None, "is 20x28 pixels"),
])
def test_bad_user_images_are_refused_in_one_line(tmp_path, make, message):
    make(tmp_path)
    target = tmp_path / "a.npz" if (tmp_path / "a.npz").exists() else tmp_path
    with pytest.raises(DataError, match=message):
        read_user_images(target)


@pytest.mark.mnist
def test_score_writes_a_row_per_image_and_refuses_bad_input_writing_nothing(tmp_path, data_dir, capsys):
    config = tiny_config(train={"epochs": 1, "batch_size": 64}, model={"z_dim": 2})
    config.data.pixels, config.data.train_size, config.data.test_size = "dynamic", 300, 50
    run = train(config, tmp_path / "run", data_dir, progress=False, log=lambda line: None)
    args = ["score", "--run", str(run), "--num-samples", "3", "--limit", "30", "--no-progress",
            "--data-dir", str(data_dir)]
    assert main(args) == 0
    table = read_scores(run / "scores_mnist_test.csv")
    assert set(SCORES) <= set(table) and len(table["neg_elbo"]) == 30 and (table["label"] >= 0).all()
    assert main([*args, "--dataset", "fashion_mnist", "--out", str(tmp_path / "f.csv")]) == 0
    assert len(read_scores(tmp_path / "f.csv")["label"]) == 30
    np.savez(tmp_path / "mine.npz", np.zeros((4, 28, 28), np.uint8))
    assert main(["score", "--run", str(run), "--images", str(tmp_path / "mine.npz"), "--no-progress"]) == 0
    mine = read_scores(run / "scores_mine.csv")
    assert (mine["label"] == -1).all() and len(mine["label"]) == 4
    capsys.readouterr()
    np.savez(tmp_path / "big.npz", np.zeros((4, 30, 30)))
    for bad in (["--images", str(tmp_path / "big.npz")], ["--num-samples", "0"], ["--split", "valid"]):
        assert main(["score", "--run", str(run), *bad, "--out", str(tmp_path / "bad.csv"), "--no-progress",
                     "--data-dir", str(data_dir)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("pyro-vae: error:")
    assert not (tmp_path / "bad.csv").exists()
    grey = tiny_config(train={"epochs": 1})
    grey.data.pixels, grey.data.train_size, grey.data.test_size = "grayscale", 200, 20  # BCE: no density
    grey_run = train(grey, tmp_path / "grey", data_dir, progress=False, log=lambda line: None)
    assert main(["score", "--run", str(grey_run), "--limit", "5", "--data-dir", str(data_dir)]) == 2
    assert "needs a run with a proper density" in capsys.readouterr().err

    # the likelihood ratio: a background run of the same data with noise; the clean run is not one
    config.data.noise = 0.2
    noisy = train(config, tmp_path / "noisy", data_dir, progress=False, log=lambda line: None, figures=False)
    two_batches = ["score", "--run", str(run), "--num-samples", "3", "--limit", "150", "--no-progress",
                   "--data-dir", str(data_dir)]  # more than one batch of 100
    assert main([*two_batches, "--out", str(tmp_path / "plain.csv")]) == 0
    assert main([*two_batches, "--background", str(noisy), "--out", str(tmp_path / "r.csv")]) == 0
    plain, ratio = read_scores(tmp_path / "plain.csv"), read_scores(tmp_path / "r.csv")
    assert "likelihood_ratio" in ratio and torch.isfinite(ratio["likelihood_ratio"]).all()
    assert "likelihood_ratio" not in plain
    for name in SCORES:  # the background's samples come from a stream of their own: the other scores are unchanged
        assert torch.equal(ratio[name], plain[name]), name
    capsys.readouterr()
    assert main([*args, "--background", str(run), "--out", str(tmp_path / "r2.csv")]) == 2
    assert "must be a run of the same data with noise" in capsys.readouterr().err
    assert not (tmp_path / "r2.csv").exists()


@pytest.mark.parametrize("overrides, message", [
    (["model.labels='input'"], "needs a model of the whole image x alone with an encoder"),
    (["guide.type='mean_field'"], "needs a model of the whole image x alone with an encoder"),
    (["model.completion=2", "data.pixels='dynamic'"], "needs a model of the whole image x alone with an encoder"),
    ([], "needs a run with a proper density"),  # the defaults: grey values under a Bernoulli
])
def test_runs_whose_scores_would_not_mean_what_they_say_are_refused(overrides, message):
    from pyro_vae.workflow.config import ConfigError, load_config
    from pyro_vae.workflow.scores import check_scorable

    with pytest.raises(ConfigError, match=message):
        check_scorable(load_config(None, overrides))
    check_scorable(load_config(None, ["data.pixels='dynamic'"]))


def test_scoring_compiles_for_all_its_batches_or_none_by_their_total(monkeypatch):
    """Each batch of SCORE_BATCH images alone is below the estimator's compile threshold; the whole set decides."""
    from types import SimpleNamespace

    import pyro_vae.workflow.scores as scores
    from pyro_vae.infer import compiled

    asked = []

    def fake_image_scores(vae, guide, x, num_samples, batch_size, compile=None):
        asked.append(compile)
        return {name: torch.zeros(len(x)) for name in SCORES}

    monkeypatch.setattr(scores, "image_scores", fake_image_scores)
    monkeypatch.delenv(compiled.ENVIRONMENT, raising=False)
    run = SimpleNamespace(config=tiny_config(), vae=None, guide=None)
    grey = torch.rand(3 * scores.SCORE_BATCH, 784)
    monkeypatch.setattr(compiled, "COMPILE_MIN_ROWS", 10 * len(grey))
    scores.score_images(run, grey, num_samples=10, progress=False)
    scores.score_images(run, grey, num_samples=9, progress=False)
    run.guide = SimpleNamespace(deterministic=True)  # a VQ-VAE's point-mass q draws once, whatever K
    scores.score_images(run, grey, num_samples=1000, progress=False)
    assert asked == [True] * 3 + [False] * 6

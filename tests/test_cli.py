import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pyro_vae.workflow.checkpoint import load_checkpoint
from pyro_vae.cli import main
from pyro_vae.workflow import data

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "experiments" / "vae_2d.toml")
SMALL = ["--set", "data.train_size=1000", "--set", "data.test_size=500", "--set", "train.epochs=1"]
FIGURES = ["training_curves.png", "reconstructions.png", "prior_samples.png", "latent_scatter.png", "manifold.png"]


@pytest.fixture
def no_network(monkeypatch):
    monkeypatch.setattr(data, "_download", lambda *args: None)  # a download that finds no network


def _files(path: Path) -> dict:
    return {p: p.read_bytes() for p in path.rglob("*") if p.is_file()}


@pytest.mark.mnist
@pytest.mark.slow
def test_train_smoke_run_writes_every_output(tmp_path, data_dir):
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "pyro_vae", "train", "--config", CONFIG, *SMALL,
         "--out", str(out), "--data-dir", str(data_dir), "--no-progress"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "epoch   1/1" in result.stdout and "test loss" in result.stdout
    assert "train_size = 1000" in (out / "config.toml").read_text()
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 1
    assert {"epoch", "train_loss", "test_loss", "test_recon", "test_kl", "seconds"} <= set(history[0])
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"test_elbo", "test_recon", "test_kl", "test_loss", "num_parameters"} <= set(metrics)
    assert metrics["num_parameters"]["total"] > 1_000_000  # the reference 784-512-256-2 nets
    state = load_checkpoint(out / "checkpoint.pt")
    assert {"vae", "guide", "optimizer", "history", "config", "epoch"} <= set(state)
    for name in FIGURES:
        assert (out / "figures" / name).stat().st_size > 5000, name

    for name in FIGURES:
        (out / "figures" / name).unlink()
    assert main(["plot", "--run", str(out), "--data-dir", str(data_dir)]) == 0
    for name in FIGURES:
        assert (out / "figures" / name).is_file(), name


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "train.epoch=1"], "unknown key 'train.epoch'; valid keys of [train]"),
        (["--set", "model.z_dim=-2"], "model.z_dim must be >= 1"),
        (["--set", "prior.type=gauss"], "unknown prior.type 'gauss'"),
        (["--set", "prior.type=correlated", "--set", "prior.covariance=[[1, 2], [2, 1]]"],
         "is not positive-definite"),
        (["--set", "nonsense"], "is not of the form section.key=value"),
    ],
)
def test_bad_config_gives_one_line_and_exit_2(tmp_path, capsys, args, message):
    code = main(["train", "--config", CONFIG, *args, "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()  # nothing written


def test_missing_data_gives_one_line_and_exit_2(tmp_path, capsys, no_network):
    code = main(["train", "--config", CONFIG, *SMALL, "--out", str(tmp_path / "r"),
                 "--data-dir", str(tmp_path / "empty")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "train-images-idx3-ubyte" in err and str(tmp_path / "empty" / "MNIST" / "raw") in err
    assert not (tmp_path / "r").exists()


def test_missing_config_file(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "none.toml")]) == 2
    assert "not found; pass an existing TOML file" in capsys.readouterr().err


@pytest.mark.mnist
@pytest.mark.slow
def test_an_existing_run_is_refused_reused_or_continued(tmp_path, capsys, data_dir):
    out = tmp_path / "run"
    assert main(["train", "--config", CONFIG, *SMALL, "--out", str(out), "--data-dir", str(data_dir),
                 "--no-progress"]) == 0
    before = _files(out)
    capsys.readouterr()
    code = main(["train", "--config", CONFIG, *SMALL, "--set", "train.lr=0.01", "--out", str(out),
                 "--data-dir", str(data_dir)])
    assert code == 2 and f"{out} holds a run with another config (train.lr)" in capsys.readouterr().err
    assert _files(out) == before
    # the same command again: the finished run is reused, nothing rewritten (one lifecycle with `pyro-vae run`)
    assert main(["train", "--config", CONFIG, *SMALL, "--out", str(out), "--data-dir", str(data_dir),
                 "--no-progress"]) == 0
    assert "finished run found, not trained again" in capsys.readouterr().out
    assert _files(out) == before
    # more epochs: the run is continued from its checkpoint, not started again
    assert main(["train", "--config", CONFIG, *SMALL, "--set", "train.epochs=2", "--out", str(out),
                 "--data-dir", str(data_dir), "--no-progress"]) == 0
    assert "resuming" in capsys.readouterr().out
    history = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2]


def test_plot_of_a_missing_run(tmp_path, capsys):
    assert main(["plot", "--run", str(tmp_path)]) == 2
    assert "is not a run directory" in capsys.readouterr().err


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--config" in err


@pytest.mark.slow
def test_help_lists_the_commands():
    result = subprocess.run([sys.executable, "-m", "pyro_vae", "--help"], capture_output=True, text=True,
                            env={**os.environ}, timeout=120)
    assert result.returncode == 0 and "train" in result.stdout and "plot" in result.stdout
    result = subprocess.run([sys.executable, "-m", "pyro_vae", "train", "--help"], capture_output=True,
                            text=True, timeout=120)
    assert "--set" in result.stdout and "--out" in result.stdout and "--data-dir" in result.stdout


@pytest.mark.mnist
def test_swapping_in_a_mean_field_guide_on_the_main_config(tmp_path, data_dir, capsys):
    """vae_2d.toml records snapshots; a mean-field guide follows the training images it holds."""
    out = tmp_path / "mf"
    code = main(["train", "--config", CONFIG, "--set", "guide.type=mean_field", "--set", "data.train_size=300",
                 "--set", "data.test_size=100", "--set", "train.epochs=1", "--set", "guide.local_steps=100",
                 "--out", str(out), "--data-dir", str(data_dir), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert "the figures over training follow the first 100 training images" in capsys.readouterr().out
    snapshots = load_checkpoint(out / "checkpoint.pt")["snapshots"]
    assert set(snapshots) == {"0", "1"} and all(s["split"] == "train" for s in snapshots.values())
    assert snapshots["1"]["codes"].shape == (100, 2)
    for name in ("posterior_during_training.png", "reconstructions_over_epochs.png", *FIGURES):
        assert (out / "figures" / name).stat().st_size > 1000
    assert (out / "test_local_fit.pt").is_file()  # the test images' Gaussians, kept for plot and evaluate


@pytest.mark.mnist
def test_no_figures_trains_without_drawing_and_plot_draws_them_later(tmp_path, data_dir, capsys):
    out = tmp_path / "run"
    small = ["--set", "data.train_size=200", "--set", "data.test_size=100", "--set", "train.epochs=1",
             "--set", "model.hidden=[16]"]
    assert main(["train", "--config", CONFIG, *small, "--out", str(out), "--data-dir", str(data_dir),
                 "--no-progress", "--no-figures"]) == 0, capsys.readouterr().err
    assert (out / "metrics.json").is_file()  # a whole run: reused, not retrained, by the same command
    assert not any((out / "figures").glob("*.png"))
    assert main(["plot", "--run", str(out), "--data-dir", str(data_dir)]) == 0
    for name in FIGURES:
        assert (out / "figures" / name).is_file(), name

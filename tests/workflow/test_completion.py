"""Image-completion runs: the baseline fitted before the CVAE, kept in the checkpoint, reported beside it."""

import math

import pytest
import torch

from pyro_vae.workflow.build import build_model
from pyro_vae.workflow.checkpoint import load_checkpoint, read_json
from pyro_vae.workflow.completion import baseline_loss, fit_baseline
from pyro_vae.workflow.data import ImageData
from pyro_vae.workflow.evaluation import evaluate_run, format_report
from pyro_vae.workflow.experiments import completion_row
from pyro_vae.workflow.figures import redraw_figures
from pyro_vae.workflow.report import completion_table
from pyro_vae.workflow.training import resume, train

from ..helpers import tiny_config

QUIET = {"progress": False, "log": lambda line: None}


def _config(**train):
    return tiny_config(model={"completion": 2, "z_dim": 3, "hidden": [16]},
                       data={"pixels": "grayscale", "validation_size": 100, "train_size": 400, "test_size": 100},
                       train={"epochs": 2, "baseline_epochs": 3, "batch_size": 50, "lr": 3e-3, **train})


def test_the_baseline_fit_keeps_the_epoch_of_the_lowest_validation_loss():
    config = _config(baseline_epochs=6)
    vae, _ = build_model(config, 80)
    g = torch.Generator().manual_seed(0)
    train_set = ImageData(torch.rand(80, 784, generator=g), torch.zeros(80, dtype=torch.long))
    valid = ImageData(torch.rand(40, 784, generator=g), torch.zeros(40, dtype=torch.long))
    before = baseline_loss(vae.baseline, valid.images)
    record = fit_baseline(vae.baseline, train_set, valid, config, patience=math.inf, log=lambda line: None)
    losses = [h["valid_loss"] for h in record["history"]]
    assert record["epochs"] == 6 and record["valid_loss"] == min(losses) < before
    assert record["best_epoch"] == losses.index(min(losses)) + 1
    assert baseline_loss(vae.baseline, valid.images) == pytest.approx(record["valid_loss"], rel=1e-6)  # its weights


def test_the_baseline_fit_stops_after_its_patience(monkeypatch):
    """Validation losses 5, 4, 6, 7, ...: with patience 2 the fit stops after epoch 4 and keeps epoch 2's weights."""
    from pyro_vae.workflow import completion

    config = _config(baseline_epochs=8)
    vae, _ = build_model(config, 40)
    data = ImageData(torch.rand(40, 784), torch.zeros(40, dtype=torch.long))
    losses, weights = iter([5.0, 4.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0]), []

    def scripted_loss(baseline, x, batch_size=1000):
        weights.append(baseline.net[-1].bias.detach().clone())
        return next(losses)

    monkeypatch.setattr(completion, "baseline_loss", scripted_loss)
    record = fit_baseline(vae.baseline, data, data, config, patience=2, log=lambda line: None)
    assert (record["epochs"], record["best_epoch"], record["valid_loss"]) == (4, 2, 4.0)
    assert torch.equal(vae.baseline.net[-1].bias, weights[1]) and not torch.equal(weights[1], weights[3])


@pytest.mark.mnist
@pytest.mark.slow
def test_a_run_stopped_after_its_baseline_fit_resumes_from_it_without_refitting(tmp_path, data_dir, monkeypatch):
    from pyro_vae.workflow.training import Trainer

    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    train(_config(epochs=2), whole, data_dir, figures=False, **QUIET)

    def killed(self):
        raise RuntimeError("killed")

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "snapshot", killed)  # the step right after the baseline's checkpoint
        with pytest.raises(RuntimeError, match="killed"):
            train(_config(epochs=2), stopped, data_dir, figures=False, **QUIET)
    assert load_checkpoint(stopped / "checkpoint.pt")["epoch"] == 0
    lines = []
    resume(stopped, data_dir=data_dir, figures=False, progress=False, log=lines.append)
    assert not any("baseline" in line for line in lines)  # read back, not fitted again
    a, b = load_checkpoint(whole / "checkpoint.pt"), load_checkpoint(stopped / "checkpoint.pt")
    assert all(torch.equal(a["vae"][k], b["vae"][k]) for k in a["vae"])
    assert all(torch.equal(a["guide"][k], b["guide"][k]) for k in a["guide"])


@pytest.mark.mnist
@pytest.mark.slow
def test_a_completion_run_resumed_equals_one_long_run_and_reports_its_baseline(tmp_path, data_dir):
    long, short = tmp_path / "long", tmp_path / "short"
    train(_config(epochs=3), long, data_dir, figures=False, **QUIET)
    train(_config(epochs=2), short, data_dir, figures=False, **QUIET)
    resume(short, ["train.epochs=3"], data_dir, figures=False, **QUIET)
    a, b = load_checkpoint(long / "checkpoint.pt"), load_checkpoint(short / "checkpoint.pt")
    assert all(torch.equal(a["vae"][k], b["vae"][k]) for k in a["vae"]) and any("baseline" in k for k in a["vae"])
    timeless = [{k: v for k, v in state["baseline"].items() if k != "seconds"} for state in (a, b)]
    assert timeless[0] == timeless[1] and a["baseline"]["epochs"] == 3  # fitted once, before epoch 1
    metrics = read_json(long / "metrics.json")
    assert metrics["baseline"]["test_loss"] > 0 and metrics["baseline"]["best_epoch"] == a["baseline"]["best_epoch"]
    report = evaluate_run(long, num_samples=20, data_dir=data_dir)
    assert report["log_likelihood"] is None and report["completion_baseline"] == pytest.approx(
        metrics["baseline"]["test_loss"], rel=1e-5)
    assert -report["importance_sampled"]["value"] < report["elbo"]["loss"] + 3 * report["importance_sampled"]["stderr"]
    text = format_report(report)
    assert "baseline -log p(x_h | x_g)" in text and "-log p(x_h | x_g), K=20" in text
    drawn = {path.name for path in redraw_figures(long, data_dir)}
    assert "completions.png" in drawn and "prior_samples.png" not in drawn  # no unconditional prior to sample
    row = completion_row(report, metrics)
    assert row["baseline_loss"] == metrics["baseline"]["test_loss"]
    assert row["importance_sampled_loss"] == -report["importance_sampled"]["value"]


def test_the_completion_table_puts_the_baseline_beside_both_cvae_numbers():
    sweep = {"key": "model.completion", "num_samples": 1000, "rows": [
        {"value": 1, "baseline_loss": 100.44, "baseline_epochs": 9, "test_loss": 71.81, "epochs": 20,
         "importance_sampled_loss": 68.5, "importance_sampled_stderr": 0.31}]}
    assert "| 1 | 100.44 (9) | 71.81 (20) | 68.50 +- 0.31 | 100.4, 71.8 |" in completion_table(sweep)
    assert "K = 1,000" in completion_table(sweep)

import copy
import json

import pytest
import torch

from pyro_vae.workflow.checkpoint import CheckpointError, load_checkpoint
from pyro_vae.workflow.config import ConfigError
from pyro_vae.workflow.data import ImageData, load_data, load_run_data, load_run_split
from pyro_vae.workflow.evaluation import evaluate_test_set
from pyro_vae.workflow.loop import EpochState, FiniteLoss, TrainingError, run_epoch
from pyro_vae.workflow.streams import epoch_generator
from pyro_vae.workflow.runs import load_run
from pyro_vae.workflow.training import resume, train, train_or_resume

from ..helpers import tiny_config

pytestmark = pytest.mark.mnist


def _small(**sections):
    config = tiny_config(**sections)
    config.data.pixels = "grayscale"
    config.data.train_size, config.data.test_size = 600, 200
    config.train.epochs, config.train.batch_size = 2, 64
    return config


def _without_times(history):
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


@pytest.mark.slow
def test_same_seed_same_history_and_weights(tmp_path, data_dir):
    config = _small()
    first = train(config, tmp_path / "a", data_dir, progress=False, log=lambda line: None)
    second = train(config, tmp_path / "b", data_dir, progress=False, log=lambda line: None)
    h1 = json.loads((first / "history.json").read_text())
    h2 = json.loads((second / "history.json").read_text())
    assert _without_times(h1) == _without_times(h2)
    w1, w2 = load_checkpoint(first / "checkpoint.pt"), load_checkpoint(second / "checkpoint.pt")
    assert all(torch.equal(w1["vae"][k], w2["vae"][k]) for k in w1["vae"])
    config.train.seed = 1
    third = train(config, tmp_path / "c", data_dir, progress=False, log=lambda line: None)
    assert _without_times(json.loads((third / "history.json").read_text())) != _without_times(h1)


@pytest.mark.parametrize("schedule, decay, milestones, factors", [("exponential", 0.5, [], [1, 0.5]),
                                                                   ("multistep", 0.1, [1], [1, 0.1])])
def test_history_and_metrics_agree(tmp_path, data_dir, schedule, decay, milestones, factors):
    config = _small()
    config.train.lr_schedule, config.train.lr_decay, config.train.lr_milestones = schedule, decay, milestones
    run = train(config, tmp_path / "r", data_dir, progress=False, log=lambda line: None)
    history = json.loads((run / "history.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2]
    assert [r["lr"] for r in history] == pytest.approx([config.train.lr * f for f in factors])  # each epoch's rate
    assert metrics["test_loss"] == pytest.approx(history[-1]["test_loss"])  # evaluation is seeded
    assert metrics["test_convention"] == "bce" and metrics["test_kl_estimator"] == "analytic"


def test_a_run_notes_the_keys_nothing_reads(tmp_path, data_dir):
    config = _small(guide={"flows": 4}, train={"commitment": 0.5, "epochs": 1})
    lines = []
    train(config, tmp_path / "r", data_dir, progress=False, log=lines.append)
    notes = [line for line in lines if line.startswith("note:")]
    assert notes == ["note: guide.flows (read only with guide.type = 'iaf' or 'planar'); train.commitment (read only "
                     "with guide.type = 'vq'): set, but nothing in this config reads them"]


@pytest.mark.slow
def test_mean_field_run_fits_the_test_set_locally(tmp_path, data_dir):
    from pyro_vae.infer.evaluate import elbo_terms
    from pyro_vae.infer.local_fit import fit_local
    from pyro_vae.workflow.runs import load_run
    from pyro_vae.workflow.evaluation import fit_test_images
    from pyro_vae.workflow.streams import eval_generator

    config = _small(guide={"type": "mean_field"})
    config.train.lr = 1e-2
    run = train(config, tmp_path / "mf", data_dir, progress=False, log=lambda line: None)
    metrics = json.loads((run / "metrics.json").read_text())
    fit = metrics["test_local_fit"]
    assert fit["chunks"] == 1 and fit["stopped_on_tolerance"] == 1 and fit["steps_max"] < config.guide.local_steps
    history = json.loads((run / "history.json").read_text())
    assert history[1]["train_loss"] < history[0]["train_loss"]  # variational EM makes progress
    assert metrics["num_parameters"]["guide"] == 2 * 600 * 2
    # the reported test ELBO is the fitted Gaussians', far above where the fit starts
    loaded = load_run(run)
    _, test = load_data("mnist", "grayscale", data_dir, 600, 200)
    x = test.observed(eval_generator(config.train.seed)).images
    start = fit_local(loaded.vae, x, max_steps=0, init_scale=config.guide.init_scale).guide
    assert metrics["test_elbo"] > elbo_terms(loaded.vae, start, x)["elbo"] + 10
    cached, summary = fit_test_images(loaded.vae, x, loaded.config, cache=run / "test_local_fit.pt")
    assert summary == fit  # read back from the run directory, not refitted
    assert elbo_terms(loaded.vae, cached, x)["elbo"] == pytest.approx(metrics["test_elbo"], abs=1.0)
    assert (run / "figures" / "latent_scatter.png").is_file()


def test_correlated_prior_run_draws_the_tilted_manifold(tmp_path, data_dir):
    run = train(_small(prior={"type": "correlated"}), tmp_path / "c", data_dir, progress=False,
                log=lambda line: None)
    assert (run / "figures" / "manifold_tilted.png").is_file()


def test_a_run_directory_is_not_clobbered(tmp_path, data_dir):
    run = train(_small(), tmp_path / "r", data_dir, progress=False, log=lambda line: None)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match="already holds a run; pass --out NEW_DIR"):
        train(_small(), run, data_dir, progress=False, log=lambda line: None)
    assert before == {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}


class _NaNSVI:
    def __init__(self, bad_step):
        self.calls, self.bad_step = 0, bad_step

    def step(self, x, idx):
        self.calls += 1
        return float("nan") if self.calls == self.bad_step else 1.0


@pytest.mark.parametrize("bad_step", [1, 3])
def test_a_nan_loss_stops_with_epoch_and_step(bad_step):
    data = ImageData(torch.rand(40, 5), torch.zeros(40, dtype=torch.long))
    with pytest.raises(TrainingError, match=f"at epoch 4, step {bad_step}; lower train.lr"):
        run_epoch(_NaNSVI(bad_step), data, 10, EpochState.begin(data, 4, seed=0), [FiniteLoss()])


def test_epoch_generators_differ_by_epoch_and_seed():
    draw = lambda seed, epoch: torch.randperm(100, generator=epoch_generator(seed, epoch))  # noqa: E731
    assert torch.equal(draw(0, 1), draw(0, 1))
    assert not torch.equal(draw(0, 1), draw(0, 2)) and not torch.equal(draw(0, 1), draw(1, 1))


@pytest.mark.slow
def test_a_full_disk_keeps_the_last_checkpoint(tmp_path, data_dir, monkeypatch):
    from pyro_vae.workflow import checkpoint

    out = train(_small(), tmp_path / "r", data_dir, progress=False, log=lambda line: None)
    good = (out / "checkpoint.pt").read_bytes()
    real_replace = checkpoint.os.replace

    def disk_full(src, dst):
        if str(src).endswith(".tmp") and str(dst).endswith("checkpoint.pt"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", disk_full)
    from pyro_vae.workflow.training import resume

    with pytest.raises(TrainingError, match=r"could not save .*checkpoint.pt \(No space left on device\); "
                                            r"the previous checkpoint is kept"):
        resume(out, ["train.epochs=3"], data_dir, progress=False, log=lambda line: None)
    assert (out / "checkpoint.pt").read_bytes() == good
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_snapshots_are_recorded_and_leave_training_unchanged(tmp_path, data_dir):
    quiet = {"progress": False, "log": lambda line: None}
    plain = train(_small(), tmp_path / "plain", data_dir, **quiet)
    config = _small()
    config.train.snapshot_epochs = [0, 2, 7]  # 7 is beyond the run: ignored
    snapped = train(config, tmp_path / "snapped", data_dir, **quiet)
    a, b = load_checkpoint(plain / "checkpoint.pt"), load_checkpoint(snapped / "checkpoint.pt")
    assert all(torch.equal(a["vae"][k], b["vae"][k]) for k in a["vae"])  # snapshots draw no training randomness
    assert sorted(b["snapshots"]) == ["0", "2"] and a["snapshots"] == {}
    shot = b["snapshots"]["2"]
    assert shot["reconstructions"].shape == (10, 784) and shot["codes"].shape == (200, 2)
    assert not torch.equal(shot["codes"], b["snapshots"]["0"]["codes"])
    figures = {p.name for p in (snapped / "figures").iterdir()}
    assert {"reconstructions_over_epochs.png", "posterior_during_training.gif", "interpolation.png"} <= figures


def test_snapshot_and_final_metrics_reuse_the_epochs_test_evaluation_exactly(tmp_path, data_dir):
    from pyro_vae.workflow.evaluation import evaluate_test_set, evaluation_codes
    from pyro_vae.workflow.runs import load_run

    config = _small()
    config.train.snapshot_epochs = [1, 2]
    out = train(config, tmp_path / "r", data_dir, progress=False, log=lambda line: None)
    run, (_, test) = load_run(out), load_run_data(config, data_dir)
    shot = load_checkpoint(out / "checkpoint.pt")["snapshots"]["2"]
    assert torch.equal(shot["codes"], evaluation_codes(run.guide, test, config, "cpu"))  # the final weights' codes
    again = evaluate_test_set(run.vae, run.guide, test, config, "cpu")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_elbo"] == again.terms["elbo"] and metrics["test_kl"] == again.terms["kl"]
    assert torch.equal(again.codes, shot["codes"])


def test_training_flushes_subnormal_floats_and_restores_the_mode_after(tmp_path, data_dir):
    from pyro_vae.workflow import training

    def flushing():  # on this thread (one element is computed here)
        return (torch.tensor([2e-38]) / 100).item() == 0.0

    seen = []
    run_epoch = training.run_epoch

    def watching(*args, **kwargs):
        seen.append(flushing())
        return run_epoch(*args, **kwargs)

    torch.set_flush_denormal(False)
    training.run_epoch = watching
    try:
        train(_small(), tmp_path / "r", data_dir, progress=False, log=lambda line: None)
    finally:
        training.run_epoch = run_epoch
    assert seen == [True, True]  # slow subnormal arithmetic is off while training
    assert not flushing()  # and the caller's mode is back


@pytest.mark.slow
def test_the_cli_flushes_subnormals_on_every_worker_thread():
    """torch.set_flush_denormal sets the calling thread's mode; worker threads take the mode of the thread
    that starts them. The CLI's set-up must reach them: a division over 2 threads flushes every result."""
    import subprocess
    import sys

    probe = ("import torch; from pyro_vae.workflow.streams import flushed_subnormals, flushing\n"
             "with flushed_subnormals():\n    torch.set_num_threads(2); print(flushing())")
    late = ("import torch; from pyro_vae.workflow.streams import flushing; torch.set_num_threads(2); "
            "torch.full((1 << 20,), 1.0) / 3; torch.set_flush_denormal(True); print(flushing())")
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "2"}
    outputs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env).stdout.strip()
               for code in (probe, late)]
    assert outputs[0] == "True"
    if (__import__("os").cpu_count() or 1) > 1:
        assert outputs[1] == "False"  # set after the pool started: its worker thread does not flush


def test_a_run_on_binarized_mnist_draws_its_figures_without_labels(tmp_path, data_dir):
    if not (data_dir / "BinarizedMNIST").is_dir():
        pytest.skip("no BinarizedMNIST folder in the data directory")
    config = _small(data={"dataset": "binarized_mnist"})  # grey-value mode: its pixels are 0 or 1 already
    config.train.snapshot_epochs = [0, 2]
    out = train(config, tmp_path / "r", data_dir, progress=False, log=lambda line: None)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_convention"] == "log_likelihood" and metrics["test_images"] == 200
    figures = {p.name for p in (out / "figures").iterdir()}
    assert {"latent_scatter.png", "posterior_during_training.gif", "reconstructions.png"} <= figures
    assert "interpolation.png" not in figures  # it goes from a test 3 to a test 8: no labels, no such digits


def test_a_mean_field_guide_scores_no_validation_images_and_says_so(tmp_path, data_dir):
    """A mean-field guide has no encoder for held-out images: the run trains without them and without
    early stopping, and one log line says so (so `--set guide.type=mean_field` works on any config)."""
    config = _small(data={"validation_size": 100}, guide={"type": "mean_field", "local_steps": 20},
                    train={"early_stopping": 1})
    config.data.train_size, config.data.test_size = 300, 20  # (the test images' fits are capped at 20 steps)
    lines = []
    out = train(config, tmp_path / "r", data_dir, progress=False, log=lines.append)
    history = json.loads((out / "history.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(history) == 2 and all("valid_loss" not in record for record in history)
    assert "best_epoch" not in metrics and "validation_images" not in metrics
    assert ("guide.type = mean_field has no encoder to score held-out images: the 100 validation images stay out "
            "of training but pick no best epoch, and train.early_stopping = 1 is off") in lines


@pytest.mark.slow
def test_early_stopping_keeps_the_best_epoch_and_its_metrics_are_the_best_weights(tmp_path, data_dir):
    """100 training images and a wide net overfit within a few epochs: the validation loss turns up,
    training stops `early_stopping` epochs after its minimum, and the run's weights and metrics are
    the best epoch's, not the last one's."""
    config = _small(data={"validation_size": 300, "pixels": "dynamic"}, model={"hidden": [256], "z_dim": 4},
                    train={"early_stopping": 3, "lr": 0.01})
    config.data.train_size, config.train.epochs, config.train.batch_size = 100, 60, 20
    lines = []
    out = train(config, tmp_path / "r", data_dir, progress=False, log=lines.append)
    metrics = json.loads((out / "metrics.json").read_text())
    history = json.loads((out / "history.json").read_text())
    losses = [record["valid_loss"] for record in history]
    best = metrics["best_epoch"]
    assert metrics["epochs"] == len(history) < 60 and metrics["epochs"] - best == 3
    assert metrics["valid_loss"] == min(losses) == losses[best - 1] and metrics["validation_images"] == 300
    assert any(line.startswith(f"early stop after epoch {metrics['epochs']} of 60") for line in lines)
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["best"]["epoch"] == best and state["epoch"] == metrics["epochs"]  # resume goes on from the last
    assert metrics["train_loss"] == history[best - 1]["train_loss"]
    run = load_run(out)  # the best weights, with which the metrics were made
    _, test = load_run_data(config, data_dir)
    again = evaluate_test_set(run.vae, run.guide, test, config, "cpu").terms["loss"]
    assert again == pytest.approx(metrics["test_loss"], abs=1e-4)
    assert metrics["test_loss"] != pytest.approx(history[-1]["test_loss"], abs=1e-3)  # not the last epoch's
    assert len(load_run_split(config, True, data_dir)) == 100

    # stopped one epoch after its best (the best weights then only in the checkpoint) and resumed: the same run
    short = copy.deepcopy(config)
    short.train.epochs = best + 1
    train(short, tmp_path / "short", data_dir, progress=False, log=lines.append)
    resumed = resume(tmp_path / "short", ["train.epochs=60"], data_dir, progress=False, log=lines.append)
    assert _without_times(json.loads((resumed / "history.json").read_text())) == _without_times(history)
    again_metrics = json.loads((resumed / "metrics.json").read_text())
    assert {k: again_metrics[k] for k in ("epochs", "best_epoch", "valid_loss", "test_loss")} == {
        k: metrics[k] for k in ("epochs", "best_epoch", "valid_loss", "test_loss")}
    for part in ("vae", "guide"):
        mine, theirs = getattr(load_run(resumed), part).state_dict(), getattr(run, part).state_dict()
        assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    state = load_checkpoint(resumed / "checkpoint.pt")
    del state["best"]
    torch.save(state, resumed / "checkpoint.pt")
    with pytest.raises(CheckpointError, match=rf"lacks the weights of its best epoch {best} \(entry 'best'\)"):
        resume(resumed, ["train.epochs=61"], data_dir, progress=False, log=lines.append)
    assert train_or_resume(config, out, data_dir, progress=False, log=lines.append, redraw=False) is True  # reused
    config.train.early_stopping = 100  # more patience is a longer run: resumed from the last epoch, to the end
    assert train_or_resume(config, out, data_dir, progress=False, log=lines.append, redraw=False) is False
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 60


def test_a_conditional_run_trains_on_labels_and_draws_its_label_figures(tmp_path, data_dir):
    """model.labels = 'input': every step gets the batch's labels, the evaluation is of log p(x | y)
    (the wrong labels score lower), the figures are the samples by label and the style transfer."""
    config = _small(model={"labels": "input", "z_dim": 2}, train={"snapshot_epochs": [0, 2]})
    config.data.pixels = "dynamic"
    lines = []
    run_dir = train(config, tmp_path / "cvae", data_dir, progress=False, log=lines.append)
    figures = {p.name for p in (run_dir / "figures").iterdir()}
    assert {"samples_by_label.png", "style_transfer.png", "latent_scatter.png", "reconstructions.png",
            "posterior_during_training.png"} <= figures
    assert not {"prior_samples.png", "manifold.png", "interpolation.png"} & figures  # they would need a label
    run = load_run(run_dir)
    assert run.vae.conditional
    from pyro_vae.workflow.evaluation import evaluate_run, format_report

    report = evaluate_run(run_dir, 20, data_dir=data_dir, save=False)
    assert "log p(x | y), K=20" in format_report(report)
    test = load_run_split(config, False, data_dir)
    right = evaluate_test_set(run.vae, run.guide, test, config, "cpu").terms["loss"]
    shuffled = ImageData(test.images, (test.labels + 1) % 10, test.pixels)
    assert evaluate_test_set(run.vae, run.guide, shuffled, config, "cpu").terms["loss"] > right + 1

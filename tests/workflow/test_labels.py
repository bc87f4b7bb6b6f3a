"""The label's role in a run: M2's balanced labelled set, its labelled batches, and a whole M2 run."""

import json
import math

import pytest
import torch

from pyro_vae.workflow.config import ConfigError
from pyro_vae.workflow.data import ImageData, load_run_split, load_run_validation
from pyro_vae.workflow.evaluation import evaluate_run, format_report
from pyro_vae.workflow.labels import LabelledBatches, balanced_labelled, baseline_accuracy, training_inputs
from pyro_vae.workflow.runs import load_run
from pyro_vae.workflow.streams import eval_generator
from pyro_vae.workflow.training import resume, train

from ..conftest import REPO
from ..helpers import tiny_config

QUIET = {"progress": False, "log": lambda line: None}


def test_the_labelled_set_is_balanced_and_drawn_by_the_seed():
    labels = torch.arange(1000) % 10
    picked = balanced_labelled(labels, 60, seed=0)
    assert torch.bincount(labels[picked], minlength=10).tolist() == [6] * 10
    assert torch.equal(picked, balanced_labelled(labels, 60, seed=0))
    assert not torch.equal(picked, balanced_labelled(labels, 60, seed=1))
    with pytest.raises(ConfigError, match="cannot be balanced over the 10 classes"):
        balanced_labelled(labels, 65, seed=0)
    with pytest.raises(ConfigError, match="asks for 101 images of digit 0, but the training images hold 100"):
        balanced_labelled(labels, 1010, seed=0)


def test_data_labelled_seed_holds_the_labelled_set_while_train_seed_varies(monkeypatch):
    import pyro_vae.workflow.labels as labels

    images = ImageData((torch.rand(200, 784) < 0.3).float(), torch.arange(200) % 10, "threshold")
    m2 = type("M2", (), {"labels": "latent"})()

    def unlabelled(**data):
        config = _m2_config()
        for key, value in data.items():
            setattr(config.data if key != "seed" else config.train, key, value)
        return training_inputs(m2, images, config)[0].images

    assert torch.equal(unlabelled(labelled_seed=1, seed=11), unlabelled(seed=1))  # the set of train.seed = 1
    assert torch.equal(unlabelled(labelled_seed=1, seed=11), unlabelled(labelled_seed=1, seed=12))
    assert not torch.equal(unlabelled(labelled_seed=1, seed=11), unlabelled(seed=11))
    seeds = []  # the baseline classifier reads the same set
    monkeypatch.setattr(labels, "balanced_labelled", lambda y, count, seed: seeds.append(seed) or torch.arange(count))
    config = _m2_config()
    config.data.labelled, config.data.labelled_seed, config.train.seed = 10, 1, 11
    baseline_accuracy(config, images, images.images[:20], images.labels[:20])
    assert seeds == [1]


def test_labelled_batches_depend_only_on_the_epoch_and_step_and_cycle_through_the_set():
    data = ImageData(torch.rand(30, 4), torch.arange(30) % 10, "dynamic")
    batches = LabelledBatches(data, batch_size=8, seed=3)
    first = [batches(1, step) for step in range(4)]  # 32 rows: every image, then two again
    again = LabelledBatches(data, batch_size=8, seed=3)(1, 2)  # a fresh object (a resumed run) at step 2
    assert all(torch.equal(a, b) for a, b in zip(first[2], again))
    seen = torch.cat([idx for _, idx, _ in first])
    assert set(seen[:30].tolist()) == set(range(30))
    x, idx, y = first[0]
    assert torch.equal(y.argmax(-1), data.labels[idx]) and set(x.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(batches(2, 0)[1], first[0][1])  # another epoch, another order


def test_labelled_every_k_feeds_the_labelled_batch_to_every_kth_step_weighted_to_keep_an_epochs_weight():
    images = ImageData((torch.rand(200, 784) < 0.3).float(), torch.arange(200) % 10, "threshold")
    m2 = type("M2", (), {"labels": "latent"})()
    config = _m2_config()  # 50 labelled of 200: 150 unlabelled, 3 steps of 64 an epoch
    config.train.labelled_every = 2
    data, inputs = training_inputs(m2, images, config)
    batches = LabelledBatches(images.rows(balanced_labelled(images.labels, 50, 0)), 64, 0)
    x, idx, y, weight = inputs(None, 4, 2)  # step 2: the second labelled batch of epoch 4
    assert all(torch.equal(a, b) for a, b in zip((x, idx, y), batches(4, 1))) and weight == 1.5  # 3 steps / 2
    assert inputs(None, 4, 1) == (None, None, None, 0.0)  # between: none
    config.train.labelled_every = 1  # every step: the batch of the step, weighted 1
    *every_step, weight = training_inputs(m2, images, config)[1](None, 4, 2)
    assert all(torch.equal(a, b) for a, b in zip(every_step, batches(4, 2))) and weight == 1.0
    config.train.labelled_every = 4  # more than the 3 steps: step 0's batch alone, weighted 3
    inputs = training_inputs(m2, images, config)[1]
    assert inputs(None, 4, 0)[3] == 3.0 and inputs(None, 4, 1) == inputs(None, 4, 2) == (None, None, None, 0.0)


@pytest.mark.parametrize("steps, every", [(250, 1), (250, 16), (250, 250), (250, 1000), (9, 4)])
def test_the_labelled_steps_of_an_epoch_weigh_what_every_step_would(steps, every):
    from pyro_vae.workflow.labels import labelled_step_weight

    slots = len(range(0, steps, every))  # the steps 0, k, 2k, ... that take the labelled batch
    assert slots * labelled_step_weight(steps, every) == pytest.approx(steps)


def _m2_config(epochs=2):
    config = tiny_config(model={"labels": "latent", "z_dim": 2}, data={"labelled": 50},
                         train={"objective": "trace", "epochs": epochs, "batch_size": 64, "classifier_weight": 5.0})
    config.data.pixels = "dynamic"
    config.data.train_size, config.data.test_size = 600, 100
    return config


@pytest.mark.mnist
def test_an_m2_run_trains_on_both_sets_and_reports_its_accuracy_beside_the_baseline(tmp_path, data_dir, monkeypatch):
    import pyro_vae.workflow.evaluation as evaluation

    run_dir = train(_m2_config(), tmp_path / "m2", data_dir, **QUIET)
    seen = {}

    def accuracy_over_draws(guide, draws, labels, batch_size):  # what the evaluation averages q(y | x) over
        seen["draws"], seen["labels"] = list(draws), labels
        return real(guide, seen["draws"], labels, batch_size)

    real = evaluation.accuracy_over_draws
    monkeypatch.setattr(evaluation, "accuracy_over_draws", accuracy_over_draws)
    history = json.loads((run_dir / "history.json").read_text())
    assert history[-1]["test_accuracy"] > 0.3  # the labelled batches reach q(y | x): well above chance (0.1)
    assert history[-1]["test_elbo"] == pytest.approx(history[-1]["test_recon"] - history[-1]["test_kl"])
    report = evaluate_run(run_dir, 5, data_dir=data_dir, save=False)
    assert report["accuracy"] == pytest.approx(history[-1]["test_accuracy"])  # the same classifier on the same x
    over = report["accuracy_over_draws"]  # dynamic pixels: q(y | x) also averaged over binarizations of each image
    assert over["draws"] == 100 == len(seen["draws"]) and abs(over["value"] - report["accuracy"]) < 0.15
    test = load_run_split(load_run(run_dir).config, False, data_dir)
    draws = torch.stack(seen["draws"])  # (100, N, D): binary, each its own draw, none the scored x
    x = test.observed(eval_generator(load_run(run_dir).config.train.seed)).images
    assert set(draws.unique().tolist()) == {0.0, 1.0} and not torch.equal(draws[0], draws[1])
    assert not any(torch.equal(d, x) for d in draws)
    assert (draws.mean(0) - test.images).abs().max() < 0.5 and (draws.mean(0) - test.images).abs().mean() < 0.02
    assert torch.equal(seen["labels"], test.labels)  # the test images' own labels
    assert report["baseline"]["labelled"] == 50 and report["baseline"]["accuracy"] > 0.3
    assert report["log_likelihood"]["value"] >= report["elbo"]["elbo"] - 1  # y summed out, K = 5 per class
    labels = report["labels"]  # the model's own p(y | x), from the same K = 5 per-class estimates (its values
    assert set(labels) == {"model_accuracy", "agreement", "kl", "kl_stderr", "confusion"}  # are checked on an
    assert math.isfinite(labels["kl"]) and labels["kl"] >= -1e-6  # exact model); a KL of normalised distributions
    confusion = torch.tensor(labels["confusion"])  # q's guesses by true digit, over the 100 test images
    assert confusion.shape == (10, 10) and confusion.sum() == 100
    assert confusion.trace().item() / 100 == pytest.approx(report["accuracy"])
    assert report["settings"]["label_posterior"]  # an M2 evaluation saved without it is not reused
    text = format_report(report)
    assert "accuracy of q(y|x)" in text and "y summed out" in text and "accuracy of p(y|x)" in text
    assert "recall of q(y|x)" in text and "accuracy of mean q(y|x)" in text
    assert report["settings"]["pixel_draws"] == 100  # an M2 evaluation saved before the averaged accuracy is redone
    assert {"samples_by_label.png", "style_transfer.png"} <= {p.name for p in (run_dir / "figures").iterdir()}


@pytest.mark.mnist
def test_an_m2_run_with_a_validation_split_records_the_classifiers_validation_accuracy(tmp_path, data_dir):
    """Each epoch's record holds q(y | x)'s accuracy on the held-out images beside the validation loss, and
    metrics.json the best epoch's (the epoch the validation loss picks)."""
    config = _m2_config(3)
    config.data.validation_size = 200
    run_dir = train(config, tmp_path / "m2", data_dir, **QUIET)
    history = json.loads((run_dir / "history.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert all(0.3 < record["valid_accuracy"] <= 1 for record in history)  # above chance: it is q(y | x)'s
    best = history[metrics["best_epoch"] - 1]
    assert metrics["valid_accuracy"] == best["valid_accuracy"] and metrics["valid_loss"] == best["valid_loss"]
    assert metrics["validation_images"] == 200
    run = load_run(run_dir)  # the best epoch's weights; the held-out images binarized as the evaluation does
    validation = load_run_validation(run.config, data_dir)
    x = validation.observed(eval_generator(run.config.train.seed)).images
    accuracy = (run.guide.predict(x) == validation.labels).float().mean().item()
    assert metrics["valid_accuracy"] == pytest.approx(accuracy, abs=1e-6)  # the held-out images', not the test's


@pytest.mark.mnist
@pytest.mark.slow
@pytest.mark.parametrize("every", [1, 4])
def test_an_m2_run_resumed_equals_one_long_run(tmp_path, data_dir, every):
    """The labelled batches come from (seed, epoch, step), every step's or every 4th's (``train.labelled_every``;
    9 steps an epoch): training 1 epoch then 1 more gives the same weights as 2 at once."""
    from pyro_vae.workflow.checkpoint import load_checkpoint

    configs = [_m2_config(epochs) for epochs in (2, 1)]
    for config in configs:
        config.train.labelled_every = every
    whole = train(configs[0], tmp_path / "whole", data_dir, **QUIET)
    parts = train(configs[1], tmp_path / "parts", data_dir, **QUIET)
    resume(parts, ["train.epochs=2"], data_dir, **QUIET)
    a, b = load_checkpoint(whole / "checkpoint.pt"), load_checkpoint(parts / "checkpoint.pt")
    for entry in ("vae", "guide"):
        assert all(torch.equal(a[entry][k], b[entry][k]) for k in a[entry])
    if every > 1:  # and the labelled batches did come every 4th step: other weights than every step's
        every_step = load_checkpoint(train(_m2_config(2), tmp_path / "every_step", data_dir, **QUIET) / "checkpoint.pt")
        assert any(not torch.equal(a["guide"][k], every_step["guide"][k]) for k in a["guide"])


@pytest.mark.mnist
@pytest.mark.slow
def test_an_m2_sweeps_rows_carry_the_validation_accuracy_and_the_epoch_kept(tmp_path, data_dir):
    """`pyro-vae run` of an M2 sweep with a validation split: each row holds q(y | x)'s accuracy on the
    validation images and the epoch whose weights were evaluated, as the report's accuracy table shows them."""
    from pyro_vae.workflow.experiments import run_experiment
    from pyro_vae.workflow.report import accuracy_table

    text = (REPO / "experiments" / "m2.toml").read_text()
    experiment = tmp_path / "m2_tiny.toml"
    experiment.write_text(text.replace("values = [100, 600, 1000, 3000]", "values = [50, 100]")
                          .replace("num_samples = 100", "num_samples = 3"))
    overrides = ["data.train_size=500", "data.test_size=100", "data.validation_size=200", "model.hidden=[16]",
                 "model.z_dim=2", "train.epochs=2"]
    out = run_experiment(experiment, tmp_path / "out", data_dir, overrides=overrides, **QUIET)
    sweep = json.loads((out / "sweep.json").read_text())
    rows = sweep["rows"]
    assert sweep["labelled_sets"]  # the runs differ in the labelled set alone: the report may pool them
    for row in rows:
        metrics = json.loads((out / row["run"] / "metrics.json").read_text())
        assert row["valid_accuracy"] == metrics["valid_accuracy"] and 0.1 < row["valid_accuracy"] <= 1
        assert row["best_epoch"] == metrics["best_epoch"] in (1, 2)
        history = json.loads((out / row["run"] / "history.json").read_text())
        picked = history[row["best_valid_accuracy"]["epoch"] - 1]  # the tutorial's pick, from the run's own record
        assert picked["valid_accuracy"] == max(r["valid_accuracy"] for r in history)
        assert row["best_valid_accuracy"]["test_accuracy"] == picked["test_accuracy"]
    assert all(0 <= row["accuracy_over_draws"] <= 1 for row in rows)  # dynamic pixels: the averaged accuracy too
    assert (f"| 50 | 2 ({rows[0]['best_epoch']}) | {rows[0]['accuracy']:.4f} | {rows[0]['accuracy_over_draws']:.4f} "
            f"| {rows[0]['valid_accuracy']:.4f} |") in accuracy_table({"key": "data.labelled", "rows": rows})
    assert (out / "accuracy.png").stat().st_size > 0  # the accuracy by labelled-set size, beside sweep.png

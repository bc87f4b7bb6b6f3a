import json
import math
import shutil

import pytest

from pyro_vae.cli import main
from pyro_vae.workflow.config import ConfigError, load_config
from pyro_vae.workflow.experiments import QUICK_OVERRIDES, load_experiment, run_experiment

from ..conftest import REPO

TINY = """
[experiment]
order = {order}
title = "{title}"
reproduces = "a smoke test"
kind = "{kind}"
num_samples = 5
reference = {{loss = 165.0, kl = 3.9, recon = 161.0}}
{sweep}

[data]
pixels = "{pixels}"
train_size = 500
test_size = 100

[model]
hidden = [64]

[train]
epochs = 1
batch_size = 100
{snapshots}
"""


def write_tiny(folder, name, kind="train", pixels="dynamic", order=1, sweep="", snapshots=""):
    """A tiny experiment file (500 training images, 1 epoch) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(TINY.format(order=order, title=name.replace("_", " "), kind=kind, pixels=pixels, sweep=sweep,
                                snapshots=snapshots))
    return path


QUIET = {"progress": False, "log": lambda line: None}


def test_every_experiment_file_loads_with_its_own_place():
    experiments = [load_experiment(p) for p in sorted((REPO / "experiments").glob("*.toml"))]
    titled = [e for e in experiments if e.title]
    assert {e.name for e in titled} >= {"vae_2d", "vae_conv_2d", "vae_3d", "vae_correlated",
                                        "amortized_vs_meanfield", "latent_sweep", "beta_sweep"}
    assert len({e.order for e in titled}) == len(titled)
    sweep = load_experiment("latent_sweep", REPO / "experiments")
    assert [sub for _, sub, _ in sweep.sweep_runs()] == [f"z_dim_{z}" for z in (2, 3, 5, 10, 20, 50)]
    assert sweep.sweep_runs()[0][2] == ["model.z_dim=2"]
    assert load_experiment("vae_2d", REPO / "experiments").config().train.snapshot_epochs == [0, 1, 2, 5, 10, 20]


def test_a_sweep_value_that_is_not_a_valid_config_is_refused_before_training(tmp_path):
    path = write_tiny(tmp_path, "bad", kind="sweep", sweep='sweep = {key = "model.z_dim", values = [2, 0]}')
    with pytest.raises(ConfigError, match="model.z_dim must be >= 1"):
        load_experiment(path)


@pytest.mark.mnist
@pytest.mark.slow
def test_train_experiment_evaluates_and_is_not_trained_twice(tmp_path, data_dir):
    path = write_tiny(tmp_path, "tiny", snapshots="snapshot_epochs = [0, 1]")
    out = run_experiment(path, tmp_path / "runs" / "tiny", data_dir, **QUIET)
    record = json.loads((out / "experiment.json").read_text())
    assert record["command"] == "pyro-vae run tiny" and not record["quick"] and record["wall_seconds"] > 0
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["num_samples"] == 5 and evaluation["log_likelihood"]["value"] < 0
    figures = {p.name for p in (out / "figures").iterdir()}
    assert {"interpolation.png", "reconstructions_over_epochs.png", "posterior_during_training.gif"} <= figures
    checkpoint, record_text = (out / "checkpoint.pt").read_bytes(), (out / "experiment.json").read_text()
    (out / "figures" / "interpolation.png").unlink()
    lines = []
    run_experiment(path, out, data_dir, progress=False, log=lines.append)
    assert any("finished run found, not trained again" in line for line in lines)
    assert (out / "checkpoint.pt").read_bytes() == checkpoint
    assert (out / "experiment.json").read_text() == record_text  # the wall time of the real run is kept
    assert (out / "figures" / "interpolation.png").exists()  # figures redrawn
    (out / "figures" / "interpolation.png").unlink()
    run_experiment(path, out, data_dir, redraw=False, **QUIET)  # a notebook's call: the run only read
    assert not (out / "figures" / "interpolation.png").exists()
    run_experiment(path, out, data_dir, overrides=["train.epochs=2"], **QUIET)  # trains on from epoch 1
    assert len(json.loads((out / "history.json").read_text())) == 2


VARIANTS = 'sweep = {variants = {small = [], wide = ["model.z_dim=4", "model.hidden=[32]"]}}'


@pytest.mark.parametrize("sweep, message", [
    ('sweep = {variants = {small = "model.z_dim=4"}}', "a sweep needs"),
    ('sweep = {variants = {}}', "a sweep needs"),
    ('sweep = {variants = {a = []}, key = "model.z_dim"}', "a sweep needs"),
    ('sweep = {variants = {"a/b" = []}}', "is not a folder name"),
    ('sweep = {variants = {a = ["model.z_dim=0"]}}', "model.z_dim must be >= 1"),
    ('sweep = {key = "z_dim", values = [2]}', "a sweep needs"),
])
def test_a_sweep_that_is_not_well_formed_is_refused_when_loaded(tmp_path, sweep, message):
    with pytest.raises(ConfigError, match=message):
        load_experiment(write_tiny(tmp_path, "bad", kind="sweep", sweep=sweep))


def test_named_variants_apply_their_overrides_and_the_command_line_wins(tmp_path):
    experiment = load_experiment(write_tiny(tmp_path, "variants", kind="sweep", sweep=VARIANTS))
    assert experiment.sweep_key == "variant"
    assert experiment.sweep_runs() == [("small", "small", []), ("wide", "wide", ["model.z_dim=4", "model.hidden=[32]"])]
    assert experiment.config(experiment.sweep_runs()[1][2]).model.hidden == [32]
    assert experiment.config([*experiment.sweep_runs()[1][2], "model.hidden=[8]"]).model.hidden == [8]


def test_a_set_of_the_swept_key_is_refused_before_anything_is_written(tmp_path):
    path = write_tiny(tmp_path, "tiny_sweep", kind="sweep", sweep='sweep = {key = "model.z_dim", values = [2, 4]}')
    with pytest.raises(ConfigError, match="sets the key this experiment sweeps over"):
        run_experiment(path, tmp_path / "sweep", None, overrides=["model.z_dim=3"], **QUIET)
    path = write_tiny(tmp_path, "bad_member", kind="sweep",
                      sweep='sweep = {variants = {fine = [], bad = ["guide.type=\'mean_field\'"]}}')
    with pytest.raises(ConfigError, match="vamp"):  # a cross-field rule broken by the second member only
        run_experiment(path, tmp_path / "bad", None, overrides=["prior.type=vamp"], **QUIET)
    assert not (tmp_path / "sweep").exists() and not (tmp_path / "bad").exists()


@pytest.mark.mnist
@pytest.mark.slow
def test_only_trains_the_named_runs_and_leaves_the_sweep_files_to_the_whole_sweep(tmp_path, data_dir):
    path = write_tiny(tmp_path, "tiny_sweep", kind="sweep", sweep=VARIANTS)
    out = run_experiment(path, tmp_path / "sweep", data_dir, only=["wide"], **QUIET)
    assert sorted(p.name for p in out.iterdir()) == ["wide"]  # no sweep.json, figure or experiment.json yet
    assert load_config(out / "wide" / "config.toml").model.z_dim == 4  # the variant's own config
    assert json.loads((out / "wide" / "evaluation.json").read_text())["num_samples"] == 5  # the file's K
    weights = (out / "wide" / "checkpoint.pt").read_bytes()
    lines = []
    run_experiment(path, out, data_dir, progress=False, log=lines.append)  # the whole sweep trains the rest
    assert (out / "wide" / "checkpoint.pt").read_bytes() == weights
    assert sum("finished run found, not trained again" in line for line in lines) == 1
    assert [r["value"] for r in json.loads((out / "sweep.json").read_text())["rows"]] == ["small", "wide"]
    assert json.loads((out / "experiment.json").read_text())["reused_runs"] == 1
    run_experiment(path, out, data_dir, only="wide", overwrite=True, **QUIET)  # one run trained again: the sweep's
    assert sorted(p.name for p in out.iterdir()) == ["small", "wide"]  # table and figure no longer stand for it


@pytest.mark.mnist
@pytest.mark.slow
def test_sweep_writes_one_run_per_variant_and_the_figure(tmp_path, data_dir):
    path = write_tiny(tmp_path, "tiny_sweep", kind="sweep", sweep=VARIANTS)
    out = run_experiment(path, tmp_path / "sweep", data_dir, **QUIET)
    result = json.loads((out / "sweep.json").read_text())
    assert [r["value"] for r in result["rows"]] == ["small", "wide"] and result["num_samples"] == 5
    assert result["key"] == "variant"
    for row, z_dim in zip(result["rows"], (2, 4)):
        metrics = json.loads((out / row["run"] / "metrics.json").read_text())
        assert row["test_loss"] == metrics["test_loss"] and row["log_likelihood"] < 0 and row["epochs"] == 1
        assert load_config(out / row["run"] / "config.toml").model.z_dim == z_dim
    assert (out / "sweep.png").stat().st_size > 10000
    assert "reused_runs" not in json.loads((out / "experiment.json").read_text())
    shutil.rmtree(out / result["rows"][1]["run"])  # one run to train again, the other found finished
    run_experiment(path, out, data_dir, **QUIET)
    record = json.loads((out / "experiment.json").read_text())
    assert record["reused_runs"] == 1  # its wall time is not what the command takes from scratch
    from pyro_vae.workflow.report import _wall_time

    assert "reusing 1 finished run (not counted in it)" in _wall_time(record)


@pytest.mark.mnist
@pytest.mark.slow
def test_quick_setting_from_the_command_line(tmp_path, data_dir, capsys):
    out = tmp_path / "quick"
    assert main(["run", "vae_2d", "--quick", "--out", str(out), "--data-dir", str(data_dir), "--no-progress"]) == 0
    record = json.loads((out / "experiment.json").read_text())
    assert record["quick"] and record["command"] == "pyro-vae run vae_2d --quick"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_images"] == 1000 and metrics["epochs"] == 2 == int(QUICK_OVERRIDES[2].split("=")[1])
    assert metrics["test_convention"] == "bce"
    assert not (out / "evaluation.json").exists()  # grey values: no log-likelihood to estimate


def test_notebooks_go_through_the_experiments_lifecycle(tmp_path, monkeypatch):
    """A full-length notebook run is :func:`run_experiment` on runs/NAME (which reuses a finished run of
    the same config and refuses another config), never a folder taken on the word of its experiment.json."""
    from pyro_vae.workflow import experiments

    calls = []
    monkeypatch.setattr(experiments, "run_experiment", lambda *args, **kw: calls.append((args, kw)) or args[1])
    (tmp_path / "vae_2d").mkdir()
    (tmp_path / "vae_2d" / "experiment.json").write_text(json.dumps({"quick": False}))
    assert experiments.notebook_run("vae_2d", quick=False, runs_dir=tmp_path).resolve() == tmp_path / "vae_2d"
    name, out = calls[0][0][:2]
    assert len(calls) == 1 and name == "vae_2d" and out.resolve() == tmp_path / "vae_2d"
    assert not calls[0][1].get("quick")
    assert not out.is_absolute()  # relative to the working folder: its log lines, stored, name no machine's folders
    assert calls[0][1]["redraw"] is False  # a notebook reads the figures; it does not draw them again
    monkeypatch.setenv("CI", "1")
    monkeypatch.delenv("PYRO_VAE_QUICK", raising=False)
    assert experiments.quick_requested()
    experiments.notebook_run("vae_2d")
    assert calls[1][1]["quick"] and calls[1][0][1] != tmp_path / "vae_2d"  # a temporary folder
    monkeypatch.setenv("CI", "0")
    assert not experiments.quick_requested()


@pytest.mark.mnist
@pytest.mark.parametrize("name", ["vae_conv_2d", "latent_sweep", "beta_sweep", "nll_binarized",
                                  "anomaly_fashion_mnist", "discrete_codes", "m2_sets_grey"])
@pytest.mark.slow
def test_experiment_smoke_in_the_quick_setting(name, tmp_path, data_dir):
    """The experiments no notebook runs (the notebooks run the others under CI), and what discrete codes report."""
    out = run_experiment(name, tmp_path / name, data_dir, quick=True, **QUIET)
    experiment = load_experiment(name)
    if experiment.kind == "sweep":
        rows = json.loads((out / "sweep.json").read_text())["rows"]
        assert [r["value"] for r in rows] == [value for value, _, _ in experiment.sweep_runs()]
        assert all(math.isfinite(r["test_loss"]) for r in rows)
        assert (out / "sweep.png").exists()
        if name == "discrete_codes":  # a point mass's log p(x) is its ELBO; codes in use where there are codes
            by = {r["value"]: r for r in rows}
            assert "code_usage" not in by["gaussian"] and not by["relaxed"]["point_mass"]
            assert by["vq"]["point_mass"] and by["vq"]["log_likelihood"] == pytest.approx(-by["vq"]["test_loss"],
                                                                                          abs=1e-2)
            assert by["vq"]["code_usage"]["shared"] and not by["relaxed"]["code_usage"]["shared"]
        if name == "m2_sets_grey":  # M2 on grey values: an accuracy per labelled set, no log p(x) (a BCE, no density)
            assert [r["labelled"] for r in rows] == [int(sub.split("_")[1]) for _, sub, _ in experiment.sweep_runs()]
            assert all(0 < r["accuracy"] <= 1 and r["log_likelihood"] is None for r in rows)
            assert (out / "accuracy.png").exists()
    elif experiment.kind == "anomaly":
        scores = json.loads((out / "anomaly.json").read_text())["scores"]  # trained on Fashion-MNIST, MNIST scored
        assert scores["neg_log_likelihood"]["auroc"] < 0.5  # the likelihood prefers the simpler digits
        assert scores["complexity_corrected"]["auroc"] > scores["neg_log_likelihood"]["auroc"] + 0.3
        assert scores["complexity_corrected_webp"]["auroc"] > scores["neg_log_likelihood"]["auroc"] + 0.3
        assert (out / "roc.png").exists() and (out / "score_histograms.png").exists()
        lines = []
        run_experiment(name, out, data_dir, quick=True, progress=False, log=lines.append)
        assert any("scores with the same settings found, not redone" in line for line in lines)
    else:
        assert (out / "figures" / "manifold.png").exists() and (out / "figures" / "latent_scatter.png").exists()


def test_every_shipped_config_takes_every_prior_and_guide_in_one_set():
    """`--set prior.type=P --set guide.type=G` on any experiment file gives a config that builds."""
    from pyro_vae.workflow.build import check_config
    from pyro_vae.workflow.config import load_config
    from pyro_vae.workflow.build import GUIDES, PRIORS
    from pyro_vae.workflow.rules import DISCRETE_GUIDES, DISCRETE_PRIORS

    files = sorted((REPO / "experiments").glob("*.toml"))
    assert len(files) >= 10
    for path in files:
        for prior in PRIORS:
            for guide in GUIDES:
                config = load_config(path, [f"prior.type={prior}", f"guide.type={guide}"])
                if config.model.labels != "none" and (guide != "amortized" or prior == "vamp"):
                    # a model with labels (M2) has its own guide q(y | x) q(z | x, y): refused in one line
                    with pytest.raises(ConfigError, match="feeds the label to the MLP nets|prior.type = 'vamp' mixes"):
                        check_config(config)
                    continue
                if config.model.completion and (prior != "standard" or guide == "mean_field"):
                    # image completion: its prior p(z | x_g) is the model's own, and z needs an encoder
                    refusal = "builds its own prior p\\(z \\| x_g\\)|prior.type = .vamp. mixes"
                    with pytest.raises(ConfigError, match=refusal):
                        check_config(config)
                    continue
                if prior == "vamp" and guide not in ("amortized", "amortized_full"):  # no encoder to mix
                    with pytest.raises(ConfigError, match="prior.type = 'vamp' mixes the guide's Gaussian"):
                        check_config(config)
                    continue
                if (prior in DISCRETE_PRIORS) != (guide in DISCRETE_GUIDES):  # a prior and a guide of other latents
                    with pytest.raises(ConfigError, match="are over different latents"):
                        check_config(config)
                    continue
                if guide == "vq" and config.train.objective not in ("trace", "trace_mean_field"):
                    refusal = "guide.type = 'vq' .a one-hot posterior. trains with its own"
                    with pytest.raises(ConfigError, match=refusal):
                        check_config(config)
                    continue
                check_config(config)


def test_separation_is_sklearns_auroc_and_auprc_on_a_case_worked_by_hand():
    """In-distribution scores 1, 2, 3, anomalies 2.5 and 4: AUROC = P(anomaly > inlier) = (2 + 3) / 6; ranked
    4, 3, 2.5, 2, 1 the anomalies sit at ranks 1 and 3, so AUPRC = (1/1 + 2/3) / 2."""
    import torch

    from pyro_vae.workflow.anomaly import separation

    table, curves = separation({"s": torch.tensor([1.0, 2.0, 3.0])}, {"s": torch.tensor([2.5, 4.0])})
    assert table["s"]["auroc"] == pytest.approx(5 / 6) and table["s"]["auprc"] == pytest.approx((1 + 2 / 3) / 2)
    assert table["s"]["mean_inlier"] == 2.0 and table["s"]["mean_outlier"] == 3.25
    assert curves["s"][2] == table["s"]["auroc"]


@pytest.mark.parametrize("kind, line, message", [
    ("train", 'quick = "data.train_size=10"', "experiment.quick in .* must be a list of 'section.key=value'"),
    ("train", "quick = [3]", "experiment.quick in .* must be a list"),
    ("anomaly", 'anomalies = "cifar10"', "experiment.anomalies in .* must name the dataset of the anomalies"),
])
def test_a_bad_experiment_table_is_refused_when_loaded(tmp_path, kind, line, message):
    with pytest.raises(ConfigError, match=message):
        load_experiment(write_tiny(tmp_path, "bad", kind=kind, sweep=line))


def test_only_runs_that_differ_in_the_labelled_set_alone_are_pooled():
    from pyro_vae.workflow.config import load_config
    from pyro_vae.workflow.experiments import only_labelled_sets_differ

    def members(*overrides):
        return [(o, o, load_config(REPO / "experiments" / "m2.toml", list(o))) for o in overrides]

    assert only_labelled_sets_differ(members(["train.seed=0"], ["train.seed=1", "data.labelled=600"]))
    assert not only_labelled_sets_differ(members(["train.seed=0"], ["train.classifier_weight=0.1"]))
    # data.labelled_seed draws the set apart from the start: other sets are pooled, one set from two starts is not
    assert only_labelled_sets_differ(members(["data.labelled_seed=1"], ["data.labelled_seed=2"]))
    assert not only_labelled_sets_differ(members(["data.labelled_seed=1"], ["data.labelled_seed=1", "train.seed=5"]))
    assert not only_labelled_sets_differ(members(["train.seed=1"], ["data.labelled_seed=1", "train.seed=5"]))

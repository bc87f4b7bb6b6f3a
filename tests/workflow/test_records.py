import json
import shutil

import pytest

from pyro_vae.workflow.checkpoint import CheckpointError, write_json
from pyro_vae.workflow.config import Config, ConfigError, load_config, with_overrides
from pyro_vae.workflow.evaluation import run_settings
from pyro_vae.workflow.experiments import run_experiment
from pyro_vae.workflow.records import RECORD_FILES, copy_record, finished_record, record_dir, restore_records
from pyro_vae.workflow.report import write_report
from pyro_vae.workflow.runs import RunDir, load_run
from pyro_vae.workflow.training import resume

from .test_experiments import VARIANTS, write_tiny


def _config(*overrides: str) -> Config:
    return with_overrides(Config(), ["train.epochs=1", "data.pixels='dynamic'", *overrides])


def _write_run(folder, config: Config, num_samples: int = 5, epochs: int = 1, evaluated: bool = True) -> RunDir:
    """The small files a finished, evaluated run leaves (no weights)."""
    run = RunDir(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config.save(run.config)
    write_json(run.history, [{"epoch": e + 1} for e in range(epochs)])
    write_json(run.metrics, {"epochs": epochs, "train_seconds": 1.0, "test_images": 100, "test_loss": 99.0})
    if evaluated:
        write_json(run.evaluation, {"settings": run_settings(config, epochs, "test", num_samples, 100),
                                    "log_likelihood": {"value": -90.0, "stderr": 0.1}})
    return run


def test_a_record_stands_for_a_member_only_when_it_is_what_the_sweep_would_make(tmp_path):
    config = _config()
    _write_run(tmp_path / "run", config)
    assert finished_record(tmp_path / "run", config, 5)
    assert not finished_record(tmp_path / "run", config, 6)  # evaluated with another K
    assert not finished_record(tmp_path / "run", _config("model.z_dim=3"), 5)  # another config
    assert not finished_record(tmp_path / "run", _config("train.epochs=2"), 5)  # another config
    longer = _config("train.epochs=2")
    _write_run(tmp_path / "stopped", longer)  # one epoch of two, its metrics written (a resume cut short)
    assert not finished_record(tmp_path / "stopped", longer, 5)
    budget = _config("train.epochs=2", "train.max_minutes=0.01")  # stopped by its spent time budget: finished
    _write_run(tmp_path / "budget", budget)
    assert finished_record(tmp_path / "budget", budget, 5)
    assert not finished_record(tmp_path / "missing", config, 5)
    _write_run(tmp_path / "unevaluated", config, evaluated=False)
    assert not finished_record(tmp_path / "unevaluated", config, 5)
    assert finished_record(tmp_path / "unevaluated", config, 0)  # K = 0: no evaluation is made
    grey = _config("data.pixels='grayscale'")  # not a density, no labels, no completion: a sweep evaluates nothing
    _write_run(tmp_path / "grey", grey, evaluated=False)
    assert finished_record(tmp_path / "grey", grey, 5)
    (tmp_path / "run" / "metrics.json").unlink()  # stopped before its end
    assert not finished_record(tmp_path / "run", config, 5)


def test_a_record_is_put_back_only_where_no_run_is(tmp_path):
    experiment = tmp_path / "experiments" / "sweep.toml"
    config, other = _config(), _config("model.z_dim=3")
    members = [("a", "a", config), ("b", "b", config), ("c", "c", other)]
    for sub in ("a", "b", "c"):
        _write_run(record_dir(experiment, "sweep", sub), config)  # c's record was made under another config
    out = tmp_path / "runs" / "sweep"
    (out / "b").mkdir(parents=True)
    (out / "b" / "history.json").write_text("[]")  # a run stopped early: not replaced
    lines = []
    restore_records(experiment, "sweep", members, out, 5, log=lines.append)
    assert sorted(p.name for p in (out / "a").iterdir()) == sorted(getattr(RunDir(out / "a"), f).name
                                                                   for f in RECORD_FILES)
    assert (out / "b" / "history.json").read_text() == "[]" and not (out / "b" / "metrics.json").exists()
    assert not (out / "c").exists()
    assert len(lines) == 1 and str(out / "a") in lines[0]
    shutil.rmtree(out / "a")
    restore_records(experiment, "sweep", members, out, 5, published=["a/figures/samples.png"], log=lines.append)
    assert not (out / "a").exists()  # the experiment publishes its figures, which a record does not hold


def test_a_record_is_replaced_whole(tmp_path):
    config = _config()
    _write_run(tmp_path / "old", config)
    (tmp_path / "new").mkdir()
    config.save(tmp_path / "new" / "config.toml")  # a run of config.toml alone
    copy_record(tmp_path / "old", tmp_path / "kept")
    copy_record(tmp_path / "new", tmp_path / "kept")
    assert [p.name for p in (tmp_path / "kept").iterdir()] == ["config.toml"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left


def test_a_record_has_no_weights_to_load_or_resume(tmp_path):
    _write_run(tmp_path / "run", _config())
    with pytest.raises(CheckpointError, match="holds a finished run's numbers without its weights"):
        load_run(tmp_path / "run")
    with pytest.raises(CheckpointError, match="holds a finished run's numbers without its weights"):
        resume(tmp_path / "run")
    assert (tmp_path / "run" / "metrics.json").exists()  # nothing of the record lost


@pytest.mark.mnist
@pytest.mark.slow
def test_a_sweep_is_finished_from_kept_records_where_its_run_directories_are_gone(tmp_path, data_dir):
    experiments = tmp_path / "experiments"
    path = write_tiny(experiments, "tiny_sweep", kind="sweep", sweep=VARIANTS)
    runs = tmp_path / "runs"
    first = json.loads((run_experiment(path, runs / "tiny_sweep", data_dir, progress=False, log=lambda _: None)
                        / "sweep.json").read_text())
    text = write_report(experiments, runs)
    assert "records of 2 of its 2 runs kept in `experiments/results/tiny_sweep/`" in text
    for sub in ("small", "wide"):
        kept = sorted(p.name for p in (experiments / "results" / "tiny_sweep" / sub).iterdir())
        assert kept == ["config.toml", "evaluation.json", "history.json", "metrics.json"]  # no weights

    shutil.rmtree(runs)  # another machine: the records alone
    shutil.rmtree(experiments / "results" / "tiny_sweep" / "wide")  # and one member never finished
    (experiments / "results" / "tiny_sweep.json").unlink()  # as if the sweep had never been finished
    text = write_report(experiments, runs)  # an unfinished sweep: the report shows what its records hold
    assert "- unfinished: the numbers of 1 of its 2 runs, read from their records" in text
    small = first["rows"][0]["test_loss"]
    assert f"| tiny_sweep: variant = small (100 test images) | 2 | 1 | **{small:.2f}** |" in text
    assert "- (unfinished: 1 of 2 runs)" in text and "variant = wide" not in text
    lines = []
    out = run_experiment(path, runs / "tiny_sweep", data_dir, progress=False, log=lines.append)
    assert sum("restored the record" in line for line in lines) == 1
    assert sum("a finished run's record (no weights)" in line for line in lines) == 1
    assert (out / "wide" / "checkpoint.pt").exists() and not (out / "small" / "checkpoint.pt").exists()
    again = json.loads((out / "sweep.json").read_text())
    assert again["rows"][0] == first["rows"][0]  # the restored member's numbers, as they were
    assert again["rows"][1]["test_loss"] == pytest.approx(first["rows"][1]["test_loss"], abs=1e-3)  # trained again
    assert json.loads((out / "experiment.json").read_text())["reused_runs"] == 1

    kept = {p: p.read_bytes() for p in out.glob("*/*.json")}
    lines.clear()
    run_experiment(path, out, data_dir, progress=False, log=lines.append)  # now all finished: nothing is redone
    assert not any("epoch" in line for line in lines)
    assert {p: p.read_bytes() for p in out.glob("*/*.json")} == kept  # not evaluated again either
    write_report(experiments, runs)
    assert (experiments / "results" / "tiny_sweep" / "wide" / "metrics.json").exists()

    path.write_text(path.read_text().replace("epochs = 1", "epochs = 2"))  # an edited file: the records are stale
    text = write_report(experiments, tmp_path / "no_runs")
    assert "records of" not in text and "- unfinished:" not in text
    lines.clear()
    run_experiment(path, tmp_path / "elsewhere", data_dir, progress=False, log=lines.append)
    assert not any("restored" in line for line in lines)
    assert load_config(tmp_path / "elsewhere" / "small" / "config.toml").train.epochs == 2


@pytest.mark.mnist
@pytest.mark.slow
def test_a_record_that_the_sweep_cannot_use_is_named_not_retrained_silently(tmp_path, data_dir):
    path = write_tiny(tmp_path / "experiments", "tiny_sweep", kind="sweep", sweep=VARIANTS)
    out = run_experiment(path, tmp_path / "runs", data_dir, progress=False, log=lambda _: None)
    for checkpoint in out.glob("*/checkpoint*.pt"):
        checkpoint.unlink()  # records: numbers without weights
    with pytest.raises(ConfigError, match="record without weights that is not this run .* remove"):
        run_experiment(path, out, data_dir, num_samples=7, progress=False, log=lambda _: None)
    shutil.rmtree(out / "small")
    shutil.rmtree(out / "wide")
    run_experiment(path, out, data_dir, num_samples=7, progress=False, log=lambda _: None)
    assert (out / "small" / "checkpoint.pt").exists()


@pytest.mark.mnist
@pytest.mark.slow
def test_a_notebook_trains_what_is_missing_rather_than_restoring_a_record(tmp_path, data_dir):
    experiments = tmp_path / "experiments"
    path = write_tiny(experiments, "tiny_sweep", kind="sweep", sweep=VARIANTS)
    run_experiment(path, tmp_path / "runs" / "tiny_sweep", data_dir, progress=False, log=lambda _: None)
    write_report(experiments, tmp_path / "runs")
    out = run_experiment(path, tmp_path / "again" / "tiny_sweep", data_dir, restore=False, progress=False,
                         log=lambda _: None)
    assert (out / "small" / "checkpoint.pt").exists() and (out / "small" / "figures").is_dir()

import json

import pytest

from pyro_vae.cli import main
from pyro_vae.workflow.experiments import run_experiment
from pyro_vae.workflow.report import GENERATED_NOTE, write_report

from .test_experiments import QUIET, write_tiny

pytestmark = pytest.mark.mnist


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_dir):
    """An experiments folder with a binarized run, a grey-value run (quick) and one never run."""
    root = tmp_path_factory.mktemp("report")
    experiments, runs = root / "experiments", root / "runs"
    run_experiment(write_tiny(experiments, "binarized", order=1), runs / "binarized", data_dir, **QUIET)
    run_experiment(write_tiny(experiments, "grey", pixels="grayscale", order=2), runs / "grey", data_dir,
                   quick=True, overrides=["data.train_size=500", "train.epochs=1"], **QUIET)
    write_tiny(experiments, "never_run", order=3)
    return experiments, runs


def test_the_table_holds_the_measured_numbers_beside_the_reference(finished):
    experiments, runs = finished
    text = write_report(experiments, runs)
    assert text.startswith(GENERATED_NOTE)
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    metrics = json.loads((runs / "binarized" / "metrics.json").read_text())
    evaluation = json.loads((runs / "binarized" / "evaluation.json").read_text())
    binarized = rows["binarized (100 test images)"]
    assert f"**{metrics['test_loss']:.2f}**" in binarized and f"{metrics['test_kl']:.2f}" in binarized
    assert f"{-metrics['test_recon']:.2f}" in binarized
    assert f"{evaluation['log_likelihood']['value']:.2f} +- " in binarized and "(K = 5)" in binarized
    assert "~165 / ~3.9 / ~161" in binarized
    grey = rows["grey (300 test images) (quick setting)"]
    assert "n/a: grey values (BCE)" in grey
    assert "not run" in rows["never_run"]
    assert text.index("### 1. binarized") < text.index("### 2. grey") < text.index("### 3. never run")
    assert "`figures/interpolation.png`" in text and "- not run yet" in text


def test_report_command_writes_the_readme(finished, capsys):
    experiments, runs = finished
    assert main(["report", "--experiments", str(experiments), "--runs", str(runs)]) == 0
    assert (experiments / "README.md").read_text() == write_report(experiments, runs)
    assert main(["report", "--experiments", str(experiments), "--runs", str(runs), "--out", "-"]) == 0
    assert "## Results" in capsys.readouterr().out


def test_key_figures_are_published_from_full_runs_only_and_stay_small(tmp_path):
    from PIL import Image

    from pyro_vae.workflow.experiments import Experiment
    from pyro_vae.workflow.report import PUBLISHED_WIDTH, publish_figures

    from ..conftest import REPO

    experiment = Experiment(name="demo", path=tmp_path / "demo.toml", figures=["figures/big.png"])
    run = tmp_path / "runs" / "demo"
    (run / "figures").mkdir(parents=True)
    Image.new("RGB", (1500, 900), "white").save(run / "figures" / "big.png")
    (run / "experiment.json").write_text(json.dumps({"quick": True}))
    assert publish_figures(experiment, tmp_path / "runs", tmp_path / "experiments") == []  # a smoke run's
    (run / "experiment.json").write_text(json.dumps({"quick": False}))
    published = publish_figures(experiment, tmp_path / "runs", tmp_path / "experiments")
    assert [p.as_posix() for p in published] == ["figures/demo/big.png"]
    with Image.open(tmp_path / "experiments" / published[0]) as image:
        assert image.width == PUBLISHED_WIDTH
    committed = sum(p.stat().st_size for p in (REPO / "experiments" / "figures").rglob("*.png"))
    assert 0 < committed <= 2 * 1024**2


def test_full_runs_results_are_saved_so_the_report_is_made_again_without_runs(finished, tmp_path):
    import shutil

    experiments, runs = finished
    with_runs = write_report(experiments, runs)
    saved = json.loads((experiments / "results" / "binarized.json").read_text())
    metrics = json.loads((runs / "binarized" / "metrics.json").read_text())
    assert saved["rows"][0]["loss"] == metrics["test_loss"]
    assert not (experiments / "results" / "grey.json").exists()  # a quick run's numbers are never saved
    copy = tmp_path / "experiments"
    shutil.copytree(experiments, copy)
    without_runs = write_report(copy, tmp_path / "no_runs")
    row = next(line for line in without_runs.splitlines() if line.startswith("| binarized"))
    assert row == next(line for line in with_runs.splitlines() if line.startswith("| binarized"))
    assert "numbers read from `experiments/results/binarized.json`" in without_runs
    assert "| grey | | | not run |" in without_runs
    older = copy / "results" / "binarized.json"  # saved before guide.flows existed: the default keeps its meaning
    saved_by_older = json.loads(older.read_text())
    del saved_by_older["config"]["guide"]["flows"]
    older.write_text(json.dumps(saved_by_older))
    assert write_report(copy, tmp_path / "no_runs") == without_runs
    toml = copy / "binarized.toml"
    original = toml.read_text()
    toml.write_text(original.replace('title = "binarized"', 'title = "binarized, renamed"'))
    assert "binarized, renamed" in write_report(copy, tmp_path / "no_runs")  # how it is presented: still saved
    assert "| binarized | | | not run |" not in write_report(copy, tmp_path / "no_runs")
    toml.write_text(original.replace("num_samples = 5", "num_samples = 50"))  # its [experiment] table measures
    assert "| binarized | | | not run |" in write_report(copy, tmp_path / "no_runs")  # otherwise: stale
    toml.write_text(original)
    del saved_by_older["settings"]  # saved without the table's settings: nothing says which made it
    older.write_text(json.dumps(saved_by_older))
    assert "| binarized | | | not run |" in write_report(copy, tmp_path / "no_runs")
    older.write_text(json.dumps({**saved_by_older, "settings": saved["settings"]}))
    assert write_report(copy, tmp_path / "no_runs") == without_runs
    # an edited experiment file: its saved numbers no longer stand for it
    toml.write_text(toml.read_text().replace("[train]\n", "[train]\nseed = 7\n", 1))
    assert "seed = 7" in toml.read_text()
    assert "| binarized | | | not run |" in write_report(copy, tmp_path / "no_runs")


def test_the_accuracy_table_puts_the_tutorial_beside_each_labelled_set_size():
    from pyro_vae.workflow.report import accuracy_table

    sweep = {"key": "data.labelled", "rows": [
        {"value": 100, "epochs": 50, "accuracy": 0.812, "baseline_accuracy": 0.7291, "model_accuracy": 0.7654,
         "accuracy_over_draws": 0.8151,  # q(y | x) averaged over binarizations of each test image
         "best_epoch": 48, "valid_accuracy": 0.8213,  # a validation split picked epoch 48's weights
         "best_valid_accuracy": {"epoch": 44, "valid_accuracy": 0.8301, "test_accuracy": 0.8177}},
        {"value": 250, "epochs": 50, "accuracy": 0.9}]}  # no validation split, no model's p(y | x)
    table = accuracy_table(sweep)
    assert ("| 100 | 50 (48) | 0.8120 | 0.8151 | 0.8213 | 0.8177 (44) | 0.7654 | 0.7291 | 0.9319 +- 0.0060, 0.7712 +- "
            "0.0159 |" in table)
    assert "| 250 | 50 | 0.9000 | - | - | - | - | - | - |" in table
    heading, separator = table.splitlines()[:2]
    assert separator.count("---") == heading.count(" | ") + 1 == 9  # a cell under every heading
    assert "(95% bound) |" not in table  # a sweep over the labelled-set size has no row of means


def test_a_seed_sweeps_accuracy_table_ends_in_the_means_over_its_seeds_beside_the_tutorials():
    from pyro_vae.workflow.report import accuracy_table

    rows = [{"value": seed, "epochs": 10, "accuracy": accuracy, "accuracy_over_draws": accuracy + 0.01,
             "baseline_accuracy": 0.7, "valid_accuracy": 0.9, "labelled": 100}
            for seed, accuracy in enumerate([0.90, 0.92, 0.94])]
    table = accuracy_table({"key": "train.seed", "rows": rows, "labelled_sets": True})
    # mean 0.92, s = 0.02, t_{0.975, 2} = 4.3027: 4.3027 * 0.02 / sqrt(3) = 0.0497; constant columns bound 0
    assert ("| mean of 3 with 100 labels (95% bound) | | 0.9200 +- 0.0497 | 0.9300 +- 0.0497 | 0.9000 +- 0.0000 "
            "| - | - "
            "| 0.7000 +- 0.0000 | 0.9319 +- 0.0060, 0.7712 +- 0.0159 |") in table
    assert all(line.endswith("| 0.7000 | - |") for line in table.splitlines()[2:5])  # no anchor on a seed's row
    # the difference from the tutorial's means (Welch): q(y | x) against its M2, the baseline against its baseline
    assert "| difference from the tutorial with 100 labels (Welch, 95%) | | -0.0119 +- " in table
    assert " | -0.0019 +- " in table  # averaged over binarizations, against the tutorial's M2 too
    # a constant column leaves only the tutorial's spread: its own bound, 0.0159, back
    assert table.rstrip().endswith("| - | - | - | -0.0712 +- 0.0159 | |")
    other = [{**row, "labelled": 250} for row in rows]  # a size the tutorial has no numbers for: no difference
    assert accuracy_table({"key": "train.seed", "rows": other, "labelled_sets": True}).rstrip().endswith(
        "| 0.7000 +- 0.0000 | - |")


def test_a_sweep_over_another_setting_is_not_pooled_as_if_its_runs_were_labelled_sets():
    """Runs that differ in more than the labelled set drawn (here the classifier's weight) are different recipes:
    no mean, no difference, the tutorial's numbers on each row."""
    from pyro_vae.workflow.report import accuracy_table

    rows = [{"value": w, "epochs": 10, "accuracy": a, "baseline_accuracy": 0.7, "labelled": 100}
            for w, a in [(0.1, 0.53), (5.0, 0.92)]]
    for flag in ({"labelled_sets": False}, {}):  # (a sweep.json written before the flag: not pooled either)
        table = accuracy_table({"key": "train.classifier_weight", "rows": rows, **flag})
        assert "| mean of" not in table and "difference" not in table
        assert all(line.endswith("| 0.9319 +- 0.0060, 0.7712 +- 0.0159 |") for line in table.splitlines()[2:])


def test_an_accuracy_tables_rows_of_several_sizes_get_a_mean_for_each_size():
    """Named variants over labelled-set sizes and seeds (experiments/m2_sets.toml): a mean and a difference per
    size with several sets, the tutorial's numbers on the row of a size with one set."""
    from pyro_vae.workflow.label_sets import accuracy_summary
    from pyro_vae.workflow.report import accuracy_table

    rows = [{"value": f"labelled_{size}_seed_{seed}", "epochs": 10, "accuracy": accuracy, "baseline_accuracy": 0.8,
             "labelled": size} for size, seed, accuracy in [(100, 0, 0.90), (100, 1, 0.94), (1000, 0, 0.95)]]
    table = accuracy_table({"key": "variant", "rows": rows, "labelled_sets": True}).splitlines()
    assert table[0].startswith("| variant | epochs (weights of) | accuracy of q(y \\| x) |")
    assert [line.split(" | ")[0] for line in table[2:]] == [
        "| labelled_100_seed_0", "| labelled_100_seed_1", "| mean of 2 with 100 labels (95% bound)",
        "| difference from the tutorial with 100 labels (Welch, 95%)", "| labelled_1000_seed_0"]
    assert table[2].endswith("| - |") and table[6].endswith("| 0.9487 +- 0.0038, 0.8863 +- 0.0025 |")
    # mean 0.92, s = 0.0283, t_{0.975, 1} = 12.706: 12.706 * 0.0283 / sqrt(2) = 0.2541
    assert table[4].startswith("| mean of 2 with 100 labels (95% bound) | | 0.9200 +- 0.2541 | - |")
    summary = accuracy_summary({"key": "variant", "rows": rows, "labelled_sets": True})
    assert [(s["labelled"], s["sets"], s["baseline_sets"]) for s in summary] == [
        (100, [0.90, 0.94], [0.8, 0.8]), (1000, [0.95], [0.8])]
    assert summary[0]["mean"] == pytest.approx((0.92, 0.2541), abs=1e-4) and summary[1]["mean"] == (0.95, None)


def test_the_tutorials_pick_is_the_first_epoch_of_the_best_validation_accuracy():
    from pyro_vae.workflow.runs import best_accuracy_epoch

    history = [{"epoch": 1, "valid_accuracy": 0.80, "test_accuracy": 0.79},
               {"epoch": 2, "valid_accuracy": 0.85, "test_accuracy": 0.83},
               {"epoch": 3, "valid_accuracy": 0.84, "test_accuracy": 0.86},
               {"epoch": 4, "valid_accuracy": 0.85, "test_accuracy": 0.88}]  # a tie: the first is kept
    assert best_accuracy_epoch(history) == {"epoch": 2, "valid_accuracy": 0.85, "test_accuracy": 0.83}
    assert best_accuracy_epoch([{"epoch": 1, "valid_loss": 90.0}]) is None  # no validation accuracy recorded


def test_the_codes_table_puts_code_usage_beside_each_bound():
    from pyro_vae.workflow.report import codes_table

    usage = {"perplexity": 41.25, "position_perplexity": 12.0, "dead_codes": 3, "codes": 64, "positions": 16,
             "shared": True}
    per_position = {"perplexity": 8.5, "position_perplexity": 8.5, "dead_codes": 4, "codes": 10, "positions": 20,
                    "shared": False}
    sweep = {"key": "experiment.variant", "num_samples": 1000, "rows": [
        {"value": "gaussian", "epochs": 30, "test_recon": -72.5, "test_kl": 24.0, "test_loss": 96.5,
         "log_likelihood": -91.0, "log_likelihood_stderr": 0.25},
        {"value": "vq", "epochs": 30, "test_recon": -60.0, "test_kl": 66.54, "test_loss": 126.54,
         "log_likelihood": -126.54, "log_likelihood_stderr": 0.3, "code_usage": usage, "point_mass": True},
        {"value": "relaxed", "epochs": 30, "test_recon": -88.0, "test_kl": 19.0, "test_loss": 107.0,
         "log_likelihood": -96.0, "log_likelihood_stderr": 0.26, "code_usage": per_position, "point_mass": False}]}
    table = codes_table(sweep)
    assert "| gaussian | 30 | 72.50 | 24.00 | 96.50 | -91.00 +- 0.25 (1,000) | - |" in table
    assert ("| vq | 30 | 60.00 | 66.54 | 126.54 | -126.54 +- 0.30 (1) | perplexity 41.2 of 64 codes (3 dead), per "
            "position 12.0 |") in table
    assert ("| relaxed | 30 | 88.00 | 19.00 | 107.00 | -96.00 +- 0.26 (1,000) | perplexity per position 8.5 of 10 "
            "classes (4 of 200 (position, class) pairs unused) |") in table


def test_key_figures_of_the_same_name_from_two_member_runs_are_published_apart():
    from pyro_vae.workflow.report import published_name

    names = ["sweep.png", "vq/figures/prior_samples.png", "relaxed/figures/prior_samples.png", "cvae/figures/s.png"]
    assert [published_name(n, names) for n in names] == ["sweep.png", "vq_prior_samples.png",
                                                         "relaxed_prior_samples.png", "s.png"]


def test_a_run_made_under_other_settings_than_the_file_s_is_shown_as_such_and_never_saved(finished, tmp_path):
    import shutil

    experiments, runs = finished
    copy, runs_copy = tmp_path / "experiments", tmp_path / "runs"
    shutil.copytree(experiments, copy)
    shutil.copytree(runs, runs_copy)
    record = json.loads((runs_copy / "binarized" / "experiment.json").read_text())
    assert record["settings"]["num_samples"] == 5 and record["config"]["data"]["train_size"] == 500
    saved_path = copy / "results" / "binarized.json"
    write_report(copy, runs_copy)
    saved = saved_path.read_text()
    toml = copy / "binarized.toml"
    toml.write_text(toml.read_text().replace("num_samples = 5", "num_samples = 50"))  # edited after the run
    text = write_report(copy, runs_copy)
    assert "was made under other settings than this file's" in text and saved_path.read_text() == saved
    assert "`pyro-vae run binarized` makes it again" in text
    toml.write_text(toml.read_text().replace("num_samples = 50", "num_samples = 5"))
    assert "made under other settings" not in write_report(copy, runs_copy)
    del record["settings"]  # a run recorded before runs kept their settings: nothing says which file made it
    (runs_copy / "binarized" / "experiment.json").write_text(json.dumps(record))
    text = write_report(copy, runs_copy)
    assert "numbers read from `experiments/results/binarized.json`" in text  # the saved results stand for the file
    assert "was made under other settings than this file's" in text  # and the run beside them is said not to
    saved_path.unlink()
    assert "was made under other settings than this file's" in write_report(copy, runs_copy)


def test_an_experiment_run_again_over_finished_runs_records_their_settings(finished, tmp_path, data_dir):
    import shutil

    experiments, runs = finished
    runs_copy = tmp_path / "runs"
    shutil.copytree(runs, runs_copy)
    path = runs_copy / "binarized" / "experiment.json"
    record = json.loads(path.read_text())
    del record["settings"], record["config"]
    path.write_text(json.dumps(record))
    lines = []
    run_experiment(experiments / "binarized.toml", runs_copy / "binarized", data_dir, progress=False, log=lines.append)
    assert lines[-1].endswith("experiment.json updated to these settings")
    again = json.loads(path.read_text())
    assert again["settings"]["num_samples"] == 5 and again["config"]["data"]["train_size"] == 500
    assert again["command"] == record["command"] and again["wall_seconds"] == record["wall_seconds"]  # kept
    run_experiment(experiments / "binarized.toml", runs_copy / "binarized", data_dir, progress=False, log=lines.append)
    assert json.loads(path.read_text()) == again  # nothing new to record: left as it was
    assert lines[-1].endswith("experiment.json kept")


def test_every_committed_result_stands_for_its_experiment_file_as_it_is():
    """A saved result whose experiment file was edited since (its config or its [experiment] settings) would
    drop out of the report; every committed one is current."""
    from pyro_vae.workflow.experiments import load_experiment
    from pyro_vae.workflow.report import stands_for

    from ..conftest import REPO

    saved = sorted((REPO / "experiments" / "results").glob("*.json"))
    assert saved
    for path in saved:
        assert stands_for(json.loads(path.read_text()), load_experiment(REPO / "experiments" / f"{path.stem}.toml")), \
            f"{path.name}: its experiment file was edited since; run `pyro-vae run {path.stem}` and `pyro-vae report`"


M2_SETS = """
[experiment]
order = 1
title = "m2 sets"
reproduces = "an unfinished sweep"
kind = "sweep"
num_samples = 5

[experiment.sweep.variants]
a = ["train.seed=1"]
b = ["train.seed=2"]
c = ["train.seed=3"]

[data]
pixels = "dynamic"
train_size = 500
test_size = 100
labelled = 100

[model]
labels = "latent"

[train]
epochs = 1
"""


def _record_m2(experiment_path, sub: str, accuracy: float) -> None:
    from pyro_vae.workflow.experiments import load_experiment, sweep_members
    from pyro_vae.workflow.records import record_dir

    from .test_records import _write_run

    config = {s: c for _, s, c in sweep_members(load_experiment(experiment_path), ())}[sub]
    run = _write_run(record_dir(experiment_path, "m2_sets", sub), config)
    evaluation = json.loads(run.evaluation.read_text())
    evaluation.update(split="test", images=100, num_samples=5, accuracy=accuracy,
                      baseline={"accuracy": 0.7, "labelled": 100})
    run.evaluation.write_text(json.dumps(evaluation))
    metrics = json.loads(run.metrics.read_text())
    metrics.update(test_recon=-90.0, test_kl=9.0)
    run.metrics.write_text(json.dumps(metrics))


def test_an_unfinished_sweep_is_shown_from_its_records_and_marked_so(tmp_path):
    experiments, runs = tmp_path / "experiments", tmp_path / "runs"
    experiments.mkdir()
    path = experiments / "m2_sets.toml"
    path.write_text(M2_SETS)
    _record_m2(path, "a", 0.90)
    _record_m2(path, "b", 0.92)
    text = write_report(experiments, runs)
    assert "- unfinished: the numbers of 2 of its 3 runs, read from their records in `experiments/results/m2_sets/`" \
        in text
    assert "a mean below pools the runs of its labelled-set size finished so far" in text
    assert "| m2_sets: variant = a (100 test images) | 2 | 1 | **99.00** |" in text
    assert "- (unfinished: 2 of 3 runs)" in text and "variant = c" not in text
    assert "| mean of 2 with 100 labels (95% bound) | | 0.9100 +- 0.1271 |" in text
    (runs / "m2_sets").mkdir(parents=True)  # a quick run's sweep does not hide the records
    (runs / "m2_sets" / "sweep.json").write_text(json.dumps({"key": "variant", "rows": []}))
    (runs / "m2_sets" / "experiment.json").write_text(json.dumps({"quick": True}))
    assert "- unfinished: the numbers of 2 of its 3 runs" in write_report(experiments, runs)
    path.write_text(M2_SETS.replace("epochs = 1", "epochs = 2"))  # an edited file: its records stand for nothing
    text = write_report(experiments, tmp_path / "no_runs")
    assert "- unfinished:" not in text and "| m2_sets | | | not run |" in text

import json

import pytest

from pyro_vae.cli import main
from pyro_vae.infer.local_fit import FLOW_FIT
from pyro_vae.workflow.config import ConfigError
from pyro_vae.workflow.evaluation import evaluate_run, flows_source, format_report
from pyro_vae.workflow.training import train

from ..helpers import tiny_config

pytestmark = pytest.mark.mnist
QUIET = {"progress": False, "log": lambda line: None}


def _run(tmp_path, data_dir, name, **sections):
    config = tiny_config(**sections)
    config.data.pixels = sections.get("data", {}).get("pixels", "dynamic")
    config.data.train_size, config.data.test_size = 2000, 200
    config.model.hidden = [128]
    config.train.epochs, config.train.batch_size, config.train.lr = 2, 64, 3e-3
    return train(config, tmp_path / name, data_dir, **QUIET)


@pytest.fixture(scope="module")
def amortized_run(tmp_path_factory, data_dir):
    return _run(tmp_path_factory.mktemp("study"), data_dir, "amortized")


@pytest.mark.slow
def test_evaluation_report(amortized_run, data_dir):
    report = evaluate_run(amortized_run, num_samples=200, data_dir=data_dir, gap=True)
    assert json.loads((amortized_run / "evaluation.json").read_text())["num_samples"] == 200
    assert report["images"] == 200 and report["convention"] == "log_likelihood"
    ll, iwae, elbo = report["log_likelihood"]["value"], report["iwae"], report["elbo"]["elbo"]
    assert ll > iwae["10"] > iwae["1"] and report["log_likelihood"]["stderr"] > 0
    # L_1 is the ELBO: two one-sample estimates on other draws, whose difference has a standard error of
    # about 1 nat on 200 images of this barely trained model (a missing term would be off by tens of nats)
    assert abs(iwae["1"] - elbo) < 3.0
    gap = report["gap"]
    assert gap["amortization_gap"] > 3 * gap["amortization_gap_stderr"]  # q* beats the encoder it starts from
    assert gap["approximation_gap"] > -3 * gap["approximation_gap_stderr"]  # log p(x) >= L[q*] within noise
    assert gap["local_fit"]["stopped_on_tolerance"] == 1 and gap["local_fit"]["stopped_on_cap"] == 0
    assert abs(gap["convergence"]["gain"]) < 0.1  # the stopping rule left little to gain
    assert report["log_likelihood"]["proposal"].startswith("defensive mixture")


def test_grey_values_get_no_log_likelihood(tmp_path, data_dir):
    run = _run(tmp_path, data_dir, "grey", data={"pixels": "grayscale"})
    report = evaluate_run(run, num_samples=10, data_dir=data_dir)
    assert report["log_likelihood"] is None and "not a normalised log-density" in report["note"]
    with pytest.raises(ConfigError, match="needs a proper likelihood"):
        evaluate_run(run, num_samples=10, data_dir=data_dir, gap=True)


@pytest.mark.slow
def test_mean_field_run_is_fitted_on_the_test_set(tmp_path, data_dir):
    run = _run(tmp_path, data_dir, "mf", guide={"type": "mean_field"})
    report = evaluate_run(run, num_samples=50, data_dir=data_dir)
    assert report["local_fit"]["stopped_on_tolerance"] == 1 and report["log_likelihood"]["value"] < 0
    train_report = evaluate_run(run, num_samples=20, split="train", data_dir=data_dir, limit=100)
    assert "local_fit" not in train_report and train_report["images"] == 100  # its own rows
    with pytest.raises(ConfigError, match="needs an amortized guide"):
        evaluate_run(run, num_samples=10, data_dir=data_dir, gap=True)


def test_evaluate_command(amortized_run, data_dir, capsys):
    assert main(["evaluate", "--run", str(amortized_run), "--num-samples", "20", "--limit", "50",
                 "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "log p(x), K=20" in out and "IWAE bound, K=10" in out and "active units" in out
    assert main(["evaluate", "--run", str(amortized_run), "--split", "valid", "--data-dir", str(data_dir)]) == 2
    assert "unknown split 'valid'; valid splits: test, train" in capsys.readouterr().err
    assert main(["evaluate", "--run", str(amortized_run), "--num-samples", "0"]) == 2


def test_a_tiny_comparison_writes_both_runs_and_its_table(tmp_path, data_dir):
    """The fast tier's pass through compare(): both halves in RunDir.COMPARED subfolders, the table."""
    from pyro_vae.workflow.compare import comparison_table, compare
    from pyro_vae.workflow.runs import RunDir

    config = tmp_path / "c.toml"
    config.write_text('[data]\npixels = "dynamic"\ntrain_size = 256\ntest_size = 20\n[model]\nz_dim = 2\n'
                      "hidden = [16]\n[guide]\nlocal_steps = 10\n[train]\nepochs = 1\nbatch_size = 64\n")
    result = compare(config, tmp_path / "cmp", data_dir, num_samples=5, limit=20, progress=False,
                     log=lambda line: None)
    assert all((tmp_path / "cmp" / kind / "metrics.json").is_file() for kind in RunDir.COMPARED)
    table = comparison_table(result)
    assert table == (tmp_path / "cmp" / "comparison.md").read_text()
    assert "| 1 epochs, 20 test images, K = 5 | amortized | mean-field |" in table
    assert result["mean_field"]["test_local_fit"]["steps_max"] <= 10


@pytest.mark.slow
def test_compare_amortized_and_mean_field(tmp_path, data_dir, capsys):
    from pyro_vae.workflow.compare import compare

    config = tmp_path / "c.toml"
    config.write_text(
        '[data]\npixels = "dynamic"\ntrain_size = 1500\ntest_size = 300\n[model]\nz_dim = 3\nhidden = [64]\n'
        "[guide]\nlocal_steps = 20\n[train]\nepochs = 2\nbatch_size = 64\nlr = 3e-3\n"
    )
    result = compare(config, tmp_path / "cmp", data_dir, num_samples=30, limit=60, progress=False,
                     log=lambda line: None)
    a, m = result["amortized"], result["mean_field"]
    assert a["variational_parameters"] > m["variational_parameters"] == 2 * 1500 * 3
    assert m["test_local_fit"]["steps_max"] <= 20 and a["test_local_fit"] is None
    assert m["local_fit_steps_for_one_image"] > 0  # a real fit, gradients on
    assert a["seconds_to_infer_one_image"] < m["seconds_to_infer_one_image"]
    assert a["gap"]["elbo_amortized"] == pytest.approx(a["test_elbo"], abs=2.0)  # 100 samples vs 1, same q
    table = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "| amortization gap L[q*] - L[q amortized] |" in table and "K = 30" in table
    assert (tmp_path / "cmp" / "amortization_gap.png").stat().st_size > 5000
    assert json.loads((tmp_path / "cmp" / "comparison.json").read_text())["test_images"] == 60
    evaluations = {kind: (tmp_path / "cmp" / kind / "evaluation.json").read_text() for kind in result if
                   kind in ("amortized", "mean_field")}
    assert all(json.loads(text)["split"] == "test" for text in evaluations.values())  # not the train report
    lines = []
    again = compare(config, tmp_path / "cmp", data_dir, num_samples=30, limit=60, progress=False, log=lines.append)
    assert sum("found, not redone" in line for line in lines) == 2  # the K = 30 evaluations are reused
    assert sum("finished run found, not trained again" in line for line in lines) == 2
    for key in ("test_elbo", "test_log_likelihood", "gap", "variational_parameters"):
        assert again["amortized"][key] == a[key] and again["mean_field"][key] == m[key]
    with pytest.raises(ConfigError, match=r"holds a run with another config \(train.lr\)"):
        compare(config, tmp_path / "cmp", data_dir, num_samples=30, limit=60, overrides=["train.lr=0.01"],
                progress=False, log=lines.append)  # a changed config is never silently reused
    # another K or image count is another evaluation: the saved one is not taken for it
    from pyro_vae.workflow.evaluation import evaluation_settings, finished_evaluation
    from pyro_vae.workflow.runs import load_run

    run = load_run(tmp_path / "cmp" / "amortized")
    assert finished_evaluation(run.dir, evaluation_settings(run, "test", 30, 60, gap=True)) is not None
    assert finished_evaluation(run.dir, evaluation_settings(run, "test", 40, 60, gap=True)) is None
    assert finished_evaluation(run.dir, evaluation_settings(run, "test", 30, 61, gap=True)) is None
    saved = json.loads(run.dir.evaluation.read_text())
    assert saved["settings"]["check_images"] == saved["gap"]["convergence"]["images"] == 10
    del saved["settings"]["config"]["model"]["activation"]  # saved before model.activation existed: still equal
    run.dir.evaluation.write_text(json.dumps(saved))
    assert finished_evaluation(run.dir, evaluation_settings(run, "test", 30, 60, gap=True)) is not None
    del saved["settings"]["check_images"]  # an evaluation saved before the check's image count was recorded
    run.dir.evaluation.write_text(json.dumps(saved))
    assert finished_evaluation(run.dir, evaluation_settings(run, "test", 30, 60, gap=True)) is None


def test_a_guide_without_a_local_family_is_refused():
    from pyro_vae.models.guides import Guide
    from pyro_vae.workflow.config import Config
    from pyro_vae.workflow.evaluation import measure_gap
    from pyro_vae.workflow.runs import Run

    from ..helpers import linear_gaussian

    vae, *_ = linear_gaussian(n=4)

    class Flow(Guide):
        amortized = True

    run = Run(dir=None, config=Config(), vae=vae, guide=Flow(4))
    with pytest.raises(ConfigError, match="needs q\\* in the guide's family"):
        measure_gap(run, None)


@pytest.mark.slow
def test_the_gap_of_a_flow_guide_fits_q_star_in_the_flow_family(tmp_path, data_dir):
    config = tiny_config(guide={"type": "iaf", "local_steps": 30})
    config.data.train_size, config.data.test_size, config.train.epochs = 64, 32, 1
    out = train(config, tmp_path / "r", data_dir, progress=False, log=lambda line: None)
    flow = evaluate_run(out, 10, "test", data_dir, gap=True)
    gap = flow["gap"]
    assert gap["family"] == "flow" and gap["local_fit"]["num_particles"] == 8  # FLOW_PARTICLES
    assert flow["settings"]["flow_fit"] == FLOW_FIT  # a saved evaluation made under another flow rule is not reused
    assert gap["log_likelihood"]["proposal"].startswith("q*")
    report = evaluate_run(out, 10, "test", data_dir)  # without the gap: log p(x) with the flow as proposal
    assert report["elbo"]["kl_estimator"] == "monte_carlo"
    assert report["log_likelihood"]["value"] >= report["elbo"]["elbo"] - 0.5  # an IWAE bound (K = 10) above the ELBO

    # the cross cells: a diagonal q* on this flow-trained decoder; this run's flows as q* on a diagonal one
    own = (out / "evaluation.json").read_bytes()
    cross = evaluate_run(out, 10, "test", data_dir, gap=True, q_family="diagonal")
    assert (out / "evaluation.json").read_bytes() == own  # the run's own evaluation is left alone
    assert json.loads((out / "evaluation_q_diagonal.json").read_text())["gap"]["family"] == "diagonal"
    assert cross["gap"]["family"] == "diagonal" and cross["gap"]["amortization_gap"] is None
    assert cross["settings"]["q_family"] == {"family": "diagonal", "flows_from": None}
    assert "flow_fit" not in cross["settings"]  # a Gaussian q*'s rule is the config's
    assert "none: q* is of another family" in format_report(cross)
    diagonal = train(tiny_config(guide={"local_steps": 30}, data={"train_size": 64, "test_size": 32},
                                 train={"epochs": 1}), tmp_path / "d", data_dir, progress=False, log=lambda line: None)
    borrowed = evaluate_run(diagonal, 10, "test", data_dir, gap=True, flows_from=out)["gap"]
    assert borrowed["family"] == "flow" and borrowed["cross_family"]
    assert (diagonal / "evaluation_q_flow_r.json").exists()  # named after the run whose flows it borrowed
    planar = evaluate_run(diagonal, 10, "test", data_dir, gap=True, q_family="planar")["gap"]  # per-image flows
    assert planar["family"] == "planar" and planar["cross_family"] and planar["amortization_gap"] is None
    assert planar["log_likelihood"]["proposal"].startswith("q* alone") and planar["local_fit"]["num_particles"] == 8
    assert (diagonal / "evaluation_q_planar.json").exists()
    assert json.loads((diagonal / "evaluation_q_planar.json").read_text())["settings"]["flow_fit"] == FLOW_FIT
    own_family = evaluate_run(diagonal, 10, "test", data_dir, gap=True, q_family="diagonal")  # not a cross cell
    assert own_family["file"] == "evaluation.json" and own_family["gap"]["amortization_gap"] is not None
    for kwargs, message in [({"q_family": "diagonal"}, "add --gap"),
                            ({"gap": True, "check_steps": 10}, "at least 1000"),
                            ({"gap": True, "q_family": "flow"}, "add --flows-from RUN"),
                            ({"gap": True, "flows_from": diagonal}, "not a flow guide")]:
        with pytest.raises(ConfigError, match=message):
            evaluate_run(diagonal, 10, "test", data_dir, **kwargs)


def test_an_evaluation_may_set_the_local_fit_alone(tmp_path, data_dir):
    run = train(tiny_config(data={"train_size": 64, "test_size": 32}, train={"epochs": 1}), tmp_path / "r",
                data_dir, progress=False, log=lambda line: None)
    saved = (run / "config.toml").read_bytes()
    default = evaluate_run(run, 10, "test", data_dir, gap=True, save=False)["gap"]["local_fit"]
    assert default["max_steps"] == 5000 and default["num_particles"] == 1
    report = evaluate_run(run, 10, "test", data_dir, gap=True,
                          fit_overrides=["guide.local_steps=7", "guide.local_particles=3", "guide.local_window=2"])
    fit = report["gap"]["local_fit"]
    assert fit["max_steps"] == 7 and fit["steps_max"] <= 7 and fit["num_particles"] == 3
    assert fit["window"] == 2 and [w[0] for w in fit["windows"][0]][:2] == [2, 4]  # a window's end every 2 steps
    assert report["settings"]["config"]["guide"]["local_steps"] == 7  # a saved evaluation is keyed by them
    planar = evaluate_run(run, 10, "test", data_dir, gap=True, q_family="planar", save=False,
                          fit_overrides=["guide.local_steps=7", "guide.local_flow_lr=0.002"])["gap"]["local_fit"]
    assert planar["lr"] == 0.002  # a flow family's start, capped at 0.01 by default, moved by the setting
    assert (run / "config.toml").read_bytes() == saved  # the run itself is left as it was
    with pytest.raises(ConfigError, match="may change only the local fits' settings"):
        evaluate_run(run, 10, "test", data_dir, fit_overrides=["train.seed=1"])
    with pytest.raises(ConfigError, match="this evaluation fits neither: add --gap or drop --set"):
        evaluate_run(run, 10, "test", data_dir, fit_overrides=["guide.local_steps=7"])  # an encoder's run, no gap


def test_a_borrowed_flow_family_is_known_by_its_run_not_by_the_path_that_names_it(tmp_path, data_dir, monkeypatch):
    run = train(tiny_config(data={"train_size": 64, "test_size": 32}, train={"epochs": 1}), tmp_path / "r",
                data_dir, progress=False, log=lambda line: None)
    monkeypatch.chdir(tmp_path)
    source = flows_source(run)
    assert source == flows_source("r") == flows_source("./r/") == flows_source(str(run.resolve()))
    assert source["run"] == "r" and source["epochs"] == 1 and source["config"]["train"]["epochs"] == 1


def test_discrete_codes_report_their_usage_and_a_point_mass_takes_one_sample(tmp_path, data_dir):
    vq = _run(tmp_path, data_dir, "vq", model={"z_dim": 4}, prior={"type": "learned_categorical", "codes": 16},
              guide={"type": "vq"})
    report = evaluate_run(vq, num_samples=50, data_dir=data_dir)
    usage = report["code_usage"]
    assert report["num_samples"] == 1 and report["iwae"] == {} and "point mass" in report["note"]
    assert report["log_likelihood"]["value"] == pytest.approx(report["elbo"]["elbo"], abs=1e-3)  # log p(x, c*)
    assert usage["codes"] == 16 and 1 <= usage["perplexity"] <= 16 - usage["dead_codes"]
    assert "active_units" not in report
    assert "codes in use" in format_report(report)
    relaxed = _run(tmp_path, data_dir, "relaxed", model={"z_dim": 4}, prior={"type": "categorical", "codes": 8},
                   guide={"type": "relaxed_categorical"}, train={"objective": "trace_mean_field"})
    report = evaluate_run(relaxed, num_samples=50, data_dir=data_dir)
    assert report["num_samples"] == 50 and report["log_likelihood"]["value"] >= report["iwae"]["1"] - 1e-3
    assert report["code_usage"]["codes"] == 8
    for cross in ({}, {"q_family": "diagonal"}):  # q* of the guide's family, or of another one named
        with pytest.raises(ConfigError, match="latents are discrete codes .guide.type = 'relaxed_categorical'."):
            evaluate_run(relaxed, num_samples=10, data_dir=data_dir, gap=True, **cross)


def test_a_cached_test_fit_s_key_leaves_out_fit_options_at_the_values_that_predate_them(monkeypatch):
    """Caches made before guide.local_window and guide.local_flow_lr existed stay valid at their defaults; another
    window is another fit, so it enters the key."""
    import torch

    from pyro_vae.workflow import evaluation
    from pyro_vae.workflow.build import build_model

    keys = []
    monkeypatch.setattr(evaluation, "_fingerprint", lambda *tensors, extra=None: keys.append(extra) or "key")
    x = (torch.rand(4, 784) < 0.3).float()
    for window in (50, 100):
        config = tiny_config(guide={"type": "mean_field", "local_steps": 2, "local_window": window})
        vae, _ = build_model(config, 4)
        evaluation.fit_test_images(vae, x, config)
    assert list(keys[0][0]) == ["lr", "min_lr", "tolerance", "max_steps", "num_particles", "init_scale"]
    assert keys[1][0]["window"] == 100 and "flow_lr" not in keys[1][0]


def test_a_saved_evaluation_of_a_borrowed_flow_family_matches_with_keys_added_since_at_their_defaults():
    from pyro_vae.workflow.config import Config
    from pyro_vae.workflow.evaluation import _with_defaults

    full = Config().to_dict()
    older = Config().to_dict()
    del older["guide"]["local_window"], older["guide"]["local_flow_lr"]  # saved before the two keys existed
    settings = {"config": full, "q_family": {"family": "flow", "flows_from": {"run": "iaf", "config": full}}}
    saved = {"config": older, "q_family": {"family": "flow", "flows_from": {"run": "iaf", "config": older}}}
    assert _with_defaults(saved) == settings
    other = {**full, "guide": {**full["guide"], "local_window": 7}}
    assert _with_defaults({**saved, "config": other}) != settings


def test_the_printed_report_gives_q_y_recall_by_true_class_from_the_confusion_rows():
    report = {"split": "test", "images": 6, "elbo": {"elbo": -90.0, "recon": -70.0, "kl": 20.0, "kl_estimator":
              "analytic"}, "active_units": 3, "accuracy": 0.5, "num_samples": 10, "log_likelihood": None, "note": "-",
              "labels": {"model_accuracy": 0.5, "agreement": 1.0, "kl": 0.1, "kl_stderr": 0.01,
                         "confusion": [[3, 1, 0], [2, 0, 0], [0, 0, 0]]}}  # rows: true class; class 2 absent
    line = next(row for row in format_report(report).splitlines() if row.startswith("recall of q(y|x)"))
    assert "0: 0.75 1: 0.00 2: -  (by true class" in line  # rows, not columns: column 0's share would be 0.60
    del report["labels"]["confusion"]  # an evaluation made before the matrix was recorded
    assert "recall of q(y|x)" not in format_report(report)


def test_the_printed_report_gives_the_accuracy_of_q_y_averaged_over_binarizations_where_it_was_read():
    report = {"split": "test", "images": 6, "elbo": {"elbo": -90.0, "recon": -70.0, "kl": 20.0, "kl_estimator":
              "analytic"}, "active_units": 3, "accuracy": 0.5, "num_samples": 10, "log_likelihood": None, "note": "-",
              "accuracy_over_draws": {"value": 0.6667, "draws": 100}}
    line = next(row for row in format_report(report).splitlines() if row.startswith("accuracy of mean q(y|x)"))
    assert "0.6667  (argmax of q(y|x) averaged over 100 binarizations of each image)" in line
    del report["accuracy_over_draws"]  # grey or thresholded pixels: one x per image, nothing to average
    assert "accuracy of mean q(y|x)" not in format_report(report)

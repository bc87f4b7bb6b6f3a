import json

import pytest

from pyro_vae.workflow.config import ConfigError
from pyro_vae.workflow.experiments import load_experiment, run_experiment
from pyro_vae.workflow.gaps import experiment_gap_table, gap_table, saved_gap_reports
from pyro_vae.workflow.report import collect

from .test_experiments import QUIET


def _gap_file(path, family, ll, optimal, amortization=None, gain=0.02, flows_from=None, images=200):
    gap = {"family": family, "log_likelihood": {"value": ll, "stderr": 1.5}, "elbo_optimal": optimal,
           "elbo_amortized": -91.0, "amortization_gap": amortization,
           "amortization_gap_stderr": None if amortization is None else 0.2,
           "local_fit": {"steps_median": 1250, "stopped_on_cap": 0, "num_particles": 8},
           "convergence": {"steps": 1000, "gain": gain, "gain_stderr": 0.01}}
    settings = {"q_family": {"family": family, "flows_from": flows_from}} if flows_from or amortization is None else {}
    path.write_text(json.dumps({"split": "test", "images": images, "num_samples": 5000, "epochs": 40,
                                "settings": settings, "gap": gap}))


def test_the_gap_table_takes_each_decoders_highest_log_likelihood_for_every_row(tmp_path):
    run = tmp_path / "diagonal"
    run.mkdir()
    _gap_file(run / "evaluation.json", "diagonal", -85.0, -86.0, amortization=4.5)
    _gap_file(run / "evaluation_q_planar.json", "planar", -84.5, -84.9, gain=0.3)
    _gap_file(run / "evaluation_q_flow_iaf.json", "flow", -86.0, -87.5, flows_from="runs/nll_gaps/iaf")
    (tmp_path / "no_gap").mkdir()
    (tmp_path / "no_gap" / "evaluation.json").write_text(json.dumps({"images": 10, "gap": None}))
    rows = gap_table({"diag": saved_gap_reports(run), "none": saved_gap_reports(tmp_path / "no_gap")}).splitlines()[2:]
    assert len(rows) == 3  # the run without a gap adds none
    copy = tmp_path / "copy"  # a copy of the decoder fitting with other [guide] keys: one decoder, one log p(x)
    copy.mkdir()
    _gap_file(copy / "evaluation_q_diagonal.json", "diagonal", -84.0, -90.0, flows_from=None, amortization=None)
    both = gap_table({"diag": saved_gap_reports([run, copy])}).splitlines()[2:]
    assert len(both) == 4 and all("| -84.00 +- 1.50 (diagonal Gaussians) |" in row for row in both)
    _gap_file(copy / "evaluation_q_planar.json", "planar", -80.0, -81.0, images=20)  # another image count
    with pytest.raises(ValueError, match="differ in split, images, K or epochs"):
        gap_table({"diag": saved_gap_reports([run, copy])})
    cells = [[c.strip() for c in row.split("|")[1:-1]] for row in rows]
    assert all(c[1] == "-84.50 +- 1.50 (per-image planar flows)" for c in cells)  # the highest of the three
    assert [c[2] for c in cells] == ["diagonal Gaussians", "the flows of iaf, features per image",
                                     "per-image planar flows"]  # the own file first, then the cross cells by name
    assert [c[5] for c in cells] == ["1.50", "3.00", "0.40"]  # -84.5 - L[q*]
    assert [c[6] for c in cells] == ["4.50 +- 0.20", "-", "-"]
    assert cells[0][7] == "1250 x 8; 0.020 +- 0.010 in 1,000 (converged)" and "**not converged**" in cells[2][7]


def test_a_gap_experiments_table_groups_its_cells_by_decoder_under_their_labels():
    def report(ll, family="diagonal"):
        return {"split": "test", "images": 200, "num_samples": 5000, "epochs": 3, "settings": {},
                "gap": {"family": family, "log_likelihood": {"value": ll, "stderr": 1.0}, "elbo_optimal": ll - 1,
                        "elbo_amortized": ll - 5, "amortization_gap": None, "amortization_gap_stderr": None,
                        "local_fit": {"steps_median": 10, "num_particles": 1}, "convergence": None}}
    result = {"labels": {"d": "diagonal Gaussian"}, "images": 200, "num_samples": 5000, "check_steps": 5000,
              "cells": [{"decoder": "d", "report": report(-85.0)}, {"decoder": "f", "report": report(-80.0)},
                        {"decoder": "d", "report": report(-84.0, "planar")}]}
    caption, _, table = experiment_gap_table(result).partition("\n\n")
    assert caption.startswith("The first 200 test images, log p(x) with K = 5,000; each q* checked by up to 5,000")
    rows = [[c.strip() for c in row.split("|")[1:-1]] for row in table.splitlines()[2:]]
    assert [r[0] for r in rows] == ["diagonal Gaussian", "diagonal Gaussian", "f"]  # a decoder's rows together
    assert [r[1].split(" +-")[0] for r in rows] == ["-84.00", "-84.00", "-80.00"]  # each decoder's own highest
    assert rows[0][7] == "10 x 1; no check"


GAPS = """
[experiment]
order = 1
title = "gaps"
kind = "gaps"
num_samples = 5
sweep = {{variants = {{diag = [], flow = ["guide.type='iaf'", "guide.flows=1"]}}}}

[experiment.gaps]
{gaps}

[data]
pixels = "dynamic"
train_size = 64
test_size = 16

[model]
hidden = [16]
z_dim = 2

[guide]
local_steps = 5

[train]
epochs = 1
batch_size = 32
"""
CELLS = """images = 8
labels = {diag = "diagonal Gaussian"}
cells = [{decoder = "diag"}, {decoder = "flow", family = "diagonal"},
         {decoder = "diag", flows_from = "flow", fit = ["guide.local_steps=7"]}]"""


def _write_gaps(folder, gaps=CELLS):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "gaps.toml").write_text(GAPS.format(gaps=gaps))
    return folder / "gaps.toml"


@pytest.mark.mnist
def test_a_gap_experiment_measures_each_cell_once_and_the_command_lines_fit_wins(tmp_path, data_dir):
    path, out = _write_gaps(tmp_path / "experiments"), tmp_path / "runs" / "gaps"
    run_experiment(path, out, data_dir, **QUIET)
    result = json.loads((out / "gaps.json").read_text())
    files = [out / "diag" / "evaluation.json", out / "flow" / "evaluation_q_diagonal.json",
             out / "diag" / "evaluation_q_flow_flow.json"]
    assert [c["report"]["file"] for c in result["cells"]] == [f.name for f in files] and all(f.exists() for f in files)
    assert [c["report"]["gap"]["local_fit"]["max_steps"] for c in result["cells"]] == [5, 5, 7]  # the cell's fit
    assert [c["report"]["gap"]["family"] for c in result["cells"]] == ["diagonal", "diagonal", "flow"]
    assert result["images"] == 8 and all(c["report"]["images"] == 8 for c in result["cells"])
    stamps = [f.stat().st_mtime_ns for f in files]
    lines = []
    run_experiment(path, out, data_dir, progress=False, log=lines.append)
    assert any("every run was already finished" in line for line in lines)
    assert [f.stat().st_mtime_ns for f in files] == stamps  # nothing evaluated again
    run_experiment(path, out, data_dir, overrides=["guide.local_steps=3"], **QUIET)  # the decoders are kept
    result = json.loads((out / "gaps.json").read_text())
    assert [c["report"]["gap"]["local_fit"]["max_steps"] for c in result["cells"]] == [3, 3, 3]
    shown = collect(load_experiment(path), out.parent)
    assert len(shown["rows"]) == 2 and all(r["log_likelihood"] is None for r in shown["rows"])  # 8 of 16 images
    assert shown["extra"].count("| diagonal Gaussian |") == 2 and shown["extra"].count("| flow |") == 1


@pytest.mark.parametrize("gaps, message", [
    ("images = 8", "needs images .the first N test images. and cells"),
    ("images = 8\ncells = []", "needs images"),
    ('cells = [{decoder = "diag"}]', "needs images"),
    ('images = 8\ncheck_step = 5000\ncells = [{decoder = "diag"}]', "unknown key experiment.gaps.check_step in "),
    ('images = 8\ncells = [{decoder = "diag", q_family = "planar"}]',
     "unknown key q_family in experiment.gaps cell .*; valid keys: decoder, family, flows_from, fit"),
    ('images = 8\ncells = [{family = "planar"}]', "must be a table with a decoder"),
    ('images = 8\ncells = [{decoder = "wide"}]', "decoder 'wide' is not one of the decoders .experiment.sweep"),
    ('images = 8\ncells = [{decoder = "diag", flows_from = "diag2"}]', "flows_from 'diag2' is not one of the"),
    ('images = 8\ncells = [{decoder = "diag", flows_from = "diag"}]', "flows_from 'diag' is not a flow guide's"),
    ('images = 8\ncells = [{decoder = "diag", flows_from = "flow", family = "planar"}]', "drop family = 'planar'"),
    ('images = 8\ncells = [{decoder = "diag", family = "flow"}]', "decoder 'diag' has none, so name a flow guide"),
    ('images = 8\ncells = [{decoder = "diag", family = "gauss"}]', "family must be one of diagonal, full, "),
    ('images = 8\ncells = [{decoder = "diag", fit = ["train.epochs=3"]}]', "fit may set only guide.local_steps"),
    ('images = 8\ncells = [{decoder = "diag", fit = ["guide.local_particles=0"]}]',
     "cell .*: guide.local_particles must be >= 1, got 0"),
    ('images = 8\ncells = [{decoder = "diag", fit = ["guide.local_steps"]}]', "cell .*: override .* is not of the"),
    ('images = 8\ncells = [{decoder = "diag"}, {decoder = "diag", family = "diagonal"}]',
     "are one evaluation .q\\* of the same family on decoder 'diag'.: keep one of them"),
    ('images = 0\ncells = [{decoder = "diag"}]', "experiment.gaps.images in .* must be an integer >= 1, got 0"),
    ('images = 8\ncheck_steps = 500\ncells = [{decoder = "diag"}]', "gaps.check_steps in .* must be an integer >= 1"),
    ('images = 8\nlabels = {wide = "x"}\ncells = [{decoder = "diag"}]', "gaps.labels in .* must name decoders"),
    ('images = 8\nlabels = {diag = "flow"}\ncells = [{decoder = "diag"}]', "give two decoders one label"),
])
def test_a_gap_table_that_is_not_well_formed_is_refused_when_loaded(tmp_path, gaps, message):
    with pytest.raises(ConfigError, match=message):
        load_experiment(_write_gaps(tmp_path, gaps))


def test_gaps_belong_to_a_gap_experiment_and_a_gap_experiment_to_named_decoders(tmp_path):
    path = _write_gaps(tmp_path)
    path.write_text(path.read_text().replace('kind = "gaps"', 'kind = "sweep"'))
    with pytest.raises(ConfigError, match='experiment.gaps in .* belongs to kind = "gaps", not \'sweep\''):
        load_experiment(path)
    swept = GAPS.format(gaps=CELLS).replace("sweep = {variants", 'sweep = {key = "model.z_dim", values = [2]} #')
    path.write_text(swept)
    with pytest.raises(ConfigError, match="a gap experiment names its decoders as experiment.sweep"):
        load_experiment(path)


@pytest.mark.parametrize("variant, message", [
    ("""["guide.type='mean_field'"]""", "decoder 'diag': the amortization gap needs an amortized guide"),
    ("""["data.pixels='grayscale'"]""", "decoder 'diag': the amortization gap needs a proper likelihood"),
])
def test_a_decoder_whose_gap_cannot_be_measured_is_refused_when_loaded(tmp_path, variant, message):
    path = _write_gaps(tmp_path, 'images = 8\ncells = [{decoder = "flow"}]')
    path.write_text(path.read_text().replace("diag = []", f"diag = {variant}"))
    with pytest.raises(ConfigError, match=message):
        load_experiment(path)

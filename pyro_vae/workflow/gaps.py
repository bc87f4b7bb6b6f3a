"""The gap experiment (``kind = "gaps"``): decoders trained by named variants, then the cells of Cremer, Li &
Duvenaud's table on each, one ``pyro-vae evaluate --gap`` apiece, and the table.

An experiment file names its decoders as a sweep's variants and its cells under ``[experiment.gaps]``::

    [experiment]
    kind = "gaps"
    num_samples = 5000                  # K of every cell's log p(x)
    sweep = {variants = {diagonal = ["train.epochs=164"], iaf = ["guide.type='iaf'", "train.epochs=88"]}}

    [experiment.gaps]
    images = 200                        # the first N test images
    check_steps = 5000                  # the convergence check's further steps (at least 1,000)
    labels = {iaf = "IAF, 2 flows"}     # a decoder's name in the table (default: the variant's)
    cells = [
        {decoder = "diagonal"},                                     # q* in the guide's own family
        {decoder = "iaf", family = "diagonal"},                     # a cross cell: diagonal Gaussians
        {decoder = "diagonal", flows_from = "iaf", fit = ["guide.local_steps=20000"]},  # borrowed flows
    ]

A cell's ``fit`` sets the local fit (``guide.local_*``, :data:`~pyro_vae.workflow.config.LOCAL_FIT_KEYS`) for it
alone; a ``--set`` of such a key on the command line wins over every cell's. A cell's evaluation file
(``evaluation.json`` or ``evaluation_q_<family>.json`` in its decoder's run) is reused when its settings are
the cell's, so a second ``pyro-vae run NAME`` redoes only what is missing. ``gaps.json`` in the experiment's
folder holds every cell's report, from which :func:`experiment_gap_table` makes the table.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..infer.gaps import CHECK_STEPS, FAMILY_NAMES, is_converged
from ..infer.local_fit import FAMILIES, own_family
from .build import build_model
from .checkpoint import read_json, write_json
from .config import LOCAL_FIT_KEYS, Config, ConfigError, is_fit_override, with_overrides
from .evaluation import (check_gap, cross_family, evaluate_run, evaluation_path, evaluation_settings,
                         finished_evaluation, format_report, with_fit_settings)
from .runs import Run, RunDir, load_run
from .training import train_or_resume

GAPS_KEYS = ("images", "check_steps", "labels", "cells")  # of [experiment.gaps]
CELL_KEYS = ("decoder", "family", "flows_from", "fit")  # of each cell


@dataclasses.dataclass(frozen=True)
class GapCell:
    """One row of the table: q* of ``family`` (None: the decoder's guide's own; ``flows_from``: the flows of
    that decoder's guide, each image with features of its own) on the decoder ``decoder``."""

    decoder: str
    family: str | None = None
    flows_from: str | None = None
    fit: tuple = ()  # guide.local_* overrides of this cell's fit


def gap_cells(gaps: dict, decoders: dict[str, Config], path: Path) -> list[GapCell]:
    """The cells of an ``[experiment.gaps]`` table (see the module docstring), checked against the decoders'
    configs ``decoders`` (variant -> config) before anything trains: names, families, fit settings and their
    values, that each decoder's gap can be measured, one file per cell and one label per decoder."""
    if not isinstance(gaps, dict):
        raise ConfigError(f"experiment.gaps in {path} must be a table, got {gaps!r}")
    unknown = sorted(set(gaps) - set(GAPS_KEYS))
    if unknown:
        raise ConfigError(f"unknown key experiment.gaps.{unknown[0]} in {path}; valid keys: {', '.join(GAPS_KEYS)}")
    if "images" not in gaps or not isinstance(gaps.get("cells"), list) or not gaps["cells"]:
        raise ConfigError(f"experiment.gaps in {path} needs images (the first N test images) and cells, a list of "
                          "{decoder = NAME, family = ..., flows_from = NAME, fit = [...]} tables")
    for key, least in (("images", 1), ("check_steps", CHECK_STEPS)):
        value = gaps.get(key, least)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"experiment.gaps.{key} in {path} must be an integer >= {least}, got {value!r}")
    labels = gaps.get("labels", {})
    names = list(decoders)
    if not isinstance(labels, dict) or not set(labels) <= set(names) or not all(
            isinstance(v, str) for v in labels.values()):
        raise ConfigError(f"experiment.gaps.labels in {path} must name decoders ({', '.join(names)}) with "
                          f"strings, got {labels!r}")
    shown = [labels.get(name, name) for name in names]
    if len(set(shown)) < len(shown):
        raise ConfigError(f"experiment.gaps.labels in {path} give two decoders one label ({shown!r}): a table row's "
                          "log p(x) is its decoder's, so each needs its own")
    guides = {name: _checked_decoder(name, config, path) for name, config in decoders.items()}
    cells, files = [], {}
    for table in gaps["cells"]:
        cell = _cell(table, decoders, guides, path)
        file = (cell.decoder, cross_family(guides[cell.decoder], cell.family, cell.flows_from))
        if file in files:
            raise ConfigError(f"experiment.gaps cells {files[file]!r} and {table!r} in {path} are one evaluation "
                              f"(q* of the same family on decoder {cell.decoder!r}): keep one of them")
        files[file] = table
        cells.append(cell)
    return cells


def _checked_decoder(name: str, config: Config, path: Path) -> str | None:
    """The own q* family of decoder ``name``'s guide (None: none), after checking that its gap can be measured."""
    vae, guide = build_model(config, 1)
    try:
        check_gap(config, vae, guide, cross=True)
    except ConfigError as err:
        raise ConfigError(f"experiment.gaps in {path}: decoder {name!r}: {err}") from None
    return own_family(guide)


def _cell(table, decoders: dict[str, Config], guides: dict[str, str | None], path: Path) -> GapCell:
    """One checked cell (see :func:`gap_cells`)."""
    where = f"experiment.gaps cell {table!r} in {path}"
    if not isinstance(table, dict) or "decoder" not in table:
        raise ConfigError(f"{where} must be a table with a decoder, e.g. {{decoder = \"{next(iter(decoders))}\"}}")
    unknown = sorted(set(table) - set(CELL_KEYS))
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]} in {where}; valid keys: {', '.join(CELL_KEYS)}")
    for key in ("decoder", "flows_from"):
        if table.get(key) is not None and table[key] not in decoders:
            raise ConfigError(f"{where}: {key} {table[key]!r} is not one of the decoders (experiment.sweep.variants: "
                              f"{', '.join(decoders)})")
    decoder, family, flows_from = table["decoder"], table.get("family"), table.get("flows_from")
    if family is not None and family not in FAMILIES:
        raise ConfigError(f"{where}: family must be one of {', '.join(FAMILIES)}, got {family!r}")
    if flows_from is not None:
        if family not in (None, "flow"):
            raise ConfigError(f"{where}: flows_from gives q* the flows of {flows_from!r}; drop family = {family!r}")
        if guides[flows_from] != "flow":
            raise ConfigError(f"{where}: flows_from {flows_from!r} is not a flow guide's decoder (guide.type = "
                              f"{decoders[flows_from].guide.type!r}); name one whose guide is 'iaf' or 'planar'")
        if decoders[flows_from].model.z_dim != decoders[decoder].model.z_dim:
            raise ConfigError(f"{where}: flows_from {flows_from!r} has model.z_dim = "
                              f"{decoders[flows_from].model.z_dim}, decoder {decoder!r} "
                              f"{decoders[decoder].model.z_dim}: a q* family must live in the decoder's latent space")
    elif family == "flow" and guides[decoder] != "flow":
        raise ConfigError(f"{where}: family 'flow' is a flow guide's flows; decoder {decoder!r} has none, so name "
                          "a flow guide's decoder with flows_from")
    elif family is None and guides[decoder] is None:
        raise ConfigError(f"{where}: decoder {decoder!r}'s guide has no q* family of its own; name one with family")
    fit = table.get("fit", [])
    if not isinstance(fit, list) or not all(isinstance(o, str) for o in fit):
        raise ConfigError(f"{where}: fit must be a list of 'guide.local_KEY=value', got {fit!r}")
    try:
        for text in fit:
            if not is_fit_override(text):
                raise ConfigError(f"fit may set only {', '.join(LOCAL_FIT_KEYS)}, not {text!r}")
        with_overrides(decoders[decoder], fit)  # each value checked as the config checks it
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    return GapCell(decoder, family, flows_from, tuple(fit))


def run_gaps(experiment, members: list[tuple[object, str, Config]], out: Path, data_dir, overrides,
             num_samples: int, overwrite: bool, progress: bool, log, redraw: bool = True) -> bool:
    """Train (or find) the decoders ``members`` (``(value, subdirectory, config)``, the ``Experiment``'s variants
    without the command's local fit overrides) in ``out/<variant>``, evaluate every cell not found finished
    (the command's ``guide.local_*`` overrides after each cell's own ``fit``), write ``gaps.json``. Returns
    whether every run and every cell was found finished."""
    reused = True
    for value, sub, config in members:
        log(f"--- decoder {value}")
        reused &= train_or_resume(config, out / sub, data_dir, overwrite, progress, log, redraw)
    fit_from_command = [o for o in overrides if is_fit_override(o)]
    decoders = {sub: config for _, sub, config in members}
    plans = [_plan(cell, out, num_samples, experiment.gaps, fit_from_command)
             for cell in gap_cells(experiment.gaps, decoders, experiment.path)]
    cells = []
    for plan in plans:
        report = finished_evaluation(plan.run.path, plan.settings, plan.path)
        reused &= report is not None
        if report is None:
            report = _evaluate_cell(plan, data_dir, num_samples, log)
        cells.append({"decoder": plan.cell.decoder, "family": plan.cell.family, "flows_from": plan.cell.flows_from,
                      "fit": plan.fit, "report": report})
    write_json(RunDir(out).gaps, {"num_samples": num_samples, "images": cells[0]["report"]["images"],
                                  "check_steps": experiment.gaps.get("check_steps", CHECK_STEPS),
                                  "labels": experiment.gaps.get("labels", {}), "cells": cells})
    return reused


@dataclasses.dataclass
class _Plan:
    """What a cell's evaluation is: the decoder's run with the cell's fit settings, the arguments, its file."""

    cell: GapCell
    run: Run
    fit: list
    images: int
    check_steps: int
    flows_from: Path | None
    settings: dict
    path: Path


def _plan(cell: GapCell, out: Path, num_samples: int, gaps: dict, fit_from_command: list) -> _Plan:
    run_dir = out / cell.decoder
    flows_from = out / cell.flows_from if cell.flows_from else None
    fit = [*cell.fit, *fit_from_command]
    run = with_fit_settings(load_run(run_dir), fit)
    images = min(gaps["images"], read_json(RunDir(run_dir).metrics)["test_images"])
    check_steps = gaps.get("check_steps", CHECK_STEPS)
    settings = evaluation_settings(run, "test", num_samples, images, True, cell.family, flows_from, check_steps)
    return _Plan(cell, run, fit, images, check_steps, flows_from, settings,
                 evaluation_path(run_dir, cross_family(own_family(run.guide), cell.family, cell.flows_from)))


def _evaluate_cell(plan: _Plan, data_dir, num_samples: int, log) -> dict:
    cell = plan.cell
    family = f"the flows of {cell.flows_from}" if cell.flows_from else cell.family or "its guide's family"
    log(f"--- gap of {cell.decoder}: q* of {family}")
    report = evaluate_run(plan.run.path, num_samples, "test", data_dir, gap=True, limit=plan.images,
                          q_family=cell.family, flows_from=plan.flows_from, check_steps=plan.check_steps,
                          fit_overrides=plan.fit)
    log(format_report(report))
    if report["settings"] != plan.settings or report["file"] != plan.path.name:  # else never found again
        raise RuntimeError(f"the evaluation of {cell} recorded other settings than its cell's: a bug in pyro_vae")
    return report


def _cell_family(report: dict) -> str:
    """A gap evaluation's q* family in a few words (a borrowed flow family names the run it borrowed from)."""
    flows_from = (report.get("settings", {}).get("q_family") or {}).get("flows_from")
    if flows_from:  # (:func:`~pyro_vae.workflow.evaluation.flows_source`; a path in evaluations before it)
        return f"the flows of {flows_from['run'] if isinstance(flows_from, dict) else Path(flows_from).name}, " \
               "features per image"
    return FAMILY_NAMES[report["gap"]["family"]]


def _check_cell(gap: dict) -> str:
    fit, check = gap["local_fit"], gap.get("convergence")
    steps = (f"{fit['steps_median']} x {fit.get('num_particles', 1)}"
             + (f" ({fit['stopped_on_cap']} at the cap)" if fit.get("stopped_on_cap") else ""))
    if not check:
        return f"{steps}; no check"
    verdict = "converged" if is_converged(check) else "**not converged**"
    return f"{steps}; {check['gain']:.3f} +- {check['gain_stderr']:.3f} in {check['steps']:,} ({verdict})"


def gap_table(decoders: dict[str, list[dict]]) -> str:
    """Markdown: one row per gap evaluation (``pyro-vae evaluate --gap`` reports), grouped by decoder (all of one
    decoder's of one split, image count, K and epochs). Every report estimates log p(x) with its own proposal
    and each estimate is a lower bound in expectation, so a decoder's log p(x) is the highest of its reports'
    (named in its column; the highest of a few noisy estimates leans upwards by their own noise, not by the
    +- shown, which is the spread over images), and each row's approximation gap is that minus the row's
    L[q*]; the amortization gap (own family only) needs no log p(x). The last column: q*'s steps (the
    median over chunks) and samples a step, and its convergence check (what a further optimisation gains,
    nats per image)."""
    lines = ["| decoder trained with | log p(x): the highest estimate (from q* of) | q* family | L[q*] | L[q] "
             "| approximation gap | amortization gap | q* steps x samples a step; further gain in steps |",
             "|---|---|---|---|---|---|---|---|"]
    for label, reports in decoders.items():
        if not reports:
            continue
        kinds = {(r.get("split"), r.get("images"), r.get("num_samples"), r.get("epochs")) for r in reports}
        if len(kinds) > 1:
            raise ValueError(f"the gap evaluations of {label} differ in split, images, K or epochs ({sorted(kinds)}): "
                             "one log p(x) cannot serve them all; evaluate them alike or list them apart")
        best = max(reports, key=lambda r: r["gap"]["log_likelihood"]["value"])
        ll = best["gap"]["log_likelihood"]
        for report in reports:
            gap = report["gap"]
            amortization = ("-" if gap["amortization_gap"] is None
                            else f"{gap['amortization_gap']:.2f} +- {gap['amortization_gap_stderr']:.2f}")
            lines.append(f"| {label} | {ll['value']:.2f} +- {ll['stderr']:.2f} ({_cell_family(best)}) "
                         f"| {_cell_family(report)} | {gap['elbo_optimal']:.2f} | {gap['elbo_amortized']:.2f} "
                         f"| {ll['value'] - gap['elbo_optimal']:.2f} | {amortization} | {_check_cell(gap)} |")
    return "\n".join(lines) + "\n"


def saved_gap_reports(run_dirs: Path | list[Path]) -> list[dict]:
    """Every gap evaluation saved in a decoder's run directories (one, or copies of one run whose configs differ in
    a local fit's key): ``evaluation.json`` with ``--gap``, then each cross cell's ``evaluation_q_*.json``; for
    :func:`gap_table` of evaluations made by ``pyro-vae evaluate --gap`` outside an experiment."""
    runs = [RunDir(d) for d in (run_dirs if isinstance(run_dirs, list) else [run_dirs])]
    return [r for run in runs for r in map(read_json, [run.evaluation, *run.cross_evaluations()])
            if isinstance(r, dict) and r.get("gap")]


def experiment_gap_table(result: dict) -> str:
    """The table of a gap experiment's ``gaps.json``: its cells in the experiment file's order, each decoder's
    rows together under its label (default: the variant's name), below a line saying its images, K and check."""
    decoders: dict[str, list[dict]] = {}
    for cell in result["cells"]:
        decoders.setdefault(result.get("labels", {}).get(cell["decoder"], cell["decoder"]), []).append(cell["report"])
    checks = [c["report"]["gap"].get("convergence") for c in result["cells"]]
    checked = {check["images"] for check in checks if check}
    caption = (f"The first {result['images']:,} test images, log p(x) with K = {result['num_samples']:,}; each q* "
               f"checked by up to {result['check_steps']:,} further steps (at most its fit's cap) on "
               f"{', '.join(map(str, sorted(checked))) or 'none'} of them.")
    return caption + "\n\n" + gap_table(decoders)

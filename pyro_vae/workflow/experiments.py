"""Named experiments: one TOML file, one command, ``pyro-vae run NAME``.

An experiment file is a config (``[data]`` ... ``[train]``) plus an ``[experiment]`` table
that says what the run is for and what to do after training::

    [experiment]
    order = 1                       # place in experiments/README.md
    title = "MLP VAE, 2-D latent"
    reproduces = "the reference's 2-D MLP VAE: reconstructions, scatter, samples"
    kind = "train"                  # train | compare | sweep | anomaly | gaps
    num_samples = 1000              # K of the importance-sampled test log p(x); 0 = none
    reference = {loss = 165.0, kl = 3.9, recon = 161.0}        # the reference's numbers, if any
    sweep = {key = "model.z_dim", values = [2, 3, 5, 10, 20, 50]}   # kind = "sweep" only
    # or named variants, each a list of --set overrides on top of the file's config:
    # sweep = {variants = {diagonal = [], iaf = ["guide.type='iaf'"], iwae_k5 = ["train.objective='iwae'"]}}
    figures = ["figures/latent_scatter.png"]   # shown in experiments/README.md (copied, shrunk)
    quick = ["data.train_size=4000"]           # --quick: overrides after QUICK_OVERRIDES (a setting it needs)
    background = ["data.noise=0.2"]            # kind = "anomaly": a background model for the likelihood ratio

``train`` trains (or resumes) ``runs/NAME`` and evaluates it; ``anomaly`` trains it and scores test images
of its dataset and of ``anomalies`` (:mod:`pyro_vae.workflow.anomaly`); ``compare`` runs
:func:`pyro_vae.workflow.compare.compare` (amortized vs mean-field, amortization gap); ``sweep``
trains one run per value in ``runs/NAME/<key>_<value>`` (per variant in ``runs/NAME/<variant>``)
and draws the sweep figure; ``gaps`` trains its decoders as a sweep's variants and measures the cells of
the inference-gap table named in ``[experiment.gaps]`` (:mod:`pyro_vae.workflow.gaps`).
Every run directory gets ``experiment.json`` (command, wall time); a finished run is
not trained again, so a second ``pyro-vae run NAME`` only redoes what is missing; a sweep's run whose
directory is gone is put back from its kept record where there is one (:mod:`pyro_vae.workflow.records`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import time
import tomllib
from pathlib import Path

import torch

from .build import check_config, proper_density
from .checkpoint import as_read_back, read_json, write_json
from .compare import compare
from .config import Config, ConfigError, load_config
from .evaluation import evaluate_run, finished_evaluation, format_report, run_settings
from .gaps import gap_cells, is_fit_override, run_gaps
from .labels import labelled_seed
from .records import finished_record, needs_evaluation, record_dir, recorded_evaluation, restore_records
from .runs import RunDir, best_accuracy_epoch
from .training import train_or_resume

KINDS = ("train", "compare", "sweep", "anomaly", "gaps")
# A small setting for smoke tests and notebooks under CI: a few images, 2 epochs, small K.
QUICK_OVERRIDES = ("data.train_size=1000", "data.test_size=300", "train.epochs=2", "guide.local_steps=20")
QUICK_NUM_SAMPLES = 20


PRESENTATION = ("name", "path", "title", "reproduces", "order", "figures", "quick", "reference")
# the fields of Experiment that do not change its numbers (quick: only a --quick run's)


@dataclasses.dataclass
class Experiment:
    """The ``[experiment]`` table of an experiment file (see the module docstring)."""

    name: str
    path: Path
    title: str = ""
    reproduces: str = ""
    kind: str = "train"
    order: int = 100
    num_samples: int = 0
    reference: dict = dataclasses.field(default_factory=dict)
    sweep: dict = dataclasses.field(default_factory=dict)
    figures: list = dataclasses.field(default_factory=list)  # key figures the report publishes (paths in the run)
    quick: list = dataclasses.field(default_factory=list)  # --quick: overrides after QUICK_OVERRIDES
    anomalies: str = ""  # kind = "anomaly": the dataset whose test images are the anomalies, or held_out
    images: int = 2000  # kind = "anomaly": test images scored of each set
    background: list = dataclasses.field(default_factory=list)  # kind = "anomaly": overrides of Ren et al.'s
    # background model (e.g. ["data.noise=0.2"]), trained beside each run for the likelihood-ratio score
    gaps: dict = dataclasses.field(default_factory=dict)  # kind = "gaps": images, check_steps and cells

    @property
    def command(self) -> str:
        return f"pyro-vae run {self.name}"

    def measured(self) -> dict:
        """The ``[experiment]`` settings its numbers depend on: every field but how it is named and presented."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in PRESENTATION}

    def config(self, overrides=()) -> Config:
        return load_config(self.path, overrides)

    @property
    def sweep_key(self) -> str:
        """What the sweep varies: a config key, or ``variant`` for named variants."""
        return "variant" if "variants" in self.sweep else self.sweep["key"]

    def sweep_runs(self) -> list[tuple[object, str, list[str]]]:
        """``(value, subdirectory name, overrides)`` for each value (or named variant) of a sweep."""
        if "variants" in self.sweep:
            return [(name, name, list(overrides)) for name, overrides in self.sweep["variants"].items()]
        key = self.sweep["key"]
        short = key.partition(".")[2]
        return [(value, f"{short}_{value}", [f"{key}={json.dumps(value)}"]) for value in self.sweep["values"]]


def find_experiment(name: str | Path, experiments_dir: str | Path | None = None) -> Path:
    """The TOML file of experiment ``name``: a path, else ``<experiments_dir>/NAME.toml``
    (default ``./experiments``, then the one beside the package)."""
    given = Path(name)
    if given.suffix == ".toml" or given.is_file():
        if given.is_file():
            return given
        raise ConfigError(f"experiment file '{given}' not found; pass an existing TOML file or a name in experiments/")
    folders = [Path(experiments_dir)] if experiments_dir else [Path("experiments"), default_experiments_dir()]
    for folder in folders:
        if (folder / f"{name}.toml").is_file():
            return folder / f"{name}.toml"
    known = sorted(p.stem for folder in folders if folder.is_dir() for p in folder.glob("*.toml"))
    raise ConfigError(f"unknown experiment {str(name)!r}; known experiments: {', '.join(known) or 'none found'}")


def default_experiments_dir() -> Path:
    """``experiments/`` of the source tree this package was installed from."""
    return Path(__file__).resolve().parents[2] / "experiments"


def load_experiment(name: str | Path, experiments_dir: str | Path | None = None) -> Experiment:
    """Read and check the ``[experiment]`` table (and the config) of an experiment file."""
    path = find_experiment(name, experiments_dir)
    try:
        table = tomllib.loads(path.read_text()).get("experiment", {})
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"experiment file '{path}' is not valid TOML: {err}") from None
    fields = {f.name for f in dataclasses.fields(Experiment)} - {"name", "path"}
    unknown = sorted(set(table) - fields)
    if unknown:
        raise ConfigError(f"unknown key experiment.{unknown[0]} in {path}; valid keys: {', '.join(sorted(fields))}")
    experiment = Experiment(name=path.stem, path=path, **table)
    if experiment.kind not in KINDS:
        raise ConfigError(f"experiment.kind {experiment.kind!r} in {path} is unknown; valid kinds: {', '.join(KINDS)}")
    if not isinstance(experiment.num_samples, int) or experiment.num_samples < 0:
        raise ConfigError(f"experiment.num_samples in {path} must be an integer >= 0, got {experiment.num_samples!r}")
    if not isinstance(experiment.quick, list) or not all(isinstance(o, str) for o in experiment.quick):
        raise ConfigError(f"experiment.quick in {path} must be a list of 'section.key=value' overrides, got "
                          f"{experiment.quick!r}")
    if experiment.kind == "anomaly" and experiment.anomalies not in ("mnist", "fashion_mnist", "held_out"):
        raise ConfigError(f"experiment.anomalies in {path} must name the dataset of the anomalies, mnist or "
                          f"fashion_mnist, or be held_out (data.held_out_labels), got {experiment.anomalies!r}")
    if not isinstance(experiment.background, list) or not all(isinstance(o, str) for o in experiment.background) or (
            experiment.background and experiment.kind != "anomaly"):
        raise ConfigError(f"experiment.background in {path} must be a list of 'section.key=value' overrides of an "
                          f"anomaly experiment's background model, got {experiment.background!r}")
    if experiment.background:
        experiment.config(experiment.background)  # checked before anything trains
    if experiment.gaps and experiment.kind != "gaps":
        raise ConfigError(f"experiment.gaps in {path} belongs to kind = \"gaps\", not {experiment.kind!r}")
    if experiment.kind == "gaps" and "variants" not in experiment.sweep:
        raise ConfigError(f"a gap experiment names its decoders as experiment.sweep = {{variants = {{name = "
                          f"[overrides]}}}} in {path}, got {experiment.sweep!r}")
    if experiment.kind in ("sweep", "gaps") or (experiment.kind == "anomaly" and experiment.sweep):
        _check_sweep(experiment.sweep, path)
        # every member's config must be valid before anything trains
        configs = {sub: experiment.config(overrides) for _, sub, overrides in experiment.sweep_runs()}
        if experiment.kind == "gaps":
            gap_cells(experiment.gaps, configs, path)
    else:
        experiment.config()
    return experiment


def _check_sweep(sweep: dict, path: Path) -> None:
    """A sweep is ``{key = "section.key", values = [...]}`` or ``{variants = {name = [overrides]}}``."""
    usage = ('experiment.sweep = {key = "section.key", values = [...]} or {variants = {name = ["key=value", ...]}}'
             f" in {path}, got {sweep!r}")
    if "variants" in sweep:
        variants = sweep["variants"]
        if set(sweep) != {"variants"} or not isinstance(variants, dict) or not variants or not all(
                isinstance(v, list) and all(isinstance(o, str) for o in v) for v in variants.values()):
            raise ConfigError(f"a sweep needs {usage}")
        bad = [name for name in variants if not name.replace("_", "").replace("-", "").isalnum()]
        if bad:
            raise ConfigError(f"sweep variant name {bad[0]!r} in {path} is not a folder name: use letters, digits, "
                              "'_' and '-'")
        return
    key, values = sweep.get("key"), sweep.get("values")
    if not isinstance(key, str) or "." not in key or not isinstance(values, list) or not values:
        raise ConfigError(f"a sweep needs {usage}")


def _evaluate(out: Path, num_samples: int, data_dir, log) -> dict | None:
    """The test-set evaluation with K = ``num_samples`` (kept if already made with that K)."""
    if num_samples <= 0:
        return None
    run = RunDir(out)
    metrics = read_json(run.metrics)
    settings = run_settings(run.saved_config(), run.epochs_done(), "test", num_samples, metrics["test_images"])
    report = finished_evaluation(out, settings)
    if report is None:
        report = evaluate_run(out, num_samples, "test", data_dir)
        log(format_report(report))
    return report


def run_experiment(
    name: str | Path,
    out: str | Path | None = None,
    data_dir=None,
    overrides: list[str] | tuple = (),
    num_samples: int | None = None,
    quick: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    log=print,
    redraw: bool = True,
    restore: bool = True,
    only: list[str] | tuple = (),
) -> Path:
    """Run experiment ``name`` into ``out`` (default ``runs/NAME``); see the module docstring.

    :param num_samples: K for the test log p(x) (default: the experiment's ``num_samples``).
    :param quick: the small :data:`QUICK_OVERRIDES` setting (smoke tests, notebooks under CI).
    :param redraw: redraw the figures of a training run found finished (a notebook only reads them).
    :param restore: put a sweep's kept records back where its run directories are gone
        (:func:`~pyro_vae.workflow.records.restore_records`); a notebook, which shows the runs' figures, does not.
    :param only: the names of some of a sweep's runs (:func:`only_members`): train and evaluate those alone, and
        write none of the sweep's own files (``sweep.json``, its figures, ``experiment.json``), which wait for a
        run of the whole sweep (those of an earlier one are removed where a run is trained again); runs of one sweep
        can so be shared out between processes or machines, each given other names.
    """
    experiment = load_experiment(name)
    command = ["pyro-vae", "run", experiment.name, *(["--quick"] if quick else []),
               *(f"--set {shlex.quote(o)}" for o in overrides),
               *([f"--num-samples {num_samples}"] if num_samples is not None else [])]
    overrides = [*((*QUICK_OVERRIDES, *experiment.quick) if quick else ()), *overrides]
    k = num_samples if num_samples is not None else (QUICK_NUM_SAMPLES if quick else experiment.num_samples)
    if k < 0 or (k == 0 and experiment.kind == "compare"):
        raise ConfigError(f"--num-samples must be >= {int(experiment.kind == 'compare')}, got {k}")
    out = Path(out) if out else Path("runs") / experiment.name
    config = experiment.config(overrides)  # bad overrides fail here, before anything is written
    members = sweep_members(experiment, overrides) if experiment.kind == "sweep" else []
    if only:
        members = only_members(experiment, members, [only] if isinstance(only, str) else only)
    if restore and not overwrite:  # a sweep's members finished on another machine, their records kept
        restore_records(experiment.path, experiment.name, members, out, k, experiment.figures, log)
    finished_before = len(list(out.glob("**/metrics.json"))) if out.is_dir() else 0  # runs it may reuse
    start = time.perf_counter()
    if experiment.kind == "train":
        reused = train_or_resume(config, out, data_dir, overwrite, progress, log, redraw)
        if proper_density(config):
            _evaluate(out, k, data_dir, log)
    elif experiment.kind == "compare":
        result = compare(experiment.path, out, data_dir, k, 0, list(overrides), progress, log, overwrite=overwrite)
        reused = result["reused"]
    elif experiment.kind == "anomaly":
        from .anomaly import run_anomaly

        reused = run_anomaly(experiment, out, data_dir, overrides, k, overwrite, progress, log, redraw)
    elif experiment.kind == "gaps":
        members = sweep_members(experiment, [o for o in overrides if not is_fit_override(o)])
        reused = run_gaps(experiment, members, out, data_dir, overrides, k, overwrite, progress, log, redraw)
    else:
        reused = run_sweep(experiment, members, out, data_dir, k, overwrite, progress, log, redraw, whole=not only)
    seconds = time.perf_counter() - start
    if only:
        if not reused:  # a run trained (again): the sweep's table and figures, if any, no longer stand for its runs
            folder = RunDir(out)
            for stale in (folder.sweep, folder.sweep_figure, folder.accuracy_figure, folder.experiment):
                stale.unlink(missing_ok=True)
        log(f"experiment {experiment.name}: {', '.join(sub for _, sub, _ in members)} finished in {out} "
            f"({seconds:.0f} s); `pyro-vae run {experiment.name}` writes the sweep's table and figures once every "
            "run is there")
        return out
    previous = read_json(RunDir(out).experiment)
    made_under = {"config": config.to_dict(), "settings": {**experiment.measured(), "num_samples": k}}
    if reused and previous:  # every run found finished under these settings, its evaluations found or made with k
        outcome = "kept"
        if as_read_back({key: previous.get(key) for key in made_under}) != as_read_back(made_under):
            previous = {**previous, **made_under, "num_samples": k, "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
            write_json(RunDir(out).experiment, previous)  # when the results came to stand for these settings
            outcome = "updated to these settings"
        log(f"experiment {experiment.name}: every run was already finished; {RunDir(out).experiment} {outcome}")
        return out
    record = {
        "experiment": experiment.name,
        "command": " ".join(command),
        "quick": quick,
        "num_samples": k,
        "wall_seconds": None if reused else seconds,  # None: trained before, by another command
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        **made_under,  # what the report compares with the experiment file (report.stands_for)
    }
    if not reused:
        if finished_before:  # some runs were found finished: the time is not what one command from scratch takes
            record["reused_runs"] = finished_before
        record["threads"] = torch.get_num_threads()
        record["load_average_15min"] = round(os.getloadavg()[2], 1)  # other work sharing the machine, at the end
    write_json(RunDir(out).experiment, record)
    log(f"experiment {experiment.name} done in {seconds:.0f} s; results in {out}")
    return out


def completion_row(report: dict | None, metrics: dict) -> dict:
    """An image-completion run's numbers per image: the baseline's -log p(x_h | x_g) and the CVAE's
    importance-sampled estimate of it (on -BCE for grey pixels, the tutorial's convention)."""
    estimate = (report or {}).get("importance_sampled") or (report or {}).get("log_likelihood")
    return {"baseline_loss": metrics["baseline"]["test_loss"], "baseline_epochs": metrics["baseline"].get("epochs"),
            "importance_sampled_loss": -estimate["value"] if estimate else None,
            "importance_sampled_stderr": estimate["stderr"] if estimate else None}


def run_sweep(experiment: Experiment, members: list[tuple[object, str, Config]], out: Path, data_dir,
              num_samples: int, overwrite: bool, progress: bool, log, redraw: bool = True, whole: bool = True) -> bool:
    """One run per swept value (:func:`sweep_members`) in ``out/<key>_<value>``; where ``members`` are the ``whole``
    sweep, writes ``sweep.json`` and ``sweep.png`` (an M2 sweep also ``accuracy.png``, its classifier's accuracy by
    labelled-set size).

    Returns whether every run was found finished."""
    from ..plots.base import save_figure
    from ..plots.study import plot_sweep

    key = experiment.sweep_key
    rows, reused = [], True
    for value, sub, config in members:
        log(f"--- {key} = {value}")
        run_dir = out / sub
        if not overwrite and RunDir(run_dir).holds_record():
            if not finished_record(run_dir, config, num_samples):
                raise ConfigError(f"{run_dir} holds a finished run's record without weights that is not this run "
                                  "(another config or length, or an evaluation with another K or by older code); "
                                  f"remove {run_dir} to train it again")
            log(f"{run_dir}: a finished run's record (no weights): its numbers are used, its figures not drawn")
            report = recorded_evaluation(run_dir, config, num_samples)
        else:
            reused &= train_or_resume(config, run_dir, data_dir, overwrite, progress, log, redraw)
            report = (_evaluate(run_dir, num_samples, data_dir, log)  # (M2: its accuracy, completion: -BCE, any pixels)
                      if needs_evaluation(config) else None)
        rows.append(sweep_row(value, sub, config, run_dir, report, num_samples))
    if not whole:
        return reused
    result = {"key": key, "num_samples": num_samples, "rows": rows, "labelled_sets": only_labelled_sets_differ(members)}
    write_json(RunDir(out).sweep, result)
    save_figure(plot_sweep(result, title=experiment.title), RunDir(out).sweep_figure)
    if rows and all("accuracy" in r for r in rows):  # M2: its classifier's accuracy by labelled-set size
        from ..plots.study import plot_accuracy_by_labelled
        from .label_sets import TUTORIAL_M2, accuracy_summary

        save_figure(plot_accuracy_by_labelled(accuracy_summary(result), TUTORIAL_M2, "Pyro's tutorial",
                                              title=experiment.title),
                    RunDir(out).accuracy_figure)
    return reused


def sweep_row(value, sub: str, config: Config, run_dir: Path, report: dict | None, num_samples: int) -> dict:
    """A sweep's row of one finished run in ``run_dir`` (its metrics and history; ``report``, its test-set
    evaluation, or None where the sweep evaluates none): what ``sweep.json`` and the report's tables hold."""
    metrics = read_json(RunDir(run_dir).metrics)
    ll = (report or {}).get("log_likelihood")
    return {
        "value": value,
        "run": sub,
        "test_loss": metrics["test_loss"],
        "test_recon": metrics["test_recon"],
        "test_kl": metrics["test_kl"],
        "log_likelihood": ll["value"] if ll else None,
        "log_likelihood_stderr": ll["stderr"] if ll else None,
        "active_units": (report or {}).get("active_units"),
        **({"accuracy": report["accuracy"], "baseline_accuracy": report["baseline"]["accuracy"],
            "accuracy_over_draws": report.get("accuracy_over_draws", {}).get("value"),  # (dynamic pixels)
            "labelled": report["baseline"]["labelled"],
            "model_accuracy": report.get("labels", {}).get("model_accuracy"),
            "valid_accuracy": metrics.get("valid_accuracy"),  # (of the epoch the validation loss picked)
            "best_valid_accuracy": best_accuracy_epoch(read_json(RunDir(run_dir).history) or [])}
           if report and "accuracy" in report else {}),  # M2: its classifier, the supervised baseline, p(y | x)
        **(completion_row(report, metrics) if config.model.completion else {}),
        **({"code_usage": report["code_usage"], "point_mass": report["num_samples"] == 1 < num_samples}
           if report and "code_usage" in report else {}),  # discrete codes
        "epochs": metrics["epochs"],
        "best_epoch": metrics.get("best_epoch"),  # with a validation split: the epoch whose weights these are
        "train_seconds": metrics["train_seconds"],
    }


def recorded_sweep(experiment: Experiment, members: list[tuple[object, str, Config]]) -> dict | None:
    """What ``sweep.json`` would hold of the sweep's runs whose kept records stand for the experiment file as it is
    (:func:`~pyro_vae.workflow.records.finished_record`), in the sweep's order, with ``runs``, how many runs the
    sweep has (``members``, :func:`sweep_members` of the file as it is): an unfinished sweep's numbers so far.
    None where no record stands."""
    rows = []
    for value, sub, config in members:
        kept = record_dir(experiment.path, experiment.name, sub)
        if finished_record(kept, config, experiment.num_samples):
            report = recorded_evaluation(kept, config, experiment.num_samples)
            rows.append(sweep_row(value, sub, config, kept, report, experiment.num_samples))
    if not rows:
        return None
    return {"key": experiment.sweep_key, "num_samples": experiment.num_samples, "rows": rows,
            "labelled_sets": only_labelled_sets_differ(members), "runs": len(members)}


def only_labelled_sets_differ(members: list[tuple[object, str, Config]]) -> bool:
    """Whether a sweep's runs differ in nothing but ``data.labelled`` and the seeds (``train.seed``,
    ``data.labelled_seed``), and runs of one size each draw another labelled set: then they are draws of labelled
    sets from one recipe, and the report pools them (runs sharing a set differ only in their start: not pooled)."""
    def recipe(config: Config) -> dict:
        settings = config.to_dict()
        del settings["data"]["labelled"], settings["data"]["labelled_seed"], settings["train"]["seed"]
        return settings

    sets = [(config.data.labelled, labelled_seed(config)) for _, _, config in members]
    return len(set(sets)) == len(sets) and all(recipe(config) == recipe(members[0][2]) for _, _, config in members)


def only_members(experiment: Experiment, members: list[tuple[object, str, Config]], names) -> list:
    """The members of sweep ``experiment`` whose run folders are ``names`` (``pyro-vae run NAME --only RUN``), in
    the file's order; a name that is not one of its runs, or an experiment that is not a sweep, is refused."""
    if experiment.kind != "sweep":
        raise ConfigError(f"--only picks runs of a sweep, and {experiment.name} is a '{experiment.kind}' experiment; "
                          "drop --only")
    runs = [sub for _, sub, _ in members]
    for name in names:
        if name not in runs:
            raise ConfigError(f"--only {name}: {experiment.name} has no run of that name; its runs are "
                              f"{', '.join(runs)}")
    return [member for member in members if member[1] in names]


def sweep_members(experiment: Experiment, overrides) -> list[tuple[object, str, Config]]:
    """``(value, subdirectory, config)`` of each run of a sweep (or a gap experiment's decoders), the command
    line's overrides after each member's own, every config checked before the first one trains."""
    key = experiment.sweep_key
    swept = [o for o in overrides if o.partition("=")[0].strip() == key]
    if swept:
        raise ConfigError(f"--set {swept[0]} sets the key this experiment sweeps over; drop it (the sweep's values "
                          f"are in {experiment.path})")
    members = [(value, sub, experiment.config([*member, *overrides]))  # the command line's --set wins
               for value, sub, member in experiment.sweep_runs()]
    for _, _, config in members:
        check_config(config)
    return members


def quick_requested() -> bool:
    """Whether notebooks should use the quick setting: ``$PYRO_VAE_QUICK`` or ``$CI`` set (not 0)."""
    return any(os.environ.get(name, "0") not in ("", "0", "false") for name in ("PYRO_VAE_QUICK", "CI"))


def notebook_run(name: str, quick: bool | None = None, data_dir=None, runs_dir: str | Path | None = None) -> Path:
    """The run directory of experiment ``name`` for a notebook.

    Quick (``quick=True``, or by default when :func:`quick_requested`): a fresh run of the
    quick setting in a temporary folder, seconds long. Otherwise ``runs/NAME`` of the
    source tree through :func:`run_experiment`, the lifecycle of ``pyro-vae run NAME``: a
    finished run of the experiment's config is reused, a missing one trained here at full
    length, and a run of another config refused in one line naming the keys that differ.
    """
    import tempfile

    quick = quick_requested() if quick is None else quick
    if quick:
        return run_experiment(name, Path(tempfile.mkdtemp(prefix=f"{name}_")) / name, data_dir, quick=True,
                              progress=False, log=lambda line: None)
    out = Path(runs_dir or default_experiments_dir().parent / "runs") / name
    out = Path(os.path.relpath(out))  # the log lines a stored notebook keeps name no machine's folders
    return run_experiment(name, out, data_dir, redraw=False, restore=False, progress=False)  # log lines, no bars

"""The ``pyro-vae`` command line: ``train`` (or resume) a run, ``evaluate`` it, ``plot`` it again,
``compare`` amortized and mean-field inference, ``run`` a named experiment, ``report`` the results,
``score`` images (anomaly scores).

Every input error prints one line on stderr naming the problem and the fix and exits
with status 2, writing nothing over an existing run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .infer.gaps import CHECK_STEPS
from .infer.local_fit import FAMILIES, PLANAR_FLOWS
from .workflow.checkpoint import CheckpointError
from .workflow.config import ConfigError, load_config
from .workflow.data import DATA_ENV, DataError

EXIT_BAD_INPUT = 2
EXIT_TRAINING_FAILED = 1
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pyro-vae", description="Variational autoencoders as Pyro programs.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = commands.add_parser(
        "train", help="train a VAE from a TOML config into a run directory (a run already there with the same "
        "config is finished or reused; another config is refused), or --resume one"
    )
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="TOML file, e.g. experiments/vae_2d.toml")
    source.add_argument(
        "--resume", metavar="DIR",
        help="continue the run in DIR from its last checkpoint (a larger train.epochs, train.max_minutes or "
             "train.early_stopping trains longer)",
    )
    train.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override a config value (a TOML literal), e.g. --set train.epochs=1; repeatable",
    )
    train.add_argument("--out", help="run directory (default: runs/<config name>)")
    train.add_argument("--data-dir", help=f"folder holding MNIST/raw (default: ${DATA_ENV}, else ./data)")
    train.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--no-figures", action="store_true",
                       help="skip the figures at the end (draw them later with pyro-vae plot DIR)")

    evaluate = commands.add_parser(
        "evaluate", help="importance-sampled log p(x), ELBO terms and active units of a run"
    )
    evaluate.add_argument("--run", required=True, help="a run directory written by pyro-vae train")
    evaluate.add_argument("--num-samples", type=int, default=5000, help="K importance samples (default 5000)")
    evaluate.add_argument("--split", default="test", help="test (default) or train")
    evaluate.add_argument("--gap", action="store_true", help="also measure the amortization gap (Cremer et al.)")
    evaluate.add_argument("--limit", type=int, default=0, help="only the first N images (default: all)")
    evaluate.add_argument("--q-family", choices=FAMILIES,
                          help="with --gap: fit q* in this family, not the guide's (no amortization gap then); planar: "
                               f"{PLANAR_FLOWS} planar flows on a diagonal Gaussian, all parameters per image")
    evaluate.add_argument("--flows-from", metavar="DIR",
                          help="with --gap: the flow family is the flows of the guide of the run in DIR, each image "
                               "with features of its own (default: this run's guide)")
    evaluate.add_argument("--check-steps", type=int, default=CHECK_STEPS,
                          help=f"with --gap: the convergence check's further steps (default and least {CHECK_STEPS})")
    evaluate.add_argument("--set", dest="overrides", action="append", default=[], metavar="guide.local_KEY=VALUE",
                          help="a setting of the local fits (q* of --gap, a mean-field run's test posteriors) in "
                               "place of the run's, e.g. --set guide.local_steps=20000; repeatable")
    evaluate.add_argument("--data-dir", help=f"folder holding MNIST/raw (default: ${DATA_ENV}, else ./data)")

    compare = commands.add_parser(
        "compare", help="train amortized and mean-field guides on one config and measure the amortization gap"
    )
    compare.add_argument("--config", required=True, help="TOML file, e.g. experiments/amortized_vs_meanfield.toml")
    compare.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                         help="override a config value (both runs)")
    compare.add_argument("--out", help="folder for both runs (default: runs/<config name>)")
    compare.add_argument("--num-samples", type=int, default=5000, help="K importance samples (default 5000)")
    compare.add_argument("--limit", type=int, default=0, help="evaluate on the first N test images (default: all)")
    compare.add_argument("--data-dir", help=f"folder holding MNIST/raw (default: ${DATA_ENV}, else ./data)")
    compare.add_argument("--no-progress", action="store_true", help="no progress bar")

    run = commands.add_parser(
        "run", help="run a named experiment (experiments/NAME.toml): train, evaluate, draw its figures"
    )
    run.add_argument("experiment", help="a name in experiments/ (e.g. vae_2d) or a TOML file")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                     help="override a config value (every run of the experiment)")
    run.add_argument("--out", help="results folder (default: runs/<experiment>)")
    run.add_argument("--num-samples", type=int, help="K for the test log p(x) (default: the experiment's)")
    run.add_argument("--quick", action="store_true",
                     help="a small setting (1000 images, 2 epochs, small K) to check the pipeline in seconds")
    run.add_argument("--data-dir", help=f"folder holding MNIST/raw (default: ${DATA_ENV}, else ./data)")
    run.add_argument("--overwrite", action="store_true", help="retrain runs already in --out")
    run.add_argument("--only", action="append", default=[], metavar="RUN",
                     help="train and evaluate only this run of a sweep (repeatable; e.g. labelled_600_seed_1), so "
                          "that processes given other runs share a sweep out; the sweep's table and figures wait for "
                          "`pyro-vae run NAME` once they have all ended")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")

    report = commands.add_parser("report", help="write the results table of every experiment (experiments/README.md)")
    report.add_argument("--experiments", default="experiments", help="folder of experiment files (default experiments)")
    report.add_argument("--runs", default="runs", help="folder of their results (default runs)")
    report.add_argument("--out", help="Markdown file to write (default: <experiments>/README.md; - for stdout only)")

    score = commands.add_parser(
        "score", help="per-image anomaly scores of a run (-log p(x), -ELBO, reconstruction error, the "
        "complexity-corrected score) as a CSV")
    score.add_argument("--run", required=True, help="a run directory written by pyro-vae train")
    source = score.add_mutually_exclusive_group()
    source.add_argument("--dataset", help="score this dataset's --split (default: the run's dataset)")
    source.add_argument("--images", help="score your own images: an .npz of 28 x 28 arrays or a folder of PNGs")
    score.add_argument("--split", default="test", help="test (default) or train")
    score.add_argument("--num-samples", type=int, default=100, help="K importance samples (default 100)")
    score.add_argument("--limit", type=int, default=0, help="only the first N images (default: all)")
    score.add_argument("--out", help="CSV to write (default: <run>/scores_<source>.csv)")
    score.add_argument("--data-dir", help=f"folder holding MNIST/raw (default: ${DATA_ENV}, else ./data)")
    score.add_argument("--no-progress", action="store_true", help="no progress bar")
    score.add_argument("--background", metavar="DIR",
                       help="a run of the same data trained with data.noise > 0: adds the likelihood ratio "
                            "(Ren et al. 2019)")

    plot = commands.add_parser("plot", help="redraw the figures of a run directory")
    plot.add_argument("--run", required=True, help="a run directory written by pyro-vae train")
    plot.add_argument("--data-dir", help=f"folder holding MNIST/raw (default: ${DATA_ENV}, else ./data)")
    return parser


def _train(args) -> None:
    """A fresh run, or the run already in --out finished (same config), continued (more epochs) or reused."""
    from .workflow.training import resume, train_or_resume

    if args.resume:
        if args.out or args.overwrite:
            raise ConfigError("--resume continues a run in place; drop --out and --overwrite")
        resume(args.resume, args.overrides, args.data_dir, progress=not args.no_progress,
               figures=not args.no_figures)
        return
    config = load_config(args.config, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    train_or_resume(config, out, args.data_dir, overwrite=args.overwrite, progress=not args.no_progress,
                    redraw=False, figures=not args.no_figures)


def _plot(args) -> None:
    from .workflow.figures import redraw_figures

    for path in redraw_figures(args.run, args.data_dir):
        print(path)


def _evaluate(args) -> None:
    from pathlib import Path

    from .workflow.evaluation import evaluate_run, format_report

    report = evaluate_run(args.run, args.num_samples, args.split, args.data_dir, gap=args.gap, limit=args.limit,
                          q_family=args.q_family, flows_from=args.flows_from, check_steps=args.check_steps,
                          fit_overrides=args.overrides)
    print(format_report(report))
    print(f"written to {Path(args.run) / report['file']}")


def _compare(args) -> None:
    from .workflow.compare import compare

    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    compare(args.config, out, args.data_dir, args.num_samples, args.limit, args.overrides,
            progress=not args.no_progress)


def _run(args) -> None:
    from .workflow.experiments import run_experiment

    run_experiment(args.experiment, args.out, args.data_dir, args.overrides, args.num_samples, args.quick,
                   args.overwrite, progress=not args.no_progress, only=args.only)


def _score(args) -> None:
    from .workflow.scores import score_run

    out = score_run(args.run, args.out, args.images, args.dataset, args.split, args.num_samples, args.limit,
                    args.data_dir, progress=not args.no_progress, background=args.background, log=print)
    print(f"written to {out}")


def _report(args) -> None:
    from .workflow.report import write_report

    out = None if args.out == "-" else Path(args.out or Path(args.experiments) / "README.md")
    text = write_report(args.experiments, args.runs, out)
    print(text if out is None else f"written to {out}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .workflow.loop import TrainingError
    from .workflow.memory import retain_freed_memory
    from .workflow.streams import flushed_subnormals
    from .workflow.training import Interrupted

    retain_freed_memory()  # chunks of a few MB reuse freed memory instead of faulting in fresh pages
    try:
        commands = {"train": _train, "evaluate": _evaluate, "compare": _compare, "plot": _plot, "run": _run,
                    "report": _report, "score": _score}
        with flushed_subnormals():  # entered before torch's worker threads start, so that they flush too
            commands[args.command](args)
    except (ConfigError, DataError, CheckpointError) as err:
        print(f"pyro-vae: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except TrainingError as err:
        print(f"pyro-vae: training failed: {err}", file=sys.stderr)
        return EXIT_TRAINING_FAILED
    except Interrupted as err:
        print(f"pyro-vae: {err}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("pyro-vae: interrupted; the last checkpoint is kept", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())

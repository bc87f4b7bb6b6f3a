"""The epochs a user waits for: ``pyro-vae train`` from the command line against a hand-written script.

Three commands, each a fresh Python process, timed by wall clock from launch to exit:

``pyro_vae``
    ``python -m pyro_vae train --config experiments/vae_2d.toml --set train.epochs=2
    --out TMP --no-progress --data-dir DIR``: everything the user waits for (imports, data,
    the SVI epochs, the per-epoch test evaluation, snapshots, checkpoints, final metrics and
    figures), into a fresh ``--out`` each time;
``handwritten``
    ``python -m benchmarks.cli_epoch handwritten ... --tuned``: what a PyTorch user writes by hand,
    training only, with the two numerical settings pyro-vae's training uses (``torch.optim.Adam``
    with ``fused=True``, and ``torch.set_flush_denormal(True)``), so that the ratio measures
    the package's machinery and nothing else; the baseline the target is judged against;
``handwritten_plain``
    the same script with torch's defaults (Adam's for-loop kernel, subnormal floats kept): the
    loop as most users first write it, reported beside the other without a target.
    Both scripts are training only. They import torch alone (not pyro_vae: importing Pyro,
    matplotlib and the package is part of what the user of ``pyro-vae`` waits for, so the
    baseline must not pay it too), read the same MNIST training images from the idx file into a tensor (the
    bytes ``pyro_vae.workflow.data.load_data`` reads, divided by 255), build the config's MLP nets
    with ``torch.nn`` (the same layers and shapes as ``pyro_vae.workflow.build.build_model``'s,
    checked by a test) and train them for the same epochs: shuffled minibatches, BCE +
    analytic KL, ``torch.optim.Adam``.

All run with ``OMP_NUM_THREADS`` (and ``MKL_NUM_THREADS``) set to the benchmark's threads,
interleaved in rounds (the order alternating), a warm-up round discarded. Two ratios per round
against ``handwritten`` (and the same two against ``handwritten_plain``), each summarised by
:func:`benchmarks.timing.ratio_summary`, the first two judged against ``<= 1.10``:

``ratio``
    the whole command, launch to exit: the fixed costs (imports, data, the final metrics and
    figures) included, so it depends on the number of epochs;
``last_epoch_ratio``
    the last epoch as the user sees it, from the line that ends the epoch before it to the
    line that ends it (both commands print ``epoch k/E`` when an epoch is done; the parent
    stamps each line as it arrives): pyro-vae's SVI steps with the test evaluation,
    snapshot and checkpoint that follow them, against the script's steps alone.

Where pyro-vae's extra time goes comes from two more runs: one with timers around its
phases (:func:`phases`: the package's functions wrapped from outside, low overhead; the
hand-written script reports its own), and one under ``python -m cProfile`` (:func:`cprofile_top`:
detail, but the profiler's overhead inflates Python-heavy parts such as Pyro's tracing).

This module imports only the standard library at the top, so the hand-written side's
process pays for torch and nothing else.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .timing import compare, rounds

REPO = Path(__file__).resolve().parents[1]
CONFIG = "experiments/vae_2d.toml"
TARGET = 1.10
QUICK_OVERRIDES = ["data.train_size=1024", "data.test_size=256"]


# --- the hand-written side (runs in its own process: torch only) ---------------------------
def read_idx(path: str | os.PathLike):
    """An idx file (MNIST's format, optionally .gz) as a uint8 tensor of its shape."""
    import gzip

    import torch

    path = Path(path)
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return torch.frombuffer(bytearray(data), dtype=torch.uint8, offset=4 + 4 * ndim).reshape(shape)


def baseline_nets(hidden: list[int], z_dim: int, num_pixels: int = 784):
    """The reference MLP VAE's nets in plain ``torch.nn``: encoder body, the two heads, decoder."""
    from torch import nn

    def mlp(widths):
        layers = []
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        return nn.Sequential(*layers)

    return nn.ModuleDict({
        "encoder": mlp([num_pixels, *hidden]),
        "loc_head": nn.Linear(hidden[-1], z_dim),
        "log_var_head": nn.Linear(hidden[-1], z_dim),
        "decoder": nn.Sequential(mlp([z_dim, *reversed(hidden)]), nn.Linear(hidden[0], num_pixels)),
    })


def handwritten_main(argv: list[str]) -> int:
    """``python -m benchmarks.cli_epoch handwritten ...``: train the nets, nothing else."""
    start = time.perf_counter()
    import argparse

    import torch
    import torch.nn.functional as F

    try:  # the first torch.optim optimizer imports it (about 1 s); pyro-vae pays that among its imports
        import torch._dynamo  # noqa: F401
    except ImportError:
        pass
    imported = time.perf_counter()
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cli_epoch handwritten")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--hidden", required=True, help="comma-separated widths, e.g. 512,256")
    parser.add_argument("--z-dim", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--train-size", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--phases", help="write the phases' seconds to this JSON file")
    parser.add_argument("--tuned", action="store_true",
                        help="pyro-vae's numerical settings: fused Adam, subnormal floats flushed to zero")
    args = parser.parse_args(argv)
    if args.tuned:
        torch.set_flush_denormal(True)  # first, as pyro-vae does: the worker threads started later flush too
    torch.manual_seed(args.seed)

    raw = Path(args.data_dir) / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images = read_idx(raw if raw.is_file() else raw.with_name(raw.name + ".gz"))
    x_all = images.reshape(images.shape[0], -1).to(torch.float32) / 255.0  # (N, 784)
    if 0 < args.train_size < len(x_all):
        x_all = x_all[:args.train_size]
    loaded = time.perf_counter()

    nets = baseline_nets([int(w) for w in args.hidden.split(",")], args.z_dim)
    optimizer = torch.optim.Adam(nets.parameters(), lr=args.lr, fused=args.tuned)
    generator = torch.Generator().manual_seed(args.seed)
    built = time.perf_counter()

    n, batch = len(x_all), args.batch_size
    for number in range(1, args.epochs + 1):
        order = torch.randperm(n, generator=generator)
        for begin in range(0, n, batch):
            x = x_all[order[begin:begin + batch]]  # (B, 784)
            h = nets["encoder"](x)
            loc, log_var = nets["loc_head"](h), nets["log_var_head"](h)  # (B, z_dim)
            z = loc + (0.5 * log_var).exp() * torch.randn_like(loc)
            recon = F.binary_cross_entropy_with_logits(nets["decoder"](z), x, reduction="sum")
            kl = -0.5 * (1 + log_var - loc.pow(2) - log_var.exp()).sum()
            loss = (recon + kl) / x.shape[0]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        print(f"epoch {number}/{args.epochs}", flush=True)  # the line the parent times epochs by
    done = time.perf_counter()
    if args.phases:
        Path(args.phases).write_text(json.dumps({
            "imports": imported - start, "data loading": loaded - imported, "model build": built - loaded,
            "training (SVI steps)": done - built, "span": done - start,
        }))
    return 0


# --- pyro-vae with timers around its phases (runs in its own process) ----------------------
PHASES = [  # (module, attribute path, label); the labels of nested calls are charged exclusively
    ("pyro_vae.cli", "main", "cli, other"),
    ("pyro_vae.workflow.training", "check_config", "config checks"),
    ("pyro_vae.workflow.runs", "RunDir.prepare", "run directory"),
    ("pyro_vae.workflow.training", "Trainer.__init__", "trainer set-up, other"),
    ("pyro_vae.workflow.training", "load_run_sets", "data loading"),
    ("pyro_vae.workflow.training", "build_model", "model build"),
    ("pyro_vae.workflow.training", "Trainer.run", "training loop, other"),
    ("pyro_vae.workflow.training", "run_epoch", "training (SVI steps)"),
    ("pyro_vae.workflow.training", "evaluate_test_set", "per-epoch test evaluation"),
    ("pyro_vae.workflow.training", "Trainer.snapshot", "snapshots"),
    ("pyro_vae.workflow.training", "Trainer.save", "checkpoints"),
    ("pyro_vae.workflow.training", "Trainer.finish", "finish: metrics, other"),
    ("pyro_vae.workflow.figures", "draw_run_figures", "figures"),
]
FINAL_EVALUATION = "final test evaluation"  # evaluate_test_set called inside Trainer.finish


def phases_main(argv: list[str]) -> int:
    """``python -m benchmarks.cli_epoch phases JSON -- PYRO-VAE ARGS``: run the CLI with phase timers."""
    start = time.perf_counter()
    import importlib

    import pyro_vae.cli
    import pyro_vae.workflow.training  # noqa: F401 (imported by the cli on its first command anyway)

    totals: dict[str, float] = {"imports": time.perf_counter() - start}
    stack: list[list] = []  # [label, start, seconds of nested phases]
    missing = []

    def timed(fn, label):
        def wrapper(*args, **kwargs):
            here = label
            if label == "per-epoch test evaluation" and any(f[0] == "finish: metrics, other" for f in stack):
                here = FINAL_EVALUATION
            stack.append([here, time.perf_counter(), 0.0])
            try:
                return fn(*args, **kwargs)
            finally:
                name, begin, nested = stack.pop()
                elapsed = time.perf_counter() - begin
                totals[name] = totals.get(name, 0.0) + elapsed - nested
                if stack:
                    stack[-1][2] += elapsed
        return wrapper

    for module_name, path, label in PHASES:
        owner = importlib.import_module(module_name)
        *parents, attr = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent, None)
        if owner is None or not callable(getattr(owner, attr, None)):
            missing.append(f"{module_name}.{path}")
            continue
        setattr(owner, attr, timed(getattr(owner, attr), label))
    json_path, _, cli_args = argv[0], argv[1], argv[2:]
    rc = pyro_vae.cli.main(cli_args)
    totals["span"] = time.perf_counter() - start
    Path(json_path).write_text(json.dumps({"phases": totals, "unpatched": missing, "rc": rc}))
    return rc


# --- the parent: commands, timing, breakdown ----------------------------------------------
def _env(threads: int) -> dict:
    env = dict(os.environ)  # unbuffered: each epoch's line reaches the parent when it is printed
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"})
    return env


def _cpu_children() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


EPOCH_LINE = re.compile(r"epoch\s+\d+/\d+")  # how both commands start the line that ends an epoch


def _run(command: list[str], env: dict) -> tuple[float, float, list[float]]:
    """Run ``command`` in the repository root; ``(wall seconds, CPU seconds, epoch stamps)``, the stamps
    being the seconds since launch at which each :data:`EPOCH_LINE` arrived; raise if it fails."""
    cpu, start = _cpu_children(), time.perf_counter()
    stamps = []
    with tempfile.TemporaryFile("w+") as errors:
        with subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=errors, text=True) as proc:
            for line in proc.stdout:
                if EPOCH_LINE.match(line):
                    stamps.append(time.perf_counter() - start)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            errors.seek(0)
            raise RuntimeError(f"{' '.join(command)} exited with {proc.returncode}:\n{errors.read()[-3000:]}")
    return wall, _cpu_children() - cpu, stamps


def last_epoch_seconds(stamps: list[float], command: list[str]) -> float:
    """The last epoch as the user sees it: from the line that ended the one before to the line that ends it."""
    if len(stamps) < 2:
        raise RuntimeError(f"{' '.join(command)} printed {len(stamps)} epoch lines; the epoch needs two")
    return stamps[-1] - stamps[-2]


def pyro_vae_args(config: str, data_dir, out, epochs: int, overrides: list[str]) -> list[str]:
    sets = [arg for o in [f"train.epochs={epochs}", *overrides] for arg in ("--set", o)]
    return ["train", "--config", config, *sets, "--out", str(out), "--no-progress", "--data-dir", str(data_dir)]


def handwritten_args(config: str, data_dir, epochs: int, overrides: list[str]) -> list[str]:
    """The hand-written script's arguments for the nets and training settings of ``config``."""
    from pyro_vae import load_config

    c = load_config(REPO / config, overrides)
    if c.model.net != "mlp":
        raise ValueError(f"the hand-written baseline builds MLP nets only, but {config} has model.net = "
                         f"{c.model.net!r}; use an MLP config such as {CONFIG}")
    return ["--data-dir", str(data_dir), "--hidden", ",".join(map(str, c.model.hidden)), "--z-dim",
            str(c.model.z_dim), "--batch-size", str(c.train.batch_size), "--lr", repr(c.train.lr), "--epochs",
            str(epochs), "--train-size", str(c.data.train_size), "--seed", str(c.train.seed)]


def measure(data_dir, repeats: int, warmup: int = 1, threads: int = 2, config: str = CONFIG, epochs: int = 2,
            overrides: list[str] | None = None, profile: bool = True) -> dict:
    """Interleaved wall times of the three commands, the per-round ratios, and the breakdown.

    :param repeats: rounds kept (each round: one run of each command, the order alternating).
    :param warmup: rounds run first and discarded (disk cache, bytecode).
    :param overrides: ``--set`` overrides for both sides (e.g. :data:`QUICK_OVERRIDES`).
    :param profile: also run :func:`breakdown` (two more pyro-vae runs).
    """
    overrides = list(overrides or [])
    data_dir = Path(data_dir).resolve()
    env = _env(threads)
    scratch = Path(tempfile.mkdtemp(prefix="bench_cli_"))
    python = [sys.executable]
    plain_command = [*python, "-m", "benchmarks.cli_epoch", "handwritten",
                     *handwritten_args(config, data_dir, epochs, overrides)]
    hand_command = [*plain_command, "--tuned"]
    commands = {"handwritten": hand_command, "handwritten_plain": plain_command}
    cpu: dict[str, list[float]] = {"pyro_vae": [], **{side: [] for side in commands}}
    last_epoch: dict[str, list[float]] = {side: [] for side in cpu}
    counter = iter(range(10**6))

    def pyro_vae_side() -> float:
        out = scratch / f"run{next(counter)}"  # fresh: the command refuses an existing run
        command = [*python, "-m", "pyro_vae", *pyro_vae_args(config, data_dir, out, epochs, overrides)]
        wall, used, stamps = _run(command, env)
        cpu["pyro_vae"].append(used)
        last_epoch["pyro_vae"].append(last_epoch_seconds(stamps, command))
        shutil.rmtree(out, ignore_errors=True)
        return wall

    def handwritten_side(side: str):
        def run() -> float:
            wall, used, stamps = _run(commands[side], env)
            cpu[side].append(used)
            last_epoch[side].append(last_epoch_seconds(stamps, commands[side]))
            return wall
        return run

    try:
        timed = rounds({"pyro_vae": pyro_vae_side, **{side: handwritten_side(side) for side in commands}},
                       repeats, warmup)
        result = {
            "commands": {
                "pyro_vae": ["python", "-m", "pyro_vae", *pyro_vae_args(config, data_dir, "TMP", epochs, overrides)],
                **{side: ["python", *command[1:]] for side, command in commands.items()},
            },
            "threads": threads,
            "epochs": epochs,
            "rounds": timed,
            "cpu_seconds": {k: v[warmup:] for k, v in cpu.items()},
            "last_epoch": {"times": {k: v[warmup:] for k, v in last_epoch.items()}},
        }
        result.update({
            "ratio": compare(timed, "pyro_vae", "handwritten", TARGET),
            "last_epoch_ratio": compare(result["last_epoch"], "pyro_vae", "handwritten", TARGET),
            "plain_ratio": compare(timed, "pyro_vae", "handwritten_plain"),
            "plain_last_epoch_ratio": compare(result["last_epoch"], "pyro_vae", "handwritten_plain"),
        })
        if profile:
            result["breakdown"] = breakdown(data_dir, scratch, env, config, epochs, overrides, hand_command)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return result


def breakdown(data_dir, scratch: Path, env: dict, config: str, epochs: int, overrides: list[str],
              hand_command: list[str]) -> dict:
    """Where the time goes: :func:`phases` for both commands, and :func:`cprofile_top` of pyro-vae."""
    return {**phases(data_dir, scratch, env, config, epochs, overrides, hand_command),
            "cprofile": cprofile_top(data_dir, scratch, env, config, epochs, overrides)}


def phases(data_dir, scratch: Path, env: dict, config: str, epochs: int, overrides: list[str],
           hand_command: list[str]) -> dict:
    """One run of each command with timers around its phases; seconds per phase (exclusive)."""
    found = {}
    for side in ("pyro_vae", "handwritten"):
        report = scratch / f"phases_{side}.json"
        if side == "pyro_vae":
            command = [sys.executable, "-m", "benchmarks.cli_epoch", "phases", str(report), "--",
                       *pyro_vae_args(config, data_dir, scratch / "phases_run", epochs, overrides)]
        else:
            command = [*hand_command, "--phases", str(report)]
        wall, _, _ = _run(command, env)
        reported = json.loads(report.read_text())
        times = reported.get("phases", reported)
        span = times.pop("span")
        times = {"interpreter start and exit": wall - span, **times}
        found[side] = {"wall": wall, "phases": times, **({"unpatched": reported["unpatched"]}
                                                          if reported.get("unpatched") else {})}
    shutil.rmtree(scratch / "phases_run", ignore_errors=True)
    return {"phases": found, "note": "one run of each command with wall-clock timers around its phases "
            "(exclusive: a nested phase is not counted in its caller's); not the timed pairs"}


CPROFILE_EXTRAS = {  # functions outside pyro_vae worth a line: (file ending, function name)
    ("importlib._bootstrap>", "_find_and_load"): "all imports",
    ("matplotlib/figure.py", "savefig"): "matplotlib savefig",
    ("torch/serialization.py", "save"): "torch.save",
    ("pyro/infer/svi.py", "step"): "pyro SVI.step",
}


def cprofile_top(data_dir, scratch: Path, env: dict, config: str, epochs: int, overrides: list[str],
                 top: int = 20) -> dict:
    """One pyro-vae run under ``python -m cProfile``: the top cumulative entries of pyro_vae's
    functions, plus imports, figure saving, ``torch.save`` and ``SVI.step``."""
    import pstats

    path = scratch / "pyro_vae.prof"
    command = [sys.executable, "-m", "cProfile", "-o", str(path), "-m", "pyro_vae",
               *pyro_vae_args(config, data_dir, scratch / "cprofile_run", epochs, overrides)]
    wall, _, _ = _run(command, env)
    shutil.rmtree(scratch / "cprofile_run", ignore_errors=True)
    stats = pstats.Stats(str(path)).stats  # {(file, line, name): (calls, ncalls, tottime, cumtime, callers)}
    extras, own = [], []
    for (file, line, name), (_, calls, _, cumulative, _) in stats.items():
        for (ending, function), label in CPROFILE_EXTRAS.items():
            if file.endswith(ending) and name == function:
                extras.append({"function": label, "cumulative_s": cumulative, "calls": calls})
        if "pyro_vae" + os.sep in file and name != "<module>":  # module bodies are imports, counted above
            short = file[file.rindex("pyro_vae" + os.sep):]
            own.append({"function": f"{short}:{line}({name})", "cumulative_s": cumulative, "calls": calls})
    extras = [max((e for e in extras if e["function"] == label), key=lambda e: e["cumulative_s"])
              for label in dict.fromkeys(e["function"] for e in extras)]
    own.sort(key=lambda e: -e["cumulative_s"])
    return {"wall_under_profiler": wall, "outside_pyro_vae": extras, "top_pyro_vae": own[:top],
            "note": "cProfile's overhead inflates Python-heavy code (Pyro's tracing) more than C-heavy"}


# --- printing ------------------------------------------------------------------------------
def phase_table(found: dict) -> list[list[str]]:
    """Rows: phase, pyro-vae s, hand-written s, extra s, share of pyro-vae's wall time."""
    mine, theirs = found["pyro_vae"]["phases"], found["handwritten"]["phases"]
    wall = found["pyro_vae"]["wall"]
    rows = []
    for label in [*mine, *(k for k in theirs if k not in mine)]:
        a, b = mine.get(label, 0.0), theirs.get(label, 0.0)
        rows.append([label, f"{a:.2f}", f"{b:.2f}" if label in theirs else "-", f"{a - b:+.2f}", f"{a / wall:.0%}"])
    rows.append(["total (wall)", f"{wall:.2f}", f"{found['handwritten']['wall']:.2f}",
                 f"{wall - found['handwritten']['wall']:+.2f}", "100%"])
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "handwritten":
        return handwritten_main(argv[1:])
    if argv and argv[0] == "phases":
        return phases_main(argv[1:])
    print("usage: python -m benchmarks.cli_epoch handwritten ARGS | phases JSON -- PYRO-VAE ARGS\n"
          "(the measurement itself: python -m benchmarks --only cli)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

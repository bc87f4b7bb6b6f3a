"""``python -m benchmarks [--quick] [--only PARTS] [--data-dir DIR] [--out FILE]``: the benchmarks, tables and JSON.

Parts (``--only`` picks a comma-separated subset; the JSON file then keeps the other parts
it already holds):

``epoch``       pyro_vae's SVI loop against a hand-written loop (and a DataLoader loop, MLP),
                paired segments of training steps in one process (:mod:`benchmarks.epoch`);
``cli``         ``pyro-vae train`` for 2 epochs against a hand-written script, each a fresh
                process, and where the extra time goes (:mod:`benchmarks.cli_epoch`);
``mean_field``  seconds per step of a mean-field guide as N grows (:mod:`benchmarks.mean_field`);
``likelihood``  importance-sampled log p(x) throughput (:mod:`benchmarks.likelihood`).

Every ratio is the median of per-pair ratios with its 25-75% spread and an order-statistic
95% confidence interval; a target is judged met / not met only when the interval allows
(:mod:`benchmarks.timing`). The JSON holds every raw segment time.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys

import torch

from pyro_vae.infer.evaluate import CHUNK_ROWS
from pyro_vae.workflow.data import resolve_data_dir
from pyro_vae.workflow.memory import retain_freed_memory
from pyro_vae.workflow.streams import flushed_subnormals

from . import cli_epoch, epoch, likelihood, mean_field
from .timing import compare, ratio_table, rounds, seconds_table, table, verdict

PARTS = ("epoch", "cli", "mean_field", "likelihood")
LOOP_TARGET = 1.05  # pyro_vae / handwritten, in process
DATALOADER_TARGET = 1.6  # dataloader / pyro_vae, at least
SCAN_ROWS = [250, 500, 1000, 2500, 5000]  # rows (samples x images) a chunk of the sampler decodes, scanned


def _parts(text: str) -> list[str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise argparse.ArgumentTypeError(f"unknown part(s) {', '.join(unknown) or repr(text)}; "
                                         f"choose from {','.join(PARTS)}")
    return parts


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test, not a measurement)")
    parser.add_argument("--only", type=_parts, default=list(PARTS), help=f"comma-separated parts: {','.join(PARTS)}")
    parser.add_argument("--data-dir", help="folder holding MNIST/raw")
    parser.add_argument("--out", default="benchmarks/results.json")
    parser.add_argument("--threads", type=_positive, default=2,
                        help="torch threads (and the commands' OMP_NUM_THREADS)")
    parser.add_argument("--pairs", type=_positive, default=30, help="MLP segment rounds kept (default 30)")
    parser.add_argument("--steps", type=_positive, default=200, help="SVI steps per MLP segment (default 200)")
    parser.add_argument("--conv-pairs", type=_positive, default=16, help="conv segment rounds kept (default 16)")
    parser.add_argument("--conv-steps", type=_positive, default=100, help="SVI steps per conv segment (default 100)")
    parser.add_argument("--likelihood-rounds", type=_positive, default=21,
                        help="interleaved rounds of the log p(x) part kept (default 21)")
    parser.add_argument("--cli-repeats", type=_positive, default=10, help="pairs of command runs kept (default 10)")
    parser.add_argument("--no-profile", action="store_true", help="skip the cli part's breakdown runs")
    return parser.parse_args(argv)


def run_loops(args, data_dir) -> dict:
    results = {}
    plan = (("mlp", args.steps, args.pairs, 2), ("conv", args.conv_steps, args.conv_pairs, 1))
    for net, steps, pairs, warmup in plan:
        train_size = 0
        if args.quick:
            steps, pairs, warmup, train_size = 4, 3, 1, 1024
        sides = epoch.segment_sides(net, data_dir, steps, train_size, dataloader=net == "mlp")
        timed = rounds(sides, pairs, warmup)
        ratios = {"pyro_vae / handwritten": compare(timed, "pyro_vae", "handwritten", LOOP_TARGET)}
        if "dataloader" in sides:
            ratios["dataloader / pyro_vae"] = compare(timed, "dataloader", "pyro_vae", DATALOADER_TARGET,
                                                      at_most=False)
        results[f"{net}_loop"] = {"steps_per_segment": steps, "batch_size": 128, "train_size": train_size or 60000,
                                  "objective": "trace_mean_field", "warmup_rounds": warmup, "rounds": timed,
                                  "ratios": ratios}
        print(f"\n{net}: {pairs} rounds of {steps} training steps (batch 128) per side after {warmup} warm-up, "
              f"sides alternating, {args.threads} threads; seconds per segment:")
        print(seconds_table(timed))
        print(ratio_table(ratios))
        sys.stdout.flush()
    return results


def run_cli(args, data_dir) -> dict:
    quick = args.quick
    measured = cli_epoch.measure(data_dir, repeats=1 if quick else args.cli_repeats, warmup=0 if quick else 1,
                                 threads=args.threads, overrides=cli_epoch.QUICK_OVERRIDES if quick else [],
                                 profile=not args.no_profile)
    pairs = measured["ratio"]["pairs"]
    print(f"\n`pyro-vae train --config {cli_epoch.CONFIG}` ({measured['epochs']} epochs"
          f"{', ' + ' '.join(cli_epoch.QUICK_OVERRIDES) if quick else ''}) against the hand-written script "
          f"(training only; tuned: fused Adam and subnormals flushed as pyro-vae trains, plain: torch's "
          f"defaults), {pairs} rounds of fresh processes, {args.threads} threads; wall seconds:")
    print(seconds_table(measured["rounds"]))
    print("the last epoch, from the line ending the epoch before it to its own line; wall seconds:")
    print(seconds_table(measured["last_epoch"]))
    print(ratio_table({"whole command: pyro_vae / handwritten": measured["ratio"],
                       "last epoch: pyro_vae / handwritten": measured["last_epoch_ratio"],
                       "whole command: pyro_vae / handwritten_plain": measured["plain_ratio"],
                       "last epoch: pyro_vae / handwritten_plain": measured["plain_last_epoch_ratio"]}))
    if "breakdown" in measured:
        found = measured["breakdown"]["phases"]
        print("\nwhere the time goes (one run of each with timers around its phases, exclusive seconds):")
        print(table(cli_epoch.phase_table(found), ["phase", "pyro-vae s", "hand-written s", "extra s", "of pyro-vae"]))
        if found["pyro_vae"].get("unpatched"):
            print(f"(not timed, renamed or gone: {', '.join(found['pyro_vae']['unpatched'])})")
        prof = measured["breakdown"]["cprofile"]
        rows = [[e["function"], f"{e['cumulative_s']:.2f}", str(e["calls"])]
                for e in prof["outside_pyro_vae"] + prof["top_pyro_vae"][:12]]
        print(f"\ncProfile of one more pyro-vae run ({prof['wall_under_profiler']:.1f} s under the profiler), "
              "top cumulative:")
        print(table(rows, ["function", "cumulative s", "calls"]))
    sys.stdout.flush()
    return {"cli": measured}


def run_mean_field(args) -> dict:
    sizes = [1000, 10000] if args.quick else [1000, 10000, 60000, 600000]
    steps = {n: mean_field.seconds_per_step(n, steps=5 if args.quick else 200) for n in sizes}
    print("\nmean-field guide, seconds per step (batch 128, MLP decoder, z = 2; medians, no interval):")
    print(table([[f"{n:,}", f"{s * 1000:.2f} ms", f"{s / steps[1000]:.2f}"] for n, s in steps.items()],
                ["N", "per step", "vs N = 1,000"]))
    return {"mean_field_step_seconds": steps}


def run_likelihood(args) -> dict:
    rows, found = [], {}
    for k in ([50] if args.quick else [1000, 5000]):
        r = likelihood.ratio_to_matmul(k, images=4 if args.quick else 40,
                                       rounds=1 if args.quick else args.likelihood_rounds,
                                       matmul_rows=2000 if args.quick else 25000)
        found[str(k)] = r
        stats, eager = r["ratio"], r["eager_ratio"]
        rows.append([str(k), f"{r['images_per_second']:.1f}", f"{r['decoder_gflops']:.1f}",
                     f"{r['matmul_gflops']:.1f}", _share(stats), verdict(stats, 0.75, at_most=False),
                     f"{r['eager_images_per_second']:.1f}", _share(eager), _paired(r["compiled_vs_eager"]),
                     _paired(r["fused_vs_unfused"])])
    print("\nimportance-sampled log p(x), MLP z = 50, log p(x | z) compiled and eager (median of interleaved rounds, "
          "its interval in brackets):")
    print(table(rows, ["K", "images/s", "decoder GFLOP/s", "matmul GFLOP/s", "of matmul", ">= 75%",
                       "eager images/s", "eager, of matmul", "compiled / eager speed",
                       "fused / unfused log q, log p speed"]))
    status = likelihood.compile_status()
    if not status["allowed"] or status["failures"]:
        print(f"the compiled side ran EAGER: compiling allowed {status['allowed']}, failures {status['failures']}")
    scanned = [100, 400] if args.quick else sorted({*SCAN_ROWS, CHUNK_ROWS})
    scan = likelihood.chunk_scan(50 if args.quick else 1000, scanned,
                                 images=4 if args.quick else 40,
                                 rounds=1 if args.quick else args.likelihood_rounds,
                                 matmul_rows=2000 if args.quick else 25000, reference=400 if args.quick else CHUNK_ROWS)
    print(f"\nthe same, compiled (K = {50 if args.quick else 1000}) by rows decoded at once "
          f"(CHUNK_ROWS = {CHUNK_ROWS}):")
    paired = scan.get("vs_reference", {})
    print(table([[rows, _share(r), _paired(paired.get(rows))] for rows, r in scan.items() if rows != "vs_reference"],
                ["rows", "of matmul", f"speed vs {paired.get('rows')} rows, paired by round"]))
    return {"log_likelihood": found, "log_likelihood_chunk_rows": scan}


def _share(stats: dict) -> str:
    return f"{stats['median']:.0%} ({stats['interval'][0]:.0%}-{stats['interval'][1]:.0%})"


def _paired(stats: dict | None) -> str:
    """A paired speed ratio as ``median (interval)``; ``-`` for the reference itself."""
    if stats is None:
        return "-"
    return f"{stats['median']:.3f} ({stats['interval'][0]:.3f}-{stats['interval'][1]:.3f})"


def main(argv=None) -> int:
    args = parse_args(argv)
    retain_freed_memory()  # as pyro-vae does: every side reuses freed memory
    with flushed_subnormals():  # as pyro-vae does, before the worker threads start, so every side flushes
        return _run_parts(args)


def _run_parts(args) -> int:
    torch.set_num_threads(args.threads)
    data_dir = resolve_data_dir(args.data_dir)
    results: dict = {}
    if set(args.only) != set(PARTS) and os.path.isfile(args.out):
        with open(args.out) as handle:
            results = json.load(handle)  # keep the parts not run now
    results.update({"machine": platform.platform(), "torch": torch.__version__, "threads": args.threads,
                    "quick": args.quick, "when": datetime.datetime.now().isoformat(timespec="seconds")})
    measured = results.setdefault("measured", {})  # part -> when it was last run (a kept part keeps its time)
    for part, run in (("epoch", run_loops), ("cli", run_cli), ("mean_field", run_mean_field),
                      ("likelihood", run_likelihood)):
        if part in args.only:
            results.update(run(args, data_dir) if part in ("epoch", "cli") else run(args))
            measured[part] = datetime.datetime.now().isoformat(timespec="seconds")
    with open(args.out, "w") as handle:
        json.dump(results, handle, indent=2, default=float)
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

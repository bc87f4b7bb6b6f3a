"""``python -m benchmarks [--quick] [--data-dir DIR] [--out FILE]``: every benchmark, a table and JSON."""

from __future__ import annotations

import argparse
import json
import platform
import sys

import torch

from pyro_vae.data import resolve_data_dir

from . import epoch, likelihood, mean_field
from .timing import interleaved, table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test, not a measurement)")
    parser.add_argument("--data-dir", help="folder holding MNIST/raw")
    parser.add_argument("--out", default="benchmarks/results.json")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data_dir = resolve_data_dir(args.data_dir)
    quick = args.quick
    results: dict = {"machine": platform.platform(), "torch": torch.__version__, "threads": args.threads}

    for net in ("mlp", "conv"):
        sides = epoch.epoch_sides(net, data_dir, train_size=1024 if quick else 0)
        if net == "mlp" or quick:  # warm-up (allocator, optimizer state); negligible in a 25 s conv epoch
            for fn in sides.values():
                fn()
        timed = interleaved(sides, repeats=1 if quick else (3 if net == "mlp" else 2))
        results[f"{net}_epoch"] = timed
        p, h, d = (timed[k]["median"] for k in ("pyro_vae", "handwritten", "dataloader"))
        images = 1024 if quick else 60000
        print(f"\n{net} epoch ({images:,} images, batch 128, {args.threads} threads), seconds:")
        print(table([[k, f"{v['median']:.2f}", f"{v['min']:.2f}-{v['max']:.2f}"] for k, v in timed.items()],
                    ["loop", "median", "range"]))
        print(f"pyro_vae / handwritten = {p / h:.3f};  dataloader / pyro_vae = {d / p:.2f}")
        sys.stdout.flush()

    sizes = [1000, 10000] if quick else [1000, 10000, 60000, 600000]
    steps = {n: mean_field.seconds_per_step(n, steps=5 if quick else 200) for n in sizes}
    results["mean_field_step_seconds"] = steps
    print("\nmean-field guide, seconds per step (batch 128, MLP decoder, z = 2):")
    print(table([[f"{n:,}", f"{s * 1000:.2f} ms", f"{s / steps[1000]:.2f}"] for n, s in steps.items()],
                ["N", "per step", "vs N = 1,000"]))

    peak = likelihood.matmul_gflops(m=2000 if quick else 25000)
    rows, results["log_likelihood"] = [], {"matmul_gflops": peak}
    for k in ([50] if quick else [1000, 5000]):
        r = likelihood.throughput(k, images=4 if quick else 40)
        results["log_likelihood"][str(k)] = r
        rows.append([str(k), f"{r['images_per_second']:.1f}", f"{r['decoder_gflops']:.1f}",
                     f"{r['decoder_gflops'] / peak:.0%}"])
    print(f"\nimportance-sampled log p(x), MLP z = 50 (matmul: {peak:.1f} GFLOP/s):")
    print(table(rows, ["K", "images/s", "decoder GFLOP/s", "of matmul"]))

    with open(args.out, "w") as handle:
        json.dump(results, handle, indent=2, default=float)
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

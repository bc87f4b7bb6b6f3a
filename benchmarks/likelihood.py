"""Importance-sampled log p(x): images per second, and the decoder's achieved GFLOP/s
against a plain matmul measured in the same run."""

from __future__ import annotations

import statistics
import time
from unittest import mock

import pyro
import torch
from torch import nn

from pyro_vae import build_model, load_config
from pyro_vae.workflow.data import ImageData
from pyro_vae.infer import compiled
from pyro_vae.infer.compiled import KERNELS, compiling_allowed
from pyro_vae.infer.evaluate import CHUNK_ROWS, importance_log_likelihood

from . import timing


def decoder_flops(decoder: nn.Module) -> int:
    """Multiply-adds x 2 of the decoder's linear layers for one z."""
    return sum(2 * m.in_features * m.out_features for m in decoder.modules() if isinstance(m, nn.Linear))


def matmul_gflops(m: int = 25000, k: int = 512, n: int = 784, repeats: int = 5) -> float:
    """GFLOP/s of a plain float32 matmul of the decoder's largest layer's shape, into one output buffer (a
    fresh 78 MB output each time would time the kernel's page faults too, not the arithmetic)."""
    a, b, out = torch.randn(m, k), torch.randn(k, n), torch.empty(m, n)
    torch.mm(a, b, out=out)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b, out=out)
    return 2 * m * k * n * repeats / (time.perf_counter() - start) / 1e9


def ratio_to_matmul(num_samples: int, images: int = 40, rounds: int = 7, matmul_rows: int = 25000) -> dict:
    """The decoder's GFLOP/s inside the importance sampler over a plain matmul's, in interleaved rounds
    (:func:`benchmarks.timing.rounds`: a warm-up round, the order alternated): the median of the
    per-round ratios with its spread and interval (:func:`benchmarks.timing.ratio_summary`), for the
    compiled sampler (what a long estimate runs) and the eager one; ``compiled_vs_eager`` pairs the two
    round by round (above 1: the compiled one is faster), and ``fused_vs_unfused`` the compiled sampler with the
    compiled one whose log p(z) - log q(z | x) stays eager (no distribution taken for a diagonal Gaussian)."""
    found: dict[str, list[dict]] = {"matmul": [], "sampler": [], "sampler_unfused": [], "sampler_eager": []}

    def unfused():
        with mock.patch.object(compiled, "diagonal_normal", lambda distribution: None):
            return throughput(num_samples, images, compile=True)

    timed = timing.rounds({
        "matmul": lambda: found["matmul"].append(matmul_gflops(m=matmul_rows)),
        "sampler": lambda: found["sampler"].append(throughput(num_samples, images, compile=True)),
        "sampler_unfused": lambda: found["sampler_unfused"].append(unfused()),
        "sampler_eager": lambda: found["sampler_eager"].append(throughput(num_samples, images, compile=False)),
    }, rounds)
    kept = {side: values[-rounds:] for side, values in found.items()}  # the warm-up round's first
    ratios = {side: [s["decoder_gflops"] / m for s, m in zip(kept[side], kept["matmul"])]
              for side in ("sampler", "sampler_eager")}
    return {"ratio": timing.ratio_summary(ratios["sampler"]),
            "eager_ratio": timing.ratio_summary(ratios["sampler_eager"]),
            "compiled_vs_eager": timing.ratio_summary([c / e for c, e in zip(*ratios.values())]),
            "fused_vs_unfused": timing.ratio_summary([f["decoder_gflops"] / u["decoder_gflops"]
                                                      for f, u in zip(kept["sampler"], kept["sampler_unfused"])]),
            # each side's own median over the rounds (the ratios above pair the sides within each round)
            "matmul_gflops": statistics.median(kept["matmul"]),
            "images_per_second": statistics.median(s["images_per_second"] for s in kept["sampler"]),
            "decoder_gflops": statistics.median(s["decoder_gflops"] for s in kept["sampler"]),
            "eager_images_per_second": statistics.median(s["images_per_second"] for s in kept["sampler_eager"]),
            "compiled": compile_status(), "seconds": timed["times"]}


def compile_status() -> dict:
    """Whether the "compiled" side really ran compiled: compiling allowed, and no failure recorded."""
    failures = {kernel.function.__qualname__: kernel.failure for kernel in KERNELS.values() if kernel.failure}
    return {"allowed": compiling_allowed(), "failures": failures}


def chunk_scan(num_samples: int, rows: list[int], images: int = 40, rounds: int = 7,
               matmul_rows: int = 25000, reference: int = CHUNK_ROWS) -> dict:
    """The sampler's ratio to the matmul at each number of decoded rows (samples x images) a chunk holds,
    every row count and the matmul in each of ``rounds`` interleaved rounds: what ``CHUNK_ROWS`` is tuned on.
    With ``reference`` among ``rows``, each row count's speed is also paired, round by round, with the
    reference's (``{"vs_reference": {rows: summary}}``: above 1, faster), which the machine's drift between
    rounds does not move."""
    found: dict[str, list[dict]] = {"matmul": [], **{f"rows_{r}": [] for r in rows}}
    sides = {"matmul": lambda: found["matmul"].append(matmul_gflops(m=matmul_rows))}
    for r in rows:
        sides[f"rows_{r}"] = lambda r=r: found[f"rows_{r}"].append(throughput(num_samples, images, chunk_rows=r))
    timing.rounds(sides, rounds)
    matmul = found["matmul"][-rounds:]
    scan = {str(r): timing.ratio_summary([s["decoder_gflops"] / m
                                          for s, m in zip(found[f"rows_{r}"][-rounds:], matmul)]) for r in rows}
    if reference in rows:
        base = found[f"rows_{reference}"][-rounds:]
        scan["vs_reference"] = {"rows": reference, **{
            str(r): timing.ratio_summary([s["decoder_gflops"] / b["decoder_gflops"]
                                          for s, b in zip(found[f"rows_{r}"][-rounds:], base)])
            for r in rows if r != reference}}
    return scan


def throughput(num_samples: int, images: int = 50, z_dim: int = 50, chunk_rows: int = CHUNK_ROWS,
               compile: bool = True) -> dict:
    """Images per second and the decoder's GFLOP/s of the importance sampler, drawing ``chunk_rows // images``
    samples per chunk, on a fresh untrained model (the arithmetic is the same); ``compile``: log p(x | z)
    compiled, as an estimate of at least :data:`~pyro_vae.infer.compiled.COMPILE_MIN_ROWS` codes runs it (the
    warm-up call compiles it)."""
    config = load_config(None, [f"model.z_dim={z_dim}", "data.pixels=threshold"])
    pyro.enable_validation(True)  # as `pyro-vae evaluate` runs (Pyro's default)
    vae, guide = build_model(config, 1)
    x = (torch.rand(images, 784) < 0.2).float()
    data = ImageData(x, torch.zeros(images, dtype=torch.long), "threshold")
    chunk = max(1, chunk_rows // images)
    importance_log_likelihood(vae, guide, data.subset(2).images, num_samples=min(num_samples, 500),
                              compile=compile)  # warm-up
    start = time.perf_counter()
    importance_log_likelihood(vae, guide, data.images, num_samples=num_samples, chunk_size=chunk, compile=compile)
    seconds = time.perf_counter() - start
    gflops = decoder_flops(vae.decoder) * images * num_samples / seconds / 1e9
    return {"images_per_second": images / seconds, "decoder_gflops": gflops}

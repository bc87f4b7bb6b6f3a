"""``python -m benchmarks.profile``: where the time goes, for the Performance notes in the README.

1. One Adam step over the reference MLP VAE's parameters: one torch optimizer per parameter
   (what ``pyro.optim.Adam`` builds) against one fused optimizer over all of them
   (``pyro_vae.infer.optim.GroupedAdam``) and torch's default (foreach) Adam of a hand-written loop.
2. ``torch.profiler`` on the importance-sampled log p(x) of 10 images with K = 5,000
   (MLP decoder, z = 50): the operators that take the CPU time.
"""

from __future__ import annotations

import time

import torch
from torch.profiler import ProfilerActivity, profile

from pyro_vae import build_model, load_config
from pyro_vae.workflow.data import ImageData
from pyro_vae.infer.evaluate import importance_log_likelihood


def adam_step_ms(optimizers, repeats: int = 50) -> float:
    for optimizer in optimizers:
        optimizer.step()
    start = time.perf_counter()
    for _ in range(repeats):
        for optimizer in optimizers:
            optimizer.step()
    return (time.perf_counter() - start) / repeats * 1000


def optimizer_steps() -> dict[str, float]:
    vae, guide = build_model(load_config(None, []), 10)
    params = [*vae.parameters(), *guide.parameters()]
    for p in params:
        p.grad = torch.randn_like(p)
    return {
        "one Adam per parameter (pyro.optim.Adam)": adam_step_ms([torch.optim.Adam([p], lr=1e-3) for p in params]),
        "one default (foreach) Adam (hand-written loop)": adam_step_ms([torch.optim.Adam(params, lr=1e-3)]),
        "one fused Adam (GroupedAdam)": adam_step_ms([torch.optim.Adam(params, lr=1e-3, fused=True)]),
    }


def likelihood_profile(rows: int = 8) -> str:
    vae, guide = build_model(load_config(None, ["model.z_dim=50", "data.pixels=threshold"]), 1)
    x = (torch.rand(10, 784) < 0.2).float()
    data = ImageData(x, torch.zeros(10, dtype=torch.long), "threshold")
    importance_log_likelihood(vae, guide, data.subset(2).images, num_samples=500, compile=True)  # warm-up, compiles
    with profile(activities=[ProfilerActivity.CPU]) as prof:  # compiled, as a long estimate runs
        importance_log_likelihood(vae, guide, data.images, num_samples=5000, compile=True)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=36)


def main() -> None:
    torch.set_num_threads(2)
    print("Adam step over the reference MLP VAE's 14 parameter tensors (1.07 M numbers), ms:")
    for name, ms in optimizer_steps().items():
        print(f"  {name:<48} {ms:6.2f}")
    print("\nimportance-sampled log p(x), 10 images, K = 5000, MLP z = 50 (torch.profiler):")
    print(likelihood_profile())


if __name__ == "__main__":
    main()

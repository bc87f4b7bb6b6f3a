"""Mean-field guide: seconds per SVI step as the number of per-datapoint rows N grows."""

from __future__ import annotations

import time

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO

from pyro_vae import adam, build_model, load_config


def seconds_per_step(num_data: int, steps: int = 60, batch_size: int = 128, z_dim: int = 2) -> float:
    """Median seconds of an SVI step with a ``num_data``-row mean-field guide (MLP decoder)."""
    pyro.clear_param_store()
    config = load_config(None, ["guide.type=mean_field", f"model.z_dim={z_dim}"])
    pyro.enable_validation(config.train.validate)  # as a training run (Trainer) sets it
    vae, guide = build_model(config, num_data)
    svi = SVI(vae.model, guide, adam(1e-3, 0.05), Trace_ELBO())
    pool = (torch.rand(1024, 784) < 0.2).float()  # pixel values do not change the cost
    generator = torch.Generator().manual_seed(0)
    times = []
    for step in range(steps + 5):
        idx = torch.randint(num_data, (batch_size,), generator=generator)
        x = pool[idx % len(pool)]
        start = time.perf_counter()
        svi.step(x, idx)
        if step >= 5:  # warm-up: optimizer creation
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]

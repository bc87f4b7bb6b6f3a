"""A VampPrior training step with the mixture density as two matrix products against the broadcast
``MixtureSameFamily`` it replaced, in one process, rounds alternating the two (1 torch thread).

    python -m benchmarks.vamp_density      # median seconds per step and range, each density

The model is experiments/nll_budget.toml's with ``prior.type = 'vamp'``, 500 pseudo-inputs; a
fixed minibatch of 128 random binary images. Round 1 of each is a warm-up and is dropped.
"""

import statistics
import time

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI

import pyro_vae.models.priors as priors
from pyro_vae.infer.optim import adam
from pyro_vae.workflow.build import build_model, build_objective
from pyro_vae.workflow.config import load_config


def broadcast_mixture(logits, components):
    return dist.MixtureSameFamily(dist.Categorical(logits=logits), components)


def main(rounds: int = 8, steps: int = 10) -> None:
    torch.set_num_threads(1)
    config = load_config("experiments/nll_budget.toml", ["prior.type='vamp'", "prior.components=500"])
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    vae, guide = build_model(config, 60000)
    svi = SVI(vae.model, guide, adam(1e-3), build_objective(config))
    x, idx = (torch.rand(128, 784) < 0.2).float(), torch.arange(128)
    densities = {"matmul": priors.mixture, "broadcast": broadcast_mixture}
    times = {name: [] for name in densities}
    for r in range(rounds):
        for name in (list(densities) if r % 2 else list(densities)[::-1]):
            priors.mixture = densities[name]
            start = time.perf_counter()
            for _ in range(steps):
                svi.step(x, idx)
            times[name].append((time.perf_counter() - start) / steps)
    priors.mixture = densities["matmul"]
    for name, seconds in times.items():
        kept = seconds[1:]
        print(f"{name:9s} median {statistics.median(kept):.4f} s/step, range {min(kept):.4f}-{max(kept):.4f}")


if __name__ == "__main__":
    main()

"""Build the parts a config names (prior, networks, likelihood, guide) and check the names.

Everything here runs before data are loaded or training starts, so a bad name or a
bad covariance fails at once with a :class:`ConfigError`.
"""

from __future__ import annotations

import torch

from .config import Config, ConfigError
from .data import DATASETS, PIXEL_MODES
from .guides import Guide, build_guide
from .likelihoods import build_likelihood
from .nets import INITS, NETS, build_networks, glorot_init_
from .objectives import build_objective
from .priors import build_prior
from .vae import VAE

DEVICES = ("cpu", "cuda", "auto")


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``auto`` (cuda when available) as a :class:`torch.device`."""
    if name not in DEVICES:
        raise ConfigError(f"unknown train.device {name!r}; valid devices: {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device = 'cuda' but no CUDA device is available; use 'cpu' or 'auto'")
    return torch.device(name)


def build_model(config: Config, num_data: int) -> tuple[VAE, Guide]:
    """``(vae, guide)`` for ``config`` with a training set of ``num_data`` points (on the CPU)."""
    m = config.model
    if m.net not in NETS:
        raise ConfigError(f"unknown model.net {m.net!r}; valid nets: {', '.join(NETS)}")
    encoder, decoder = build_networks(m.net, m.z_dim, m.hidden)
    prior = build_prior(
        config.prior.type, m.z_dim, config.prior.covariance, config.prior.loc, config.prior.components
    )
    likelihood = build_likelihood(m.likelihood, config.data.pixels, m.normal_scale, m.learn_scale)
    vae = VAE(prior, decoder, likelihood, num_data)
    guide = build_guide(config.guide.type, encoder, m.z_dim, num_data, config.guide.init_scale)
    if m.init not in INITS:
        raise ConfigError(f"unknown model.init {m.init!r}; valid inits: {', '.join(INITS)}")
    if m.init == "glorot":
        glorot_init_(decoder)
        glorot_init_(guide)
    return vae, guide


def check_config(config: Config) -> None:
    """Check every name and matrix in ``config`` by building its parts once; raises ConfigError."""
    if config.data.dataset not in DATASETS:
        raise ConfigError(
            f"unknown data.dataset {config.data.dataset!r}; valid datasets: {', '.join(DATASETS)}"
        )
    if config.data.pixels not in PIXEL_MODES:
        raise ConfigError(
            f"unknown data.pixels {config.data.pixels!r}; valid modes: {', '.join(PIXEL_MODES)}"
        )
    resolve_device(config.train.device)
    t = config.train
    build_objective(t.objective, t.num_particles, t.free_bits, t.beta)
    if t.objective == "jit_trace_mean_field" and config.guide.type == "amortized_full" and (
        config.prior.type in ("correlated", "learned")
    ):
        raise ConfigError(
            "train.objective = 'jit_trace_mean_field' cannot trace torch's KL between two "
            "MultivariateNormals (full-covariance guide and Gaussian prior); use 'trace_mean_field'"
        )
    if t.free_bits > 0 and (config.prior.type != "standard" or config.guide.type == "amortized_full"):
        raise ConfigError(
            "train.free_bits needs a per-dimension KL: prior.type = 'standard' and a diagonal guide "
            f"('amortized' or 'mean_field'), got prior {config.prior.type!r} and guide {config.guide.type!r}"
        )
    if t.snapshot_epochs and config.guide.type == "mean_field":
        raise ConfigError(
            "train.snapshot_epochs needs an amortized guide (a mean_field guide has no test-set "
            "posterior during training); set train.snapshot_epochs=[] or use guide.type='amortized'"
        )
    with torch.random.fork_rng(devices=[]):  # building must not move the run's random stream
        build_model(config, num_data=1)

"""Build the parts a config names (prior, networks, likelihood, guide) and check the names.

Everything here runs before data are loaded or training starts, so a bad name or a
bad covariance fails at once with a :class:`ConfigError`.
"""

from __future__ import annotations

import copy
import os

import torch

from .config import Config, ConfigError
from .data import DATASETS, PIXEL_MODES
from .guides import Guide, build_guide
from .likelihoods import build_likelihood
from .nets import INITS, NETS, NUM_PIXELS, build_networks, glorot_init_, network_size
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


TRAIN_IMAGES = 60_000  # MNIST and Fashion-MNIST: the most a mean_field guide holds rows for
_SIZE_KEYS = (("model", "hidden"), ("model", "z_dim"), ("prior", "components"), ("train", "num_particles"),
              ("train", "batch_size"), ("train", "eval_batch_size"))


def _memory_needed(config: Config, num_data: int) -> int:
    """Bytes a training step needs, roughly: parameters, gradients and two Adam moments
    (16 bytes each), and the activations of the largest batch (kept for the backward pass)."""
    m, t, z = config.model, config.train, config.model.z_dim
    full = config.guide.type == "amortized_full"
    parameters, features = network_size(m.net, z, m.hidden)
    tril = z * (z + 1) // 2
    parameters += {"amortized": 2 * (features + 1) * z, "amortized_full": (features + 1) * (z + tril) + 2 * tril,
                   "mean_field": 2 * num_data * z}.get(config.guide.type, 0)
    parameters += {"correlated": z + z * z, "learned": z + z * z,
                   "mixture": config.prior.components * (1 + 2 * z)}.get(config.prior.type, 2 * z)
    particles = t.num_particles if t.objective == "iwae" else 1  # IWAE draws its K samples at once
    batch = max(min(t.batch_size, num_data) * particles, min(t.eval_batch_size, 10_000))
    per_image = 4 * NUM_PIXELS + 2 * (sum(m.hidden) if m.net == "mlp" else 20_000) + (z * z if full else 4 * z)
    return 16 * parameters + 16 * batch * per_image


def _memory_available(config: Config) -> int:
    """This machine's memory in bytes (and the GPU's, if the config trains on one)."""
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        have = 2**50  # unknown: refuse only absurd sizes
    if config.train.device in ("cuda", "auto") and torch.cuda.is_available():
        have = min(have, torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory)
    return have


def _format_bytes(n: int) -> str:
    if n.bit_length() > 1000:
        return f"about 2^{n.bit_length()} bytes"
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024:
            return f"{size:.3g} {unit}"
        size /= 1024
    return f"{size:.3g} EiB"


def check_size(config: Config, num_data: int) -> None:
    """Refuse (ConfigError) a model or batch too large for this machine's memory, naming the key
    whose value makes it so, before any of it is allocated."""
    need, have = _memory_needed(config, num_data), _memory_available(config)
    if need <= have:
        return

    def need_with_default(name: tuple[str, str]) -> int:
        reset = copy.deepcopy(config)
        setattr(getattr(reset, name[0]), name[1], getattr(getattr(Config(), name[0]), name[1]))
        return _memory_needed(reset, num_data)

    section, key = min(_SIZE_KEYS, key=need_with_default)  # the key whose value costs the most
    value, default = getattr(getattr(config, section), key), getattr(getattr(Config(), section), key)
    raise ConfigError(
        f"{section}.{key} = {value!r} needs {_format_bytes(need)} of memory to train (parameters, gradients, "
        f"Adam moments, activations) but this machine has {_format_bytes(have)}; use a smaller {section}.{key}, "
        f"for example {section}.{key}={default!r}"
    )


def build_model(config: Config, num_data: int) -> tuple[VAE, Guide]:
    """``(vae, guide)`` for ``config`` with a training set of ``num_data`` points (on the CPU)."""
    m = config.model
    if m.net not in NETS:
        raise ConfigError(f"unknown model.net {m.net!r}; valid nets: {', '.join(NETS)}")
    check_size(config, num_data)
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
    build_objective(t.objective, t.num_particles, t.free_bits, t.beta, t.kl_anneal_steps)
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
    g = config.guide
    if g.local_min_lr > g.local_lr:
        raise ConfigError(
            f"guide.local_min_lr = {g.local_min_lr} is above guide.local_lr = {g.local_lr}; the local fit's "
            "learning rate falls from local_lr to local_min_lr: make local_min_lr <= local_lr"
        )
    if config.model.net in NETS:
        check_size(config, min(config.data.train_size or TRAIN_IMAGES, TRAIN_IMAGES))
    with torch.random.fork_rng(devices=[]):  # building must not move the run's random stream
        build_model(config, num_data=1)

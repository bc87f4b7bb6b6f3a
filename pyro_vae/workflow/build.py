"""Build the parts a config names (prior, networks, likelihood, guide, objective) from registries.

Each registry maps a config name to a constructor of the part; a new part is one entry.
:func:`check_config` runs before data are loaded or training starts: names, the cross-field
:data:`~pyro_vae.workflow.rules.RULES`, memory, and the parts' own argument checks (a part raises
``ValueError`` about its own arguments; :func:`_as_config_error` names the config keys instead).
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import warnings

import pyro.distributions.transforms as T
import torch
from pyro.nn import ConditionalAutoRegressiveNN
from torch import nn

from ..infer.objectives import ELBOS, IWAE, DReGIWAE, FreeBitsELBO, SemiSupervisedELBO, VectorQuantizedELBO
from ..infer.optim import LR_SCHEDULES
from ..models.completion import CompletionBaseline, CompletionCVAE, quadrant_mask
from ..models.conditional import ConditionalNormal, ConditionalVAE
from ..models.discrete import (CategoricalPrior, Codebook, CodebookPrior, RelaxedCategoricalGuide,
                               VectorQuantizer)
from ..models.semisupervised import SemiSupervisedGuide, SemiSupervisedVAE, SetSizes
from ..models.guides import AmortizedFlow, AmortizedFullNormal, AmortizedNormal, Guide, MeanField
from ..models.likelihoods import BernoulliLikelihood, ContinuousBernoulliLikelihood, NormalLikelihood
from ..models.nets import (ACTIVATIONS, INITS, NETS, NUM_PIXELS, MLPEncoder, build_networks, glorot_init_,
                           network_size)
from ..models.priors import (CorrelatedPrior, FlowPrior, LearnedPrior, MixturePrior, StandardNormalPrior, VampPrior,
                             check_covariance, equicorrelation)
from ..models.vae import VAE
from .config import Config, ConfigError
from .data import BINARIZED, DATASETS, NUM_CLASSES, PIXEL_MODES
from .rules import DISCRETE_PRIORS, check_rules


def _correlated_prior(c: Config) -> CorrelatedPrior:
    covariance = c.prior.covariance if len(c.prior.covariance) else equicorrelation(c.model.z_dim)
    check_covariance(covariance, c.model.z_dim)
    return CorrelatedPrior(covariance, c.prior.loc)


def _categorical_prior(c: Config, learned: bool) -> CategoricalPrior:
    """p(c) over ``model.z_dim`` codes of ``prior.codes`` classes: over one-hots, or over the code vectors of a
    codebook for the vq guide (the model owns the codebook; the guide quantizes with it)."""
    if c.guide.type == "vq":
        ema = c.prior.ema_decay if c.prior.codebook == "ema" else None
        return CodebookPrior(c.model.z_dim, Codebook(c.prior.codes, c.prior.code_dim, ema), learned)
    return CategoricalPrior(c.model.z_dim, c.prior.codes, learned)


PRIORS = {
    "standard": lambda c: StandardNormalPrior(c.model.z_dim),
    "correlated": _correlated_prior,
    "learned": lambda c: LearnedPrior(c.model.z_dim),
    "mixture": lambda c: MixturePrior(c.model.z_dim, c.prior.components),
    "vamp": lambda c: VampPrior(c.model.z_dim, c.prior.components, NUM_PIXELS),  # the guide attached in build_model
    "flow": lambda c: FlowPrior(c.model.z_dim, c.prior.flows, flow_hidden(c, "prior")),
    "categorical": lambda c: _categorical_prior(c, learned=False),
    "learned_categorical": lambda c: _categorical_prior(c, learned=True),
}
CODEBOOK_UPDATES = ("loss", "ema")


def latent_width(c: Config) -> int:
    """The width of a code as the decoder reads it: z_dim for a Gaussian z; M D (vq: M code vectors) or M K
    (relaxed_categorical: M one-hots) for discrete codes."""
    if c.guide.type == "vq":
        return c.model.z_dim * c.prior.code_dim
    if c.guide.type == "relaxed_categorical":
        return c.model.z_dim * c.prior.codes
    return c.model.z_dim

def _iaf(z: int, context: int, hidden: list[int]) -> T.ConditionalAffineAutoregressive:
    """An inverse autoregressive affine flow whose network conditions coordinate i on z_<i (the identity
    order: :class:`AmortizedFlow` reverses the coordinates between flows; Pyro's default order is random)."""
    return T.ConditionalAffineAutoregressive(
        ConditionalAutoRegressiveNN(z, context, hidden, permutation=torch.arange(z)))


FLOWS = {  # (z_dim, context features, hidden widths) -> a conditional flow on the encoder's features
    "iaf": _iaf,
    "planar": lambda z, context, hidden: T.conditional_planar(z, context, hidden_dims=hidden),
}


def flow_hidden(c: Config, section: str = "guide") -> list[int]:
    """Each flow's hidden widths: ``<section>.flow_hidden`` (guide or prior), or ``[10 z_dim, 10 z_dim]``
    (Pyro's default)."""
    return list(getattr(c, section).flow_hidden or [10 * c.model.z_dim] * 2)


def _flow_guide(c: Config, encoder, n: int) -> AmortizedFlow:
    z = c.model.z_dim
    flows = [FLOWS[c.guide.type](z, encoder.out_features, flow_hidden(c)) for _ in range(c.guide.flows)]
    return AmortizedFlow(encoder, z, n, flows, reverse_between=c.guide.type == "iaf")


GUIDES = {  # (config, encoder body, number of training images) -> guide
    "amortized": lambda c, encoder, n: AmortizedNormal(encoder, c.model.z_dim, n),
    "amortized_full": lambda c, encoder, n: AmortizedFullNormal(encoder, c.model.z_dim, n),
    "mean_field": lambda c, encoder, n: MeanField(n, c.model.z_dim, init_scale=c.guide.init_scale),
    **{name: _flow_guide for name in FLOWS},
    "vq": lambda c, encoder, n: VectorQuantizer(encoder, c.model.z_dim, c.prior.code_dim, n),
    "relaxed_categorical": lambda c, encoder, n: RelaxedCategoricalGuide(
        encoder, c.model.z_dim, c.prior.codes, n, c.guide.temperature, c.guide.min_temperature,
        c.guide.temperature_decay),
}
LIKELIHOODS = {
    "bernoulli": lambda c: BernoulliLikelihood(grey_values=c.data.pixels == "grayscale"
                                               and c.data.dataset != BINARIZED),  # its images are 0 or 1
    "continuous_bernoulli": lambda c: ContinuousBernoulliLikelihood(),
    "normal": lambda c: NormalLikelihood(c.model.normal_scale, c.model.learn_scale),
}
LABELS = ("none", "input", "latent")  # model.labels: the role of the digit's label y in the model
IMPORTANCE_WEIGHTED = {"iwae": IWAE, "iwae_dreg": DReGIWAE}  # K samples drawn at once
OBJECTIVES = (*ELBOS, *IMPORTANCE_WEIGHTED)
DEVICES = ("cpu", "cuda", "auto")

# config key -> (the names it may take, what they are called in the message)
NAMES = {
    "data.dataset": (DATASETS, "datasets"),
    "data.pixels": (PIXEL_MODES, "modes"),
    "train.device": (DEVICES, "devices"),
    "model.net": (NETS, "nets"),
    "model.activation": (tuple(ACTIVATIONS), "activations"),
    "model.init": (INITS, "inits"),
    "model.likelihood": (tuple(LIKELIHOODS), "likelihoods"),
    "model.labels": (LABELS, "label roles"),
    "prior.type": (tuple(PRIORS), "priors"),
    "prior.codebook": (CODEBOOK_UPDATES, "codebook updates"),
    "guide.type": (tuple(GUIDES), "guides"),
    "train.objective": (OBJECTIVES, "objectives"),
    "train.lr_schedule": (LR_SCHEDULES, "schedules"),
}
# a part's argument name -> the config key that sets it
ARGUMENT_KEYS = {"covariance": "prior.covariance", "loc": "prior.loc", "z_dim": "model.z_dim",
                 "components": "prior.components", "init_scale": "guide.init_scale", "codes": "prior.codes",
                 "code_dim": "prior.code_dim", "ema_decay": "prior.ema_decay"}


def _as_config_error(err: ValueError) -> ConfigError:
    """A part's ``ValueError`` about its arguments, reworded with the config keys that set them."""
    pattern = r"(?<![\w.])(" + "|".join(ARGUMENT_KEYS) + r")(?![\w])"
    return ConfigError(re.sub(pattern, lambda m: ARGUMENT_KEYS[m.group(1)], str(err)))


@contextlib.contextmanager
def config_keys():
    """Inside, a part's ``ValueError`` becomes a :class:`ConfigError` naming config keys."""
    try:
        yield
    except ConfigError:
        raise
    except ValueError as err:
        raise _as_config_error(err) from None


def proper_density(config: Config) -> bool:
    """Whether the run's likelihood is a normalised density of its pixels (so log p(x) means something):
    not a Bernoulli over grey values, whose log_prob is minus the binary cross-entropy."""
    return LIKELIHOODS[config.model.likelihood](config).convention == "log_likelihood"


def check_names(config: Config) -> None:
    """Every name-valued key is one its registry knows; raises ConfigError naming the key and the choices."""
    tree = config.to_dict()
    for key, (valid, what) in NAMES.items():
        section, name = key.split(".")
        value = tree[section][name]
        if value not in valid:
            raise ConfigError(f"unknown {key} {value!r}; valid {what}: {', '.join(valid)}")


def build_objective(config: Config, num_data: int = 0):
    """The training objective of ``[train]``: an ELBO estimator, free bits, or the IWAE bound; M2's
    (``model.labels = 'latent'``) with alpha = ``train.classifier_weight`` x N (``num_data``), Kingma et al.'s
    alpha = 0.1 N."""
    t = config.train
    if config.guide.type == "vq":
        return VectorQuantizedELBO(t.commitment)
    if config.model.labels == "latent":
        if num_data <= 0:
            raise ValueError(f"M2's objective needs the training set's size N for alpha = train.classifier_weight x N, "
                             f"got num_data = {num_data}")
        return SemiSupervisedELBO(t.classifier_weight * num_data)
    if t.free_bits > 0:
        return FreeBitsELBO(t.free_bits, t.num_particles)
    if t.objective in IMPORTANCE_WEIGHTED:
        return IMPORTANCE_WEIGHTED[t.objective](t.num_particles)
    if t.objective.startswith("jit_"):  # Pyro's JIT uses torch.jit.trace, deprecated (but working) in recent torch
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.trace.*is deprecated", category=FutureWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    return ELBOS[t.objective](num_particles=t.num_particles)


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
              ("train", "batch_size"), ("train", "eval_batch_size"), ("guide", "flows"), ("guide", "flow_hidden"),
              ("prior", "flows"), ("prior", "flow_hidden"), ("prior", "codes"), ("prior", "code_dim"))


def _memory_needed(config: Config, num_data: int) -> int:
    """Bytes a training step needs, roughly: parameters, gradients and two Adam moments
    (16 bytes each), and the activations of the largest batch (kept for the backward pass)."""
    m, t, z = config.model, config.train, latent_width(config)
    full = config.guide.type == "amortized_full"
    parameters, features = network_size(m.net, z, m.hidden)
    tril = z * (z + 1) // 2
    parameters += {"amortized": 2 * (features + 1) * z, "amortized_full": (features + 1) * (z + tril) + 2 * tril,
                   "mean_field": 2 * num_data * z, "vq": (features + 1) * z,
                   "relaxed_categorical": (features + 1) * z}.get(config.guide.type, 2 * (features + 1) * z)
    if config.guide.type in FLOWS:  # each flow: a network from (z, features) through its hidden widths to 2 z + 1
        widths = [z + features, *flow_hidden(config), 2 * z + 1]
        parameters += config.guide.flows * sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:]))
    if config.prior.type == "flow":  # each flow: a network from z through its hidden widths to 2 z
        widths = [z, *flow_hidden(config, "prior"), 2 * z]
        parameters += config.prior.flows * sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:]))
    parameters += {"correlated": z + z * z, "learned": z + z * z,
                   "mixture": config.prior.components * (1 + 2 * z),
                   "vamp": config.prior.components * NUM_PIXELS,
                   **dict.fromkeys(DISCRETE_PRIORS, m.z_dim * config.prior.codes + config.prior.codes
                                   * config.prior.code_dim)}.get(config.prior.type, 2 * z)
    particles = t.num_particles if t.objective in IMPORTANCE_WEIGHTED else 1  # drawn at once
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
    check_names(config)
    check_size(config, num_data)
    m = config.model
    classes = NUM_CLASSES if m.labels != "none" else 0  # the decoder's and encoder's one-hot y inputs
    encoder, decoder = build_networks(m.net, latent_width(config), m.hidden, m.activation,
                                      condition_features=classes)
    with config_keys():
        prior = PRIORS[config.prior.type](config)
        likelihood = LIKELIHOODS[m.likelihood](config)
        if m.labels == "latent":  # M2: p(y) p(z) p(x | z, y), q(y | x) q(z | x, y); y observed for data.labelled
            sets = SetSizes(config.data.labelled, num_data - config.data.labelled)
            vae = SemiSupervisedVAE(prior, decoder, likelihood, sets.num_labelled, sets.num_unlabelled, classes)
            guide = SemiSupervisedGuide(encoder, build_classifier(config), m.z_dim, sets)
        elif m.completion:  # p(z | x_g) p(x_h | z), q(z | x): any guide with an encoder (the rules refuse mean_field)
            vae = build_completion(config, decoder, likelihood, num_data)
            guide = GUIDES[config.guide.type](config, encoder, num_data)
        elif classes:  # p(x | z, y), q(z | x, y): the rules allow only the amortized diagonal guide here
            vae = ConditionalVAE(prior, decoder, likelihood, num_data, classes)
            guide = ConditionalNormal(encoder, m.z_dim, num_data)
        else:
            vae = VAE(prior, decoder, likelihood, num_data)
            guide = GUIDES[config.guide.type](config, encoder, num_data)
    if isinstance(prior, VampPrior):
        prior.attach(guide.posterior)
    if isinstance(guide, VectorQuantizer):
        guide.attach(prior.codebook)
    if m.init == "glorot":
        glorot_init_(decoder)
        glorot_init_(guide)
        if m.completion:
            glorot_init_(vae.prior_net)
            glorot_init_(vae.baseline)
    return vae, guide


def build_completion(config: Config, decoder: nn.Module, likelihood: nn.Module, num_data: int) -> CompletionCVAE:
    """The image-completion CVAE of ``model.completion`` given quadrants: its prior net and its (unfitted)
    baseline are MLPs of ``model.hidden`` like the encoder (Pyro's tutorial: 500-500 everywhere)."""
    m = config.model
    baseline_net = nn.Sequential(MLPEncoder(m.hidden, activation=m.activation), nn.Linear(m.hidden[-1], NUM_PIXELS))
    # its own copy of the likelihood: a learned scale is the baseline's, frozen with it, not the CVAE's
    baseline = CompletionBaseline(baseline_net, copy.deepcopy(likelihood), quadrant_mask(m.completion), num_data)
    prior_net = AmortizedNormal(MLPEncoder(m.hidden, activation=m.activation), m.z_dim, num_data)
    return CompletionCVAE(prior_net, decoder, likelihood, baseline, num_data)


def build_classifier(config: Config) -> nn.Module:
    """M2's q(y | x) network: the MLP encoder body of ``model.hidden`` and a linear layer to the class logits."""
    m = config.model
    return nn.Sequential(MLPEncoder(m.hidden, activation=m.activation), nn.Linear(m.hidden[-1], NUM_CLASSES))


def check_config(config: Config) -> None:
    """Check ``config`` before anything is loaded or written: names, cross-field rules, memory and
    the prior's own arguments (the one part whose values need checking beyond their range); raises
    :class:`ConfigError`."""
    check_names(config)
    resolve_device(config.train.device)
    check_rules(config)
    check_size(config, min(config.data.train_size or TRAIN_IMAGES, TRAIN_IMAGES))
    with config_keys(), torch.random.fork_rng(devices=[]):  # building must not move the run's random stream
        PRIORS[config.prior.type](config)

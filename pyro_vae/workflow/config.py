"""Experiment configuration: small dataclasses, TOML files, ``--set`` overrides.

A config has five sections, ``[data]``, ``[model]``, ``[prior]``, ``[guide]`` and
``[train]``. Values are checked here for type and range; part names (which prior,
which guide, ...) are checked against the part registries when the parts are built
(:mod:`pyro_vae.workflow.build`), still before any training starts.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import tomli_w

from .checkpoint import atomic_write_bytes


class ConfigError(ValueError):
    """A bad configuration; the message is one line naming the problem and the fix."""


@dataclass
class DataConfig:
    dataset: str = "mnist"  # mnist | fashion_mnist | binarized_mnist
    pixels: str = "grayscale"  # grayscale | dynamic | threshold
    train_size: int = 0  # use the first n training images; 0 = all
    test_size: int = 0  # use the first n test images; 0 = all
    validation_size: int = 0  # hold out the last n training images (binarized_mnist: its validation file)
    labelled: int = 0  # model.labels = 'latent' (M2): training images that keep their label, balanced over classes
    labelled_seed: int = -1  # M2: the seed that draws the labelled set; -1 = train.seed (which also draws the start)
    held_out_labels: list = field(default_factory=list)  # digits taken out of every split (anomaly experiments)
    # each training pixel replaced with this probability by a random one (Ren et al. 2019's background model)
    noise: float = 0.0


@dataclass
class ModelConfig:
    net: str = "mlp"  # mlp | conv
    z_dim: int = 2  # a Gaussian z's dimensions; discrete codes (prior categorical): M, the codes per image
    hidden: list = field(default_factory=lambda: [512, 256])  # MLP encoder widths
    activation: str = "relu"  # of the MLP nets: relu | softplus | tanh | elu
    likelihood: str = "bernoulli"  # bernoulli | continuous_bernoulli | normal
    normal_scale: float = 0.1  # normal likelihood: standard deviation (start value if learned)
    learn_scale: bool = False  # normal likelihood: learn the standard deviation
    init: str = "glorot"  # glorot (Keras, the reference) | torch (PyTorch's default)
    # the digit's label y: none (a VAE of x) | input (a conditional VAE: p(x | z, y), q(z | x, y)) | latent (M2:
    # y ~ p(y) a latent, observed for data.labelled images, summed out by enumeration for the others)
    labels: str = "none"
    # image completion (Sohn et al. 2015): the quadrants given, 1 | 2 | 3; the model predicts the others from
    # them, a deterministic baseline first, then a CVAE whose prior reads the given pixels and the baseline's
    # guess (0 = a VAE of the whole image)
    completion: int = 0


@dataclass
class PriorConfig:
    # standard | correlated | learned | mixture | vamp | flow; over discrete codes (guide vq or relaxed_categorical):
    # categorical (uniform over the codes) | learned_categorical (learned probabilities per position)
    type: str = "standard"
    loc: list = field(default_factory=list)  # correlated prior mean; [] = zeros
    covariance: list = field(default_factory=list)  # correlated prior; [] = unit variances, correlation 0.8
    components: int = 10  # mixture prior: Gaussians; vamp prior: pseudo-inputs (Tomczak & Welling used 500)
    flows: int = 2  # flow prior: masked autoregressive flows on N(0, I)
    flow_hidden: list = field(default_factory=list)  # flow prior: each flow's hidden widths; [] = [10 z_dim] * 2
    codes: int = 64  # categorical priors: K, the classes of each code (a VQ-VAE's codebook size)
    code_dim: int = 8  # guide vq: D, the dimensions of each code vector
    codebook: str = "loss"  # guide vq: how the code vectors learn, loss (||sg(z_e) - e||^2) | ema (moving averages)
    ema_decay: float = 0.99  # codebook ema: gamma, the moving averages' decay per step


@dataclass
class GuideConfig:
    type: str = "amortized"  # amortized | amortized_full | mean_field | iaf | planar | vq | relaxed_categorical
    init_scale: float = 0.1  # mean_field: initial posterior standard deviation
    flows: int = 2  # iaf | planar: conditional flows after the amortized diagonal Gaussian
    flow_hidden: list = field(default_factory=list)  # iaf | planar: each flow's hidden widths; [] = [10 z_dim] * 2
    local_lr: float = 0.05  # Adam learning rate of per-datapoint parameters (mean_field; fit_local's first)
    # fit_local (test images of a mean-field run, q* of the amortization gap): the learning rate falls
    # from local_lr by 3x whenever a window of local_window steps (a flow family's: at least 250) gains
    # < local_tolerance nats/image, down to local_min_lr, where the next such window stops the fit;
    # local_steps caps it.
    local_steps: int = 5000
    local_window: int = 50
    local_flow_lr: float = 0.01  # the highest rate a flow family's fit starts at (local_fit.FLOW_LR)
    local_min_lr: float = 5e-4
    local_tolerance: float = 0.01
    local_particles: int = 1
    # relaxed_categorical: the straight-through Gumbel-softmax's temperature at step t,
    # tau_t = max(min_temperature, temperature exp(-temperature_decay t)) (Jang et al. 2017)
    temperature: float = 1.0
    min_temperature: float = 0.5
    temperature_decay: float = 1e-4

    def local_fit_options(self) -> dict:
        """Keyword arguments of :func:`pyro_vae.infer.local_fit.fit_local` from this section."""
        return {"lr": self.local_lr, "min_lr": self.local_min_lr, "tolerance": self.local_tolerance,
                "max_steps": self.local_steps, "window": self.local_window, "flow_lr": self.local_flow_lr,
                "num_particles": self.local_particles,
                "init_scale": self.init_scale}


@dataclass
class TrainConfig:
    epochs: int = 20
    max_minutes: float = 0.0  # time budget: stop after the epoch in which training time reaches it; 0 = none
    early_stopping: int = 0  # patience: stop when the validation loss has not improved for this many epochs; 0 = none
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "constant"  # constant | burda (3^i epochs at 10^(-i/7)) | exponential | multistep
    lr_decay: float = 0.95  # exponential: the rate's factor from one epoch to the next; multistep: at each milestone
    lr_milestones: list = field(default_factory=list)  # multistep: the epochs after which the rate is x lr_decay
    seed: int = 0
    device: str = "cpu"  # cpu | cuda | auto
    objective: str = "trace"  # trace | trace_mean_field | jit_trace | jit_trace_mean_field | iwae | iwae_dreg
    num_particles: int = 1  # samples per datapoint (K for iwae, iwae_dreg)
    beta: float = 1.0  # KL weight (beta-VAE)
    kl_anneal_steps: int = 0  # raise the KL weight linearly from 0 to beta over this many steps
    free_bits: float = 0.0  # nats per latent dimension (Kingma et al. 2016); needs trace_mean_field
    classifier_weight: float = 0.1  # M2: alpha = classifier_weight x N on E_labelled[-log q(y | x)] (Kingma: 0.1)
    labelled_every: int = 1  # M2: the labelled batch enters every k-th step, weighted so an epoch weighs it as at k = 1
    commitment: float = 0.25  # guide vq: beta, the weight of the commitment loss ||z_e - sg(e)||^2
    baseline_epochs: int = 50  # model.completion: the baseline's most epochs (it stops early as the CVAE does)
    eval_batch_size: int = 1000
    validate: bool = False  # Pyro's distribution argument checks (slower)
    snapshot_epochs: list = field(default_factory=list)  # record test codes/reconstructions after these (0 = init)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    guide: GuideConfig = field(default_factory=GuideConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        """Write the resolved config as TOML (every key, defaults included), atomically."""
        atomic_write_bytes(path, tomli_w.dumps(self.to_dict()).encode())

    def differences(self, other: "Config", ignore: Iterable[str] = ()) -> list[str]:
        """The ``section.key`` names whose values differ from ``other``'s (less ``ignore``)."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [
            f"{section}.{key}"
            for section, values in mine.items()
            for key, value in values.items()
            if theirs[section][key] != value and f"{section}.{key}" not in ignore
        ]


_SECTIONS = {f.name: f.default_factory for f in dataclasses.fields(Config)}

# (section, key) -> (lowest allowed value, inclusive?)
_LOWER_BOUNDS = {
    ("data", "train_size"): (0, True),
    ("data", "test_size"): (0, True),
    ("data", "validation_size"): (0, True),
    ("data", "labelled"): (0, True),
    ("data", "labelled_seed"): (-1, True),
    ("model", "completion"): (0, True),
    ("data", "noise"): (0, True),
    ("train", "classifier_weight"): (0, True),
    ("train", "labelled_every"): (1, True),
    ("train", "baseline_epochs"): (1, True),
    ("train", "commitment"): (0, True),
    ("prior", "codes"): (2, True),
    ("prior", "code_dim"): (1, True),
    ("prior", "ema_decay"): (0, False),
    ("guide", "temperature"): (0, False),
    ("guide", "min_temperature"): (0, False),
    ("guide", "temperature_decay"): (0, True),
    ("model", "z_dim"): (1, True),
    ("model", "normal_scale"): (0, False),
    ("prior", "components"): (1, True),
    ("guide", "init_scale"): (0, False),
    ("guide", "flows"): (1, True),
    ("prior", "flows"): (1, True),
    ("guide", "local_steps"): (1, True),
    ("guide", "local_window"): (1, True),
    ("guide", "local_lr"): (0, False),
    ("guide", "local_flow_lr"): (0, False),
    ("guide", "local_min_lr"): (0, False),
    ("guide", "local_tolerance"): (0, False),
    ("guide", "local_particles"): (1, True),
    ("train", "epochs"): (1, True),
    ("train", "max_minutes"): (0, True),
    ("train", "early_stopping"): (0, True),
    ("train", "batch_size"): (1, True),
    ("train", "lr"): (0, False),
    ("train", "lr_decay"): (0, False),
    ("train", "seed"): (0, True),
    ("train", "num_particles"): (1, True),
    ("train", "beta"): (0, True),
    ("train", "kl_anneal_steps"): (0, True),
    ("train", "free_bits"): (0, True),
    ("train", "eval_batch_size"): (1, True),
}

# (section, key) -> (highest allowed value, why)
_UPPER_BOUNDS = {
    ("train", "seed"): (2**32 - 1, "numpy's seeds are 32-bit"),
    ("data", "labelled_seed"): (2**32 - 1, "as train.seed"),
    ("guide", "flows"): (64, "deeper stacks of flows are not what a VAE guide needs"),
    ("prior", "flows"): (64, "deeper stacks of flows are not what a VAE prior needs"),
    ("train", "lr_decay"): (1, "a factor above 1 would raise the rate every epoch"),
    ("prior", "ema_decay"): (0.9999, "the codes would barely move"),
    ("prior", "codes"): (65536, "a larger codebook is not what an MNIST VQ-VAE needs"),
    ("model", "completion"): (3, "an image has four quadrants, so at most three are given"),
    ("data", "noise"): (0.99, "a higher rate would replace nearly every pixel: the model would learn noise alone"),
}


def _is_number(value: Any) -> bool:
    """An int or float (not a bool) that is finite as a float (how the parts use it)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return abs(value) <= sys.float_info.max  # False for nan and inf; ints compare exactly, however large


def parse_override(text: str) -> tuple[str, str, Any]:
    """Split ``section.key=value``; the value is a TOML literal, else a bare string."""
    name, sep, raw = text.partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot or not section or not key:
        raise ConfigError(
            f"override {text!r} is not of the form section.key=value; "
            "for example --set train.epochs=1"
        )
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # bare words such as prior.type=standard
    return section, key.strip(), value


def _check_value(section: str, key: str, value: Any, default: Any) -> Any:
    where = f"{section}.{key}"
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and not _is_number(value):  # float() of a huge int would overflow
            raise ConfigError(f"{where} must be a finite number, got {value!r}; for example {where}={default!r}")
        value = float(value) if ok else value
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(
            f"{where} must be a {type(default).__name__}, got {value!r}; "
            f"for example {where}={default!r}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where} must be a finite number, got {value!r}")
    bound = _LOWER_BOUNDS.get((section, key))
    if bound is not None:
        low, inclusive = bound
        if value < low or (not inclusive and value == low):
            relation = ">=" if inclusive else ">"
            raise ConfigError(f"{where} must be {relation} {low}, got {value!r}")
    upper = _UPPER_BOUNDS.get((section, key))
    if upper is not None and value > upper[0]:
        raise ConfigError(f"{where} must be <= {upper[0]} ({upper[1]}), got {value!r}; for example {where}={default!r}")
    if (section, key) == ("model", "hidden") and not (
        value and all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in value)
    ):
        raise ConfigError(
            f"model.hidden must be a non-empty list of positive integers, got {value!r}; "
            "for example model.hidden=[512, 256]"
        )
    if key == "flow_hidden" and not all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in value):
        raise ConfigError(
            f"{where} must be a list of positive integers (empty: the default widths), got {value!r}; "
            f"for example {where}=[64, 64]"
        )
    if (section, key) == ("prior", "loc") and not all(_is_number(x) for x in value):
        raise ConfigError(
            f"prior.loc must be a list of finite numbers, got {value!r}; "
            "for example prior.loc=[0.0, 0.0], or [] for zeros"
        )
    if (section, key) == ("prior", "covariance") and not all(
        isinstance(row, list) and all(_is_number(x) for x in row) for row in value
    ):
        raise ConfigError(
            f"prior.covariance must be a list of rows of finite numbers, got {value!r}; "
            "for example prior.covariance=[[1.0, 0.8], [0.8, 1.0]], or [] for the default"
        )
    if (section, key) == ("data", "held_out_labels") and not (
        all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= 9 for d in value) and len(set(value)) < 10
    ):
        raise ConfigError(
            f"data.held_out_labels must be a list of digits 0-9 that leaves at least one out, got {value!r}; "
            "for example data.held_out_labels=[0]"
        )
    if (section, key) == ("train", "lr_milestones") and not (
        all(isinstance(e, int) and not isinstance(e, bool) and e >= 1 for e in value) and value == sorted(set(value))
    ):
        raise ConfigError(
            f"train.lr_milestones must be increasing epochs >= 1 (the rate is multiplied by train.lr_decay after "
            f"each), got {value!r}; for example train.lr_milestones=[100]"
        )
    if (section, key) == ("train", "snapshot_epochs") and not all(
        isinstance(e, int) and not isinstance(e, bool) and e >= 0 for e in value
    ):
        raise ConfigError(
            f"train.snapshot_epochs must be a list of epochs >= 0 (0 = before training), got {value!r}; "
            "for example train.snapshot_epochs=[0, 1, 5, 20]"
        )
    return value


def from_dict(tree: dict) -> Config:
    """Build a checked :class:`Config` from nested dicts, defaults for missing keys."""
    config = Config()
    for section, entries in tree.items():
        if section not in _SECTIONS:
            raise ConfigError(
                f"unknown config section [{section}]; valid sections: {', '.join(_SECTIONS)}"
            )
        if not isinstance(entries, dict):
            raise ConfigError(f"[{section}] must be a table of key = value lines, got {entries!r}")
        target = getattr(config, section)
        valid = [f.name for f in dataclasses.fields(target)]
        for key, value in entries.items():
            if key not in valid:
                raise ConfigError(
                    f"unknown key '{section}.{key}'; valid keys of [{section}]: {', '.join(valid)}"
                )
            default = getattr(target, key)
            setattr(target, key, _check_value(section, key, value, default))
    return config


def resolved_dict(tree) -> dict | None:
    """A saved config (``to_dict()`` of an earlier version) as this version resolves it, or None if it no
    longer parses: keys added since take their defaults, each of which keeps what the code did before
    the key existed (relu nets, a constant learning rate, no flows), so equal dicts mean equal runs."""
    try:
        return from_dict(tree).to_dict() if isinstance(tree, dict) else None
    except ConfigError:
        return None


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Read a TOML config (or start from defaults) and apply ``section.key=value`` overrides."""
    tree: dict = {}
    if path is not None:
        path = Path(path)
        try:
            text = path.read_bytes().decode("utf-8")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ConfigError(
                f"config file '{path}' not found; pass an existing TOML file, "
                "for example --config experiments/vae_2d.toml"
            ) from None
        except OSError as err:
            raise ConfigError(
                f"config file '{path}' cannot be read ({err.strerror or err}); pass a readable TOML file"
            ) from None
        except UnicodeDecodeError as err:
            raise ConfigError(
                f"config file '{path}' is not UTF-8 text (byte 0x{err.object[err.start]:02x} at position "
                f"{err.start}); save it as UTF-8, as TOML requires"
            ) from None
        try:
            tree = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"config file '{path}' is not valid TOML: {err}") from None
        tree.pop("experiment", None)  # an experiment file's own table, read by pyro_vae.experiments
    return from_dict(_overridden(tree, overrides))


# what a local fit reads; an evaluation may change these alone
LOCAL_FIT_KEYS = ("guide.local_steps", "guide.local_window", "guide.local_lr", "guide.local_flow_lr",
                  "guide.local_min_lr", "guide.local_tolerance", "guide.local_particles")


def is_fit_override(text: str) -> bool:
    """Whether a ``section.key=value`` override sets a local fit's key (:data:`LOCAL_FIT_KEYS`)."""
    section, key, _ = parse_override(text)
    return f"{section}.{key}" in LOCAL_FIT_KEYS


def with_overrides(config: Config, overrides: Iterable[str]) -> Config:
    """A copy of ``config`` with ``section.key=value`` overrides applied and checked."""
    return from_dict(_overridden(config.to_dict(), overrides))


def _overridden(tree: dict, overrides: Iterable[str]) -> dict:
    """The nested dict ``tree`` with each ``section.key=value`` override set in it (in place)."""
    for text in overrides:
        section, key, value = parse_override(text)
        entries = tree.setdefault(section, {})
        if not isinstance(entries, dict):
            raise ConfigError(f"[{section}] must be a table of key = value lines")
        entries[key] = value
    return tree

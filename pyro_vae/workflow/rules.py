"""Cross-field rules: combinations of config values that cannot mean what they say.

One table, :data:`RULES`, read by :func:`check_rules` (and so by the CLI and the Python API
through :func:`pyro_vae.workflow.build.check_config`) and by the tests, which break each rule
with its ``example`` and expect the refusal. A single value's type and range is checked in
:mod:`~pyro_vae.workflow.config`; a part's own arguments by its constructor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .config import Config, ConfigError
from .data import BINARIZED, BINARIZED_VALIDATION_IMAGES, NUM_CLASSES, TRAINING_IMAGES


@dataclass(frozen=True)
class Rule:
    """``broken(config)`` is true when the values of ``keys`` contradict each other; ``message(config)``
    says which and how to fix it; ``example`` is a list of overrides that breaks it."""

    keys: tuple[str, ...]
    broken: Callable[[Config], bool]
    message: Callable[[Config], str]
    example: tuple[str, ...]


def _free_bits(c: Config) -> bool:
    return c.train.free_bits > 0


def _held_out_too_many(c: Config) -> bool:
    """Whether the validation split asks for more images than the dataset's files hold."""
    if c.data.dataset == BINARIZED:
        return c.data.validation_size > BINARIZED_VALIDATION_IMAGES
    return c.data.validation_size > 0 and c.data.validation_size + max(c.data.train_size, 1) > TRAINING_IMAGES[
        c.data.dataset]


def _autoregressive_widths_rule(section: str, kind: str) -> Rule:
    """``<section>.flow_hidden`` may not hold a width below z_dim when ``<section>.type = kind`` is an
    autoregressive flow (a MADE cannot mask a narrower layer)."""
    key = f"{section}.flow_hidden"

    def widths(c: Config) -> list:
        return getattr(c, section).flow_hidden

    return Rule(
        (key, "model.z_dim", f"{section}.type"),
        lambda c: getattr(c, section).type == kind and any(w < c.model.z_dim for w in widths(c)),
        lambda c: f"{key} = {widths(c)} has a width below model.z_dim = {c.model.z_dim}, which an autoregressive "
                  f"flow cannot mask (each width must be at least z_dim); widen {key} or leave it empty for "
                  "[10 z_dim, 10 z_dim]",
        (f"{section}.type='{kind}'", "model.z_dim=8", f"{key}=[4]"),
    )


def _training_images(c: Config) -> int:
    """The training images a run gets: data.train_size (or the whole file), less the validation split."""
    held_out = c.data.validation_size if c.data.dataset != BINARIZED else 0  # (binarized: a file of its own)
    available = TRAINING_IMAGES.get(c.data.dataset, 60000) - held_out
    return min(c.data.train_size, available) if c.data.train_size else available


def _importance_weighted(c: Config) -> bool:
    return c.train.objective in ("iwae", "iwae_dreg")


DISCRETE_PRIORS = ("categorical", "learned_categorical")  # as pyro_vae.workflow.build's registries name them
DISCRETE_GUIDES = ("vq", "relaxed_categorical")


def _weighted_kl(c: Config) -> bool:
    """Whether the config weights, anneals or floors the KL (beta, kl_anneal_steps, free_bits)."""
    return c.train.beta != 1 or c.train.kl_anneal_steps > 0 or c.train.free_bits > 0


RULES: tuple[Rule, ...] = (
    Rule(
        ("train.lr_schedule", "train.lr_milestones"),
        lambda c: c.train.lr_schedule == "multistep" and not c.train.lr_milestones,
        lambda c: "train.lr_schedule = 'multistep' lowers the rate after each epoch of train.lr_milestones, but none "
                  "is set (the rate would stay constant); set them, e.g. train.lr_milestones=[100], or use "
                  "train.lr_schedule = 'constant'",
        ("train.lr_schedule='multistep'",),
    ),
    Rule(
        ("train.early_stopping", "data.validation_size"),
        lambda c: c.train.early_stopping > 0 and c.data.validation_size == 0,
        lambda c: f"train.early_stopping = {c.train.early_stopping} watches the validation loss, but "
                  "data.validation_size = 0 holds no images out; set data.validation_size (e.g. 10000)",
        ("train.early_stopping=5",),
    ),
    Rule(
        ("data.validation_size", "data.train_size", "data.dataset"),
        lambda c: c.data.dataset in TRAINING_IMAGES and _held_out_too_many(c),
        lambda c: (f"data.validation_size = {c.data.validation_size} is more than the "
                   f"{BINARIZED_VALIDATION_IMAGES:,} images of the validation file of data.dataset = "
                   f"'{BINARIZED}'; lower data.validation_size" if c.data.dataset == BINARIZED else
                   f"data.validation_size = {c.data.validation_size} and data.train_size = {c.data.train_size} ask "
                   f"for more than the {TRAINING_IMAGES[c.data.dataset]:,} training images of data.dataset = "
                   f"{c.data.dataset!r} (the validation images are held out of them); lower one of them"),
        ("data.validation_size=59000", "data.train_size=2000"),
    ),
    _autoregressive_widths_rule("guide", "iaf"),
    _autoregressive_widths_rule("prior", "flow"),
    Rule(
        ("model.activation", "model.net"),
        lambda c: c.model.activation != "relu" and c.model.net != "mlp",
        lambda c: f"model.activation = {c.model.activation!r} sets the MLP nets' activation, but model.net = "
                  f"{c.model.net!r} is the reference's ReLU conv net; use model.net = 'mlp' or activation 'relu'",
        ("model.activation='tanh'", "model.net='conv'"),
    ),
    Rule(
        ("prior.type", "guide.type"),
        lambda c: c.prior.type == "vamp" and c.guide.type not in ("amortized", "amortized_full"),
        lambda c: "prior.type = 'vamp' mixes the guide's Gaussian posteriors at its pseudo-inputs, so it needs an "
                  f"encoder with a Gaussian q: guide.type 'amortized' or 'amortized_full', got {c.guide.type!r}",
        ("prior.type='vamp'", "guide.type='mean_field'"),
    ),
    Rule(
        ("train.free_bits", "train.objective"),
        lambda c: _free_bits(c) and c.train.objective != "trace_mean_field",
        lambda c: "train.free_bits needs train.objective = 'trace_mean_field' (analytic KL per dimension), "
                  f"got {c.train.objective!r}",
        ("train.free_bits=0.5", "train.objective='trace'"),
    ),
    Rule(
        ("train.free_bits", "prior.type", "guide.type"),
        lambda c: _free_bits(c) and (c.prior.type != "standard" or c.guide.type not in ("amortized", "mean_field")),
        lambda c: "train.free_bits needs a per-dimension KL: prior.type = 'standard' and a diagonal guide "
                  f"('amortized' or 'mean_field'), got prior {c.prior.type!r} and guide {c.guide.type!r}",
        ("train.free_bits=0.5", "train.objective='trace_mean_field'", "prior.type='learned'"),
    ),
    Rule(
        ("train.objective", "train.beta", "train.kl_anneal_steps"),
        lambda c: _importance_weighted(c) and (c.train.beta != 1.0 or c.train.kl_anneal_steps > 0),
        lambda c: f"train.beta must be 1 and train.kl_anneal_steps 0 with the {c.train.objective} objective (a bound "
                  f"on log p(x), not a weighted ELBO), got beta = {c.train.beta}, "
                  f"kl_anneal_steps = {c.train.kl_anneal_steps}; "
                  "use objective 'trace_mean_field' to weight or anneal the KL",
        ("train.objective='iwae'", "train.beta=0.5"),
    ),
    Rule(
        ("train.objective", "train.kl_anneal_steps"),
        lambda c: c.train.objective.startswith("jit_") and c.train.kl_anneal_steps > 0,
        lambda c: f"train.kl_anneal_steps = {c.train.kl_anneal_steps} cannot work with train.objective = "
                  f"{c.train.objective!r}: the compiled trace keeps the KL weight of its first step; use 'trace' "
                  "or 'trace_mean_field' to anneal the KL",
        ("train.objective='jit_trace'", "train.kl_anneal_steps=100"),
    ),
    Rule(
        ("train.objective", "guide.type", "prior.type"),
        lambda c: c.train.objective == "jit_trace_mean_field" and c.guide.type == "amortized_full"
        and c.prior.type in ("correlated", "learned"),
        lambda c: "train.objective = 'jit_trace_mean_field' cannot trace torch's KL between two "
                  f"MultivariateNormals (guide.type = 'amortized_full' with prior.type = {c.prior.type!r}); use "
                  "train.objective = 'trace_mean_field'",
        ("train.objective='jit_trace_mean_field'", "guide.type='amortized_full'", "prior.type='learned'"),
    ),
    Rule(
        ("train.objective", "guide.type", "prior.type"),
        lambda c: c.train.objective == "iwae_dreg" and (c.guide.type in ("iaf", "planar") or c.prior.type == "vamp"),
        lambda c: "train.objective = 'iwae_dreg' holds the guide's Gaussian parameters fixed in log q and needs "
                  "parameters the model and the guide do not share: not a flow guide nor a VampPrior, got guide.type = "
                  f"{c.guide.type!r} and prior.type = {c.prior.type!r}; use train.objective = 'iwae'",
        ("train.objective='iwae_dreg'", "guide.type='iaf'"),
    ),
    Rule(
        ("model.labels", "model.net", "guide.type", "prior.type"),
        lambda c: c.model.labels != "none" and (c.model.net != "mlp" or c.guide.type != "amortized"
                                                 or c.prior.type == "vamp"),
        lambda c: f"model.labels = {c.model.labels!r} feeds the label to the MLP nets beside x and z, with the "
                  "amortized diagonal guide q(z | x, y) and a prior that does not encode images: it needs model.net = "
                  f"'mlp', guide.type = 'amortized' and a prior other than 'vamp', got net {c.model.net!r}, guide "
                  f"{c.guide.type!r}, prior {c.prior.type!r}",
        ("model.labels='input'", "guide.type='mean_field'"),
    ),
    Rule(
        ("model.labels", "data.dataset"),
        lambda c: c.model.labels != "none" and c.data.dataset == BINARIZED,
        lambda c: f"model.labels = {c.model.labels!r} needs labelled images, but data.dataset = '{BINARIZED}' "
                  "(Larochelle's files) has no labels; use data.dataset = 'mnist' with data.pixels = 'threshold' or "
                  "'dynamic'",
        ("model.labels='input'", f"data.dataset='{BINARIZED}'"),
    ),
    Rule(
        ("data.held_out_labels", "data.dataset"),
        lambda c: bool(c.data.held_out_labels) and c.data.dataset == BINARIZED,
        lambda c: f"data.held_out_labels = {c.data.held_out_labels} takes digits out by their labels, but data.dataset "
                  f"= '{BINARIZED}' has no labels; use data.dataset = 'mnist' with data.pixels = 'dynamic'",
        ("data.held_out_labels=[0]", f"data.dataset='{BINARIZED}'"),
    ),
    Rule(
        ("data.labelled", "model.labels"),
        lambda c: (c.model.labels == "latent") != (c.data.labelled > 0),
        lambda c: (f"data.labelled = {c.data.labelled} is the labelled set of model.labels = 'latent' (M2); set "
                   "model.labels = 'latent' or data.labelled = 0" if c.data.labelled else
                   "model.labels = 'latent' (M2) needs labelled images: set data.labelled, e.g. 100"),
        ("data.labelled=100",),
    ),
    Rule(
        ("data.labelled_seed", "model.labels"),
        lambda c: c.data.labelled_seed >= 0 and c.model.labels != "latent",
        lambda c: f"data.labelled_seed = {c.data.labelled_seed} draws the labelled set of model.labels = 'latent' "
                  f"(M2), but model.labels = {c.model.labels!r} has none; drop data.labelled_seed (or set it to -1)",
        ("data.labelled_seed=1",),
    ),
    Rule(
        ("data.labelled", "model.labels"),
        lambda c: c.data.labelled % NUM_CLASSES != 0,
        lambda c: f"data.labelled = {c.data.labelled} cannot be balanced over the {NUM_CLASSES} classes of "
                  f"model.labels = {c.model.labels!r}; use a multiple of {NUM_CLASSES}, e.g. "
                  f"{max(NUM_CLASSES, c.data.labelled // NUM_CLASSES * NUM_CLASSES)}",
        ("model.labels='latent'", "data.labelled=105"),
    ),
    Rule(
        ("data.labelled", "data.train_size", "data.validation_size"),
        lambda c: c.data.labelled > 0 and c.data.labelled >= _training_images(c),
        lambda c: f"data.labelled = {c.data.labelled} leaves no unlabelled image among the {_training_images(c):,} "
                  "training images (data.train_size, less data.validation_size); lower data.labelled",
        ("model.labels='latent'", "data.labelled=1000", "data.train_size=1000"),
    ),
    Rule(
        ("model.labels", "train.objective", "train.num_particles", "train.beta", "train.kl_anneal_steps",
         "train.free_bits"),
        lambda c: c.model.labels == "latent" and (c.train.objective != "trace" or c.train.num_particles != 1
                                                  or c.train.beta != 1 or c.train.kl_anneal_steps or c.train.free_bits),
        lambda c: "model.labels = 'latent' (M2) trains with its own objective, TraceEnum_ELBO over both sets plus "
                  "train.classifier_weight times the classifier's cross-entropy: leave train.objective = 'trace', "
                  "num_particles = 1, beta = 1, kl_anneal_steps = 0 and free_bits = 0, got objective "
                  f"{c.train.objective!r}, num_particles {c.train.num_particles}, beta {c.train.beta}, "
                  f"kl_anneal_steps {c.train.kl_anneal_steps}, free_bits {c.train.free_bits}",
        ("model.labels='latent'", "data.labelled=100", "train.objective='iwae'"),
    ),
    Rule(
        ("model.completion", "model.net", "model.labels", "guide.type", "prior.type"),
        lambda c: c.model.completion > 0 and (c.model.net != "mlp" or c.model.labels != "none"
                                              or c.guide.type == "mean_field" or c.prior.type != "standard"),
        lambda c: f"model.completion = {c.model.completion} builds its own prior p(z | x_g) from the MLP nets and "
                  "infers z with an encoder: it needs model.net = 'mlp', model.labels = 'none', prior.type = "
                  f"'standard' and a guide other than 'mean_field', got net {c.model.net!r}, labels "
                  f"{c.model.labels!r}, prior {c.prior.type!r}, guide {c.guide.type!r}",
        ("model.completion=1", "guide.type='mean_field'"),
    ),
    Rule(
        ("model.completion", "train.objective", "train.free_bits"),
        lambda c: c.model.completion > 0 and (c.train.objective not in ("trace", "trace_mean_field")
                                              or c.train.free_bits > 0),
        lambda c: f"model.completion = {c.model.completion} scores only the hidden pixels, which the ELBO objectives "
                  "'trace' and 'trace_mean_field' follow by the model's sites; got train.objective = "
                  f"{c.train.objective!r}, free_bits = {c.train.free_bits}: use one of those two, free_bits 0",
        ("model.completion=2", "train.objective='iwae'"),
    ),
    Rule(
        ("model.completion", "data.validation_size"),
        lambda c: c.model.completion > 0 and c.data.validation_size == 0,
        lambda c: f"model.completion = {c.model.completion} fits its baseline first, stopped on the validation "
                  "loss, but data.validation_size = 0 holds no images out; set data.validation_size (e.g. 10000)",
        ("model.completion=3",),
    ),
    Rule(
        ("prior.type", "guide.type"),
        lambda c: (c.prior.type in DISCRETE_PRIORS) != (c.guide.type in DISCRETE_GUIDES),
        lambda c: f"prior.type = {c.prior.type!r} and guide.type = {c.guide.type!r} are over different latents: the "
                  f"priors {', '.join(DISCRETE_PRIORS)} go with the guides {', '.join(DISCRETE_GUIDES)} (discrete "
                  "codes), the other priors with the other guides (a continuous z)",
        ("prior.type='categorical'",),
    ),
    Rule(
        ("guide.type", "train.objective", "train.num_particles", "train.beta", "train.kl_anneal_steps",
         "train.free_bits"),
        lambda c: c.guide.type == "vq" and (c.train.objective not in ("trace", "trace_mean_field")
                                            or c.train.num_particles != 1 or _weighted_kl(c)),
        lambda c: "guide.type = 'vq' (a one-hot posterior) trains with its own objective, -ELBO plus the codebook "
                  "and commitment losses (train.commitment): leave train.objective = 'trace' or 'trace_mean_field', "
                  f"num_particles = 1, beta = 1, kl_anneal_steps = 0 and free_bits = 0, got objective "
                  f"{c.train.objective!r}, num_particles {c.train.num_particles}, beta {c.train.beta}, "
                  f"kl_anneal_steps {c.train.kl_anneal_steps}, free_bits {c.train.free_bits}",
        ("prior.type='categorical'", "guide.type='vq'", "train.objective='iwae'"),
    ),
    Rule(
        ("guide.type", "train.objective", "train.free_bits"),
        lambda c: c.guide.type == "relaxed_categorical" and (c.train.objective not in ("trace", "trace_mean_field")
                                                             or c.train.free_bits > 0),
        lambda c: "guide.type = 'relaxed_categorical' samples its codes straight through, a gradient the ELBO "
                  "objectives 'trace' and 'trace_mean_field' (the exact discrete KL) take; got train.objective = "
                  f"{c.train.objective!r}, free_bits = {c.train.free_bits}: use one of those two, free_bits 0",
        ("prior.type='categorical'", "guide.type='relaxed_categorical'", "train.objective='iwae'"),
    ),
    Rule(
        ("prior.codebook", "guide.type"),
        lambda c: c.prior.codebook != "loss" and c.guide.type != "vq",
        lambda c: f"prior.codebook = {c.prior.codebook!r} says how a VQ-VAE's code vectors learn, but guide.type = "
                  f"{c.guide.type!r} has no codebook; use guide.type = 'vq' or leave prior.codebook = 'loss'",
        ("prior.codebook='ema'",),
    ),
    Rule(
        ("guide.min_temperature", "guide.temperature", "guide.type"),
        lambda c: c.guide.type == "relaxed_categorical" and c.guide.min_temperature > c.guide.temperature,
        lambda c: f"guide.min_temperature = {c.guide.min_temperature} is above guide.temperature = "
                  f"{c.guide.temperature} (guide.type = 'relaxed_categorical'); the temperature falls from "
                  "temperature to min_temperature: make min_temperature <= temperature",
        ("prior.type='categorical'", "guide.type='relaxed_categorical'", "guide.min_temperature=2.0"),
    ),
    Rule(
        ("guide.local_min_lr", "guide.local_lr"),
        lambda c: c.guide.local_min_lr > c.guide.local_lr,
        lambda c: f"guide.local_min_lr = {c.guide.local_min_lr} is above guide.local_lr = {c.guide.local_lr}; the "
                  "local fit's learning rate falls from local_lr to local_min_lr: make local_min_lr <= local_lr",
        ("guide.local_min_lr=0.1", "guide.local_lr=0.01"),
    ),
)


def check_rules(config: Config) -> None:
    """Raise :class:`ConfigError` with the message of the first rule ``config`` breaks."""
    for rule in RULES:
        if rule.broken(config):
            raise ConfigError(rule.message(config))


@dataclass(frozen=True)
class Unused:
    """``key`` is read only when ``used(config)``, which ``when`` says in words; ``example`` sets it where it is not."""

    key: str
    used: Callable[[Config], bool]
    when: str
    example: tuple[str, ...]


def _one_of(section: str, name: str, values: tuple[str, ...]) -> Callable[[Config], bool]:
    return lambda c: getattr(getattr(c, section), name) in values


_FLOW_GUIDES = ("iaf", "planar")
UNUSED: tuple[Unused, ...] = (  # keys a config may set that its parts never read (a note, not a refusal)
    Unused("model.normal_scale", _one_of("model", "likelihood", ("normal",)), "model.likelihood = 'normal'",
           ("model.normal_scale=0.2",)),
    Unused("model.learn_scale", _one_of("model", "likelihood", ("normal",)), "model.likelihood = 'normal'",
           ("model.learn_scale=true",)),
    Unused("prior.loc", _one_of("prior", "type", ("correlated",)), "prior.type = 'correlated'",
           ("prior.loc=[1.0, 0.0]",)),
    Unused("prior.covariance", _one_of("prior", "type", ("correlated",)), "prior.type = 'correlated'",
           ("prior.covariance=[[1.0, 0.5], [0.5, 1.0]]",)),
    Unused("prior.components", _one_of("prior", "type", ("mixture", "vamp")), "prior.type = 'mixture' or 'vamp'",
           ("prior.components=50",)),
    Unused("prior.flows", _one_of("prior", "type", ("flow",)), "prior.type = 'flow'", ("prior.flows=4",)),
    Unused("prior.flow_hidden", _one_of("prior", "type", ("flow",)), "prior.type = 'flow'",
           ("prior.flow_hidden=[64]",)),
    Unused("prior.codes", _one_of("prior", "type", DISCRETE_PRIORS), "a categorical prior", ("prior.codes=16",)),
    Unused("prior.code_dim", _one_of("guide", "type", ("vq",)), "guide.type = 'vq'",
           ("prior.type='categorical'", "guide.type='relaxed_categorical'", "prior.code_dim=4")),
    Unused("prior.ema_decay", _one_of("prior", "codebook", ("ema",)), "prior.codebook = 'ema'",
           ("prior.ema_decay=0.9",)),
    Unused("guide.init_scale", _one_of("guide", "type", ("mean_field",)), "guide.type = 'mean_field'",
           ("guide.init_scale=0.5",)),
    Unused("guide.flows", _one_of("guide", "type", _FLOW_GUIDES), "guide.type = 'iaf' or 'planar'", ("guide.flows=4",)),
    Unused("guide.flow_hidden", _one_of("guide", "type", _FLOW_GUIDES), "guide.type = 'iaf' or 'planar'",
           ("guide.flow_hidden=[64]",)),
    *(Unused(f"guide.{name}", _one_of("guide", "type", ("relaxed_categorical",)), "guide.type = 'relaxed_categorical'",
             (f"guide.{name}={value}",))
      for name, value in (("temperature", 2.0), ("min_temperature", 0.1), ("temperature_decay", 0.01))),
    Unused("train.lr_decay", _one_of("train", "lr_schedule", ("exponential", "multistep")),
           "train.lr_schedule = 'exponential' or 'multistep'", ("train.lr_decay=0.9",)),
    Unused("train.lr_milestones", _one_of("train", "lr_schedule", ("multistep",)), "train.lr_schedule = 'multistep'",
           ("train.lr_milestones=[10]",)),
    Unused("train.classifier_weight", _one_of("model", "labels", ("latent",)), "model.labels = 'latent'",
           ("train.classifier_weight=1.0",)),
    Unused("train.labelled_every", _one_of("model", "labels", ("latent",)), "model.labels = 'latent'",
           ("train.labelled_every=5",)),
    Unused("train.commitment", _one_of("guide", "type", ("vq",)), "guide.type = 'vq'", ("train.commitment=0.5",)),
    Unused("train.baseline_epochs", lambda c: c.model.completion > 0, "model.completion", ("train.baseline_epochs=5",)),
)


def unused_keys(config: Config) -> list[str]:
    """``'KEY (read only with WHEN)'`` for each key of :data:`UNUSED` set away from its default where the
    config's parts never read it: what a run says in one note line, so that a value that does nothing is seen."""
    changed = set(config.differences(Config()))
    return [f"{u.key} (read only with {u.when})" for u in UNUSED if u.key in changed and not u.used(config)]

"""Variational autoencoders as Pyro probabilistic programs.

    vae, guide = build_model(load_config("experiments/vae_2d.toml"), num_data=60000)
    svi = pyro.infer.SVI(vae.model, guide, adam(1e-3), pyro.infer.Trace_ELBO())
"""

from .build import build_model, check_config
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import Config, ConfigError, load_config
from .data import DataError, ImageData, load_data, resolve_data_dir
from .evaluate import active_units, elbo_terms, importance_log_likelihood, kl_term, log_likelihood, posterior_means
from .guides import AmortizedFullNormal, AmortizedNormal, Guide, MeanField
from .local_fit import LocalFit, LocalFullNormal, fit_local, refinement_gain
from .likelihoods import BernoulliLikelihood, ContinuousBernoulliLikelihood
from .nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from .optim import adam
from .priors import CorrelatedPrior, LearnedPrior, MixturePrior, StandardNormalPrior
from .runs import Run, load_run
from .train import Interrupted, Trainer, TrainingError, redraw_figures, resume, train
from .vae import VAE, data_plate

__all__ = [
    "AmortizedFullNormal",
    "AmortizedNormal",
    "BernoulliLikelihood",
    "CheckpointError",
    "Config",
    "ConfigError",
    "ContinuousBernoulliLikelihood",
    "ConvDecoder",
    "ConvEncoder",
    "CorrelatedPrior",
    "DataError",
    "Guide",
    "ImageData",
    "LearnedPrior",
    "MLPDecoder",
    "MLPEncoder",
    "MeanField",
    "MixturePrior",
    "Run",
    "StandardNormalPrior",
    "Interrupted",
    "LocalFit",
    "LocalFullNormal",
    "Trainer",
    "TrainingError",
    "VAE",
    "adam",
    "build_model",
    "check_config",
    "data_plate",
    "active_units",
    "elbo_terms",
    "importance_log_likelihood",
    "log_likelihood",
    "fit_local",
    "kl_term",
    "load_checkpoint",
    "load_config",
    "load_data",
    "load_run",
    "posterior_means",
    "refinement_gain",
    "redraw_figures",
    "resume",
    "resolve_data_dir",
    "save_checkpoint",
    "train",
]

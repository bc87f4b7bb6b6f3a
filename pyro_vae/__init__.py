"""Variational autoencoders as Pyro probabilistic programs.

    vae, guide = build_model(load_config("experiments/vae_2d.toml"), num_data=60000)
    svi = pyro.infer.SVI(vae.model, guide, adam(1e-3), pyro.infer.Trace_ELBO())

Layout: :mod:`pyro_vae.models` (the programs), :mod:`pyro_vae.infer` (objectives, optimizer,
estimators, local fits, gaps), :mod:`pyro_vae.workflow` (config, data, runs, training, experiments)
and :mod:`pyro_vae.plots` (figures; not imported here, so importing the package leaves
matplotlib alone).
"""

from .infer import (active_units, adam, amortization_gap, elbo_terms, fit_local, importance_log_likelihood,
                    posterior_means, refinement_gain)
from .models import (VAE, AmortizedFlow, AmortizedFullNormal, AmortizedNormal, BernoulliLikelihood,
                     ContinuousBernoulliLikelihood, ConvDecoder, ConvEncoder, CorrelatedPrior, FlowPrior, Guide,
                     LearnedPrior, MeanField, MixturePrior, MLPDecoder, MLPEncoder, SemiSupervisedVAE,
                     StandardNormalPrior, VampPrior)
from .workflow.build import build_model, check_config
from .workflow.checkpoint import CheckpointError
from .workflow.config import Config, ConfigError, load_config
from .workflow.data import DataError, ImageData, load_data
from .workflow.evaluation import evaluate_run
from .workflow.loop import TrainingError
from .workflow.runs import Run, RunDir, load_run
from .workflow.training import Interrupted, Trainer, resume, train, train_or_resume

__all__ = [
    "VAE", "AmortizedFlow", "AmortizedFullNormal", "AmortizedNormal", "BernoulliLikelihood", "CheckpointError",
    "Config", "ConfigError", "ContinuousBernoulliLikelihood", "ConvDecoder", "ConvEncoder", "CorrelatedPrior",
    "MLPDecoder", "MLPEncoder", "DataError", "FlowPrior", "Guide", "ImageData", "Interrupted", "LearnedPrior",
    "MeanField", "MixturePrior", "Run", "RunDir", "SemiSupervisedVAE", "StandardNormalPrior", "Trainer", "VampPrior",
    "TrainingError", "active_units", "adam", "amortization_gap", "build_model", "check_config", "elbo_terms",
    "evaluate_run", "fit_local", "importance_log_likelihood", "load_config", "load_data", "load_run",
    "posterior_means", "refinement_gain", "resume", "train", "train_or_resume",
]
